"""Compiled group-by building blocks for racluster: group ids and per-group reductions.

Everything here works one record batch at a time, so that no column of a large input
is ever copied whole. ``Grouper`` numbers the distinct keys in order of first
appearance with an open-addressing hash table that grows with the number of groups.
Key columns are packed first (``KeyPacking``): each column is offset by its minimum
and the columns are bit-packed into as few 64-bit words as their value ranges allow,
so a host-pair key of IPv4 addresses is one word. Each reduction then adds one batch
at a time into per-group accumulators, indexed by group id.

Rows visit groups in random order, so every pass waits on memory more than it computes.
The loops therefore ask the CPU to load the group PREFETCH_AHEAD rows ahead while they
work on the current one (``prefetch_row``). On the 10 million records of
bench/bench_ra.py (2-core AMD EPYC VM), that made the hash insert 2.3 times as fast.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
MIX = np.uint64(0xBF58476D1CE4E5B9)

#: Slots of a new hash table, at least and at most; it doubles beyond 70 % full.
INITIAL_SLOTS = 1 << 16
MAX_INITIAL_SLOTS = 1 << 22
MAX_LOAD_TENTHS = 7

#: How many rows ahead the loops prefetch their group's accumulators.
PREFETCH_AHEAD = 16

#: States of a group in ``add_agreement``: no value seen yet, every value equal, values differ.
UNSEEN, AGREE, DIFFER = 0, 1, 2


@intrinsic
def prefetch_row(typingctx, array, row):
    """Hint the CPU to load ``array[row]`` (its first element) into the cache.

    LLVM's ``llvm.prefetch`` for reading, with the highest locality; a hint only, so it
    never changes a result.
    """
    signature = types.void(array, row)

    def codegen(context, builder, signature, arguments):
        values, index = arguments
        array_type = signature.args[0]
        index = context.cast(builder, index, signature.args[1], types.intp)
        zero = context.get_constant(types.intp, 0)
        view = context.make_array(array_type)(context, builder, values)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view,
                                           [index] + [zero] * (array_type.ndim - 1))
        byte_pointer = ir.IntType(8).as_pointer()
        # Newer LLVM has one opaque pointer type, and names the intrinsic after it.
        name = "llvm.prefetch.p0" if str(byte_pointer) == "ptr" else "llvm.prefetch.p0i8"
        integer = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, integer, integer,
                                                              integer]), name)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), ir.Constant(integer, 0),
                                ir.Constant(integer, 3), ir.Constant(integer, 1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, nogil=True)
def _hash_row(keys: np.ndarray, row: int) -> np.uint64:
    value = np.uint64(0)
    for column in range(keys.shape[1]):
        value = (value ^ keys[row, column]) * MULTIPLIER
        value ^= value >> np.uint64(31)
        value *= MIX
        value ^= value >> np.uint64(29)
    return value


@njit(cache=True, nogil=True)
def _insert(keys: np.ndarray, offset: int, slots: np.ndarray, ids: np.ndarray,
            first: np.ndarray, count: int) -> int:
    """Number the rows of one batch of packed keys; return the new group count.

    A slot is one row of ``slots``: the group number plus one (0: empty), then the key,
    so a probe reads one cache line.
    """
    mask = slots.shape[0] - 1
    width = keys.shape[1]
    rows = keys.shape[0]
    home = np.empty(rows, dtype=np.int64)
    for row in range(rows):
        home[row] = np.int64(_hash_row(keys, row) & np.uint64(mask))
    for row in range(rows):
        if row + PREFETCH_AHEAD < rows:
            prefetch_row(slots, home[row + PREFETCH_AHEAD])
        slot = home[row]
        while True:
            stored = slots[slot, 0]
            if stored == 0:
                slots[slot, 0] = count + 1
                for column in range(width):
                    slots[slot, column + 1] = keys[row, column]
                first[count] = offset + row
                ids[offset + row] = count
                count += 1
                break
            same = True
            for column in range(width):
                if slots[slot, column + 1] != keys[row, column]:
                    same = False
                    break
            if same:
                ids[offset + row] = stored - 1
                break
            slot = (slot + 1) & mask
    return count


@njit(cache=True, nogil=True)
def _rehash(slots: np.ndarray, new_slots: np.ndarray) -> None:
    mask = new_slots.shape[0] - 1
    keys = slots[:, 1:]
    for old in range(slots.shape[0]):
        if slots[old, 0] == 0:
            continue
        slot = np.int64(_hash_row(keys, old) & np.uint64(mask))
        while new_slots[slot, 0] != 0:
            slot = (slot + 1) & mask
        new_slots[slot, :] = slots[old, :]


class KeyPacking:
    """How unsigned key columns pack into few 64-bit words, from their value ranges.

    Feed every batch's key columns to ``observe`` first, then ``pack`` them. Constant
    columns are dropped (at least one word remains).
    """

    def __init__(self) -> None:
        self.low: list[int] = []
        self.high: list[int] = []
        self.plan: list[tuple[int, int, int]] | None = None
        self.width = 1

    def observe(self, columns: list[np.ndarray]) -> None:
        if not self.low:
            self.low = [int(np.iinfo(np.uint64).max)] * len(columns)
            self.high = [0] * len(columns)
        for index, column in enumerate(columns):
            if len(column):
                self.low[index] = min(self.low[index], int(column.min()))
                self.high[index] = max(self.high[index], int(column.max()))

    def _make_plan(self) -> list[tuple[int, int, int]]:
        """Return (column, word, shift) for every column that varies."""
        plan = []
        used: list[int] = []
        for index, (low, high) in enumerate(zip(self.low, self.high, strict=True)):
            bits = max(high - low, 0).bit_length()
            if bits == 0:
                continue
            for word, used_bits in enumerate(used):
                if used_bits + bits <= 64:
                    plan.append((index, word, used_bits))
                    used[word] += bits
                    break
            else:
                plan.append((index, len(used), 0))
                used.append(bits)
        self.width = max(len(used), 1)
        return plan

    def pack(self, columns: list[np.ndarray]) -> np.ndarray:
        """Return the batch's keys as a (rows, words) array with the same equalities."""
        if self.plan is None:
            self.plan = self._make_plan()
        rows = len(columns[0]) if columns else 0
        packed = np.zeros((rows, self.width), dtype=np.uint64)
        for index, word, shift in self.plan:
            shifted = columns[index] - np.uint64(self.low[index])
            packed[:, word] |= shifted << np.uint64(shift)
        return packed


