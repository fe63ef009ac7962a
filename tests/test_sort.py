"""rasort: key directions, stability and agreement with rasort 3.0.8 on -m bytes."""

from __future__ import annotations

import csv
from itertools import groupby

import pytest

from appliance.analyses import AnalysisKeyError, sort_records
from appliance.records import FLOW_SCHEMA, address_to_text, mac_to_text
from tests.oracle_records import REFERENCE, read_reference_flows, reference_captures
from tests.test_cluster import flow, make_table


def ties_grouped(rows: list[tuple[int, str, str]]) -> list[tuple[int, list[tuple[int, str, str]]]]:
    """Group consecutive rows by byte count; argus leaves the order within a tie undefined."""
    return [(count, sorted(group)) for count, group in groupby(rows, key=lambda row: row[0])]


def text(row: dict[str, object], field: str) -> str:
    if row[field] is None:
        return mac_to_text(row["smac" if field == "saddr" else "dmac"])
    return address_to_text(row[field])


@pytest.mark.parametrize("capture", reference_captures("rasort.csv"))
def test_bytes_order_matches_rasort(capture: str) -> None:
    records = read_reference_flows(REFERENCE / f"{capture}.ra.csv")
    ordered = sort_records(records, ["bytes"])

    actual = [(row["bytes"], text(row, "saddr"), text(row, "daddr"))
              for row in ordered.to_pylist()]
    with (REFERENCE / f"{capture}.rasort.csv").open(newline="") as handle:
        expected = [(int(row["TotBytes"]), row["SrcAddr"], row["DstAddr"])
                    for row in csv.DictReader(handle)]
    assert ties_grouped(actual) == ties_grouped(expected)


def test_output_keeps_schema() -> None:
    ordered = sort_records(make_table(flow("10.0.0.1", "10.0.0.2"), flow("10.0.0.3", "10.0.0.2")),
                           ["pkts"])
    assert ordered.schema == FLOW_SCHEMA


def test_counters_sort_descending() -> None:
    records = make_table(*[flow("10.0.0.1", "10.0.0.2", pkts=count) for count in (3, 9, 1)])
    assert sort_records(records, ["pkts"]).column("pkts").to_pylist() == [9, 3, 1]


def test_times_sort_descending_by_default() -> None:
    records = make_table(*[flow("10.0.0.1", "10.0.0.2", stime=t, ltime=t) for t in (5, 7, 6)])
    ordered = sort_records(records)
    assert [value.timestamp() for value in ordered.column("stime").to_pylist()] == [7, 6, 5]


def test_direction_override() -> None:
    records = make_table(*[flow("10.0.0.1", "10.0.0.2", stime=t, ltime=t) for t in (5, 7, 6)])
    ordered = sort_records(records, ["stime:asc"])
    assert [value.timestamp() for value in ordered.column("stime").to_pylist()] == [5, 6, 7]
    assert sort_records(records, ["pkts:asc", "stime:desc"]).num_rows == 3


def test_addresses_sort_numerically() -> None:
    records = make_table(flow("10.0.0.1", "1.1.1.1"), flow("8.8.8.8", "1.1.1.1"),
                         flow("2001:db8::1", "::1"), flow("9.0.0.1", "1.1.1.1"))
    ordered = [address_to_text(value) for value in
               sort_records(records, ["saddr"]).column("saddr").to_pylist()]
    assert ordered == ["8.8.8.8", "9.0.0.1", "10.0.0.1", "2001:db8::1"]


def test_prefix_key_then_counter() -> None:
    records = make_table(flow("10.0.1.9", "1.1.1.1", bytes=10), flow("10.0.0.5", "1.1.1.1",
                         bytes=20), flow("10.0.1.1", "1.1.1.1", bytes=30))
    ordered = sort_records(records, ["saddr/24", "bytes"]).column("bytes").to_pylist()
    assert ordered == [20, 30, 10]


def test_sort_is_stable() -> None:
    records = make_table(*[flow("10.0.0.1", "10.0.0.2", pkts=1, sport=port)
                           for port in (5, 3, 9, 1)])
    assert sort_records(records, ["pkts"]).column("sport").to_pylist() == [5, 3, 9, 1]


def test_nulls_sort_last() -> None:
    records = make_table(flow("10.0.0.1", "10.0.0.2", sttl=None), flow("10.0.0.1", "10.0.0.2",
                         sttl=64), flow("10.0.0.1", "10.0.0.2", sttl=1))
    assert sort_records(records, ["sttl"]).column("sttl").to_pylist() == [1, 64, None]
    assert sort_records(records, ["sttl:desc"]).column("sttl").to_pylist() == [64, 1, None]


def test_derived_rate_key() -> None:
    records = make_table(flow("10.0.0.1", "10.0.0.2", stime=0, ltime=1, pkts=11),
                         flow("10.0.0.1", "10.0.0.2", stime=0, ltime=10, pkts=11, sport=7))
    assert sort_records(records, ["rate"]).column("sport").to_pylist() == [1000, 7]
    assert sort_records(records, ["dur"]).column("sport").to_pylist() == [7, 1000]


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(AnalysisKeyError, match="nosuchfield"):
        sort_records(make_table(flow("10.0.0.1", "10.0.0.2")), ["nosuchfield"])


def test_bad_direction_is_rejected() -> None:
    with pytest.raises(AnalysisKeyError, match="up"):
        sort_records(make_table(flow("10.0.0.1", "10.0.0.2")), ["pkts:up"])


@pytest.mark.parametrize("descending", [False, True])
def test_arrow_and_polars_sorts_give_the_same_order(descending: bool, monkeypatch) -> None:
    """One key sorts with Arrow up to ARROW_SORT_ROWS rows, with polars above: same order."""
    import numpy as np
    import pyarrow as pa

    from appliance.analyses import sort as sort_module

    rng = np.random.default_rng(3)
    values = rng.integers(0, 20, 5_000).astype(np.uint64)
    nulls = rng.random(5_000) < 0.1
    column = pa.chunked_array([pa.array(values[:2_000], mask=nulls[:2_000]),
                               pa.array(values[2_000:], mask=nulls[2_000:])])
    by_arrow = sort_module.sort_order([column], [descending])
    monkeypatch.setattr(sort_module, "ARROW_SORT_ROWS", 0)
    by_polars = sort_module.sort_order([column], [descending])
    assert by_arrow.tolist() == by_polars.tolist()
    ordered = column.take(pa.array(by_arrow)).to_pylist()
    present = [value for value in ordered if value is not None]
    assert ordered[len(present):] == [None] * int(nulls.sum())  # nulls last either way
    assert present == sorted(present, reverse=descending)
