"""Flow records: snapshots of flows collected into Arrow record batches with FLOW_SCHEMA."""

from __future__ import annotations

import pyarrow as pa

from appliance.flows.keys import ADDRESS_A, ADDRESS_B, PORT_A, PORT_B
from appliance.flows.state import Flow
from appliance.records import FLOW_SCHEMA

#: Columns filled from a flow, in FLOW_SCHEMA order; the others are constants or null.
ROW_FIELDS = [
    "seq", "stime", "ltime", "etype", "proto", "saddr", "sport", "daddr", "dport", "smac", "dmac",
    "vlan", "dir", "state", "flgs", "cause", "pkts", "spkts", "dpkts", "bytes", "sbytes",
    "dbytes", "sappbytes", "dappbytes", "sttl", "dttl", "stos", "dtos", "suser", "duser",
]
LABEL_FIELDS = ["sco", "dco", "sas", "das", "label"]


def key_sides(flow: Flow) -> tuple[bytes, int, bytes, int]:
    """Return (saddr, sport, daddr, dport) of a flow, oriented from its initiator."""
    key = flow.key
    side_a = key[ADDRESS_A:ADDRESS_B]
    side_b = key[ADDRESS_B : ADDRESS_B + 16]
    port_a = int.from_bytes(key[PORT_A:PORT_B], "big")
    port_b = int.from_bytes(key[PORT_B : PORT_B + 2], "big")
    if flow.src_is_a:
        return side_a, port_a, side_b, port_b
    return side_b, port_b, side_a, port_a


def snapshot(flow: Flow, seq: int, cause: str, appbytes: bool) -> tuple:
    """Return the record of a flow's current counters as a tuple in ROW_FIELDS order."""
    saddr, sport, daddr, dport = key_sides(flow)
    src, dst = flow.src, flow.dst
    return (
        seq, flow.stime, flow.ltime, flow.etype, flow.proto, saddr, sport, daddr, dport,
        flow.smac, flow.dmac, flow.vlan, flow.direction(), flow.state(), flow.flgs(), cause,
        src.pkts + dst.pkts, src.pkts, dst.pkts, src.bytes + dst.bytes, src.bytes, dst.bytes,
        src.appbytes if appbytes else None, dst.appbytes if appbytes else None,
        src.ttl, dst.ttl, src.tos, dst.tos, bytes(src.user), bytes(dst.user),
    )


def rows_to_batch(rows: list[tuple], srcid: str) -> pa.RecordBatch:
    """Build one record batch with exactly FLOW_SCHEMA from snapshot rows."""
    count = len(rows)
    columns = dict(zip(ROW_FIELDS, zip(*rows, strict=True), strict=True)) if rows else {}
    arrays = []
    for field in FLOW_SCHEMA:
        if field.name == "srcid":
            arrays.append(pa.array([srcid] * count, type=field.type))
        elif field.name == "trans":
            arrays.append(pa.array([1] * count, type=field.type))
        elif field.name in LABEL_FIELDS or not rows:
            arrays.append(pa.nulls(count, field.type))
        else:
            arrays.append(pa.array(columns[field.name], type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)
