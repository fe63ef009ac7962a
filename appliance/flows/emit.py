"""Emitted flow records: the compiled code's output arrays to Arrow batches with FLOW_SCHEMA."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from appliance.arrays import from_numpy
from appliance.flows import layout as f
from appliance.records import FLOW_SCHEMA

#: Output rows kept in memory before they become a record batch.
RECORD_CAPACITY = 16384
#: Upper bound of the user-data output arrays, so a large -U does not allocate gigabytes.
USER_OUTPUT_BYTES = 1 << 24

LABEL_FIELDS = ("sco", "dco", "sas", "das", "label")


class RecordArrays:
    """Preallocated output arrays that the compiled code appends records to."""

    def __init__(self, user_data_len: int) -> None:
        capacity = max(64, min(RECORD_CAPACITY, USER_OUTPUT_BYTES // (2 * user_data_len + 1)))
        self.records = np.zeros((capacity, f.RECORD_COLUMNS), dtype=np.int64)
        self.addrs = np.zeros((capacity, 2, 16), dtype=np.uint8)
        self.macs = np.zeros((capacity, 2, 6), dtype=np.uint8)
        self.flgs = np.zeros((capacity, f.FLGS_WIDTH), dtype=np.uint8)
        self.user = np.zeros((capacity, 2, max(user_data_len, 1)), dtype=np.uint8)

    @property
    def arrays(self) -> tuple:
        return self.records, self.addrs, self.macs, self.flgs, self.user

    def to_batch(self, count: int, srcid: str, appbytes: bool) -> pa.RecordBatch:
        """Return the first ``count`` output rows as a record batch with FLOW_SCHEMA.

        Each column is built with its schema type, so no cast (and no import of
        pyarrow.compute) is needed.
        """
        columns = _columns(self, count, appbytes)
        arrays = []
        for field in FLOW_SCHEMA:
            if field.name == "srcid":
                arrays.append(pa.array([srcid] * count, type=field.type))
            elif field.name == "trans":
                arrays.append(from_numpy(np.ones(count, dtype=np.uint32)))
            elif field.name in LABEL_FIELDS:
                arrays.append(pa.nulls(count, field.type))
            else:
                arrays.append(columns[field.name])
        return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)


def _fixed(values: np.ndarray, width: int) -> pa.Array:
    data = np.ascontiguousarray(values).tobytes()
    return pa.Array.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(data)])


def _variable(data: np.ndarray, lengths: np.ndarray, kind: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = np.arange(data.shape[1]) < lengths[:, None]
    body = data[mask].tobytes()
    return pa.Array.from_buffers(
        kind, len(lengths), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(body)]
    )


def _optional_names(codes: np.ndarray, names: list[str]) -> pa.Array:
    """Return ``_names`` with nulls where the code is 0."""
    missing = codes == 0
    if missing.all():
        return pa.nulls(len(codes), pa.string())
    named = _names(codes, names)
    if not missing.any():
        return named
    valid = np.packbits(~missing, bitorder="little")
    return pa.Array.from_buffers(pa.string(), len(codes),
                                 [pa.py_buffer(valid.tobytes()), *named.buffers()[1:]])


def _names(codes: np.ndarray, names: list[str]) -> pa.Array:
    """Return the strings that ``codes`` index in ``names``, as an Arrow string array."""
    table, lengths = _name_table(tuple(names))
    chosen = codes.astype(np.intp)
    return _variable(table[chosen], lengths[chosen], pa.string())


@functools.cache
def _name_table(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``names`` as rows of a byte matrix (padded) and their lengths."""
    encoded = [name.encode() for name in names]
    table = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.uint8)
    for row, name in enumerate(encoded):
        table[row, :len(name)] = np.frombuffer(name, dtype=np.uint8)
    return table, np.array([len(name) for name in encoded], dtype=np.int64)


def _numpy_type(kind: pa.DataType) -> np.dtype:
    """Return the NumPy type for the values of an Arrow integer or timestamp type."""
    if pa.types.is_timestamp(kind):
        return np.dtype(np.int64)
    return np.dtype(f"{'i' if pa.types.is_signed_integer(kind) else 'u'}{kind.bit_width // 8}")


#: Field name -> (Arrow type, NumPy type of its values) for the integer and time columns.
_TYPES = {field.name: (field.type, _numpy_type(field.type)) for field in FLOW_SCHEMA
          if pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type)}


def _typed(name: str, values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Wrap int64 values as the Arrow array of field ``name``'s type."""
    kind, numpy_type = _TYPES[name]
    return from_numpy(values.astype(numpy_type, copy=False), null=null, kind=kind)


def _columns(out: RecordArrays, count: int, appbytes: bool) -> dict[str, pa.Array]:
    rec = out.records[:count]

    def column(index: int) -> np.ndarray:
        # A copy even of a one-row column, which would otherwise be a view of the output
        # array that the compiled code overwrites with the next records.
        return rec[:, index].copy()

    spkts, dpkts = column(f.R_SPKTS), column(f.R_DPKTS)
    sbytes, dbytes = column(f.R_SBYTES), column(f.R_DBYTES)
    vlan = column(f.R_VLAN)
    columns = {
        name: _typed(name, column(index)) for name, index in _PLAIN_COLUMNS.items()
    }
    columns |= {
        "saddr": _fixed(out.addrs[:count, 0], 16),
        "daddr": _fixed(out.addrs[:count, 1], 16),
        "smac": _fixed(out.macs[:count, 0], 6),
        "dmac": _fixed(out.macs[:count, 1], 6),
        "vlan": _typed("vlan", np.maximum(vlan, 0), null=vlan < 0),
        "dir": _names(column(f.R_DIR), f.DIRECTIONS),
        "state": _names(column(f.R_STATE), f.STATES),
        "flgs": _variable(out.flgs[:count], np.full(count, f.FLGS_WIDTH), pa.string()),
        "cause": _names(column(f.R_CAUSE), f.CAUSES),
        "appproto": _optional_names(column(f.R_APPPROTO), f.APPPROTOS),
        "pkts": _typed("pkts", spkts + dpkts),
        "spkts": _typed("spkts", spkts),
        "dpkts": _typed("dpkts", dpkts),
        "bytes": _typed("bytes", sbytes + dbytes),
        "sbytes": _typed("sbytes", sbytes),
        "dbytes": _typed("dbytes", dbytes),
        "suser": _variable(out.user[:count, 0], column(f.R_SUSER_LEN), pa.binary()),
        "duser": _variable(out.user[:count, 1], column(f.R_DUSER_LEN), pa.binary()),
    }
    if appbytes:
        columns["sappbytes"] = _typed("sappbytes", column(f.R_SAPPBYTES))
        columns["dappbytes"] = _typed("dappbytes", column(f.R_DAPPBYTES))
    else:
        columns["sappbytes"] = pa.nulls(count, pa.uint64())
        columns["dappbytes"] = pa.nulls(count, pa.uint64())
    return columns


#: Columns copied from one output column as they are.
_PLAIN_COLUMNS = {
    "seq": f.R_SEQ, "stime": f.R_STIME, "ltime": f.R_LTIME, "etype": f.R_ETYPE,
    "proto": f.R_PROTO, "sport": f.R_SPORT, "dport": f.R_DPORT, "sttl": f.R_STTL,
    "dttl": f.R_DTTL, "stos": f.R_STOS, "dtos": f.R_DTOS,
}
