"""Emitted flow records: the compiled code's output arrays to Arrow batches with FLOW_SCHEMA."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from appliance.arrays import from_numpy
from appliance.flows import layout as f
from appliance.records import FLOW_SCHEMA

#: Output rows kept in memory before they become a record batch.
RECORD_CAPACITY = 16384
#: Upper bound of the user-data output arrays, so a large -U does not allocate gigabytes.
USER_OUTPUT_BYTES = 1 << 24

_DIRECTIONS = pa.array(f.DIRECTIONS, pa.string())
_STATES = pa.array(f.STATES, pa.string())
_CAUSES = pa.array(f.CAUSES, pa.string())
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
        """Return the first ``count`` output rows as a record batch with FLOW_SCHEMA."""
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
                arrays.append(columns[field.name].cast(field.type))
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


def _names(codes: np.ndarray, names: pa.Array) -> pa.Array:
    indices = from_numpy(codes.astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, names).dictionary_decode()


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
        "seq": from_numpy(column(f.R_SEQ)),
        "stime": from_numpy(column(f.R_STIME)).cast(pa.timestamp("us", "UTC")),
        "ltime": from_numpy(column(f.R_LTIME)).cast(pa.timestamp("us", "UTC")),
        "etype": from_numpy(column(f.R_ETYPE)),
        "proto": from_numpy(column(f.R_PROTO)),
        "saddr": _fixed(out.addrs[:count, 0], 16),
        "sport": from_numpy(column(f.R_SPORT)),
        "daddr": _fixed(out.addrs[:count, 1], 16),
        "dport": from_numpy(column(f.R_DPORT)),
        "smac": _fixed(out.macs[:count, 0], 6),
        "dmac": _fixed(out.macs[:count, 1], 6),
        "vlan": from_numpy(np.maximum(vlan, 0), null=vlan < 0),
        "dir": _names(column(f.R_DIR), _DIRECTIONS),
        "state": _names(column(f.R_STATE), _STATES),
        "flgs": _variable(out.flgs[:count], np.full(count, f.FLGS_WIDTH), pa.string()),
        "cause": _names(column(f.R_CAUSE), _CAUSES),
        "pkts": from_numpy(spkts + dpkts),
        "spkts": from_numpy(spkts),
        "dpkts": from_numpy(dpkts),
        "bytes": from_numpy(sbytes + dbytes),
        "sbytes": from_numpy(sbytes),
        "dbytes": from_numpy(dbytes),
        "sttl": from_numpy(column(f.R_STTL)),
        "dttl": from_numpy(column(f.R_DTTL)),
        "stos": from_numpy(column(f.R_STOS)),
        "dtos": from_numpy(column(f.R_DTOS)),
        "suser": _variable(out.user[:count, 0], column(f.R_SUSER_LEN), pa.binary()),
        "duser": _variable(out.user[:count, 1], column(f.R_DUSER_LEN), pa.binary()),
    }
    if appbytes:
        columns["sappbytes"] = from_numpy(column(f.R_SAPPBYTES))
        columns["dappbytes"] = from_numpy(column(f.R_DAPPBYTES))
    else:
        columns["sappbytes"] = pa.nulls(count, pa.uint64())
        columns["dappbytes"] = pa.nulls(count, pa.uint64())
    return columns
