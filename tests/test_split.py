"""Splitting flow records at aligned time boundaries (rasplit -M time)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.records import FLOW_SCHEMA
from appliance.split import bucket_starts, split_records

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = 1_699_999_200  # 2023-11-14 22:00:00 UTC, a multiple of every period used below
COUNTERS = ["pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "sappbytes", "dappbytes"]


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(microseconds=round(seconds * 1_000_000))


def record(stime: float, ltime: float, spkts: int, dpkts: int = 0, sbytes: int | None = None,
           dbytes: int | None = None, **extra: object) -> dict[str, object]:
    sbytes = 100 * spkts if sbytes is None else sbytes
    dbytes = 100 * dpkts if dbytes is None else dbytes
    return {"stime": at(stime), "ltime": at(ltime), "pkts": spkts + dpkts, "spkts": spkts,
            "dpkts": dpkts, "bytes": sbytes + dbytes, "sbytes": sbytes, "dbytes": dbytes,
            "sappbytes": sbytes // 2, "dappbytes": dbytes // 2, "suser": b"GET /",
            "duser": b"HTTP/1.1 200", "seq": 7, **extra}


def table(*rows: dict[str, object]) -> pa.Table:
    fields = [FLOW_SCHEMA.field(name) for name in rows[0]]
    return pa.Table.from_pylist(list(rows), schema=pa.schema(fields))


def column(result: pa.Table, name: str) -> list[object]:
    return result.column(name).to_pylist()


def test_five_packets_over_two_buckets() -> None:
    result = split_records(table(record(BASE + 40, BASE + 44, 5)), 2)

    assert column(result, "pkts") == [2, 3]
    assert column(result, "stime") == [at(BASE + 40), at(BASE + 42)]
    assert column(result, "ltime") == [at(BASE + 42), at(BASE + 44)]
    assert column(result, "sbytes") == [200, 300]


def test_pieces_are_clipped_to_buckets() -> None:
    result = split_records(table(record(BASE + 1.5, BASE + 6.25, 40, 40)), 2)

    assert column(result, "stime") == [at(BASE + 1.5), at(BASE + 2), at(BASE + 4),
                                       at(BASE + 6)]
    assert column(result, "ltime") == [at(BASE + 2), at(BASE + 4), at(BASE + 6),
                                       at(BASE + 6.25)]
    for start, end in zip(column(result, "stime"), column(result, "ltime"), strict=True):
        bucket = (start - EPOCH) // timedelta(seconds=2)
        assert end <= EPOCH + timedelta(seconds=2 * (bucket + 1))


def test_counts_follow_time_share() -> None:
    # 0.5 s, 2 s, 2 s, 0.25 s of a 4.75 s record: 80 packets each way.
    result = split_records(table(record(BASE + 1.5, BASE + 6.25, 80, 80)), 2)

    # Cumulative shares at piece ends: floor(80 * 0.5/4.75) = 8, floor(80 * 2.5/4.75) = 42,
    # floor(80 * 4.5/4.75) = 75, and 80.
    assert column(result, "spkts") == [8, 34, 33, 5]
    assert column(result, "dpkts") == [8, 34, 33, 5]
    assert column(result, "pkts") == [16, 68, 66, 10]


def test_record_inside_one_bucket_is_untouched() -> None:
    inside = [record(BASE + 2.1, BASE + 3.9, 3, 2, seq=1), record(BASE + 4, BASE + 6, 5, seq=3)]
    original = table(inside[0], record(BASE + 1, BASE + 3, 4, seq=2), inside[1])

    result = split_records(original, 2)

    rows = result.select(original.column_names).to_pylist()
    assert [row["seq"] for row in rows] == [1, 2, 2, 3]
    assert rows[0] == original.to_pylist()[0]
    assert rows[3] == original.to_pylist()[2]
    alone = split_records(table(*inside), 2)
    assert alone.select(original.column_names).equals(table(*inside))


def test_record_ending_on_boundary_gets_no_empty_piece() -> None:
    result = split_records(table(record(BASE + 40.5, BASE + 42, 4)), 2)

    assert result.num_rows == 1
    assert column(result, "ltime") == [at(BASE + 42)]


def test_no_piece_without_packets() -> None:
    # 3 packets, 1 s in the first bucket and 5 s in each of the next two.
    result = split_records(table(record(BASE + 9, BASE + 20, 3)), 5)

    assert column(result, "pkts") == [1, 1, 1]
    assert column(result, "stime") == [at(BASE + 9), at(BASE + 10), at(BASE + 15)]


def test_fewer_packets_than_buckets_drops_empty_pieces() -> None:
    # 2 packets over 10 buckets: only buckets that get a packet have a piece.
    result = split_records(table(record(BASE + 0.5, BASE + 19.5, 2, sbytes=150)), 2)

    assert result.num_rows == 2
    assert sum(column(result, "pkts")) == 2
    assert sum(column(result, "sbytes")) == 150
    assert min(column(result, "pkts")) == 1


def test_directions_add_up_in_each_piece() -> None:
    result = split_records(table(record(BASE + 0.3, BASE + 7.9, 17, 29, 2333, 41_000)), 2)

    pkts = column(result, "pkts")
    sides = zip(column(result, "spkts"), column(result, "dpkts"), strict=True)
    assert pkts == [source + destination for source, destination in sides]
    total = column(result, "bytes")
    sides = zip(column(result, "sbytes"), column(result, "dbytes"), strict=True)
    assert total == [source + destination for source, destination in sides]


def test_user_data_stays_on_first_piece() -> None:
    result = split_records(table(record(BASE + 1, BASE + 5, 6, 6)), 2)

    assert column(result, "suser") == [b"GET /", None, None]
    assert column(result, "duser") == [b"HTTP/1.1 200", None, None]
    assert column(result, "seq") == [7, 7, 7]


def test_null_counters_stay_null() -> None:
    row = record(BASE + 1, BASE + 5, 6, 2)
    row["sappbytes"] = None
    row["dappbytes"] = None

    result = split_records(table(row), 2)

    assert result.num_rows == 3
    assert column(result, "sappbytes") == [None, None, None]
    assert sum(column(result, "pkts")) == 8


def test_records_without_times_pass_through() -> None:
    no_ltime = record(BASE + 1, BASE + 5, 6)
    no_ltime["ltime"] = None
    backwards = record(BASE + 9, BASE + 3, 6)

    result = split_records(table(no_ltime, backwards, record(BASE + 1, BASE + 5, 6)), 2)

    assert column(result, "ltime")[:2] == [None, at(BASE + 3)]
    assert column(result, "pkts") == [6, 6, 1, 3, 2]


def test_totals_without_directions_are_split() -> None:
    row = {"stime": at(BASE + 1), "ltime": at(BASE + 5), "pkts": 9, "bytes": 900}

    result = split_records(table(row), 2)

    assert column(result, "pkts") == [2, 4, 3]
    assert sum(column(result, "bytes")) == 900
    assert column(result, "spkts") == [None, None, None]


def test_bytes_without_packets_are_kept() -> None:
    # Inconsistent input: bytes from daddr but no packets from it.
    result = split_records(table(record(BASE + 1, BASE + 5, 1, 0, 10, 90)), 2)

    assert sum(column(result, "dbytes")) == 90
    assert sum(column(result, "pkts")) == 1


def test_pieces_keep_record_order() -> None:
    result = split_records(table(record(BASE + 1, BASE + 3, 4, seq=1),
                                 record(BASE + 0, BASE + 1, 1, seq=2),
                                 record(BASE + 3, BASE + 5, 4, seq=3)), 2)

    assert column(result, "seq") == [1, 1, 2, 3, 3]


def test_invalid_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="got 0"):
        split_records(table(record(BASE, BASE + 1, 1)), 0)


def test_bucket_starts_of_pieces() -> None:
    result = split_records(table(record(BASE + 3599, BASE + 3601, 10)), 3600)

    assert bucket_starts(result, 3600).tolist() == [BASE * 1_000_000,
                                                    (BASE + 3600) * 1_000_000]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 20_000_000), st.integers(0, 30_000_000),
                  st.integers(0, 500), st.integers(0, 500), st.integers(0, 10**9),
                  st.integers(0, 10**9)),
        min_size=1, max_size=20),
    period=st.sampled_from([1, 2, 5, 3600]),
)
def test_split_preserves_totals(rows: list[tuple[int, ...]], period: int) -> None:
    records = []
    for index, (start_us, length_us, spkts, dpkts, sbytes, dbytes) in enumerate(rows):
        if spkts + dpkts == 0:
            spkts = 1
        sbytes = sbytes if spkts else 0
        dbytes = dbytes if dpkts else 0
        stime = BASE + start_us / 1e6
        records.append(record(stime, stime + length_us / 1e6, spkts, dpkts, sbytes, dbytes,
                              seq=index))
    original = table(*records)

    result = split_records(original, period)

    for name in COUNTERS:
        assert pc.sum(result.column(name)).as_py() == pc.sum(original.column(name)).as_py()
    assert pc.min(result.column("pkts")).as_py() >= 1
    period_us = period * 1_000_000
    starts = bucket_starts(result, period)
    ends = [(value - EPOCH) // timedelta(microseconds=1) for value in column(result, "ltime")]
    for start, end in zip(starts, ends, strict=True):
        assert end <= start + period_us
    pieces = Counter(column(result, "seq"))
    for index, row in enumerate(records):
        first = (row["stime"] - EPOCH) // timedelta(microseconds=1) // period_us
        last_us = (row["ltime"] - EPOCH) // timedelta(microseconds=1)
        buckets = max(1, -(-last_us // period_us) - first)
        assert 1 <= pieces[index] <= buckets
        if max(row["spkts"], row["dpkts"]) >= buckets:
            assert pieces[index] == buckets
