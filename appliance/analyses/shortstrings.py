"""Numbering short strings of few distinct values without hashing them one by one.

Columns such as state, dir and flgs contain a handful of distinct texts of a few bytes
each. ``ShortStringCoder`` packs each value into two 64-bit words (the bytes and the
length) and looks it up in a small table of the texts seen so far, in compiled code.
When a value is longer than 15 bytes or the table is full, it returns None, and the
caller numbers that batch with Arrow's dictionary encoding instead.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

#: Maximum length in bytes of a value in the packed form.
LONGEST = 15

DONE, TOO_LONG, TABLE_FULL = 0, 1, 2


@njit(cache=True, nogil=True)
def _code(offsets: np.ndarray, data: np.ndarray, first: int, valid: np.ndarray,
          keys: np.ndarray, count: int, codes: np.ndarray,
          new_rows: np.ndarray) -> tuple[int, int]:
    last = -1
    for row in range(len(valid)):
        if not valid[row]:
            codes[row] = 0
            continue
        start = offsets[first + row]
        length = offsets[first + row + 1] - start
        if length > LONGEST:
            return count, TOO_LONG
        low = np.uint64(0)
        high = np.uint64(length) << np.uint64(56)
        for index in range(length):
            byte = np.uint64(data[start + index])
            if index < 8:
                low |= byte << np.uint64(8 * index)
            else:
                high |= byte << np.uint64(8 * (index - 8))
        found = -1
        if last >= 0 and keys[last, 0] == low and keys[last, 1] == high:
            found = last
        else:
            for entry in range(count):
                if keys[entry, 0] == low and keys[entry, 1] == high:
                    found = entry
                    break
        if found < 0:
            if count == len(keys):
                return count, TABLE_FULL
            keys[count, 0] = low
            keys[count, 1] = high
            new_rows[count] = row
            found = count
            count += 1
        codes[row] = found
        last = found
    return count, DONE


class ShortStringCoder:
    """Numbers the values of string arrays across batches, up to ``capacity`` texts."""

    def __init__(self, capacity: int) -> None:
        self.keys = np.zeros((capacity, 2), dtype=np.uint64)
        self.texts: list[str] = []

    def code(self, array: pa.Array, valid: np.ndarray) -> np.ndarray | None:
        """Return int64 codes of a string array (0 where not valid), or None if it does
        not fit (a long value, or more distinct texts than the table holds).

        On None, the table is left as it was before the call.
        """
        if array.type != pa.string() or len(array) == 0:
            return None
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
        data_buffer = array.buffers()[2]
        data = (np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None
                else np.zeros(1, dtype=np.uint8))
        codes = np.empty(len(array), dtype=np.int64)
        new_rows = np.empty(len(self.keys), dtype=np.int64)
        before = len(self.texts)
        keys = self.keys.copy()
        count, status = _code(offsets, data, array.offset, valid, keys, before, codes, new_rows)
        if status != DONE:
            return None
        self.keys = keys
        self.texts += [array[int(row)].as_py() for row in new_rows[before:count]]
        return codes
