"""Compiled record output: a flow slot's current counters become one row of record arrays.

Also the printed fields argus derives from the counters: the state mnemonic, dir and flgs.
"""

from __future__ import annotations

import numpy as np

from appliance.decode.constants import ET_ARP, ET_IPV4, ET_IPV6, P_ICMP, P_ICMPV6, P_TCP
from appliance.flows import layout as f
from appliance.flows.keys import ADDRESS_A, ADDRESS_B, PORT_A, PORT_B
from appliance.flows.names import TcpFlag
from appliance.flows.rtp import RTP_SILENCE, appproto_code
from appliance.flows.tcp import sequence_gap
from appliance.flows.userdata import copy_out
from appliance.jit import njit

TCP_SYN = int(TcpFlag.SYN)
TCP_RST = int(TcpFlag.RST)
TCP_FIN = int(TcpFlag.FIN)
TCP_ACK = int(TcpFlag.ACK)

# flgs letters for (source only, destination only, both directions).
RETRANSMISSION_LETTERS = (ord("s"), ord("d"), ord("*"))
OUT_OF_ORDER_LETTERS = (ord("i"), ord("r"), ord("&"))
WINDOW_SHUT_LETTERS = (ord("S"), ord("D"), ord("@"))
CONGESTION_LETTERS = (ord("x"), ord("t"), ord("E"))
# An RTP record's skipped packets (column 4) and silence (column 5).
LOSS_LETTERS = RETRANSMISSION_LETTERS
SILENCE_LETTERS = (ord("s"), ord("d"), ord("*"))


@njit(cache=True)
def is_tcp(flows, slot):
    etype = flows[slot].etype
    return flows[slot].proto == P_TCP and (etype == ET_IPV4 or etype == ET_IPV6)


@njit(cache=True)
def icmp_state_code(icmp_type, code, version, icmp4_codes, unreachable_codes, icmp6_codes):
    """Return the state code argus prints for an ICMP flow of this type and code."""
    if version == 6:
        return icmp6_codes[((icmp_type & 0xFF) << 8) | (code & 0xFF)]
    if icmp_type == 3:
        return unreachable_codes[code & 0xFF]
    return icmp4_codes[icmp_type & 0xFF]


@njit(cache=True)
def tcp_state(flows, sides, slot):
    flags = sides[slot, 0].tcp_flags | sides[slot, 1].tcp_flags
    if flags & TCP_RST:
        return f.ST_RST
    if flags & TCP_FIN:
        return f.ST_FIN
    if flows[slot].established or flows[slot].midstream:
        return f.ST_CON
    if flows[slot].syn_ack:
        return f.ST_ACC
    if sides[slot, 0].tcp_flags & TCP_SYN:
        return f.ST_REQ
    if sides[slot, 0].pkts and sides[slot, 1].pkts:
        return f.ST_CON
    return f.ST_INT


@njit(cache=True)
def flow_state(flows, sides, slot, icmp4_codes, unreachable_codes, icmp6_codes):
    """Return the state code of the current record."""
    if flows[slot].icmp_state >= 0:
        return flows[slot].icmp_state
    if is_tcp(flows, slot):
        return tcp_state(flows, sides, slot)
    proto = flows[slot].proto
    etype = flows[slot].etype
    if (proto == P_ICMP or proto == P_ICMPV6) and (etype == ET_IPV4 or etype == ET_IPV6):
        return icmp_state_code(flows[slot].icmp_type, flows[slot].icmp_code,
                               flows[slot].version, icmp4_codes, unreachable_codes,
                               icmp6_codes)
    src = sides[slot, 0].pkts
    if src and sides[slot, 1].pkts:
        return f.ST_CON
    if src:
        return f.ST_INT if flows[slot].first_record else f.ST_REQ
    return f.ST_RSP


@njit(cache=True)
def flow_direction(flows, sides, slot):
    """Return the dir code: who carried packets, and whether the initiator is certain."""
    if flows[slot].etype == ET_ARP:
        return f.DIR_WHO
    src = sides[slot, 0].pkts > 0
    both = src and sides[slot, 1].pkts > 0
    if is_tcp(flows, slot):
        if flows[slot].midstream:
            if both:
                return f.DIR_MID_BOTH
            return f.DIR_MID_FORWARD if src else f.DIR_MID_BACK
        return f.DIR_FORWARD
    if both:
        return f.DIR_BOTH
    return f.DIR_FORWARD if src else f.DIR_BACK


@njit(cache=True)
def side_letter(source, destination, letters):
    """Return the letter for a condition seen by the source, the destination or both."""
    if source and destination:
        return letters[2]
    if source:
        return letters[0]
    if destination:
        return letters[1]
    return 32


@njit(cache=True)
def write_tcp_flgs(sides, slot, flgs, out):
    """Write flgs columns 4-6 of a TCP flow, in argus 3.0.8's order of precedence.

    Column 4 shows a retransmission, else a sequence gap, else out-of-order data.
    Column 5 shows a zero window and column 6 an ECN congestion echo.
    """
    source = sides[slot, 0].tcp_status
    destination = sides[slot, 1].tcp_status
    if (source | destination) & f.TS_RETRANSMITTED:
        flgs[out, 3] = side_letter(source & f.TS_RETRANSMITTED,
                                   destination & f.TS_RETRANSMITTED, RETRANSMISSION_LETTERS)
    elif sequence_gap(sides, slot, 0) or sequence_gap(sides, slot, 1):
        flgs[out, 3] = 103  # 'g'
    else:
        flgs[out, 3] = side_letter(source & f.TS_OUT_OF_ORDER, destination & f.TS_OUT_OF_ORDER,
                                   OUT_OF_ORDER_LETTERS)
    flgs[out, 4] = side_letter(source & f.TS_WINDOW_SHUT, destination & f.TS_WINDOW_SHUT,
                               WINDOW_SHUT_LETTERS)
    flgs[out, 5] = side_letter(source & f.TS_CONGESTED, destination & f.TS_CONGESTED,
                               CONGESTION_LETTERS)


