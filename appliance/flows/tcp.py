"""TCP tracking for flgs columns 4-6: retransmission, out-of-order data, gaps, zero windows, ECN.

The rules reproduce argus 3.0.8's server (ArgusTcp.c: ArgusUpdateTCPState,
ArgusUpdateTCPSequence, ArgusUpdateTCPStateMachine), including its quirks: sequence
numbers are compared as plain unsigned 32-bit integers, not modulo 2**32, and the
retransmission test shifts the window right by its scale. Each direction keeps the
fields of SIDE_DTYPE; the connection state and the window-scale shifts live in the
flow row.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from appliance.flows import layout as f
from appliance.flows.names import TcpFlag
from appliance.jit import njit

MASK = 0xFFFFFFFF
SYN = int(TcpFlag.SYN)
ACK = int(TcpFlag.ACK)
FIN = int(TcpFlag.FIN)
RST = int(TcpFlag.RST)
PSH = int(TcpFlag.PSH)
URG = int(TcpFlag.URG)
ECE = int(TcpFlag.ECE)
CWR = int(TcpFlag.CWR)


class TcpState(IntEnum):
    """Connection states of argus's TCP state machine (BSD tcp_fsm.h names)."""

    NONE = 0  # no TCP packet counted yet
    LISTEN = 1  # the flow started with a reset
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    CLOSE_WAIT = 5
    FIN_WAIT_1 = 6
    CLOSING = 7
    LAST_ACK = 8
    FIN_WAIT_2 = 9
    TIME_WAIT = 10
    CLOSED = 11


S_NONE = int(TcpState.NONE)
S_LISTEN = int(TcpState.LISTEN)
S_SYN_SENT = int(TcpState.SYN_SENT)
S_SYN_RECEIVED = int(TcpState.SYN_RECEIVED)
S_ESTABLISHED = int(TcpState.ESTABLISHED)
S_CLOSE_WAIT = int(TcpState.CLOSE_WAIT)
S_FIN_WAIT_1 = int(TcpState.FIN_WAIT_1)
S_CLOSING = int(TcpState.CLOSING)
S_LAST_ACK = int(TcpState.LAST_ACK)
S_FIN_WAIT_2 = int(TcpState.FIN_WAIT_2)
S_TIME_WAIT = int(TcpState.TIME_WAIT)
S_CLOSED = int(TcpState.CLOSED)

#: A segment less than this far below the previous segment's IPv4 identification was
#: reordered. argus 3.0.8.2 flags 19 below and not 20 (measured on crafted captures).
REORDER_ID_DISTANCE = 20
RETRANSMITTED = f.TS_RETRANSMITTED
OUT_OF_ORDER = f.TS_OUT_OF_ORDER


@njit(cache=True)
def window_shift(flows, slot, side):
    return (flows[slot].window_shift >> (4 * side)) & 0xF


@njit(cache=True)
def set_window_shift(flows, slot, side, shift):
    keep = flows[slot].window_shift & (0xF0 >> (4 * side))
    flows[slot].window_shift = keep | ((shift & 0xF) << (4 * side))


@njit(cache=True)
def reset_tcp(sides, slot):
    """Clear both directions' TCP fields for a new flow."""
    for side in range(2):
        record = sides[slot, side]
        record.seq = 0
        record.ack = 0
        record.seq_base = 0
        record.window_bytes = 0
        record.window = 0
        record.tcp_status = 0


@njit(cache=True)
def start_record_tcp(sides, slot):
    """Start a record's TCP indicators afresh; the sequence state carries over.

    argus 3.0.8 reports a retransmission only in the status record of the interval
    it happened in. The gap restarts at zero because each record counts its own bytes.
    NOTE: observed for retransmissions; that zero windows and ECE marks also reset
    per record is assumed.
    """
    for side in range(2):
        record = sides[slot, side]
        record.tcp_status &= ~f.TS_RECORD_BITS & 0xFF
        if record.tcp_status & f.TS_BASE_SET:
            record.seq_base = (record.seq - 1) & MASK


@njit(cache=True)
def sequence_gap(sides, slot, side):
    """Return the sequence numbers a direction skipped: its span minus the bytes counted."""
    record = sides[slot, side]
    if not record.tcp_status & f.TS_BASE_SET:
        return 0
    gap = (record.seq - record.seq_base - 1) & MASK
    return gap if gap < (1 << 31) else 0


