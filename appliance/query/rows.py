"""Selecting and gathering rows of a record table, one column per thread.

Arrow's compute functions release the GIL, so filtering or gathering the columns of a
wide table on several threads takes a fraction of the time of ``Table.filter`` or
``Table.take``, which handle them one after the other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.arrays import from_numpy

#: Below this many rows one thread is faster than handing columns to a pool.
THREADED_ROWS = 100_000


def filter_rows(table: pa.Table, mask: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Return the rows of ``table`` where ``mask`` is true (a null counts as false).

    When at most ``TAKE_FRACTION`` of the rows are selected, and on average at least
    ``TAKE_CHUNK_ROWS`` from each chunk, each column gathers the selected rows of its
    chunks (see ``ChunkTake``) into one chunk, in half the CPU time of Arrow's filter.
    With fewer rows per chunk (a ten-minute window of a day of records), a call per
    chunk and column costs more than it saves. Otherwise the columns are filtered, and
    the selected pieces are joined into one chunk when they average fewer than
    ``JOIN_ROWS`` rows. Either way, a record file written from the result has few large
    batches, which compress and write in less than half the time of many small ones.
    """
    if table.num_rows < THREADED_ROWS or table.num_columns < 2:
        return table.filter(mask)
    selected = int(pc.sum(mask).as_py() or 0)
    if selected == table.num_rows:
        return table
    if selected == 0:
        return table.slice(0, 0)
    chunks = table.column(0).num_chunks
    if selected <= table.num_rows * TAKE_FRACTION and selected >= TAKE_CHUNK_ROWS * chunks:
        select: Callable[[pa.ChunkedArray], pa.Array | pa.ChunkedArray] = ChunkTake(
            pc.indices_nonzero(mask).to_numpy(), ascending=True)
    else:
        join = selected < JOIN_ROWS * chunks

        def select(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
            chosen = column.filter(mask)
            return chosen.combine_chunks() if join else chosen

    threads = min(os.cpu_count() or 1, table.num_columns)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        columns = list(pool.map(select, table.columns))
    return pa.Table.from_arrays(columns, schema=table.schema)


#: ``filter_rows`` gathers, rather than filters, when at most this share of rows is kept,
TAKE_FRACTION = 0.5
#: and on average at least this many rows of each chunk.
TAKE_CHUNK_ROWS = 1_024
#: ``filter_rows`` joins selected pieces that average fewer rows than this.
JOIN_ROWS = 16_384


#: String columns with at most this many distinct values are gathered as dictionary codes
#: when the result is only printed.
COMPACT_STRINGS = 127


def take_rows(table: pa.Table, indices: pa.Array, compact_strings: bool = False) -> pa.Table:
    """Gather rows of ``table`` in ``indices`` order, one column per thread.

    Fewer than 100,000 rows are gathered chunk by chunk (see ``ChunkTake``). For more,
    each column is joined into one chunk first, because a take over one chunk is several
    times faster than over many, and only one joined column per thread exists at a time.
    ``compact_strings`` (for printed results) gathers string columns of few values
    (state, dir, flgs) as dictionary arrays with one-byte codes, which print the same and
    take a byte per row. It also gathers one column at a time, so that only one joined
    column exists at once.
    """
    if len(indices) < 100_000:
        # Arrow's take would join every chunk of every column first (see ChunkTake).
        take = ChunkTake(indices.to_numpy())
        return pa.Table.from_arrays([take(column) for column in table.columns],
                                    schema=table.schema)

    def gather(column: pa.ChunkedArray) -> pa.Array:
        if column.null_count == len(column):
            return pa.nulls(len(indices), column.type)
        joined = column.combine_chunks()
        if compact_strings and pa.types.is_string(joined.type):
            compact = _compact(joined)
            if compact is not None:
                return compact.take(indices)
        return joined.take(indices)

    # The widest columns first, while few gathered columns exist: each thread joins one
    # column before it gathers it, so this keeps the peak memory low.
    widest = sorted(range(table.num_columns), key=lambda index: -table.column(index).nbytes)
    threads = 1 if compact_strings else os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        gathered = dict(zip(widest, pool.map(gather, [table.column(index) for index in widest]),
                            strict=True))
    return pa.Table.from_arrays([gathered[index] for index in range(table.num_columns)],
                                names=table.column_names)


def _compact(values: pa.Array) -> pa.DictionaryArray | None:
    """Return string ``values`` as a dictionary array with one-byte codes, or None when
    they contain more than ``COMPACT_STRINGS`` distinct strings."""
    encoded = pc.dictionary_encode(values)
    if len(encoded.dictionary) > COMPACT_STRINGS:
        return None
    return pa.DictionaryArray.from_arrays(encoded.indices.cast(pa.int8()), encoded.dictionary)


#: Bytes of records that ``take_slices`` gathers at a time.
SLICE_BYTES = 192 * 1024 * 1024
#: The minimum number of rows it gathers at once, however wide the rows are.
MIN_SLICE_ROWS = 65_536


def take_slices(table: pa.Table, indices: np.ndarray,
                slice_bytes: int | None = None) -> Iterator[pa.Table]:
    """Yield the rows of ``table`` in ``indices`` order, about ``slice_bytes`` (default
    ``SLICE_BYTES``) at a time.

    Only one slice of gathered rows exists at a time: writing ten million sorted records
    needs a slice's memory, not the whole table's twice over. Columns are gathered one
    per thread, straight from the table's chunks (see ``ChunkTake``).
    """
    row_bytes = table.nbytes / table.num_rows if table.num_rows else 1.0
    budget = SLICE_BYTES if slice_bytes is None else slice_bytes
    rows = max(MIN_SLICE_ROWS, int(budget / max(row_bytes, 1.0)))
    threads = min(os.cpu_count() or 1, table.num_columns)
    layouts = ChunkLayouts()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(indices), rows):
            take = ChunkTake(indices[start:start + rows], layouts)
            columns = list(pool.map(take, table.columns))
            yield pa.Table.from_arrays(columns, schema=table.schema)


