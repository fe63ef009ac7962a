"""Columns of merged results: rows gathered from chunked columns, nulls and repeats.

A record file is read as many record batches, so every column of the input is chunked.
These helpers build one whole output column from such input without joining its chunks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def take_chunked(column: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """Gather ``rows`` of a chunked column: sorted, split by chunk, then put back in order."""
    return take_columns([column], rows)[0]


def take_columns(columns: list[pa.ChunkedArray], rows: np.ndarray) -> list[pa.Array]:
    """Gather the same ``rows`` of columns that share one chunk layout, sorting them once."""
    rows = np.asarray(rows, dtype=np.int64)
    if columns[0].num_chunks <= 1 or len(rows) == 0:
        return [column.take(pa.array(rows)).combine_chunks() for column in columns]
    ascending = bool(np.all(rows[1:] >= rows[:-1]))
    order = None if ascending else np.argsort(rows, kind="stable")
    ordered = rows if order is None else rows[order]
    starts = np.cumsum([0] + [len(chunk) for chunk in columns[0].chunks])
    cuts = np.searchsorted(ordered, starts)
    inverse = None
    gathered = []
    for column in columns:
        if column.null_count == 0 and _fixed_width(column.type):
            gathered.append(_take_fixed_width(column, ordered, order, starts, cuts))
            continue
        pieces = [chunk.take(pa.array(ordered[cuts[index]:cuts[index + 1]] - starts[index]))
                  for index, chunk in enumerate(column.chunks) if cuts[index + 1] > cuts[index]]
        sorted_values = pa.concat_arrays(pieces)
        if order is None:
            gathered.append(sorted_values)
            continue
        if inverse is None:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
        gathered.append(sorted_values.take(pa.array(inverse)))
    return gathered


def _fixed_width(kind: pa.DataType) -> int | None:
    """Return the bytes per value of a fixed-size binary, integer, float or time type."""
    if pa.types.is_fixed_size_binary(kind):
        return kind.byte_width
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind):
        return kind.bit_width // 8
    return None


def _take_fixed_width(column: pa.ChunkedArray, ordered: np.ndarray, order: np.ndarray | None,
                      starts: np.ndarray, cuts: np.ndarray) -> pa.Array:
    """Gather the sorted rows ``ordered`` of a fixed-width column without nulls straight
    into the result's buffer, at their positions before sorting (``order``)."""
    value = np.dtype((np.void, _fixed_width(column.type)))
    gathered = np.empty(len(ordered), dtype=value)
    for index, chunk in enumerate(column.chunks):
        first, last = cuts[index], cuts[index + 1]
        if last <= first:
            continue
        values = np.frombuffer(chunk.buffers()[1], dtype=value,
                               count=chunk.offset + len(chunk))[chunk.offset:]
        target = slice(first, last) if order is None else order[first:last]
        gathered[target] = values[ordered[first:last] - starts[index]]
    return pa.Array.from_buffers(column.type, len(ordered), [None, pa.py_buffer(gathered)])


def null_array(kind: pa.DataType, count: int) -> pa.Array:
    """Return ``count`` nulls of a primitive, string, binary or fixed-size binary type.

    ``pa.nulls`` writes zeros into new buffers. Here every buffer is one NumPy array of
    zeros, which NumPy gets from calloc. A large null column then does not become
    resident memory, because its pages are only read, never written.
    """
    if not (pa.types.is_primitive(kind) or pa.types.is_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_fixed_size_binary(kind)):
        return pa.nulls(count, kind)
    variable = pa.types.is_string(kind) or pa.types.is_binary(kind)
    # Bytes per value: 32-bit offsets for strings and binaries, the value's width otherwise.
    width = 4 if variable else max(kind.bit_width // 8, 1)
    zeros = pa.py_buffer(np.zeros(width * (count + 1) + 8, dtype=np.uint8))
    buffers = [zeros, zeros, zeros] if variable else [zeros, zeros]
    return pa.Array.from_buffers(kind, count, buffers, null_count=count)


def repeat_value(value: object, kind: pa.DataType, count: int) -> pa.Array:
    """Return ``count`` copies of ``value``. Strings and binaries are laid out directly,
    which is faster than ``pa.repeat`` for them."""
    if pa.types.is_fixed_size_binary(kind):
        return pa.Array.from_buffers(kind, count, [None, pa.py_buffer(bytes(value) * count)])
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        data = value.encode() if isinstance(value, str) else bytes(value)
        if len(data) * count < 2**31:
            offsets = np.arange(count + 1, dtype=np.int32) * np.int32(len(data))
            return pa.Array.from_buffers(kind, count, [None, pa.py_buffer(offsets),
                                                       pa.py_buffer(data * count)])
    return pa.repeat(pa.scalar(value, kind), count)


def constant_value(column: pa.ChunkedArray) -> object | None:
    """Return the value of a column without nulls whose rows all equal it, else None.

    Chunks are checked one at a time, so a column that varies is usually rejected at
    its first chunk.
    """
    if column.null_count or len(column) == 0:
        return None
    value = None
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        if chunk.type in (pa.string(), pa.binary()) or pa.types.is_fixed_size_binary(chunk.type):
            rows = _equal_length_rows(chunk)
            if value is None and rows is not None:
                value = rows[0].tobytes()
            if rows is None or rows.shape[1] != len(value) \
                    or not (rows == np.frombuffer(value, dtype=np.uint8)).all():
                return None
            continue
        bounds = pc.min_max(chunk)
        if bounds["min"] != bounds["max"]:
            return None
        if value is None:
            value = bounds["min"].as_py()
        elif bounds["min"].as_py() != value:
            return None
    if isinstance(value, bytes) and pa.types.is_string(column.type):
        return value.decode()
    return value


def _equal_length_rows(chunk: pa.Array) -> np.ndarray | None:
    """Return the bytes of a binary or string chunk as a (rows, length) array, or None
    when its values differ in length."""
    if pa.types.is_fixed_size_binary(chunk.type):
        width = chunk.type.byte_width
        raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
        return raw[chunk.offset * width:(chunk.offset + len(chunk)) * width].reshape(-1, width)
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32,
                            count=chunk.offset + len(chunk) + 1)[chunk.offset:]
    width = int(offsets[1] - offsets[0])
    if not (np.diff(offsets) == width).all():
        return None
    if width == 0:
        return np.zeros((len(chunk), 0), dtype=np.uint8)
    data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)
    return data[offsets[0]:offsets[-1]].reshape(-1, width)
