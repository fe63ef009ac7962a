"""The flow meter: decoded packets in, finished flow records out.

The per-packet work runs in compiled code (``kernel.run``) over a columnar flow
table (``FlowTable``); Python handles what is rare: status ticks, growing the
table, turning output arrays into Arrow batches, and IP fragments.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyarrow as pa

from appliance.decode import DecodedBatch, DecodeWorkspace, decode_batch
from appliance.decode import columns as c
from appliance.decode.constants import FRAG_LATER, FRAG_WHOLE, M_NONE
from appliance.flows import layout as f
from appliance.flows.emit import RecordArrays
from appliance.flows.hashtable import KEY_WORDS, rebuild
from appliance.flows.kernel import MICROSECONDS, TIMEOUT_ICMP, run, tick
from appliance.flows.keys import KEY_LEN, build_keys
from appliance.flows.settings import CaptureSettings
from appliance.pcapio import PacketBatch

log = logging.getLogger(__name__)

#: Slots allocated at first; the table doubles when they are all in use.
INITIAL_SLOTS = 4096
#: Upper bound of the first user-data slab, so a large -U starts small.
INITIAL_USER_BYTES = 1 << 24
#: How long a first fragment's flow key is remembered for later fragments.
FRAGMENT_TIMEOUT_US = TIMEOUT_ICMP * MICROSECONDS
#: Name tables the compiled code looks printed fields up in.
NAME_TABLES = (
    f.ICMP_STATE_CODES, f.ICMP_UNREACHABLE_CODES, f.ICMPV6_STATE_CODES,
    f.ENCAPSULATION_CODES, f.ICMP_MAPPED_CODES, f.ICMPV6_MAPPED_CODES, f.IP_OPTION_CODES,
)


class FlowTable:
    """Flow state in NumPy arrays, one slot per active flow, and its hash index."""

    def __init__(self, user_data_len: int, slots: int | None = None) -> None:
        if slots is None:
            slots = max(64, min(INITIAL_SLOTS, INITIAL_USER_BYTES // (2 * user_data_len + 1)))
        self.user_data_len = user_data_len
        self.meta = np.zeros(f.META_SIZE, dtype=np.int64)
        self._allocate(slots)

    def _allocate(self, slots: int) -> None:
        self.index = np.full(2 * slots, -1, dtype=np.int64)
        self.hashes = np.zeros(slots, dtype=np.uint64)
        self.keys = np.zeros((slots, KEY_WORDS), dtype=np.uint64)
        self.free = np.zeros(slots, dtype=np.int64)
        self.state = np.zeros((slots, f.FLOW_COLUMNS), dtype=np.int64)
        self.sides = np.zeros((slots, 2, f.SIDE_COLUMNS), dtype=np.int64)
        self.macs = np.zeros((slots, 2, 6), dtype=np.uint8)
        self.user = np.zeros((slots, 2, self.user_data_len), dtype=np.uint8)

    @property
    def slots(self) -> int:
        return len(self.hashes)

    @property
    def arrays(self) -> tuple:
        return (self.index, self.hashes, self.keys, self.keys.view(np.uint8), self.free,
                self.state, self.sides, self.macs, self.user, self.meta)

    def grow(self) -> None:
        """Double the slots, keeping every flow in the slot it had."""
        old = (self.hashes, self.keys, self.free, self.state, self.sides, self.macs, self.user)
        used = self.slots
        self._allocate(2 * used)
        for new, previous in zip(
            (self.hashes, self.keys, self.free, self.state, self.sides, self.macs, self.user),
            old, strict=True,
        ):
            new[:used] = previous
        rebuild(self.index, self.hashes, self.state[:, f.IN_USE])
        log.debug("flow table grown to %d slots", self.slots)

    def bytes_per_slot(self) -> int:
        """Memory held per flow slot, the hash index included."""
        arrays = (self.index, self.hashes, self.keys, self.free, self.state, self.sides,
                  self.macs, self.user)
        return sum(array.nbytes for array in arrays) // self.slots


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
        self.table = FlowTable(settings.user_data_len)
        self.out = RecordArrays(settings.user_data_len)
        self.interval_us = int(settings.status_interval * MICROSECONDS)
        meta = self.table.meta
        meta[f.M_NEXT_TICK] = -1
        meta[f.M_NEXT_SEQ] = first_seq
        meta[f.M_INTERVAL] = self.interval_us
        #: datagram (addresses, protocol, IP id) -> (first fragment's key, role, time).
        self.fragments: dict[bytes, tuple[np.ndarray, int, int]] = {}
        self.counts: Counter[str] = Counter()
        self.workspace = DecodeWorkspace()
        self._keys = np.zeros((0, KEY_LEN), dtype=np.uint8)
        self._quoted = np.zeros((0, KEY_LEN), dtype=np.uint8)
        self._batches: list[pa.RecordBatch] = []

    @property
    def stats(self) -> dict[str, int]:
        """Packets, bytes, malformed_<kind> counts, flows_active and records written."""
        stats = dict(self.counts)
        stats.setdefault("packets", 0)
        stats.setdefault("bytes", 0)
        stats.setdefault("records", 0)
        stats["flows_active"] = int(self.table.meta[f.M_ACTIVE])
        return stats

    def process(self, batch: PacketBatch) -> list[pa.RecordBatch]:
        """Add a batch of packets; return the records that it finished."""
        if len(batch):
            decoded = decode_batch(batch, self.workspace)
            self.counts["packets"] += len(batch)
            self.counts["bytes"] += int(batch.wirelen.sum())
            for kind, count in decoded.malformed_counts().items():
                self.counts[f"malformed_{kind}"] += count
            self._run(self._packets(decoded))
        return self._take_records()

    def advance(self, now_us: int) -> list[pa.RecordBatch]:
        """Move packet time to ``now_us`` without a packet; return the records it finished.

        A live capture calls this while its link is quiet, so that status ticks and idle
        timeouts still fire. Times before the next status tick change nothing.
        """
        if self.table.meta[f.M_ACTIVE] and now_us >= self.table.meta[f.M_NEXT_TICK]:
            self._advance_clock(now_us)
        return self._take_records()

    def flush(self) -> list[pa.RecordBatch]:
        """Finish every open flow and return the records."""
        self._tick(0, closing=True)
        self.fragments.clear()
        return self._take_records()

    def _run(self, packets: tuple) -> None:
        ts_us = packets[4]
        row = 0
        while True:
            reason, row = run(row, packets, self.table.arrays, self.out.arrays, NAME_TABLES)
            if reason == f.RUN_DONE:
                return
            if reason == f.RUN_TICK:
                self._advance_clock(int(ts_us[row]))
            elif reason == f.RUN_FULL:
                self._drain()
            else:
                self.table.grow()

    def _advance_clock(self, ts_us: int) -> None:
        meta, interval = self.table.meta, self.interval_us
        while ts_us >= meta[f.M_NEXT_TICK]:
            self._tick(int(meta[f.M_NEXT_TICK]), closing=False)
            if meta[f.M_ACTIVE] == 0:
                meta[f.M_NEXT_TICK] = (ts_us // interval + 1) * interval
            else:
                meta[f.M_NEXT_TICK] += interval

    def _tick(self, now_us: int, closing: bool) -> None:
        cursor = 0
        while cursor >= 0:
            cursor = tick(now_us, cursor, closing, self.table.arrays, self.out.arrays,
                          NAME_TABLES)
            if cursor >= 0:
                self._drain()

    def _drain(self) -> None:
        count = int(self.table.meta[f.M_RECORDS])
        if count:
            self._batches.append(
                self.out.to_batch(count, self.settings.srcid, self.settings.appbytes)
            )
            self.counts["records"] += count
            self.table.meta[f.M_RECORDS] = 0

    def _take_records(self) -> list[pa.RecordBatch]:
        self._drain()
        batches, self._batches = self._batches, []
        return batches

    # Packet columns -----------------------------------------------------------------

    def _packets(self, decoded: DecodedBatch) -> tuple:
        count = len(decoded)
        if len(self._keys) < count:
            self._keys = np.zeros((count, KEY_LEN), dtype=np.uint8)
            self._quoted = np.zeros((count, KEY_LEN), dtype=np.uint8)
        keys8 = self._keys[:count]
        keys8.fill(0)
        role = np.zeros(count, dtype=np.uint8)
        build_keys(decoded.fields, decoded.saddr, decoded.daddr, decoded.smac, decoded.dmac,
                   decoded.batch.buffer, keys8, role)
        self._fold_fragments(decoded, keys8, role)
        return (decoded.fields, keys8.view(np.uint64), keys8, role, decoded.batch.ts_us,
                decoded.smac, decoded.dmac, decoded.batch.buffer, self._quoted_keys(decoded),
                np.zeros((1, KEY_WORDS), dtype=np.uint64))

    def _quoted_keys(self, decoded: DecodedBatch) -> np.ndarray:
        """Return, for each ICMP error that quotes a packet, the quoted packet's flow key.

        Only the rows of such errors are written; the compiled code reads no others.
        """
        quoted_keys = self._quoted[: len(decoded)]
        rows = np.flatnonzero(decoded.fields[:, c.QUOTED])
        if len(rows):
            keys8 = np.zeros((len(rows), KEY_LEN), dtype=np.uint8)
            build_keys(
                decoded.quoted_fields[rows], decoded.quoted_saddr[rows],
                decoded.quoted_daddr[rows], decoded.smac[rows], decoded.dmac[rows],
                decoded.batch.buffer, keys8, np.zeros(len(rows), dtype=np.uint8),
            )
            quoted_keys[rows] = keys8
        return quoted_keys.view(np.uint64)

    def _fold_fragments(self, decoded: DecodedBatch, keys8: np.ndarray, role: np.ndarray) -> None:
        """Give later fragments the flow key of their datagram's first fragment."""
        fields = decoded.fields
        rows = np.flatnonzero(
            (fields[:, c.FRAGMENT] != FRAG_WHOLE) & (fields[:, c.MALFORMED] == M_NONE)
        )
        ts_us = decoded.batch.ts_us
        for row in rows.tolist():
            datagram = (
                decoded.saddr[row].tobytes() + decoded.daddr[row].tobytes()
                + int(fields[row, c.PROTO]).to_bytes(1, "big")
                + int(fields[row, c.IP_ID]).to_bytes(4, "big")
            )
            ts = int(ts_us[row])
            if fields[row, c.FRAGMENT] == FRAG_LATER:
                known = self.fragments.get(datagram)
                if known is not None and not self._fragment_expired(known[2], ts):
                    keys8[row] = known[0]
                    role[row] = known[1]
            else:
                self.fragments[datagram] = (keys8[row].copy(), int(role[row]), ts)
        if len(rows) and len(self.fragments) > len(rows):
            last = int(ts_us[rows[-1]])
            self.fragments = {
                datagram: known for datagram, known in self.fragments.items()
                if not self._fragment_expired(known[2], last)
            }

    def _fragment_expired(self, first_us: int, now_us: int) -> bool:
        """Tell whether a status tick fell more than the fragment timeout after ``first_us``.

        Ticks forget first fragments seen more than the fragment timeout before them.
        """
        last_tick = now_us // self.interval_us * self.interval_us
        return last_tick > first_us + FRAGMENT_TIMEOUT_US
