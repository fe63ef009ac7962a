"""The flow meter's output arrays turned into Arrow batches, and NumPy columns into Arrow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from appliance.arrays import from_numpy
from appliance.flows import layout as f
from appliance.flows.emit import RecordArrays
from appliance.records import FLOW_SCHEMA


def _fill_row(out: RecordArrays, row: int, stime_us: int) -> None:
    out.records[row] = 0
    out.records[row, f.R_STIME] = stime_us
    out.records[row, f.R_LTIME] = stime_us + 5
    out.records[row, f.R_SPKTS] = 1
    out.records[row, f.R_VLAN] = -1


def test_one_row_batch_survives_array_reuse() -> None:
    out = RecordArrays(user_data_len=0)
    _fill_row(out, 0, 1_000_000)
    first = out.to_batch(1, srcid="sensor", appbytes=True)
    _fill_row(out, 0, 9_000_000)  # the compiled code writes the next record to row 0
    second = out.to_batch(1, srcid="sensor", appbytes=True)

    assert first.schema == FLOW_SCHEMA
    assert first.column("stime").cast(pa.int64()).to_pylist() == [1_000_000]
    assert first.column("ltime").cast(pa.int64()).to_pylist() == [1_000_005]
    assert second.column("stime").cast(pa.int64()).to_pylist() == [9_000_000]
    assert first.column("vlan").to_pylist() == [None]


def test_from_numpy_shares_contiguous_values_and_marks_nulls() -> None:
    values = np.array([5, -1, 7, 0, 9, 11, 13, 15, 17], dtype=np.int64)
    wrapped = from_numpy(values, null=values < 0)
    assert wrapped.type == pa.int64()
    assert wrapped.to_pylist() == [5, None, 7, 0, 9, 11, 13, 15, 17]
    assert wrapped.null_count == 1
    assert from_numpy(values.astype(np.uint16)).type == pa.uint16()
    assert from_numpy(values[::2]).to_pylist() == [5, 7, 9, 13, 17]


def test_from_numpy_without_nulls_has_no_bitmap() -> None:
    wrapped = from_numpy(np.arange(3, dtype=np.uint32), null=np.zeros(3, dtype=bool))
    assert wrapped.null_count == 0
    assert wrapped.buffers()[0] is None


@pytest.mark.parametrize("values", [np.zeros(3, dtype=bool), np.zeros((2, 2), dtype=np.int64)])
def test_from_numpy_rejects_bool_and_2d(values: np.ndarray) -> None:
    with pytest.raises(TypeError, match="1-d integer or float array"):
        from_numpy(values)
