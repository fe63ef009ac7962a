"""The compiled per-packet flow update over the columnar flow table.

``run`` walks a batch of decoded packets and stops when the caller must act: a
status tick is due, the record output is full or the slot arrays are full. The
argument tuples are built by ``FlowTable`` and ``FlowMeter``:

- packets: (fields, keys, keys8, role, ts_us, smac, dmac, buffer, quoted_keys, scratch)
- table: (index, hashes, slot_keys, slot_keys8, free, flows, sides, chunks, chunk_next, meta)
- out: (records, addrs, macs, flgs, user)
"""

from __future__ import annotations

import numpy as np

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
    P_UDP,
)
from appliance.flows import layout as f
from appliance.flows.hashtable import LOW_BITS, find, hash_key, insert, remove, unlink
from appliance.flows.keys import DNS_PENDING, DNS_TAGGED, EXTRA, PORT_A
from appliance.flows.record import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, emit, icmp_state_code
from appliance.flows.rtp import RTP_NONE, initial_state, start_record_rtp, update_rtp
from appliance.flows.tcp import reset_tcp, start_record_tcp, update_tcp_packet
from appliance.flows.userdata import append, chunks_free, release
from appliance.jit import njit

MICROSECONDS = 1_000_000
#: Idle timeouts in seconds (argus 3.0.8 compiled-in defaults).
TIMEOUT_TCP = 60
TIMEOUT_IP = 30
TIMEOUT_ICMP = 5
TIMEOUT_ARP = 5
TIMEOUT_OTHER = 30


@njit(cache=True, inline="always")
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
def start_record(table, slot, ts_us):
    flows, sides, chunks, chunk_next, meta = table[5], table[6], table[7], table[8], table[9]
    for side in range(2):
        sides[slot, side].pkts = 0
        sides[slot, side].bytes = 0
        sides[slot, side].appbytes = 0
        release(sides, slot, side, chunk_next, meta, chunks.shape[1])
    start_record_tcp(sides, slot)
    start_record_rtp(flows, sides, slot)
    flows[slot].stime = ts_us
    flows[slot].ltime = ts_us
    flows[slot].has_packets = 0


@njit(cache=True)
def new_flow(packets, table, row, slot, role):
    """Initialise a slot for the flow that the packet at ``row`` starts."""
    fields, _, keys8, _, ts_us, smac, dmac, _, _, _ = packets
    flows, sides, chunks, chunk_next, meta = table[5], table[6], table[7], table[8], table[9]
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
    flow = flows[slot]
    flow.etype = etype
    flow.proto = proto
    flow.version = fields[row, c.IP_VERSION]
    flow.src_is_a = src_is_a
    flow.vlan = fields[row, c.VLAN]
    flow.encaps = 0
    flow.first_record = 1
    flow.midstream = midstream
    flow.fragments = 0
    flow.icmp_mapped = 0
    flow.icmp_state = -1
    flow.syn_ack = 0
    flow.established = 0
    flow.icmp_type = keys8[row, PORT_A]
    flow.icmp_code = keys8[row, PORT_A + 1]
    flow.ip_ids[0] = 0
    flow.ip_ids[1] = 0
    flow.reverse_pending = reverse_pending
    flow.in_use = 1
    flow.ip_options = 0
    flow.transport_state = initial_state(etype, proto, fields[row, c.SPORT], fields[row, c.DPORT])
    flow.window_shift = 0
    reset_tcp(sides, slot)
    for side in range(2):
        release(sides, slot, side, chunk_next, meta, chunks.shape[1])
        record = sides[slot, side]
        record.ttl = 0
        record.tos = 0
        record.tcp_flags = 0
    sender = 0 if (role == 0) == src_is_a else 1
    for k in range(6):
        flow.macs[sender, k] = smac[row, k]
        flow.macs[1 - sender, k] = dmac[row, k]
    start_record(table, slot, ts_us[row])


@njit(cache=True)
def reverse(table, slot):
    """Swap source and destination: a flow first seen by its SYN-ACK got a reply."""
    flows, sides = table[5], table[6]
    flow = flows[slot]
    flow.src_is_a = 1 - flow.src_is_a
    flow.reverse_pending = 0
    swap_sides(sides, slot)
    flow.window_shift = ((flow.window_shift & 0xF) << 4) | (flow.window_shift >> 4)
    flow.ip_ids[0], flow.ip_ids[1] = flow.ip_ids[1], flow.ip_ids[0]
    for k in range(6):
        flow.macs[0, k], flow.macs[1, k] = flow.macs[1, k], flow.macs[0, k]


