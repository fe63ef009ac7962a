"""The flow meter: decoded packets in, finished flow records out.

The per-packet work runs in compiled code (``kernel.run``) over a columnar flow
table (``FlowTable``); Python handles what is rare: status ticks, growing the
table, turning output arrays into Arrow batches, and IP fragments.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from appliance import jit
from appliance.decode import DecodedBatch, DecodeWorkspace, decode_batch
from appliance.decode import columns as c
from appliance.decode.constants import FRAG_LATER, FRAG_WHOLE, M_NONE
from appliance.flows import layout as f
from appliance.flows.emit import RecordArrays
from appliance.flows.hashtable import KEY_WORDS, rebuild
from appliance.flows.kernel import MICROSECONDS, TIMEOUT_ICMP, run, tick
from appliance.flows.keys import KEY_LEN, build_keys
from appliance.flows.settings import CaptureSettings
from appliance.flows.userdata import chunk_len
from appliance.pcapio import PacketBatch

log = logging.getLogger(__name__)

#: Slots allocated at first. The table grows by a quarter when they are all in use, so
#: at most a fifth of the slots stand empty after a growth.
INITIAL_SLOTS = 4096
#: User-data chunks allocated at first (with -U). The pool grows by a quarter when short.
INITIAL_CHUNKS = 4096
#: How long a first fragment's flow key is remembered for later fragments.
FRAGMENT_TIMEOUT_US = TIMEOUT_ICMP * MICROSECONDS
#: Name tables the compiled code looks printed fields up in.
NAME_TABLES = (
    f.ICMP_STATE_CODES, f.ICMP_UNREACHABLE_CODES, f.ICMPV6_STATE_CODES,
    f.ENCAPSULATION_CODES, f.ICMP_MAPPED_CODES, f.ICMPV6_MAPPED_CODES, f.IP_OPTION_CODES,
)


class FlowTable:
    """Flow state in NumPy arrays, one slot per active flow, its hash index and user data.

    The slot arrays grow in place with ``ndarray.resize``, which calls realloc. glibc
    remaps a large (mmap-backed) block instead of copying it, so growing does not
    hold the old and the new arrays at once. Only the hash index is built anew at
    each growth.
    """

    def __init__(self, user_data_len: int, slots: int = INITIAL_SLOTS) -> None:
        self.user_data_len = user_data_len
        self.meta = np.zeros(f.META_SIZE, dtype=np.int64)
        self.meta[f.M_USER_LIMIT] = user_data_len
        self.meta[f.M_CHUNK_FREE] = -1
        self.hashes = np.zeros(slots, dtype=np.uint32)
        self.keys = np.zeros((slots, KEY_WORDS), dtype=np.uint64)
        self.free = np.zeros(slots, dtype=np.int32)
        self.flows = np.zeros(slots, dtype=f.FLOW_DTYPE)
        self.sides = np.zeros((slots, 2), dtype=f.SIDE_DTYPE)
        self.index = _empty_index(slots)
        chunks = INITIAL_CHUNKS if user_data_len else 0
        self.chunks = np.zeros((chunks, chunk_len(user_data_len)), dtype=np.uint8)
        self.chunk_next = np.zeros(chunks, dtype=np.int32)

    @property
    def slots(self) -> int:
        return len(self.hashes)

    @property
    def arrays(self) -> tuple:
        """The arrays the compiled code works on; fetch them again after any growth."""
        return (self.index, self.hashes, self.keys, self.keys.view(np.uint8), self.free,
                self.flows, self.sides, self.chunks, self.chunk_next, self.meta)

    def grow(self) -> None:
        """Add a quarter more slots, keeping every flow in the slot it had."""
        slots = self.slots + max(1, self.slots // 4)
        for array in (self.hashes, self.keys, self.free, self.flows, self.sides):
            _resize(array, slots)
        self.index = None  # release the old index before the new one is filled
        self.index = _empty_index(slots)
        rebuild(self.index, self.hashes, self.flows["in_use"])
        log.debug("flow table grown to %d slots", slots)

    def grow_user(self) -> None:
        """Add a quarter more user-data chunks (at least what one packet can need)."""
        capacity = len(self.chunk_next)
        per_packet = -(-self.user_data_len // self.chunks.shape[1])
        capacity += max(capacity // 4, per_packet, INITIAL_CHUNKS)
        _resize(self.chunks, capacity)
        _resize(self.chunk_next, capacity)
        log.debug("user-data pool grown to %d chunks", capacity)

    def bytes_per_slot(self) -> int:
        """Memory held per flow slot, the hash index included and the user-data pool not."""
        arrays = (self.index, self.hashes, self.keys, self.free, self.flows, self.sides)
        return sum(array.nbytes for array in arrays) // self.slots

    def user_bytes(self) -> int:
        """Memory held by the user-data pool."""
        return self.chunks.nbytes + self.chunk_next.nbytes


def _empty_index(slots: int) -> np.ndarray:
    """Return an index with the smallest power of two of buckets that is at least 2 x slots."""
    buckets = 1 << (2 * slots - 1).bit_length()
    return np.full(buckets, -1, dtype=np.int32)


def _resize(array: np.ndarray, rows: int) -> None:
    """Give ``array`` ``rows`` rows in place, the new ones zero.

    Views of the array taken before this call must not be used after it.
    """
    array.resize((rows, *array.shape[1:]), refcheck=False)


class FlowMeter:
    """Bidirectional flow table with argus's status interval and idle timeouts.

    Time is packet time. Status ticks fall on multiples of the status interval
    (UTC epoch). At each tick a flow idle for its protocol's timeout is closed, and
    an active flow whose record is at least one interval old is reported.

    NOTE: the tick alignment is inferred from argus 3.0.8's output, which matches
    record for record with -S 86400; other intervals are not yet compared against argus.
    """

    def __init__(self, settings: CaptureSettings, first_seq: int = 1,
                 hold_records: bool = False) -> None:
        """``hold_records`` keeps finished records until the output arrays fill up or
        ``flush``, so that they come out in few large batches. Only for reading a file
        to the end: a live capture needs each batch's records at once."""
        jit.log_mode()
        self.settings = settings
        self.hold_records = hold_records
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
        if self.hold_records:
            return self._take_full_batches()
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
        return list(self.flush_batches())

    def flush_batches(self) -> Iterator[pa.RecordBatch]:
        """Finish every open flow, yielding each record batch as the output arrays fill.

        Unlike ``flush``, the records of a large table are not all held at once. Stopping
        the iteration early leaves the remaining flows open.
        """
        cursor = 0
        while cursor >= 0:
            cursor = tick(0, cursor, True, self.table.arrays, self.out.arrays, NAME_TABLES)
            yield from self._take_records()
        self.fragments.clear()

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
            elif reason == f.RUN_GROW_USER:
                self.table.grow_user()
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
        return self._take_full_batches()

    def _take_full_batches(self) -> list[pa.RecordBatch]:
        """Return the batches drained when the output arrays filled up."""
        batches, self._batches = self._batches, []
        return batches

    # Packet columns -----------------------------------------------------------------

    def _packets(self, decoded: DecodedBatch) -> tuple:
        count = len(decoded)
        if len(self._keys) < count:
            self._keys = np.empty((count, KEY_LEN), dtype=np.uint8)
            self._quoted = np.zeros((count, KEY_LEN), dtype=np.uint8)
        keys8 = self._keys[:count]
        role = np.empty(count, dtype=np.uint8)
        build_keys(decoded.fields, decoded.saddr, decoded.daddr, decoded.smac, decoded.dmac,
                   decoded.batch.buffer, keys8, role)
        if decoded.fragments:
            self._fold_fragments(decoded, keys8, role)
        return (decoded.fields, keys8.view(np.uint64), keys8, role, decoded.batch.ts_us,
                decoded.smac, decoded.dmac, decoded.batch.buffer, self._quoted_keys(decoded),
                np.zeros((1, KEY_WORDS), dtype=np.uint64))

    def _quoted_keys(self, decoded: DecodedBatch) -> np.ndarray:
        """Return, for each ICMP error that quotes a packet, the quoted packet's flow key.

        Only the rows of such errors are written; the compiled code reads no others.
        """
        quoted_keys = self._quoted[: len(decoded)]
        rows = np.flatnonzero(decoded.fields[:, c.QUOTED]) if decoded.quoted else ()
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
