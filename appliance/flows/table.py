"""The flow table: decoded packets in, finished flow records out."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyarrow as pa

from appliance.decode import DecodedBatch, decode_batch
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
from appliance.flows import names
from appliance.flows.emit import rows_to_batch, snapshot
from appliance.flows.keys import KEY_LEN, PORT_A, build_keys
from appliance.flows.names import TcpFlag
from appliance.flows.settings import CaptureSettings
from appliance.flows.state import TIMEOUT_ICMP, Flow
from appliance.pcapio import PacketBatch

log = logging.getLogger(__name__)

MICROSECONDS = 1_000_000
#: UDP flows on this port are split per request/response transaction, as argus 3.0.8 does.
DNS_PORT = 53
#: Columns the per-packet loop reads, in the order it unpacks them.
LOOP_COLUMNS = [c.MALFORMED, c.FRAGMENT, c.TCP_FLAGS, c.TCP_SEQ, c.PAYLOAD_LEN, c.PAYLOAD_OFFSET,
                c.PAYLOAD_CAPLEN, c.TTL, c.TOS, c.ENCAPSULATION, c.QUOTED, c.BYTES]


def compute_keys(fields, saddr, daddr, smac, dmac) -> tuple[list[bytes], list[int]]:
    """Return the flow key (bytes) and the sender's role of every row."""
    count = len(fields)
    keys = np.zeros((count, KEY_LEN), dtype=np.uint8)
    role = np.zeros(count, dtype=np.uint8)
    build_keys(fields, saddr, daddr, smac, dmac, keys, role)
    # Fixed-width byte strings drop trailing NULs, which keeps keys distinct and comparable.
    return keys.view(f"S{KEY_LEN}").ravel().tolist(), role.tolist()