@njit(cache=True)
def swap_sides(sides, slot):
    """Exchange every field of a flow's two directions (user data moves with its chain)."""
    a, b = sides[slot, 0], sides[slot, 1]
    a.pkts, b.pkts = b.pkts, a.pkts
    a.start, b.start = b.start, a.start
    a.bytes, b.bytes = b.bytes, a.bytes
    a.appbytes, b.appbytes = b.appbytes, a.appbytes
    a.seq, b.seq = b.seq, a.seq
    a.ack, b.ack = b.ack, a.ack
    a.seq_base, b.seq_base = b.seq_base, a.seq_base
    a.window_bytes, b.window_bytes = b.window_bytes, a.window_bytes
    a.window, b.window = b.window, a.window
    a.user_head, b.user_head = b.user_head, a.user_head
    a.user_tail, b.user_tail = b.user_tail, a.user_tail
    a.user_len, b.user_len = b.user_len, a.user_len
    a.ttl, b.ttl = b.ttl, a.ttl
    a.tos, b.tos = b.tos, a.tos
    a.tcp_flags, b.tcp_flags = b.tcp_flags, a.tcp_flags
    a.tcp_status, b.tcp_status = b.tcp_status, a.tcp_status


@njit(cache=True, inline="always")
def update_tcp(packets, flows, sides, slot, side, row):
    fields = packets[0]
    flags = fields[row, c.TCP_FLAGS]
    sides[slot, side].tcp_flags |= flags
    window = fields[row, c.TCP_WINDOW]
    if window >= 0:
        ip_id = fields[row, c.IP_ID] if fields[row, c.IP_VERSION] == 4 else 0
        update_tcp_packet(flows, sides, slot, side, flags, fields[row, c.TCP_SEQ],
                          fields[row, c.TCP_ACK], window, fields[row, c.TCP_WSCALE],
                          fields[row, c.PAYLOAD_LEN], ip_id)
    if flags & TCP_SYN and flags & TCP_ACK:
        flows[slot].syn_ack = 1
    elif side == 0 and flags & TCP_ACK and flows[slot].syn_ack:
        flows[slot].established = 1


@njit(cache=True, inline="always")
def is_tcp_flow(flows, slot):
    etype = flows[slot].etype
    return flows[slot].proto == P_TCP and (etype == ET_IPV4 or etype == ET_IPV6)


@njit(cache=True, inline="always")
def update(packets, table, row, slot, role):
    """Count the packet at ``row`` into its flow."""
    # Indexing, not unpacking into "_": numba gives every "_" of an inlined function
    # one type, which fails for arrays of different types.
    fields, ts_us, buffer = packets[0], packets[4], packets[7]
    flows, sides, chunks, chunk_next, meta = table[5], table[6], table[7], table[8], table[9]
    flow = flows[slot]
    from_src = (role == 0) == (flow.src_is_a == 1)
    if flow.reverse_pending and not from_src:
        reverse(table, slot)
        from_src = True
    side = 0 if from_src else 1
    ts = ts_us[row]
    if not flow.has_packets:
        flow.has_packets = 1
        flow.stime = ts
        flow.ltime = ts
        flow.report_base = ts
    elif ts > flow.ltime:
        flow.ltime = ts
    elif ts < flow.stime:
        flow.stime = ts
    payload_len = fields[row, c.PAYLOAD_LEN]
    fragment = fields[row, c.FRAGMENT]
    record = sides[slot, side]
    if record.pkts == 0 or ts < record.start:
        record.start = ts
    record.pkts += 1
    record.bytes += fields[row, c.BYTES]
    record.ttl = fields[row, c.TTL]
    record.tos = fields[row, c.TOS]
    flow.encaps |= fields[row, c.ENCAPSULATION] & f.ENCAPSULATION_MASK
    flow.ip_options |= fields[row, c.IP_OPTIONS] & 0xFF
    if fragment != FRAG_WHOLE:
        flow.fragments = 1
    payload = fields[row, c.PAYLOAD_OFFSET]
    caplen = fields[row, c.PAYLOAD_CAPLEN]
    header = 0  # RTP header bytes that argus counts neither as payload nor as user data
    if fragment != FRAG_LATER and is_tcp_flow(flows, slot):
        update_tcp(packets, flows, sides, slot, side, row)
    elif flow.proto == P_UDP and flow.transport_state != RTP_NONE:
        header = update_rtp(flows, sides, slot, side, buffer, payload, caplen, payload_len,
                            fragment)
    record.appbytes += payload_len - header
    take = min(meta[f.M_USER_LIMIT] - np.int64(record.user_len), caplen - header)
    if take > 0:
        append(sides, slot, side, chunks, chunk_next, meta, buffer, payload + header, take)


