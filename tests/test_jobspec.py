"""Job specifications: validation naming the field, and execution with result files."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from appliance.jobs import JobContext, execute, write_result
from appliance.jobspec import JobSpec, SpecError
from appliance.records import FLOW_SCHEMA, EtherType, conform, pack_address

NOW = datetime(2026, 12, 4, 19, 12, tzinfo=UTC).timestamp()


def records() -> pa.Table:
    start = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).timestamp()
    rows = []
    for index, (daddr, dport, pkts) in enumerate(
            [("10.0.0.2", 80, 10), ("10.0.0.3", 53, 2), ("10.0.0.2", 443, 7)]):
        moment = datetime.fromtimestamp(start + 10 * index, UTC)
        rows.append({"stime": moment, "ltime": moment, "etype": int(EtherType.IPV4),
                     "proto": 6 if dport != 53 else 17, "saddr": pack_address("10.0.0.1"),
                     "sport": 40000 + index, "daddr": pack_address(daddr), "dport": dport,
                     "dir": "->", "state": "CON", "flgs": " e", "trans": 1, "pkts": pkts,
                     "spkts": pkts, "dpkts": 0, "bytes": 100 * pkts, "sbytes": 100 * pkts,
                     "dbytes": 0})
    schema = pa.schema([FLOW_SCHEMA.field(name) for name in rows[0]])
    return conform(pa.table({name: [row[name] for row in rows] for name in rows[0]},
                            schema=schema))


def test_round_trip_through_dict():
    spec = JobSpec.from_dict({"analysis": "sort", "keys": ["bytes"], "time": "2023/11/14",
                              "filter": "tcp", "now": NOW, "fields": ["saddr", "+bytes"],
                              "top": 5, "output": "json"})
    assert spec.fields == ["saddr", "bytes"]
    assert JobSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(("data", "field"), [
    ({"analysis": "tcpdump"}, "analysis"),
    ({"output": "xml"}, "output"),
    ({"time": "2023/13"}, "time"),
    ({"filter": "hots 1.2.3.4"}, "filter"),
    ({"fields": ["stime", "bogus"]}, "fields"),
    ({"fields": "stime"}, "fields"),
    ({"analysis": "sort", "keys": ["nosuchkey"]}, "keys"),
    ({"analysis": "cluster", "keys": ["saddr"], "mode": "sideways"}, "mode"),
    ({"top": 0}, "top"),
    ({"top": "5-3"}, "top"),
    ({"top": "2+0"}, "top"),
    ({"top": True}, "top"),
    ({"render": {"rmon": "yes"}}, "render.rmon"),
    ({"now": "yesterday"}, "now"),
    ({"label": {"colour": "red"}}, "label.colour"),
    ({"analysis": "label"}, "label"),
    ({"render": {"precision": 12}}, "render.precision"),
    ({"sensors": ["a"]}, "sensors"),
])
def test_invalid_field_is_named(data, field):
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict(data)
    assert caught.value.field == field


def test_execute_applies_time_filter_and_top():
    spec = JobSpec.from_dict({"time": "2023/11/14.22:13:25+1m", "filter": "tcp", "now": NOW,
                              "fields": ["daddr", "dport", "pkts"]})
    result = execute(spec, records(), JobContext(job_id="test"))
    assert result.rows.column("dport").to_pylist() == [443]
    assert result.metadata["selected_records"] == 1


def test_execute_sort_keeps_top_rows():
    spec = JobSpec.from_dict({"analysis": "sort", "keys": ["pkts"], "top": 2, "now": NOW})
    result = execute(spec, records())
    assert result.rows.column("pkts").to_pylist() == [10, 7]


@pytest.mark.parametrize(("top", "pkts"), [
    ("2-3", [7, 2]), ("3+1", [2]), ("o1", [10]), ("i2", [10, 2]), ("1-99", [10, 7, 2]),
])
def test_execute_record_ranges(top, pkts):
    spec = JobSpec.from_dict({"analysis": "sort", "keys": ["pkts"], "top": top, "now": NOW})
    assert execute(spec, records()).rows.column("pkts").to_pylist() == pkts


def test_execute_cluster_by_daddr():
    spec = JobSpec.from_dict({"analysis": "cluster", "keys": ["daddr"], "now": NOW,
                              "fields": ["daddr", "pkts", "trans"]})
    result = execute(spec, records())
    totals = dict(zip(result.rows.column("pkts").to_pylist(),
                      result.rows.column("trans").to_pylist(), strict=True))
    assert totals == {17: 2, 2: 1}


def test_write_result_files(tmp_path):
    spec = JobSpec.from_dict({"analysis": "sort", "keys": ["pkts"], "now": NOW,
                              "fields": ["saddr", "daddr", "dport", "pkts", "dir", "flgs"],
                              "render": {"numeric": 1}})
    metadata = write_result(execute(spec, records()), tmp_path / "job")
    directory = tmp_path / "job"
    csv_bytes = (directory / "result.csv").read_bytes()
    lines = list(csv.reader(csv_bytes.decode().splitlines()))
    assert lines[0] == ["SrcAddr", "DstAddr", "Dport", "TotPkts", "Dir", "Flgs"]
    assert lines[1][:4] == ["10.0.0.1", "10.0.0.2", "80", "10"]
    rows = json.loads((directory / "result.json").read_text())
    assert rows[0] == {"saddr": "10.0.0.1", "daddr": "10.0.0.2", "dport": 80, "pkts": 10,
                       "dir": "->", "flgs": "e"}
    stored = json.loads((directory / "meta.json").read_text())
    assert stored["rows"] == metadata["rows"] == 3
    assert stored["sha256"] == hashlib.sha256(csv_bytes).hexdigest()
    assert stored["spec"]["keys"] == ["pkts"]
    assert "analysis_seconds" in stored["timings"]
    assert sorted(path.name for path in directory.iterdir()) == [
        "meta.json", "result.csv", "result.json"]


def test_label_defaults_show_country_columns(tmp_path):
    from tests.test_label import load_builder

    database = load_builder().build_database([("10.0.0.0/8", "DE")], tmp_path / "co.mmdb")
    spec = JobSpec.from_dict({"analysis": "label", "now": NOW,
                              "label": {"geoip": str(database)}})

    result = execute(spec, records())

    assert result.fields[-2:] == ["sco", "dco"]
    assert result.rows.column("dco").to_pylist() == ["DE", "DE", "DE"]


def test_dns_result_files_use_plain_values(tmp_path):
    query = bytes.fromhex("12340100000100000000000003777777076578616d706c6503636f6d0000010001")
    table = records().slice(1, 1)
    table = table.set_column(table.schema.get_field_index("suser"), "suser",
                             pa.array([query], pa.binary()))
    spec = JobSpec.from_dict({"analysis": "dns", "now": NOW})

    write_result(execute(spec, table), tmp_path / "job")

    rows = json.loads((tmp_path / "job" / "result.json").read_text())
    assert rows[0]["qname"] == "www.example.com."
    assert isinstance(rows[0]["stime"], float)
    assert rows[0]["answers"] == []
    lines = list(csv.DictReader((tmp_path / "job" / "result.csv").read_text().splitlines()))
    assert lines[0]["qr"] == "false"
    assert lines[0]["answers"] == ""