class FlowMeter:
    """Bidirectional flow table with argus's status interval and idle timeouts.

    Time is packet time. Status ticks fall on multiples of the status interval
    (UTC epoch). At each tick a flow idle for its protocol's timeout is closed, and
    an active flow whose record is at least one interval old is reported.

    NOTE: the tick alignment is inferred from argus 3.0.8's output, which matches
    record for record with -S 86400; other intervals are not yet compared against argus.
    """

    def __init__(self, settings: CaptureSettings, first_seq: int = 1) -> None:
        self.settings = settings
        self.flows: dict[bytes, Flow] = {}
        self.fragments: dict[bytes, tuple[bytes, int, int]] = {}
        self.counts: Counter[str] = Counter()
        self.next_seq = first_seq
        self.interval_us = int(settings.status_interval * MICROSECONDS)
        self.next_tick: int | None = None
        self._rows: list[tuple] = []

    @property
    def stats(self) -> dict[str, int]:
        """Packets, bytes, malformed_<kind> counts, flows_active and records written."""
        stats = dict(self.counts)
        stats.setdefault("packets", 0)
        stats.setdefault("bytes", 0)
        stats.setdefault("records", 0)
        stats["flows_active"] = len(self.flows)
        return stats

    def process(self, batch: PacketBatch) -> list[pa.RecordBatch]:
        """Add a batch of packets; return the records that it finished."""
        if len(batch):
            decoded = decode_batch(batch)
            self.counts["packets"] += len(batch)
            self.counts["bytes"] += int(batch.wirelen.sum())
            for kind, count in decoded.malformed_counts().items():
                self.counts[f"malformed_{kind}"] += count
            self._process_decoded(decoded)
        return self._take_records()

    def flush(self) -> list[pa.RecordBatch]:
        """Finish every open flow and return the records."""
        for flow in list(self.flows.values()):
            self._finish(flow, "Close")
        self.flows.clear()
        self.fragments.clear()
        return self._take_records()

    def _take_records(self) -> list[pa.RecordBatch]:
        if not self._rows:
            return []
        batch = rows_to_batch(self._rows, self.settings.srcid)
        self.counts["records"] += len(self._rows)
        self._rows = []
        return [batch]

    def _emit(self, flow: Flow, cause: str) -> None:
        self._rows.append(snapshot(flow, self.next_seq, cause, self.settings.appbytes))
        self.next_seq += 1

    def _finish(self, flow: Flow, cause: str) -> None:
        if flow.record_has_packets:
            self._emit(flow, cause)

    # Status ticks -------------------------------------------------------------------

    def _advance_clock(self, ts_us: int) -> None:
        interval = self.interval_us
        if self.next_tick is None:
            self.next_tick = (ts_us // interval + 1) * interval
        while ts_us >= self.next_tick:
            self._tick(self.next_tick)
            if not self.flows:
                self.next_tick = (ts_us // interval + 1) * interval
            else:
                self.next_tick += interval

    def _tick(self, now_us: int) -> None:
        interval = self.interval_us
        for key, flow in list(self.flows.items()):
            idle_us = now_us - flow.ltime
            if idle_us >= flow.timeout * MICROSECONDS:
                self._finish(flow, "Close")
                del self.flows[key]
            elif flow.record_has_packets and now_us - flow.stime >= interval:
                self._emit(flow, "Start" if flow.first_record else "Status")
                flow.first_record = False
                flow.start_record(flow.ltime)
        expired = now_us - int(TIMEOUT_ICMP * MICROSECONDS)
        self.fragments = {k: v for k, v in self.fragments.items() if v[2] >= expired}

    # Packets ------------------------------------------------------------------------

    def _process_decoded(self, decoded: DecodedBatch) -> None:
        fields = decoded.fields
        keys, roles = compute_keys(fields, decoded.saddr, decoded.daddr, decoded.smac, decoded.dmac)
        quoted_rows = np.flatnonzero(fields[:, c.QUOTED])
        quoted_keys = self._quoted_keys(decoded, quoted_rows)
        batch = decoded.batch
        ts_list = batch.ts_us.tolist()
        loop_columns = fields[:, LOOP_COLUMNS].T.tolist()
        for row, packet in enumerate(zip(*loop_columns, strict=True)):
            if packet[0] != M_NONE:
                continue
            ts_us = ts_list[row]
            if self.next_tick is None or ts_us >= self.next_tick:
                self._advance_clock(ts_us)
            key, role = keys[row], roles[row]
            if packet[1] != FRAG_WHOLE:
                key, role = self._fragment_key(decoded, row, key, role, packet[1], ts_us)
            flow = self.flows.get(key)
            if flow is not None and self._reused(flow, role, packet[2]):
                flow.ltime = max(flow.ltime, ts_us)  # argus ends the old record at the new SYN
                self._finish(flow, "Close")
                flow = None
            elif flow is not None and flow.next_transaction(role):
                self._finish(flow, "Close")
                flow = None
            if flow is None:
                flow = self._new_flow(decoded, row, key, role, packet[2])
            self._update(flow, role, ts_us, packet, batch)
            if packet[10]:
                self._map_icmp_error(decoded, row, quoted_keys.get(row), ts_us)

    def _quoted_keys(self, decoded: DecodedBatch, rows: np.ndarray) -> dict[int, bytes]:
        if not len(rows):
            return {}
        quoted = decoded.quoted_fields[rows]
        keys, _ = compute_keys(
            quoted, decoded.quoted_saddr[rows], decoded.quoted_daddr[rows],
            decoded.smac[rows], decoded.dmac[rows],
        )
        return dict(zip(rows.tolist(), keys, strict=True))

    def _fragment_key(self, decoded, row, key, role, fragment, ts_us) -> tuple[bytes, int]:
        """Fold a later fragment into the flow of its datagram's first fragment."""
        fields = decoded.fields
        datagram = (
            decoded.saddr[row].tobytes() + decoded.daddr[row].tobytes()
            + int(fields[row, c.PROTO]).to_bytes(1, "big")
            + int(fields[row, c.IP_ID]).to_bytes(4, "big")
        )
        if fragment == FRAG_LATER:
            known = self.fragments.get(datagram)
            if known is not None:
                return known[0], known[1]
        else:
            self.fragments[datagram] = (key, role, ts_us)
        return key, role

    def _reused(self, flow: Flow, role: int, flags: int) -> bool:
        """Tell whether a SYN from the initiator of a reset or finished TCP flow starts anew."""
        if not flow.is_tcp or flags & (TcpFlag.SYN | TcpFlag.ACK) != TcpFlag.SYN:
            return False
        return flow.closed and (role == 0) == flow.src_is_a

    def _new_flow(self, decoded: DecodedBatch, row: int, key: bytes, role: int, flags: int) -> Flow:
        fields = decoded.fields
        etype = int(fields[row, c.ETYPE])
        proto = int(fields[row, c.PROTO])
        is_ip = etype in (ET_IPV4, ET_IPV6)
        src_is_a = role == 0
        midstream = reverse_pending = False
        if is_ip and proto == P_TCP and fields[row, c.FRAGMENT] != FRAG_LATER:
            if flags & TcpFlag.SYN and flags & TcpFlag.ACK:
                reverse_pending = True
            elif not flags & TcpFlag.SYN:
                midstream = True
        elif (is_ip and proto in (P_ICMP, P_ICMPV6)) or not is_ip:
            # ICMP queries and ARP put the requester on side A; other frames the lower MAC.
            src_is_a = True
        version = int(fields[row, c.IP_VERSION])
        flow = Flow(key.ljust(KEY_LEN, b"\0"), etype, proto if is_ip else 0, version, src_is_a)
        flow.midstream = midstream
        flow.reverse_pending = reverse_pending
        flow.transactional = is_ip and proto == P_UDP and DNS_PORT in (
            int(fields[row, c.SPORT]), int(fields[row, c.DPORT]))
        if etype == ET_ARP:
            flow.proto = 0
        flow.icmp_type, flow.icmp_code = flow.key[PORT_A], flow.key[PORT_A + 1]
        sender_is_src = (role == 0) == src_is_a
        smac, dmac = decoded.smac[row].tobytes(), decoded.dmac[row].tobytes()
        flow.smac, flow.dmac = (smac, dmac) if sender_is_src else (dmac, smac)
        vlan = int(fields[row, c.VLAN])
        flow.vlan = vlan if vlan >= 0 else None
        flow.start_record(int(decoded.batch.ts_us[row]))
        self.flows[key] = flow
        return flow

    def _update(self, flow: Flow, role: int, ts_us: int, packet: tuple, batch: PacketBatch) -> None:
        (_, fragment, flags, seq, payload_len, payload_offset, payload_caplen, ttl, tos, encaps,
         _, wirelen) = packet
        from_src = (role == 0) == flow.src_is_a
        if flow.reverse_pending and not from_src:
            flow.reverse()
            from_src = True
        side = flow.src if from_src else flow.dst
        if not flow.record_has_packets:
            flow.record_has_packets = True
            flow.stime = flow.ltime = ts_us
        elif ts_us > flow.ltime:
            flow.ltime = ts_us
        elif ts_us < flow.stime:
            flow.stime = ts_us
        side.pkts += 1
        side.bytes += wirelen
        side.appbytes += payload_len
        side.ttl = ttl
        side.tos = tos
        flow.encapsulation |= encaps
        if fragment != FRAG_WHOLE:
            flow.fragments = True
        if flow.is_tcp and fragment != FRAG_LATER:
            flow.update_tcp(side, from_src, flags, seq, payload_len)
        room = self.settings.user_data_len - len(side.user)
        if room > 0 and payload_caplen > 0:
            take = min(room, payload_caplen)
            side.user += batch.buffer[payload_offset : payload_offset + take].tobytes()

    def _map_icmp_error(self, decoded: DecodedBatch, row: int, quoted_key: bytes | None,
                        ts_us: int) -> None:
        """Mark the flow an ICMP error quotes (flgs column 3) and extend its last time."""
        flow = self.flows.get(quoted_key) if quoted_key is not None else None
        if flow is None:
            return
        sport = int(decoded.fields[row, c.SPORT])
        version = int(decoded.fields[row, c.IP_VERSION])
        flow.icmp_mapped = names.icmp_mapped_letter(sport >> 8, version)
        flow.ltime = max(flow.ltime, ts_us)
        if flow.proto in (P_ICMP, P_ICMPV6):
            flow.icmp_state = names.icmp_state(sport >> 8, sport & 0xFF, version)