@njit(cache=True)
def write_rtp_flgs(sides, slot, flgs, out):
    """Write flgs columns 4 and 5 of a record printed as rtp: packets its sequence
    numbers skipped, and silence."""
    flgs[out, 3] = side_letter(sides[slot, 0].seq_base, sides[slot, 1].seq_base, LOSS_LETTERS)
    flgs[out, 4] = side_letter(sides[slot, 0].tcp_status & RTP_SILENCE,
                               sides[slot, 1].tcp_status & RTP_SILENCE, SILENCE_LETTERS)


@njit(cache=True)
def write_flgs(flows, sides, slot, appproto, encapsulation_codes, option_codes, flgs, out):
    """Write the nine positional flgs characters of a flow into ``flgs[out]``."""
    for k in range(f.FLGS_WIDTH):
        flgs[out, k] = 32
    flgs[out, 1] = encapsulation_codes[flows[slot].encaps & f.ENCAPSULATION_MASK]
    if flows[slot].icmp_mapped:
        flgs[out, 2] = flows[slot].icmp_mapped
    if is_tcp(flows, slot):
        write_tcp_flgs(sides, slot, flgs, out)
    elif appproto == f.APP_RTP:
        write_rtp_flgs(sides, slot, flgs, out)
    if flows[slot].fragments:
        flgs[out, 6] = 70  # 'F'
    flgs[out, 7] = option_codes[flows[slot].ip_options & 0x7F]


@njit(cache=True)
def port_at(slot_keys8, slot, pos):
    return (np.int64(slot_keys8[slot, pos]) << 8) | np.int64(slot_keys8[slot, pos + 1])


@njit(cache=True)
def write_sides(slot_keys8, flows, slot, records, addrs, out):
    """Write saddr, sport, daddr and dport, oriented from the flow's initiator."""
    first, second = ADDRESS_A, ADDRESS_B
    first_port, second_port = PORT_A, PORT_B
    if not flows[slot].src_is_a:
        first, second = ADDRESS_B, ADDRESS_A
        first_port, second_port = PORT_B, PORT_A
    for k in range(16):
        addrs[out, 0, k] = slot_keys8[slot, first + k]
        addrs[out, 1, k] = slot_keys8[slot, second + k]
    records[out, f.R_SPORT] = port_at(slot_keys8, slot, first_port)
    records[out, f.R_DPORT] = port_at(slot_keys8, slot, second_port)


@njit(cache=True)
def record_start(flows, sides, slot):
    """Return a record's start time as argus 3.0.8 prints it.

    A flow's first record starts at its earliest packet. A later (status) record starts
    at its source's first packet, or at the destination's when the source sent nothing.
    """
    if flows[slot].first_record:
        return flows[slot].stime
    if sides[slot, 0].pkts:
        return sides[slot, 0].start
    if sides[slot, 1].pkts:
        return sides[slot, 1].start
    return flows[slot].stime


@njit(cache=True)
def emit(slot, cause, slot_keys8, flows, sides, chunks, chunk_next, meta, records, addrs,
         rec_macs, flgs, rec_user, tables):
    """Append the current record of a flow to the output arrays."""
    icmp4_codes, unreachable_codes, icmp6_codes, encapsulation_codes, option_codes = tables
    out = meta[f.M_RECORDS]
    meta[f.M_RECORDS] += 1
    records[out, f.R_SEQ] = meta[f.M_NEXT_SEQ]
    meta[f.M_NEXT_SEQ] += 1
    records[out, f.R_STIME] = record_start(flows, sides, slot)
    records[out, f.R_LTIME] = flows[slot].ltime
    records[out, f.R_ETYPE] = flows[slot].etype
    records[out, f.R_PROTO] = flows[slot].proto
    records[out, f.R_VLAN] = flows[slot].vlan
    records[out, f.R_DIR] = flow_direction(flows, sides, slot)
    records[out, f.R_STATE] = flow_state(flows, sides, slot, icmp4_codes, unreachable_codes,
                                         icmp6_codes)
    records[out, f.R_CAUSE] = cause
    appproto = appproto_code(flows, sides, slot)
    records[out, f.R_APPPROTO] = appproto
    write_sides(slot_keys8, flows, slot, records, addrs, out)
    write_flgs(flows, sides, slot, appproto, encapsulation_codes, option_codes, flgs, out)
    for side in range(2):
        records[out, f.R_SPKTS + side] = sides[slot, side].pkts
        records[out, f.R_SBYTES + side] = sides[slot, side].bytes
        records[out, f.R_SAPPBYTES + side] = sides[slot, side].appbytes
        records[out, f.R_STTL + side] = sides[slot, side].ttl
        records[out, f.R_STOS + side] = sides[slot, side].tos
        records[out, f.R_SUSER_LEN + side] = copy_out(sides, slot, side, chunks, chunk_next,
                                                      rec_user, out)
        for k in range(6):
            rec_macs[out, side, k] = flows[slot].macs[side, k]