@njit(cache=True)
def map_icmp_error(packets, table, row, tables):
    """Mark the flow an ICMP error quotes (flgs column 3) and extend its last time."""
    fields, _, _, _, ts_us, _, _, _, quoted_keys, scratch = packets
    flows = table[5]
    icmp4_codes, unreachable_codes, icmp6_codes, _, mapped4, mapped6, _ = tables
    slot, _, _ = find_flow(table, quoted_keys, quoted_keys.view(np.uint8), row, scratch)
    if slot < 0:
        return
    sport = fields[row, c.SPORT]
    icmp_type = sport >> 8
    version = fields[row, c.IP_VERSION]
    flow = flows[slot]
    flow.icmp_mapped = mapped6[icmp_type] if version == 6 else mapped4[icmp_type]
    flow.ltime = max(flow.ltime, ts_us[row])
    proto = flow.proto
    if proto == P_ICMP or proto == P_ICMPV6:
        flow.icmp_state = icmp_state_code(icmp_type, sport & 0xFF, version,
                                          icmp4_codes, unreachable_codes, icmp6_codes)


@njit(cache=True)
def finish(table, out, slot, cause, tables):
    """Emit a flow's current record if it counted any packet."""
    if table[5][slot].has_packets:
        emit_record(table, out, slot, cause, tables)


@njit(cache=True)
def emit_record(table, out, slot, cause, tables):
    _, _, _, slot_keys8, _, flows, sides, chunks, chunk_next, meta = table
    records, addrs, rec_macs, flgs, rec_user = out
    icmp4_codes, unreachable_codes, icmp6_codes, encapsulation_codes, _, _, option_codes = tables
    emit(slot, cause, slot_keys8, flows, sides, chunks, chunk_next, meta, records, addrs,
         rec_macs, flgs, rec_user,
         (icmp4_codes, unreachable_codes, icmp6_codes, encapsulation_codes, option_codes))


@njit(cache=True, inline="always")
def ends_record(packets, flows, sides, slot, row):
    """Tell whether the packet ends the flow's record before it is counted.

    A SYN without ACK, from either side, starts a TCP flow anew after a reset. After a
    FIN it does so only when the record carried no payload and the flow had seen a SYN
    before. A SYN after a connection that exchanged data and closed joins its flow, as
    in argus 3.0.8.

    NOTE: inferred from argus 3.0.8.2's records of crafted flows and of big10, not
    from its source. Whether it counts the payload of the record or of the flow is not
    known.
    """
    fields = packets[0]
    if not is_tcp_flow(flows, slot):
        return False
    if fields[row, c.TCP_FLAGS] & (TCP_SYN | TCP_ACK) != TCP_SYN:
        return False
    seen = sides[slot, 0].tcp_flags | sides[slot, 1].tcp_flags
    if seen & TCP_RST:
        return True
    if not seen & TCP_FIN or not seen & TCP_SYN:
        return False
    return sides[slot, 0].appbytes == 0 and sides[slot, 1].appbytes == 0


@njit(cache=True, inline="always")
def timed_out(flows, slot, before):
    """Tell whether a reported flow was idle for its timeout by the previous packet.

    argus checks its flows for idle timeouts as packets arrive, so a flow can time out
    between two status ticks. Its next packet then starts a new flow.
    """
    flow = flows[slot]
    return not flow.has_packets and before - flow.ltime >= flow_timeout(flow.etype, flow.proto)


