"""racluster: merge rules, key handling and agreement with racluster 3.0.8."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from appliance.analyses import AnalysisKeyError, cluster_records
from appliance.analyses.columns import constant_value, null_array, take_chunked
from appliance.records import FLOW_SCHEMA, address_to_text, conform, mac_to_text, pack_address
from tests.oracle_records import REFERENCE, read_reference_flows, reference_captures


def flow(saddr: str, daddr: str, **fields: object) -> dict[str, object]:
    """Build one record with defaults: UDP 1000 -> 53, one packet from saddr at t=100."""
    record: dict[str, object] = {
        "stime": datetime.fromtimestamp(100, tz=UTC), "ltime": datetime.fromtimestamp(100, tz=UTC),
        "etype": 0x86DD if ":" in saddr else 0x0800, "proto": 17,
        "saddr": pack_address(saddr), "sport": 1000, "daddr": pack_address(daddr), "dport": 53,
        "dir": "->", "state": "INT", "flgs": " e       ", "trans": 1,
        "pkts": 1, "spkts": 1, "dpkts": 0, "bytes": 60, "sbytes": 60, "dbytes": 0,
        "sappbytes": 18, "dappbytes": 0,
    }
    for name in ("stime", "ltime"):
        if fields.get(name) is not None:
            fields[name] = datetime.fromtimestamp(fields[name], tz=UTC)
    record.update(fields)
    return record


def make_table(*records: dict[str, object]) -> pa.Table:
    columns = {field.name: [row.get(field.name) for row in records] for field in FLOW_SCHEMA}
    return conform(pa.table(columns, schema=FLOW_SCHEMA))


def address_text(row: dict[str, object], field: str) -> str:
    mac = "smac" if field == "saddr" else "dmac"
    if row[field] is None:
        return mac_to_text(row[mac])
    return address_to_text(row[field])


@pytest.mark.parametrize("capture", reference_captures("racluster.csv"))
def test_host_pairs_match_racluster(capture: str) -> None:
    records = read_reference_flows(REFERENCE / f"{capture}.ra.csv")
    clustered = cluster_records(records, ["saddr", "daddr"])

    actual = {
        (address_text(row, "saddr"), address_text(row, "daddr"), row["pkts"], row["bytes"],
         row["trans"])
        for row in clustered.to_pylist()
    }
    with (REFERENCE / f"{capture}.racluster.csv").open(newline="") as handle:
        expected = {
            (row["SrcAddr"], row["DstAddr"], int(row["TotPkts"]), int(row["TotBytes"]),
             int(row["Trans"]))
            for row in csv.DictReader(handle)
        }
    assert clustered.num_rows == len(expected)
    assert actual == expected


def test_output_keeps_schema() -> None:
    clustered = cluster_records(make_table(flow("10.0.0.1", "10.0.0.2")), ["saddr"])
    assert clustered.schema == FLOW_SCHEMA


def test_default_key_merges_status_records() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", stime=40, ltime=44, pkts=5, spkts=5, state="INT"),
        flow("10.0.0.1", "10.0.0.2", stime=45, ltime=49, pkts=5, spkts=5, state="REQ"),
        flow("10.0.0.1", "10.0.0.2", stime=50, ltime=51, pkts=2, spkts=2, state="REQ"),
        flow("10.0.0.1", "10.0.0.2", sport=1001),
    )
    clustered = cluster_records(records).to_pylist()
    assert len(clustered) == 2
    merged = clustered[0]
    assert merged["trans"] == 3
    assert merged["pkts"] == 12
    assert merged["spkts"] == 12
    assert merged["stime"] == datetime.fromtimestamp(40, tz=UTC)
    assert merged["ltime"] == datetime.fromtimestamp(51, tz=UTC)
    assert merged["state"] == "INT"
    assert merged["dir"] == "->"


@pytest.mark.parametrize(
    ("first", "second", "merged"),
    [
        ("10.0.0.1", "10.0.0.2", "10.0.0.0"),
        ("10.0.0.2", "8.8.8.8", "8.0.0.0"),
        ("192.168.1.77", "192.168.1.77", "192.168.1.77"),
        ("2001:db8::1", "2001:d00::5", "2001:d00::"),
    ],
)
def test_differing_addresses_keep_common_prefix(first: str, second: str, merged: str) -> None:
    destination = "::1" if ":" in first else "1.1.1.1"
    records = make_table(flow(first, destination), flow(second, destination))
    clustered = cluster_records(records, ["daddr"]).to_pylist()
    assert len(clustered) == 1
    assert address_to_text(clustered[0]["saddr"]) == merged


def test_differing_ports_and_protos_become_zero() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", sport=1000, dport=53, proto=17),
        flow("10.0.0.1", "10.0.0.2", sport=2000, dport=53, proto=6, state="CON"),
    )
    merged = cluster_records(records, ["saddr", "daddr"]).to_pylist()[0]
    assert merged["sport"] == 0
    assert merged["dport"] == 53
    assert merged["proto"] == 0


def test_prefix_key_buckets_addresses() -> None:
    records = make_table(
        flow("10.1.2.3", "1.1.1.1"), flow("10.1.2.200", "1.1.1.1"), flow("10.1.3.1", "1.1.1.1")
    )
    clustered = cluster_records(records, ["saddr/24"]).to_pylist()
    # argus prints the network of the mask, also for a group of one record.
    assert [address_to_text(row["saddr"]) for row in clustered] == ["10.1.2.0", "10.1.3.0"]
    assert [row["trans"] for row in clustered] == [2, 1]
    wider = cluster_records(records, ["saddr/16"]).to_pylist()
    assert [address_to_text(row["saddr"]) for row in wider] == ["10.1.0.0"]


def test_prefix_key_counts_ipv4_bits() -> None:
    records = make_table(flow("10.1.2.3", "1.1.1.1"), flow("10.200.0.1", "1.1.1.1"))
    assert cluster_records(records, ["saddr/8"]).num_rows == 1
    assert cluster_records(records, ["saddr/16"]).num_rows == 2


def test_tcp_state_priority() -> None:
    records = make_table(*[
        flow("10.0.0.1", "10.0.0.2", proto=6, state=state, dpkts=1, pkts=2)
        for state in ("FIN", "RST", "REQ", "CON")
    ])
    merged = cluster_records(records, ["saddr", "daddr"]).to_pylist()[0]
    assert merged["state"] == "RST"
    # Every member is sure of its direction (->), so the merged record keeps it, as
    # argus's racluster does for TCP flows seen both ways.
    assert merged["dir"] == "->"


def test_dir_from_counts_when_members_disagree() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", proto=17, dir="->", dpkts=1, pkts=2),
        flow("10.0.0.1", "10.0.0.2", proto=17, sport=1001, dir="<-", dpkts=1, pkts=2),
        flow("10.0.0.3", "10.0.0.4", proto=6, dir="<?>", dpkts=1, pkts=2),
        flow("10.0.0.3", "10.0.0.4", proto=6, sport=1001, dir="->", dpkts=1, pkts=2),
    )
    merged = cluster_records(records, ["saddr", "daddr"]).to_pylist()
    assert [row["dir"] for row in merged] == ["<->", "->"]


def test_udp_state_from_directions() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", state="INT"),
        flow("10.0.0.1", "10.0.0.2", sport=1001, state="CON", dpkts=1, pkts=2),
    )
    merged = cluster_records(records, ["saddr", "daddr"]).to_pylist()[0]
    assert merged["state"] == "CON"


def test_flags_merge_by_position() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", flgs=" e s     "),
        flow("10.0.0.1", "10.0.0.2", flgs=" eU      ", sport=1001),
        flow("10.0.0.1", "10.0.0.2", flgs=" e d     ", sport=1002),
    )
    merged = cluster_records(records, ["saddr"]).to_pylist()[0]
    assert merged["flgs"] == " eU*     "


def test_sport_key_implies_proto() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", proto=17, sport=53),
        flow("10.0.0.1", "10.0.0.2", proto=6, sport=53, state="CON"),
    )
    assert cluster_records(records, ["sport"]).num_rows == 2


def test_families_never_merge() -> None:
    arp = flow("10.0.0.1", "10.0.0.2", etype=0x0806, proto=0, sport=0, dport=0, dir="who")
    records = make_table(flow("10.0.0.1", "10.0.0.2"), arp)
    clustered = cluster_records(records, ["saddr", "daddr"]).to_pylist()
    assert len(clustered) == 2
    assert clustered[1]["dir"] == "who"


def test_ipv4_and_ipv6_merge_by_proto() -> None:
    records = make_table(flow("10.0.0.1", "10.0.0.2"), flow("2001:db8::1", "2001:db8::2"))
    clustered = cluster_records(records, ["proto"]).to_pylist()
    assert len(clustered) == 1
    assert clustered[0]["trans"] == 2


def test_rmon_counts_each_host_both_ways() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", pkts=5, spkts=3, dpkts=2, sbytes=300, dbytes=200,
             bytes=500),
        flow("10.0.0.3", "10.0.0.1", pkts=4, spkts=4, dpkts=0, sbytes=400, dbytes=0, bytes=400),
    )
    hosts = {
        address_to_text(row["saddr"]): row
        for row in cluster_records(records, ["saddr"], mode="rmon").to_pylist()
    }
    assert sorted(hosts) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert hosts["10.0.0.1"]["trans"] == 2
    assert hosts["10.0.0.1"]["spkts"] == 3
    assert hosts["10.0.0.1"]["dpkts"] == 6
    assert hosts["10.0.0.1"]["pkts"] == 9
    assert hosts["10.0.0.2"]["spkts"] == 2
    assert hosts["10.0.0.2"]["dpkts"] == 3


def test_norep_reports_zero_trans() -> None:
    records = make_table(flow("10.0.0.1", "10.0.0.2"), flow("10.0.0.1", "10.0.0.2", sport=9))
    merged = cluster_records(records, ["saddr"], mode="norep").to_pylist()[0]
    assert merged["trans"] == 0
    assert merged["pkts"] == 2


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(AnalysisKeyError, match="bogus"):
        cluster_records(make_table(flow("10.0.0.1", "10.0.0.2")), ["bogus"])


def test_bad_prefix_is_rejected() -> None:
    with pytest.raises(AnalysisKeyError, match="saddr/200"):
        cluster_records(make_table(flow("10.0.0.1", "10.0.0.2")), ["saddr/200"])


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(AnalysisKeyError, match="mode"):
        cluster_records(make_table(flow("10.0.0.1", "10.0.0.2")), ["saddr"], mode="ind")


def test_empty_table_gives_empty_result() -> None:
    clustered = cluster_records(FLOW_SCHEMA.empty_table(), ["saddr"])
    assert clustered.num_rows == 0
    assert clustered.schema == FLOW_SCHEMA


def test_mac_key_groups_by_source_mac() -> None:
    records = make_table(
        flow("10.0.0.1", "10.0.0.2", smac=bytes.fromhex("020000000001")),
        flow("10.0.0.3", "10.0.0.2", smac=bytes.fromhex("020000000001")),
        flow("10.0.0.4", "10.0.0.2", smac=bytes.fromhex("020000000002")),
    )
    clustered = cluster_records(records, ["smac"]).to_pylist()
    assert [mac_to_text(row["smac"]) for row in clustered] == [
        "02:00:00:00:00:01", "02:00:00:00:00:02"
    ]
    assert [row["trans"] for row in clustered] == [2, 1]


def in_batches(table: pa.Table, size: int) -> pa.Table:
    """Return ``table`` split into record batches of ``size`` rows (the way files are read)."""
    return pa.Table.from_batches(table.combine_chunks().to_batches(max_chunksize=size))


def test_fields_agree_or_merge_across_batches() -> None:
    first_mac, other_mac = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    records = make_table(
        # Group 1: every member agrees, nulls aside.
        flow("10.0.0.1", "10.0.0.2", sttl=64, dttl=None, smac=first_mac, cause="Start", seq=7),
        flow("10.0.0.1", "10.0.0.2", sttl=None, dttl=None, smac=first_mac, cause="Start", seq=5),
        # Group 2: the members differ in every field.
        flow("10.0.0.3", "10.0.0.4", sttl=64, dttl=30, smac=first_mac, cause="Start", seq=9,
             stime=90, ltime=95),
        flow("10.0.0.3", "10.0.0.4", sttl=65, dttl=31, smac=other_mac, cause="Stop", seq=None,
             stime=80, ltime=None),
    )
    expected = [
        {"sttl": 64, "dttl": None, "smac": first_mac, "cause": "Start", "seq": 5,
         "stime": datetime.fromtimestamp(100, tz=UTC),
         "ltime": datetime.fromtimestamp(100, tz=UTC)},
        {"sttl": None, "dttl": None, "smac": None, "cause": None, "seq": 9,
         "stime": datetime.fromtimestamp(80, tz=UTC),
         "ltime": datetime.fromtimestamp(95, tz=UTC)},
    ]
    # One record per batch: the members of a group meet only in the per-group state.
    for table in (records, in_batches(records, 1), in_batches(records, 3)):
        merged = cluster_records(table, ["saddr", "daddr"]).to_pylist()
        actual = [{name: row[name] for name in expected[0]} for row in merged]
        assert actual == expected


def test_columns_constant_per_batch_still_merge() -> None:
    # Every batch is constant on its own, but the batches differ from each other.
    records = in_batches(make_table(
        flow("10.0.0.1", "10.0.0.2", cause="Start", dmac=bytes.fromhex("020000000001")),
        flow("10.0.0.1", "10.0.0.2", cause="Stop", dmac=bytes.fromhex("020000000002")),
    ), 1)
    merged = cluster_records(records, ["saddr"]).to_pylist()
    assert merged[0]["cause"] is None
    assert merged[0]["dmac"] is None


def test_constant_columns_repeat_their_value() -> None:
    mac = bytes.fromhex("020000000009")
    records = in_batches(make_table(*[
        flow(f"10.0.0.{host}", "10.0.0.99", cause="Status", dmac=mac, srcid="sensor-1")
        for host in range(1, 6)
    ]), 2)
    merged = cluster_records(records, ["saddr"])
    assert merged.column("cause").to_pylist() == ["Status"] * 5
    assert merged.column("dmac").to_pylist() == [mac] * 5
    assert merged.column("srcid").to_pylist() == ["sensor-1"] * 5
    merged.validate(full=True)


def test_unrequested_columns_are_null() -> None:
    records = make_table(flow("10.0.0.1", "10.0.0.2", smac=bytes.fromhex("020000000001"),
                              dmac=bytes.fromhex("020000000002")))
    merged = cluster_records(records, ["saddr"], columns={"saddr", "smac", "pkts"})
    assert merged.schema == FLOW_SCHEMA
    assert merged.column("smac").to_pylist() == [bytes.fromhex("020000000001")]
    assert merged.column("pkts").to_pylist() == [1]
    for name in ("dmac", "stime", "state", "suser", "sttl", "label"):
        assert merged.column(name).null_count == 1, name
    merged.validate(full=True)


def test_null_array_matches_arrow_nulls() -> None:
    for field in FLOW_SCHEMA:
        for count in (0, 1, 1000):
            nulls = null_array(field.type, count)
            nulls.validate(full=True)
            assert nulls.type == field.type
            assert nulls.equals(pa.nulls(count, field.type)), field.name


@pytest.mark.parametrize("kind", [pa.binary(16), pa.binary(6), pa.uint16(), pa.uint64(),
                                  pa.timestamp("us", tz="UTC")])
def test_take_chunked_matches_take(kind: pa.DataType) -> None:
    rng = np.random.default_rng(5)
    if pa.types.is_fixed_size_binary(kind):
        whole = pa.array([rng.bytes(kind.byte_width) for _ in range(1000)], kind)
    else:
        whole = pa.array(rng.integers(0, 60_000, 1000)).cast(kind)
    # Uneven chunks, an empty one, and chunks that are slices (non-zero offsets).
    column = pa.chunked_array([whole.slice(0, 300), whole.slice(300, 0), whole.slice(300, 450),
                               whole.slice(750)])
    for rows in (np.arange(0, 1000, 7), rng.integers(0, 1000, 500), np.array([999, 0, 500])):
        gathered = take_chunked(column, rows)
        gathered.validate(full=True)
        assert gathered.equals(whole.take(pa.array(rows)))


CONSTANT_CASES = [
    (pa.chunked_array([pa.array(["Start"] * 3), pa.array(["Start"] * 2)]), "Start"),
    (pa.chunked_array([pa.array(["Start"] * 3), pa.array(["Stop!"] * 2)]), None),
    (pa.chunked_array([pa.array(["Start"] * 3), pa.array(["Stop"] * 2)]), None),
    (pa.chunked_array([pa.array(["ab", "abc"])]), None),
    (pa.chunked_array([pa.array(["", ""]), pa.array([""])]), ""),
    (pa.chunked_array([pa.array(["x"]), pa.array(["", ""])]), None),
    (pa.chunked_array([pa.array(["a", "b", "a"]).slice(2), pa.array(["a"])]), "a"),
    (pa.chunked_array([pa.array([], pa.string()), pa.array(["é", "é"])]), "é"),
    (pa.chunked_array([pa.array(["a", None])]), None),
    (pa.chunked_array([pa.array([b"xy", b"xy"], pa.binary())]), b"xy"),
    (pa.chunked_array([pa.array([b"abcdef"] * 2, pa.binary(6)),
                       pa.array([b"abcdef"], pa.binary(6))]), b"abcdef"),
    (pa.chunked_array([pa.array([b"abcdef"] * 2, pa.binary(6)),
                       pa.array([b"abcdeg"], pa.binary(6))]), None),
    (pa.chunked_array([pa.array([1, 1], pa.uint8()), pa.array([1], pa.uint8())]), 1),
    (pa.chunked_array([pa.array([1, 1], pa.uint8()), pa.array([2], pa.uint8())]), None),
]


@pytest.mark.parametrize(("column", "expected"), CONSTANT_CASES)
def test_constant_column_detection(column: pa.ChunkedArray, expected: object) -> None:
    value = constant_value(column)
    assert value == expected
    assert type(value) is type(expected)
