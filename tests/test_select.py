"""Selecting records for a job: time range, then filter, with printed columns only."""

from __future__ import annotations

import pytest

from appliance.jobs import printed_columns, select
from appliance.jobspec import JobSpec
from tests.test_cluster import flow, make_table

RECORDS = make_table(
    flow("10.0.0.1", "10.0.0.9", stime=100, ltime=110),
    flow("10.0.0.2", "10.0.0.9", stime=200, ltime=210, dport=80, proto=6),
    flow("10.0.0.3", "10.0.0.8", stime=300, ltime=300, pkts=12, spkts=12),
    flow("10.0.0.4", "10.0.0.9", stime=400, ltime=400),
)


@pytest.mark.parametrize("time, expression", [
    (None, "dst port 53"),
    ("1970/01/01.00:01:40-1970/01/01.00:05:00", "dst host 10.0.0.9"),
    ("1970/01/01.00:03:00+3m", None),
    ("1970/01/01.00:00:00+10m", "pkts gt 10"),
    (None, None),
])
@pytest.mark.parametrize("fields", [None, ["saddr", "daddr"], ["stime", "trans"]])
def test_printed_columns_select_the_same_rows(time, expression, fields) -> None:
    """Keeping only the printed columns changes no row, though the filter reads others."""
    spec = JobSpec.from_dict({"analysis": "ra", "time": time, "filter": expression,
                              "fields": fields, "now": 1000.0})
    columns = printed_columns(spec)
    whole = select(spec, RECORDS)
    printed = select(spec, RECORDS, columns)
    assert set(printed.column_names) <= columns
    assert printed.num_rows == whole.num_rows
    assert printed.to_pylist() == whole.select(printed.column_names).to_pylist()


def test_filter_sees_only_records_inside_the_time_range() -> None:
    spec = JobSpec.from_dict({"analysis": "ra", "time": "1970/01/01.00:03:00+3m",
                              "filter": "dst host 10.0.0.9", "now": 1000.0})
    rows = select(spec, RECORDS).to_pylist()
    assert [row["stime"].timestamp() for row in rows] == [200.0]
