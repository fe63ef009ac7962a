"""NumPy columns as Arrow arrays, without ``pa.array``.

``pa.array`` converts a NumPy array without a copy too, but its first call imports
numpy.ma, which costs 7 to 16 ms of every command's start-up and is otherwise unused.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Wrap a one-dimensional integer or float array, null where ``null`` is true.

    The values are shared, not copied, when they are contiguous already.
    """
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise TypeError(f"from_numpy takes a 1-d integer or float array, not {values.dtype} "
                        f"with {values.ndim} dimensions")
    bitmap, null_count = None, 0
    if null is not None:
        null_count = int(np.count_nonzero(null))
        if null_count:
            bitmap = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [bitmap, pa.py_buffer(values)], null_count=null_count)
