"""Compiled group-by building blocks for racluster: group ids and per-group reductions.

``group_ids`` numbers the distinct keys of a table in order of first appearance with an
open-addressing hash table. Each reduction then makes one pass over the rows, indexed
by group id. Key columns are packed first (``pack_keys``): each column is
offset by its minimum and the columns are bit-packed into as few 64-bit words as
their value ranges allow, so a host-pair key of IPv4 addresses is one word.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
MIX = np.uint64(0xBF58476D1CE4E5B9)


@njit(cache=True)
def _hash_row(keys: np.ndarray, row: int) -> np.uint64:
    value = np.uint64(0)
    for column in range(keys.shape[1]):
        value = (value ^ keys[row, column]) * MULTIPLIER
        value ^= value >> np.uint64(31)
        value *= MIX
        value ^= value >> np.uint64(29)
    return value


@njit(cache=True)
def _group_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, width = keys.shape
    capacity = 16
    while capacity < rows + rows // 2:
        capacity <<= 1
    mask = capacity - 1
    buckets = np.full(capacity, -1, dtype=np.int32)
    ids = np.empty(rows, dtype=np.int32)
    first = np.empty(rows, dtype=np.int64)
    count = 0
    for row in range(rows):
        bucket = np.int64(_hash_row(keys, row) & np.uint64(mask))
        while True:
            group = buckets[bucket]
            if group < 0:
                buckets[bucket] = count
                first[count] = row
                ids[row] = count
                count += 1
                break
            other = first[group]
            same = True
            for column in range(width):
                if keys[other, column] != keys[row, column]:
                    same = False
                    break
            if same:
                ids[row] = group
                break
            bucket = (bucket + 1) & mask
    return ids, first[:count].copy()


def pack_keys(columns: list[np.ndarray]) -> np.ndarray:
    """Pack unsigned 64-bit key columns into an (rows, words) array with the same equalities.

    Each column is offset by its minimum; columns whose range fits are packed side by
    side into one word. Constant columns are dropped (at least one word remains).
    """
    rows = len(columns[0]) if columns else 0
    words: list[np.ndarray] = []
    used: list[int] = []
    for column in columns:
        column = np.asarray(column, dtype=np.uint64)
        low = column.min() if rows else np.uint64(0)
        span = int(column.max() - low) if rows else 0
        bits = span.bit_length()
        if bits == 0:
            continue
        shifted = column - low
        for index, taken in enumerate(used):
            if taken + bits <= 64:
                words[index] |= shifted << np.uint64(taken)
                used[index] += bits
                break
        else:
            words.append(shifted.copy())
            used.append(bits)
    if not words:
        words.append(np.zeros(rows, dtype=np.uint64))
    return np.ascontiguousarray(np.stack(words, axis=1))


def group_ids(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct rows of the key columns in order of first appearance.

    Returns (group id per row, first row of each group).
    """
    return _group_ids(pack_keys(columns))


@njit(cache=True)
def min_max(values: np.ndarray, valid: np.ndarray, ids: np.ndarray,
            groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: minimum, maximum and whether any valid value was seen."""
    low = np.zeros(groups, dtype=values.dtype)
    high = np.zeros(groups, dtype=values.dtype)
    seen = np.zeros(groups, dtype=np.bool_)
    for row in range(len(values)):
        if valid[row]:
            group = ids[row]
            value = values[row]
            if not seen[group]:
                low[group] = value
                high[group] = value
                seen[group] = True
            else:
                if value < low[group]:
                    low[group] = value
                if value > high[group]:
                    high[group] = value
    return low, high, seen


@njit(cache=True)
def total(values: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Per group: the sum of unsigned values (nulls given as 0)."""
    sums = np.zeros(groups, dtype=np.uint64)
    for row in range(len(values)):
        sums[ids[row]] += values[row]
    return sums


@njit(cache=True)
def first_minimum(values: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Per group: the row holding the smallest value (the first such row on ties)."""
    rows = np.full(groups, -1, dtype=np.int64)
    for row in range(len(values)):
        group = ids[row]
        best = rows[group]
        if best < 0 or values[row] < values[best]:
            rows[group] = row
    return rows


@njit(cache=True)
def bit_union(codes: np.ndarray, valid: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Per group: a bit mask with bit ``code`` set for every code seen (codes below 64)."""
    masks = np.zeros(groups, dtype=np.uint64)
    for row in range(len(codes)):
        if valid[row]:
            masks[ids[row]] |= np.uint64(1) << np.uint64(codes[row])
    return masks


@njit(cache=True)
def _min_max_many(columns, valids, ids, groups):
    width = len(columns)
    low = np.zeros((groups, width), dtype=np.uint64)
    high = np.zeros((groups, width), dtype=np.uint64)
    seen = np.zeros((groups, width), dtype=np.bool_)
    for row in range(len(ids)):
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
    return low, high, seen


def _read_only(array: np.ndarray) -> np.ndarray:
    """Return a read-only view, so that arrays from Arrow and from NumPy share one numba type."""
    view = array.view()
    view.setflags(write=False)
    return view


def min_max_many(columns: list[np.ndarray], valids: list[np.ndarray], ids: np.ndarray,
                 groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``min_max`` of several non-negative columns in one pass; results are (groups, columns).

    Values are compared as unsigned 64-bit integers.
    """
    if not columns:
        empty = np.zeros((groups, 0), dtype=np.uint64)
        return empty, empty.copy(), np.zeros((groups, 0), dtype=bool)
    arrays = tuple(_read_only(np.ascontiguousarray(column).astype(np.uint64, copy=False))
                   for column in columns)
    flags = tuple(_read_only(np.ascontiguousarray(valid, dtype=np.bool_)) for valid in valids)
    return _min_max_many(arrays, flags, ids, groups)
