"""NumPy columns as Arrow arrays, without ``pa.array``.

``pa.array`` converts a NumPy array without a copy too, but its first call imports
numpy.ma, which costs 7 to 16 ms of every command's start-up and is otherwise unused.
Giving the values their Arrow type here also saves a cast: ``Array.cast`` imports
pyarrow.compute (50 to 70 ms).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray, null: np.ndarray | None = None,
               kind: pa.DataType | None = None) -> pa.Array:
    """Wrap a one-dimensional integer or float array, null where ``null`` is true.

    ``kind`` is the Arrow type to give the values (a timestamp for int64
    microseconds, say); it must be as wide as the NumPy type. The values are shared,
    not copied, when they are contiguous already.
    """
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise TypeError(f"from_numpy takes a 1-d integer or float array, not {values.dtype} "
                        f"with {values.ndim} dimensions")
    if kind is None:
        kind = pa.from_numpy_dtype(values.dtype)
    elif kind.bit_width != 8 * values.itemsize:
        raise TypeError(f"from_numpy cannot give {values.dtype} values the Arrow type {kind}; "
                        "convert them to a NumPy type of the same width first")
    bitmap, null_count = None, 0
    if null is not None:
        null_count = int(np.count_nonzero(null))
        if null_count:
            bitmap = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(values)],
                                 null_count=null_count)