@njit(cache=True)
def first_packet(flows, sides, slot, side, flags, seq, ack, window, length):
    """Set up the TCP state from the packet that created the flow."""
    src = sides[slot, side]
    dst = sides[slot, 1 - side]
    src.seq_base = length

    if flags & RST:
        flows[slot].transport_state = S_LISTEN
        if seq:
            set_base(src, (seq - 1) & MASK)
            src.seq = (seq + length) & MASK
        else:
            set_base(src, (ack - 1) & MASK)
            src.seq = (ack - 1) & MASK
        dst.ack = (ack - 1) & MASK
        return

    kind = flags & (SYN | ACK | FIN | PSH | URG)
    if kind == SYN:
        flows[slot].transport_state = S_SYN_SENT
        set_base(src, seq)
        src.seq = seq
        src.window = window
        if flags & (ECE | CWR) == ECE | CWR:
            src.tcp_status |= f.TS_ECN_CAPABLE
        return
    if kind == SYN | ACK:
        flows[slot].transport_state = S_SYN_RECEIVED
        set_base(src, seq)
        src.seq = seq
        src.window = window
        dst.ack = (ack - 1) & MASK
        if flags & (ECE | CWR) == ECE:
            src.tcp_status |= f.TS_ECN_CAPABLE
        return

    if kind & ACK and not kind & (SYN | FIN):
        dst.ack = (ack - 1) & MASK
    if kind & FIN and not kind & (SYN | PSH | URG):
        flows[slot].transport_state = S_FIN_WAIT_1
    elif kind == 0 or kind & SYN or (kind & FIN and kind & (PSH | URG)):
        # argus 3.0.8 files other flag combinations under "closing".
        flows[slot].transport_state = S_CLOSING
    else:
        flows[slot].transport_state = S_ESTABLISHED
    set_base(src, (seq - 1) & MASK)
    src.seq = (seq + length) & MASK
    src.window = window


@njit(cache=True)
def set_base(record, seqbase):
    """Store the first sequence number; ``seq_base`` held the bytes counted so far."""
    record.seq_base = (record.seq_base + seqbase) & MASK
    if seqbase:
        record.tcp_status |= f.TS_BASE_SET


@njit(cache=True, inline="always")
def update_tcp_packet(flows, sides, slot, side, flags, seq, ack, window, wscale, length, ip_id):
    """Track one TCP packet whose header was captured (flgs columns 4-6)."""
    if wscale >= 0:
        set_window_shift(flows, slot, side, wscale)
    state = flows[slot].transport_state
    if state == S_NONE:
        first_packet(flows, sides, slot, side, flags, seq, ack, window, length)
        return
    if state == S_LISTEN:
        return  # argus 3.0.8 tracks nothing more after a flow that started with a reset
    src = sides[slot, side]
    capable = (src.tcp_status | sides[slot, 1 - side].tcp_status) & f.TS_ECN_CAPABLE
    if capable and flags & ECE and flags & ACK:
        src.tcp_status |= f.TS_CONGESTED
    if flags != SYN:
        update_sequence(flows, sides, slot, side, flags, seq, ack, window, length, ip_id)
    update_state(flows, sides, slot, side, flags, seq, length)


@njit(cache=True)
def update_sequence(flows, sides, slot, side, flags, seq, ack, window, length, ip_id):
    """Follow argus's ArgusUpdateTCPSequence for a packet other than a bare SYN."""
    src = sides[slot, side]
    dst = sides[slot, 1 - side]
    if window == 0 and not flags & (FIN | RST):
        src.tcp_status |= f.TS_WINDOW_SHUT
    elif not flags & (FIN | RST):
        src.window = window
    if length and dst.window != 0:
        src.seq_base = (src.seq_base + length) & MASK
        if src.tcp_flags & FIN:
            if seq < src.seq:
                src.tcp_status |= RETRANSMITTED
            elif not flags & FIN:
                src.tcp_status |= OUT_OF_ORDER
        if not flags & SYN:
            src.window_bytes = (src.window_bytes + length) & MASK
    end = (seq + length) & MASK
    if end < seq:
        # The sequence number wrapped: argus restarts the span here.
        # NOTE: argus also adds the old span to a rollover counter that this code
        # does not keep, so a gap across a wrap may differ from argus's.
        src.seq_base = (src.seq_base + end - src.seq) & MASK
        src.seq = end
    elif not src.tcp_status & f.TS_BASE_SET:
        set_base(src, seq)
        src.seq = end
    elif length:
        if dst.window != 0:
            check_data(flows, sides, slot, side, seq, end, length, ip_id)
        flows[slot].ip_ids[side] = ip_id
    if ack and flags & ACK:
        update_ack(src, dst, flags, ack)