@njit(cache=True, inline="always")
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
    for k in range(keys.shape[1]):
        scratch[0, k] = keys[row, k]
    pending = scratch.view(np.uint8)
    pending[0, EXTRA] = DNS_PENDING
    pending[0, EXTRA + 2] = 0
    pending[0, EXTRA + 3] = 0
    h = hash_key(scratch, 0)
    slot, bucket = find(index, hashes, slot_keys, scratch, 0, h)
    return slot, h, bucket


@njit(cache=True, inline="always")
def settle_dns(table, slot, keys, row):
    """Key a pending DNS flow by the transaction id of its first answer."""
    index, hashes, slot_keys, slot_keys8, sides = table[0], table[1], table[2], table[3], table[6]
    if slot_keys8[slot, EXTRA] != DNS_PENDING or sides[slot, 1].pkts == 0:
        return
    unlink(index, hashes, slot)
    h = hash_key(keys, row)
    bucket = find(index, hashes, slot_keys, keys, row, h)[1]
    for k in range(slot_keys.shape[1]):
        slot_keys[slot, k] = keys[row, k]
    hashes[slot] = h & LOW_BITS
    index[bucket] = slot


@njit(cache=True)
def run(start, packets, table, out, tables):
    """Count packets from row ``start`` on; return (RUN_* reason, row to resume at)."""
    fields, keys, keys8, role, ts_us, _, _, _, _, scratch = packets
    index, hashes, slot_keys, _, free, flows, sides, chunks, chunk_next, meta = table
    records = out[0]
    size = chunks.shape[1]
    chunks_per_packet = (meta[f.M_USER_LIMIT] + size - 1) // size
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
        if chunks_free(meta, len(chunk_next)) < chunks_per_packet:
            return f.RUN_GROW_USER, row
        slot, h, bucket = find_flow(table, keys, keys8, row, scratch)
        sender = role[row]
        if slot >= 0 and ends_record(packets, flows, sides, slot, row):
            flows[slot].ltime = max(flows[slot].ltime, ts)  # ends at the new SYN
            finish(table, out, slot, f.CAUSE_CLOSE, tables)
            new_flow(packets, table, row, slot, sender)
        elif slot >= 0 and timed_out(flows, slot, ts_us[row - 1] if row else ts):
            new_flow(packets, table, row, slot, sender)
        elif slot >= 0 and flows[slot].has_packets and ts - flows[slot].report_base >= interval:
            # argus reports a record that is one interval old before counting the packet,
            # whether or not a status tick came between.
            report(table, out, slot, flows[slot].ltime, tables)
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

    As in argus 3.0.8, a flow's record is reported once it is at least one interval
    old. Only a flow whose record has been reported can time out, and it is closed
    when it stays idle for its protocol's timeout after the report. Returns the slot
    to resume at when the record output filled up, else -1.

    NOTE: argus checks its flows only as packets arrive, so during a silence in a file
    it runs no check. The ticks of such a silence can report and time out a flow here
    that argus continues when its next packet comes.
    """
    index, hashes, _, _, free, flows, sides, chunks, chunk_next, meta = table
    records = out[0]
    interval = meta[f.M_INTERVAL]
    for slot in range(cursor, meta[f.M_HIGH_WATER]):
        flow = flows[slot]
        if not flow.in_use:
            continue
        if meta[f.M_RECORDS] >= len(records):
            return slot
        if closing or (not flow.has_packets
                       and now - flow.ltime >= flow_timeout(flow.etype, flow.proto)):
            finish(table, out, slot, f.CAUSE_CLOSE, tables)
            flow.in_use = 0
            for side in range(2):
                release(sides, slot, side, chunk_next, meta, chunks.shape[1])
            remove(index, hashes, free, meta, slot)
        elif flow.has_packets and now - flow.report_base >= interval:
            # argus reports the record about one interval after its first packet, and
            # the flow's idle time counts from that report.
            report(table, out, slot, max(flow.ltime, flow.report_base + interval), tables)
    return -1


@njit(cache=True)
def report(table, out, slot, idle_since, tables):
    """Emit a flow's record as a status report and start its next, empty record.

    The flow counts as idle from ``idle_since`` until its next packet.
    """
    flow = table[5][slot]
    cause = f.CAUSE_START if flow.first_record else f.CAUSE_STATUS
    finish(table, out, slot, cause, tables)
    flow.first_record = 0
    start_record(table, slot, idle_since)