class Grouper:
    """Numbers the distinct packed keys of a stream of batches in order of first appearance."""

    def __init__(self, rows: int, width: int) -> None:
        self.ids = np.empty(rows, dtype=np.int32)
        self._first = np.empty(max(rows, 1), dtype=np.int64)
        self.count = 0
        # Sized for one group in four rows, so that typical inputs never rehash.
        capacity = INITIAL_SLOTS
        while capacity < min(rows // 4, MAX_INITIAL_SLOTS):
            capacity <<= 1
        self._slots = np.zeros((capacity, width + 1), dtype=np.uint64)

    def insert(self, keys: np.ndarray, offset: int) -> None:
        """Number the rows offset .. offset + len(keys) of the input."""
        while (self.count + len(keys)) * 10 > len(self._slots) * MAX_LOAD_TENTHS:
            self._grow()
        self.count = _insert(keys, offset, self._slots, self.ids, self._first, self.count)

    def _grow(self) -> None:
        new_slots = np.zeros((2 * len(self._slots), self._slots.shape[1]), dtype=np.uint64)
        _rehash(self._slots, new_slots)
        self._slots = new_slots

    @property
    def first(self) -> np.ndarray:
        """The first row of each group."""
        return self._first[: self.count].copy()


@njit(cache=True, nogil=True)
def add_totals(columns, ids: np.ndarray, sums: np.ndarray) -> None:
    """Add a batch's unsigned columns into per-group sums, (groups, columns)."""
    width = len(columns)
    rows = len(ids)
    for row in range(rows):
        if row + PREFETCH_AHEAD < rows:
            prefetch_row(sums, ids[row + PREFETCH_AHEAD])
        group = ids[row]
        for column in range(width):
            sums[group, column] += columns[column][row]


@njit(cache=True, nogil=True)
def add_bounds(columns, valids, ids: np.ndarray, low: np.ndarray, high: np.ndarray,
               seen: np.ndarray) -> None:
    """Fold one batch into per-group bounds of unsigned columns, (groups, columns)."""
    width = len(columns)
    rows = len(ids)
    for row in range(rows):
        if row + PREFETCH_AHEAD < rows:
            ahead = ids[row + PREFETCH_AHEAD]
            prefetch_row(low, ahead)
            prefetch_row(high, ahead)
        group = ids[row]
        for column in range(width):
            if valids[column][row]:
                value = columns[column][row]
                if not seen[group, column]:
                    low[group, column] = value
                    high[group, column] = value
                    seen[group, column] = True
                else:
                    if value < low[group, column]:
                        low[group, column] = value
                    if value > high[group, column]:
                        high[group, column] = value


@njit(cache=True, nogil=True)
def add_masks(codes, valids, ids: np.ndarray, masks: np.ndarray) -> None:
    """Set bit ``code`` of each group's mask for every string code seen (codes below 64).

    ``masks`` is (groups, code columns).
    """
    width = len(codes)
    rows = len(ids)
    for row in range(rows):
        if row + PREFETCH_AHEAD < rows:
            prefetch_row(masks, ids[row + PREFETCH_AHEAD])
        group = ids[row]
        for column in range(width):
            if valids[column][row]:
                masks[group, column] |= np.uint64(1) << np.uint64(codes[column][row])


@njit(cache=True, nogil=True)
def add_first_minimum(values: np.ndarray, ids: np.ndarray, offset: int, best: np.ndarray,
                      rows: np.ndarray) -> None:
    """Keep, per group, the row with the smallest value (the first such row on ties)."""
    for row in range(len(values)):
        group = ids[row]
        if rows[group] < 0 or values[row] < best[group]:
            best[group] = values[row]
            rows[group] = offset + row


@njit(cache=True, nogil=True)
def add_agreement(values: np.ndarray, valid: np.ndarray, ids: np.ndarray, first: np.ndarray,
                  agreement: np.ndarray) -> None:
    """Fold one batch into each group's first non-null value and its ``agreement`` state.

    ``agreement`` goes from UNSEEN to AGREE at a group's first value, and to DIFFER at
    the first value that differs from it. An empty ``valid`` means the batch has no nulls.
    """
    check = len(valid) > 0
    rows = len(ids)
    for row in range(rows):
        if row + PREFETCH_AHEAD < rows:
            ahead = ids[row + PREFETCH_AHEAD]
            prefetch_row(agreement, ahead)
            prefetch_row(first, ahead)
        if check and not valid[row]:
            continue
        group = ids[row]
        state = agreement[group]
        if state == UNSEEN:
            first[group] = values[row]
            agreement[group] = AGREE
        elif state == AGREE and first[group] != values[row]:
            agreement[group] = DIFFER


@njit(cache=True, nogil=True)
def add_extreme(values: np.ndarray, valid: np.ndarray, ids: np.ndarray, lowest: bool,
                best: np.ndarray, seen: np.ndarray) -> None:
    """Fold one batch into each group's smallest (``lowest``) or largest non-null value.

    An empty ``valid`` means the batch has no nulls.
    """
    check = len(valid) > 0
    rows = len(ids)
    for row in range(rows):
        if row + PREFETCH_AHEAD < rows:
            ahead = ids[row + PREFETCH_AHEAD]
            prefetch_row(seen, ahead)
            prefetch_row(best, ahead)
        if check and not valid[row]:
            continue
        group = ids[row]
        value = values[row]
        if not seen[group]:
            best[group] = value
            seen[group] = True
        elif (value < best[group]) if lowest else (value > best[group]):
            best[group] = value
