"""The compiled per-packet flow update over the columnar flow table.

``run`` walks a batch of decoded packets and stops when the caller must act: a
status tick is due, the record output is full or the slot arrays are full. The
argument tuples are built by ``FlowTable`` and ``FlowMeter``:

- packets: (fields, keys, keys8, role, ts_us, smac, dmac, buffer, quoted_keys, scratch)
- table: (index, hashes, slot_keys, slot_keys8, free, state, sides, macs, user, meta)
- out: (records, addrs, macs, flgs, user)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from appliance.decode import columns as c
from appliance.decode.constants import (
    ET_ARP,
    ET_IPV4,
    ET_IPV6,
    FRAG_LATER,
    FRAG_WHOLE,
    M_NONE,
    P_ICMP,
    P_ICMPV6,
    P_TCP,
)
from appliance.flows import layout as f
from appliance.flows.hashtable import find, hash_key, insert, remove, unlink
from appliance.flows.keys import DNS_PENDING, DNS_TAGGED, EXTRA, PORT_A
from appliance.flows.record import TCP_ACK, TCP_RST, TCP_SYN, emit, icmp_state_code

SEQUENCE_MASK = 0xFFFFFFFF
HALF_SEQUENCE_SPACE = 1 << 31
MICROSECONDS = 1_000_000
#: Idle timeouts in seconds (argus 3.0.8 compiled-in defaults).
TIMEOUT_TCP = 60
TIMEOUT_IP = 30
TIMEOUT_ICMP = 5
TIMEOUT_ARP = 5
TIMEOUT_OTHER = 30


@njit(cache=True)
def flow_timeout(etype, proto):
    """Return the idle timeout in microseconds for a flow of this ethertype and protocol."""
    if etype == ET_ARP:
        return TIMEOUT_ARP * MICROSECONDS
    if etype != ET_IPV4 and etype != ET_IPV6:
        return TIMEOUT_OTHER * MICROSECONDS
    if proto == P_TCP:
        return TIMEOUT_TCP * MICROSECONDS
    if proto == P_ICMP or proto == P_ICMPV6:
        return TIMEOUT_ICMP * MICROSECONDS
    return TIMEOUT_IP * MICROSECONDS


@njit(cache=True)
def start_record(state, sides, slot, ts_us):
    for side in range(2):
        sides[slot, side, f.PKTS] = 0
        sides[slot, side, f.BYTES] = 0
        sides[slot, side, f.APPBYTES] = 0
        sides[slot, side, f.USER_LEN] = 0
    state[slot, f.STIME] = ts_us
    state[slot, f.LTIME] = ts_us
    state[slot, f.HAS_PACKETS] = 0


@njit(cache=True)
def new_flow(packets, table, row, slot, role):
    """Initialise a slot for the flow that the packet at ``row`` starts."""
    fields, _, keys8, _, ts_us, smac, dmac, _, _, _ = packets
    state, sides, macs = table[5], table[6], table[7]
    etype = fields[row, c.ETYPE]
    proto = fields[row, c.PROTO]
    flags = fields[row, c.TCP_FLAGS]
    is_ip = etype == ET_IPV4 or etype == ET_IPV6
    src_is_a = role == 0
    midstream = 0
    reverse_pending = 0
    if is_ip and proto == P_TCP and fields[row, c.FRAGMENT] != FRAG_LATER:
        if flags & TCP_SYN and flags & TCP_ACK:
            reverse_pending = 1
        elif not flags & TCP_SYN:
            midstream = 1
    elif (is_ip and (proto == P_ICMP or proto == P_ICMPV6)) or not is_ip:
        # ICMP queries and ARP put the requester on side A; other frames the lower MAC.
        src_is_a = True
    if not is_ip:
        proto = 0
    for k in range(f.FLOW_COLUMNS):
        state[slot, k] = 0
    for side in range(2):
        for k in range(f.SIDE_COLUMNS):
            sides[slot, side, k] = 0
        sides[slot, side, f.NEXT_SEQ] = -1
        sides[slot, side, f.SYN_SEQ] = -1
    state[slot, f.ETYPE] = etype
    state[slot, f.PROTO] = proto
    state[slot, f.VERSION] = fields[row, c.IP_VERSION]
    state[slot, f.SRC_IS_A] = src_is_a
    state[slot, f.VLAN] = fields[row, c.VLAN]
    state[slot, f.FIRST_RECORD] = 1
    state[slot, f.MIDSTREAM] = midstream
    state[slot, f.REVERSE_PENDING] = reverse_pending
    state[slot, f.ICMP_STATE] = -1
    state[slot, f.ICMP_TYPE] = keys8[row, PORT_A]
    state[slot, f.ICMP_CODE] = keys8[row, PORT_A + 1]
    state[slot, f.TIMEOUT] = flow_timeout(etype, proto)
    state[slot, f.IN_USE] = 1
    sender = 0 if (role == 0) == src_is_a else 1
    for k in range(6):
        macs[slot, sender, k] = smac[row, k]
        macs[slot, 1 - sender, k] = dmac[row, k]
    start_record(state, sides, slot, ts_us[row])


@njit(cache=True)
def reverse(table, slot):
    """Swap source and destination: a flow first seen by its SYN-ACK got a reply."""
    state, sides, macs, user = table[5], table[6], table[7], table[8]
    state[slot, f.SRC_IS_A] = 1 - state[slot, f.SRC_IS_A]
    state[slot, f.REVERSE_PENDING] = 0
    for k in range(f.SIDE_COLUMNS):
        sides[slot, 0, k], sides[slot, 1, k] = sides[slot, 1, k], sides[slot, 0, k]
    for k in range(6):
        macs[slot, 0, k], macs[slot, 1, k] = macs[slot, 1, k], macs[slot, 0, k]
    for k in range(user.shape[2]):
        user[slot, 0, k], user[slot, 1, k] = user[slot, 1, k], user[slot, 0, k]


@njit(cache=True)
def track_sequence(sides, slot, side, flags, seq, payload_len):
    """Mark a retransmission: a repeated SYN, or payload that ends at or before data seen.

    NOTE: argus 3.0.8 flags fewer data retransmissions than this rule does (it left
    a server's repeated 714-byte segment unflagged), so flgs column 4 can differ.
    """
    if flags & TCP_SYN:
        if sides[slot, side, f.SYN_SEQ] == seq:
            sides[slot, side, f.RETRANSMITTED] = 1
        sides[slot, side, f.SYN_SEQ] = seq
        sides[slot, side, f.NEXT_SEQ] = (seq + 1) & SEQUENCE_MASK
        return
    if payload_len <= 0:
        return
    end = (seq + payload_len) & SEQUENCE_MASK
    next_seq = sides[slot, side, f.NEXT_SEQ]
    if payload_len == 1 and end == next_seq:
        return  # a keepalive probe repeats the last byte on purpose
    if next_seq >= 0:
        distance = (end - next_seq) & SEQUENCE_MASK
        if not 0 < distance < HALF_SEQUENCE_SPACE:
            sides[slot, side, f.RETRANSMITTED] = 1
            return
    sides[slot, side, f.NEXT_SEQ] = end


@njit(cache=True)
def update_tcp(state, sides, slot, side, flags, seq, payload_len):
    sides[slot, side, f.TCP_FLAGS] |= flags
    track_sequence(sides, slot, side, flags, seq, payload_len)
    if flags & TCP_SYN and flags & TCP_ACK:
        state[slot, f.SYN_ACK] = 1
    elif side == 0 and flags & TCP_ACK and state[slot, f.SYN_ACK]:
        state[slot, f.ESTABLISHED] = 1


@njit(cache=True)
def is_tcp_flow(state, slot):
    etype = state[slot, f.ETYPE]
    return state[slot, f.PROTO] == P_TCP and (etype == ET_IPV4 or etype == ET_IPV6)


@njit(cache=True)
def update(packets, table, row, slot, role):
    """Count the packet at ``row`` into its flow."""
    fields, _, _, _, ts_us, _, _, buffer, _, _ = packets
    state, sides, user = table[5], table[6], table[8]
    from_src = (role == 0) == (state[slot, f.SRC_IS_A] == 1)
    if state[slot, f.REVERSE_PENDING] and not from_src:
        reverse(table, slot)
        from_src = True
    side = 0 if from_src else 1
    ts = ts_us[row]
    if not state[slot, f.HAS_PACKETS]:
        state[slot, f.HAS_PACKETS] = 1
        state[slot, f.STIME] = ts
        state[slot, f.LTIME] = ts
    elif ts > state[slot, f.LTIME]:
        state[slot, f.LTIME] = ts
    elif ts < state[slot, f.STIME]:
        state[slot, f.STIME] = ts
    payload_len = fields[row, c.PAYLOAD_LEN]
    fragment = fields[row, c.FRAGMENT]
    sides[slot, side, f.PKTS] += 1
    sides[slot, side, f.BYTES] += fields[row, c.BYTES]
    sides[slot, side, f.APPBYTES] += payload_len
    sides[slot, side, f.TTL] = fields[row, c.TTL]
    sides[slot, side, f.TOS] = fields[row, c.TOS]
    state[slot, f.ENCAPS] |= fields[row, c.ENCAPSULATION]
    state[slot, f.IP_OPTIONS] |= fields[row, c.IP_OPTIONS]
    if fragment != FRAG_WHOLE:
        state[slot, f.FRAGMENTS] = 1
    if fragment != FRAG_LATER and is_tcp_flow(state, slot):
        update_tcp(state, sides, slot, side, fields[row, c.TCP_FLAGS], fields[row, c.TCP_SEQ],
                   payload_len)
    have = sides[slot, side, f.USER_LEN]
    take = min(user.shape[2] - have, fields[row, c.PAYLOAD_CAPLEN])
    if take > 0:
        offset = fields[row, c.PAYLOAD_OFFSET]
        for k in range(take):
            user[slot, side, have + k] = buffer[offset + k]
        sides[slot, side, f.USER_LEN] = have + take


@njit(cache=True)
def map_icmp_error(packets, table, row, tables):
    """Mark the flow an ICMP error quotes (flgs column 3) and extend its last time."""
    fields, _, _, _, ts_us, _, _, _, quoted_keys, scratch = packets
    state = table[5]
    icmp4_codes, unreachable_codes, icmp6_codes, _, mapped4, mapped6, _ = tables
    slot, _, _ = find_flow(table, quoted_keys, quoted_keys.view(np.uint8), row, scratch)
    if slot < 0:
        return
    sport = fields[row, c.SPORT]
    icmp_type = sport >> 8
    version = fields[row, c.IP_VERSION]
    state[slot, f.ICMP_MAPPED] = mapped6[icmp_type] if version == 6 else mapped4[icmp_type]
    state[slot, f.LTIME] = max(state[slot, f.LTIME], ts_us[row])
    proto = state[slot, f.PROTO]
    if proto == P_ICMP or proto == P_ICMPV6:
        state[slot, f.ICMP_STATE] = icmp_state_code(icmp_type, sport & 0xFF, version,
                                                    icmp4_codes, unreachable_codes, icmp6_codes)


@njit(cache=True)
def finish(table, out, slot, cause, tables):
    """Emit a flow's current record if it counted any packet."""
    state = table[5]
    if state[slot, f.HAS_PACKETS]:
        emit_record(table, out, slot, cause, tables)


@njit(cache=True)
def emit_record(table, out, slot, cause, tables):
    _, _, _, slot_keys8, _, state, sides, macs, user, meta = table
    records, addrs, rec_macs, flgs, rec_user = out
    icmp4_codes, unreachable_codes, icmp6_codes, encapsulation_codes, _, _, option_codes = tables
    emit(slot, cause, slot_keys8, state, sides, macs, user, meta, records, addrs, rec_macs,
         flgs, rec_user,
         (icmp4_codes, unreachable_codes, icmp6_codes, encapsulation_codes, option_codes))


@njit(cache=True)
def ends_record(packets, state, sides, slot, row):
    """Tell whether the packet ends the flow's record before it is counted.

    A SYN from the initiator of a reset TCP flow starts the flow anew. argus 3.0.8
    does so after a reset, not after FINs: a SYN on a finished connection joins it.

    NOTE: inferred from argus's records of the corpus and of big10 (a SYN 3 s after a
    reset split, SYNs after FINs joined); argus may also weigh the time since the close.
    """
    fields, role = packets[0], packets[3]
    if not is_tcp_flow(state, slot) or (role[row] == 0) != (state[slot, f.SRC_IS_A] == 1):
        return False
    if fields[row, c.TCP_FLAGS] & (TCP_SYN | TCP_ACK) != TCP_SYN:
        return False
    seen = sides[slot, 0, f.TCP_FLAGS] | sides[slot, 1, f.TCP_FLAGS]
    return (seen & TCP_RST) != 0


@njit(cache=True)
def find_flow(table, keys, keys8, row, scratch):
    """Look a packet's flow up; return (slot or -1, hash, bucket) for the key to insert.

    A DNS packet whose transaction id keys no flow joins the flow still waiting for
    its first answer; a new DNS flow waits under the DNS_PENDING key.

    NOTE: this rule reproduces argus 3.0.8 on every corpus capture and on big10, where
    repeated queries with one id join across copies; argus's own rule may differ.
    """
    index, hashes, slot_keys = table[0], table[1], table[2]
    h = hash_key(keys, row)
    slot, bucket = find(index, hashes, slot_keys, keys, row, h)
    if slot >= 0 or keys8[row, EXTRA] != DNS_TAGGED:
        return slot, h, bucket
    scratch[0, :] = keys[row, :]
    pending = scratch.view(np.uint8)
    pending[0, EXTRA] = DNS_PENDING
    pending[0, EXTRA + 2] = 0
    pending[0, EXTRA + 3] = 0
    h = hash_key(scratch, 0)
    slot, bucket = find(index, hashes, slot_keys, scratch, 0, h)
    return slot, h, bucket


@njit(cache=True)
def settle_dns(table, slot, keys, row):
    """Key a pending DNS flow by the transaction id of its first answer."""
    index, hashes, slot_keys, slot_keys8, _, _, sides = table[:7]
    if slot_keys8[slot, EXTRA] != DNS_PENDING or sides[slot, 1, f.PKTS] == 0:
        return
    unlink(index, hashes, slot)
    h = hash_key(keys, row)
    _, bucket = find(index, hashes, slot_keys, keys, row, h)
    for k in range(slot_keys.shape[1]):
        slot_keys[slot, k] = keys[row, k]
    hashes[slot] = h
    index[bucket] = slot


@njit(cache=True)
def run(start, packets, table, out, tables):
    """Count packets from row ``start`` on; return (RUN_* reason, row to resume at)."""
    fields, keys, keys8, role, ts_us, _, _, _, _, scratch = packets
    index, hashes, slot_keys, _, free, state, sides, _, _, meta = table
    records = out[0]
    for row in range(start, len(fields)):
        if fields[row, c.MALFORMED] != M_NONE:
            continue
        ts = ts_us[row]
        interval = meta[f.M_INTERVAL]
        if meta[f.M_NEXT_TICK] < 0:
            meta[f.M_NEXT_TICK] = (ts // interval + 1) * interval
        if ts >= meta[f.M_NEXT_TICK]:
            return f.RUN_TICK, row
        if meta[f.M_RECORDS] >= len(records):
            return f.RUN_FULL, row
        if meta[f.M_ACTIVE] >= len(hashes):
            return f.RUN_GROW, row
        slot, h, bucket = find_flow(table, keys, keys8, row, scratch)
        sender = role[row]
        if slot >= 0 and ends_record(packets, state, sides, slot, row):
            state[slot, f.LTIME] = max(state[slot, f.LTIME], ts)  # ends at the new SYN
            finish(table, out, slot, f.CAUSE_CLOSE, tables)
            new_flow(packets, table, row, slot, sender)
        elif slot < 0:
            if keys8[row, EXTRA] == DNS_TAGGED:
                slot = insert(index, hashes, slot_keys, free, meta, scratch, 0, h, bucket)
            else:
                slot = insert(index, hashes, slot_keys, free, meta, keys, row, h, bucket)
            new_flow(packets, table, row, slot, sender)
        update(packets, table, row, slot, sender)
        settle_dns(table, slot, keys, row)
        if fields[row, c.QUOTED]:
            map_icmp_error(packets, table, row, tables)
    return f.RUN_DONE, len(fields)


@njit(cache=True)
def tick(now, cursor, closing, table, out, tables):
    """Run a status tick (or, with ``closing``, close every flow) from slot ``cursor`` on.

    At a tick a flow idle for its timeout is closed, and an active flow whose
    record is at least one interval old is reported. Returns the slot to resume
    at when the record output filled up, else -1.
    """
    index, hashes, _, _, free, state, sides, _, _, meta = table
    records = out[0]
    interval = meta[f.M_INTERVAL]
    for slot in range(cursor, meta[f.M_HIGH_WATER]):
        if not state[slot, f.IN_USE]:
            continue
        if meta[f.M_RECORDS] >= len(records):
            return slot
        if closing or now - state[slot, f.LTIME] >= state[slot, f.TIMEOUT]:
            finish(table, out, slot, f.CAUSE_CLOSE, tables)
            state[slot, f.IN_USE] = 0
            remove(index, hashes, free, meta, slot)
        elif state[slot, f.HAS_PACKETS] and now - state[slot, f.STIME] >= interval:
            cause = f.CAUSE_START if state[slot, f.FIRST_RECORD] else f.CAUSE_STATUS
            finish(table, out, slot, cause, tables)
            state[slot, f.FIRST_RECORD] = 0
            start_record(state, sides, slot, state[slot, f.LTIME])
    return -1