class ChunkLayouts:
    """Cache of chunk start rows and chunk numbers, one entry per chunk layout.

    The columns of a record file share one layout, so they share one entry.
    """

    def __init__(self) -> None:
        self._starts: dict[tuple[int, ...], np.ndarray] = {}
        self._chunk_of_row: dict[tuple[int, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def starts(self, lengths: tuple[int, ...]) -> np.ndarray:
        """Return the first row of each chunk, and the row count at the end."""
        with self._lock:
            starts = self._starts.get(lengths)
            if starts is None:
                starts = np.zeros(len(lengths) + 1, dtype=np.int64)
                np.cumsum(lengths, out=starts[1:])
                self._starts[lengths] = starts
            return starts

    def chunks(self, lengths: tuple[int, ...], indices: np.ndarray) -> np.ndarray:
        """Return the chunk number of each row in ``indices``, as two-byte numbers when
        there are few enough chunks (NumPy sorts those by radix)."""
        kind = np.int16 if len(lengths) <= np.iinfo(np.int16).max else np.int32
        if len(indices) < LOOKUP_ROWS:
            found = np.searchsorted(self.starts(lengths), indices, side="right") - 1
            return found.astype(kind)
        with self._lock:
            chunk_of_row = self._chunk_of_row.get(lengths)
            if chunk_of_row is None:
                # A table of the chunk of every row: a lookup per row is faster than a
                # binary search per row for a slice of a million rows.
                chunk_of_row = np.repeat(np.arange(len(lengths), dtype=kind), lengths)
                self._chunk_of_row[lengths] = chunk_of_row
        return chunk_of_row[indices]


#: Gathers of at least this many rows find chunks in a table of the chunk of every row.
LOOKUP_ROWS = 65_536


class ChunkTake:
    """Gather rows of chunked columns chunk by chunk.

    Arrow's take on a chunked column (pyarrow 26) joins its chunks into one array first:
    a copy of the whole column for every call, 80 MB for ten million 8-byte numbers.
    This takes the rows of each chunk from that chunk, joins the pieces, and then puts
    the rows in the requested order. A call copies only the rows it gathers and reads
    one chunk at a time.
    """

    def __init__(self, indices: np.ndarray, layouts: ChunkLayouts | None = None,
                 ascending: bool = False) -> None:
        self.indices = indices.astype(np.int64, copy=False)
        self.ascending = ascending
        self._layouts = layouts or ChunkLayouts()
        self._plans: dict[tuple[int, ...], _ChunkPlan] = {}
        self._lock = threading.Lock()

    def __call__(self, column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Return the rows of ``column`` in this gather's order."""
        if len(self.indices) == 0:
            return column.slice(0, 0)
        if column.null_count == len(column):
            return pa.nulls(len(self.indices), column.type)
        if column.num_chunks < 2:
            return column.take(_int64_array(self.indices))
        plan = self._plan(tuple(len(chunk) for chunk in column.chunks))
        joined = pa.concat_arrays([column.chunk(number).take(rows)
                                   for number, rows in plan.pieces])
        return joined if plan.restore is None else joined.take(plan.restore)

    def _plan(self, lengths: tuple[int, ...]) -> _ChunkPlan:
        """Return the plan for one chunk layout, made on first use."""
        with self._lock:
            plan = self._plans.get(lengths)
            if plan is None:
                starts = self._layouts.starts(lengths)
                if self.ascending:
                    plan = _ChunkPlan.build_ascending(self.indices, starts)
                else:
                    plan = _ChunkPlan.build(self.indices, starts,
                                            self._layouts.chunks(lengths, self.indices))
                self._plans[lengths] = plan
            return plan


@dataclass(frozen=True)
class _ChunkPlan:
    """Rows to take from each chunk, and the order that puts the joined pieces in the
    requested order (None when they are in that order already)."""

    pieces: list[tuple[int, pa.Array]]
    restore: pa.Array | None

    @classmethod
    def build_ascending(cls, indices: np.ndarray, starts: np.ndarray) -> _ChunkPlan:
        bounds = np.searchsorted(indices, starts)
        return cls(_pieces(indices, starts, bounds), None)

    @classmethod
    def build(cls, indices: np.ndarray, starts: np.ndarray, chunks: np.ndarray) -> _ChunkPlan:
        # NumPy sorts two-byte numbers stably by radix, in linear time.
        grouped = np.argsort(chunks, kind="stable")
        local = indices[grouped] - starts[chunks[grouped]]
        bounds = np.zeros(len(starts), dtype=np.int64)
        np.cumsum(np.bincount(chunks, minlength=len(starts) - 1), out=bounds[1:])
        restore = np.empty(len(indices), dtype=np.int64)
        restore[grouped] = np.arange(len(indices), dtype=np.int64)
        return cls(_pieces(local, np.zeros_like(starts), bounds), _int64_array(restore))


def _pieces(rows: np.ndarray, starts: np.ndarray,
            bounds: np.ndarray) -> list[tuple[int, pa.Array]]:
    """Cut ``rows`` (grouped by chunk, chunk n's at bounds[n]:bounds[n + 1]) into each
    chunk's rows, counted from the chunk's first row ``starts[n]``."""
    return [(number, _int64_array(rows[bounds[number]:bounds[number + 1]] - starts[number]))
            for number in range(len(bounds) - 1) if bounds[number + 1] > bounds[number]]


def _int64_array(values: np.ndarray) -> pa.Array:
    """Wrap integers as an Arrow int64 array, without a copy when they are int64 already."""
    return from_numpy(np.asarray(values, dtype=np.int64))