@njit(cache=True)
def check_data(flows, sides, slot, side, seq, end, length, ip_id):
    """Mark data sent again or out of order, as argus's sequence checks do.

    A segment whose IPv4 identification is slightly below that of the previous data
    segment in its direction counts as reordered in the network, not as sent again.
    """
    src = sides[slot, side]
    dst = sides[slot, 1 - side]
    if seq < dst.ack:
        limit = src.window >> window_shift(flows, slot, side)
        if ((dst.ack - seq) & MASK) < limit:
            src.tcp_status |= RETRANSMITTED
            src.window_bytes = (src.window_bytes - length) & MASK
        return
    highest = end if end > src.seq else src.seq
    if src.window:
        previous_id = np.int64(flows[slot].ip_ids[side])
        if -REORDER_ID_DISTANCE < ip_id - previous_id < 0:
            src.tcp_status |= OUT_OF_ORDER
        elif src.window_bytes > ((highest - 1 - dst.ack) & MASK):
            src.tcp_status |= RETRANSMITTED
            src.window_bytes = (src.window_bytes - length) & MASK
        elif end < src.seq:
            if seq == ((dst.ack + 1) & MASK):
                src.tcp_status |= RETRANSMITTED
                src.window_bytes = (src.window_bytes - length) & MASK
            else:
                src.tcp_status |= OUT_OF_ORDER
    src.seq = highest


@njit(cache=True)
def update_ack(src, dst, flags, ack):
    """Move the acknowledged point and the other direction's unacknowledged bytes."""
    acked = (ack - 1) & MASK
    if src.ack and dst.seq > src.ack:
        dst.window_bytes = (dst.seq - 1 - src.ack) & MASK
    if src.ack == acked:
        return
    if not src.ack or dst.seq == ack:
        dst.window_bytes = 0
    elif not flags & SYN:
        advance = (acked - src.ack) & MASK
        dst.window_bytes = (dst.window_bytes - min(dst.window_bytes, advance)) & MASK
    src.ack = acked


@njit(cache=True)
def update_state(flows, sides, slot, side, flags, seq, length):
    """Follow argus's ArgusUpdateTCPStateMachine; it marks repeated SYNs and FINs."""
    src = sides[slot, side]
    dst = sides[slot, 1 - side]
    state = flows[slot].transport_state
    if flags & RST:
        if state == S_SYN_SENT:
            if dst.seq != src.ack:
                flows[slot].transport_state = S_CLOSING
            return
        limit = src.window >> window_shift(flows, slot, side)
        inside = seq >= src.ack and seq < ((src.ack + limit) & MASK)
        flows[slot].transport_state = S_CLOSED if inside else S_CLOSING
        return
    if state == S_SYN_SENT:
        if flags == SYN:
            src.tcp_status |= RETRANSMITTED
        elif flags == SYN | ACK:
            flows[slot].transport_state = S_SYN_RECEIVED
        elif flags & FIN:
            flows[slot].transport_state = S_FIN_WAIT_1
        elif flags & ACK:
            flows[slot].transport_state = S_ESTABLISHED
    elif state == S_SYN_RECEIVED:
        if flags & FIN:
            flows[slot].transport_state = S_FIN_WAIT_1
        elif flags & SYN:
            src.tcp_status |= RETRANSMITTED
        elif flags & ACK:
            flows[slot].transport_state = S_ESTABLISHED
    elif state == S_ESTABLISHED:
        if flags & FIN:
            flows[slot].transport_state = S_FIN_WAIT_1
        elif flags & SYN:
            src.tcp_status |= RETRANSMITTED
    elif state in (S_CLOSE_WAIT, S_FIN_WAIT_1, S_LAST_ACK, S_FIN_WAIT_2):
        closing_packet(flows, sides, slot, side, flags, length)
    elif state in (S_CLOSING, S_TIME_WAIT):
        if flags & ACK and src.seq == src.ack and dst.seq == src.ack:
            flows[slot].transport_state = S_CLOSED


@njit(cache=True)
def closing_packet(flows, sides, slot, side, flags, length):
    """Handle a packet after a FIN: a FIN sent again, or the ACK of the other side's FIN."""
    src = sides[slot, side]
    dst = sides[slot, 1 - side]
    state = flows[slot].transport_state
    if (state == S_CLOSE_WAIT or state == S_FIN_WAIT_1) and flags & SYN and not flags & ACK:
        return  # argus starts a new flow here; FlowTable's rules decide that
    if flags & FIN and not flags & ACK and dst.tcp_status & f.TS_FIN_ACKED:
        src.tcp_status |= RETRANSMITTED
    if flags & ACK and not length and dst.tcp_flags & FIN and dst.seq == src.ack:
        flows[slot].transport_state = S_FIN_WAIT_2
        dst.tcp_status |= f.TS_FIN_ACKED
