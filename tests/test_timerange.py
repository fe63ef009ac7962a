"""The -t time-range language: grammar, resolution against now, and record matching.

The record fixture follows ra(1)'s worked examples: flows on 2023-11-14 from
22:13:20 UTC (epoch 1700000000). Wirewatch differs from ra 3.0.8 in two chosen
ways, so some expected matches differ from what 3.0.8 printed:

* ranges are half-open [start, end), and ``A-B`` runs to the end of B's unit;
* a record matches when it overlaps the range at all (3.0.8 only tests whether its
  start or its end falls inside).

Rows that differ from 3.0.8 for that reason carry the 3.0.8 answer in a comment.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from appliance.query.timerange import TimeRangeError, parse_time_range

BASE = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
RECORDS = {
    "F1": (0.0, 0.070), "F2": (1.0, 1.001), "F3": (2.0, 3.0), "F4": (4.0, 4.020),
    "F5": (5.0, 5.0), "F6": (6.0, 6.001), "F7": (7.0, 7.001), "F8": (7.001, 7.001),
    "L1": (20.0, 24.0), "L2": (25.0, 29.0), "L3": (30.0, 31.0),
}
NOW = datetime(2026, 12, 4, 19, 12, tzinfo=UTC).timestamp()


def times_table(spans: list[tuple[float, float]]) -> pa.Table:
    def column(values: list[float]) -> pa.Array:
        micros = [round(value * 1_000_000) for value in values]
        return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))

    return pa.table({"stime": column([start for start, _ in spans]),
                     "ltime": column([last for _, last in spans])})


def matching(text: str, now: float = NOW) -> list[str]:
    names = list(RECORDS)
    table = times_table([(BASE + start, BASE + last) for start, last in RECORDS.values()])
    mask = parse_time_range(text, now).mask(table).to_pylist()
    return [name for name, selected in zip(names, mask, strict=True) if selected]


D = "2023/11/14."

CASES = [
    (f"{D}22:13:21-{D}22:13:22", ["F2", "F3"]),
    (f"{D}22:13:21.5-{D}22:13:22", ["F3"]),
    (f"{D}22:13:20+1s", ["F1"]),                      # 3.0.8: F1 F2 (end inclusive)
    ("1700000001+2s", ["F2", "F3"]),
    ("1700000001-1700000002", ["F2", "F3"]),
    (f"{D}22:13:26", ["F6"]),                          # 3.0.8: F6 F7 (end inclusive)
    (f"{D}22:13:27.0005-{D}22:13:27.002", ["F7", "F8"]),
    (f"{D}22:13:41-{D}22:13:42", ["L1"]),              # 3.0.8: none (L1 spans the range)
    (f"{D}22:13:44+1s", ["L1"]),                       # 3.0.8: L2 (ends and starts differ)
    (f"c{D}22:13:20-{D}22:13:23", ["F1", "F2", "F3"]),
    (f"n{D}22:13:22.5-{D}22:13:22.6", ["F3"]),
    (f"x{D}22:13:20-{D}22:13:45", ["L3"]),
    ("2023/11", list(RECORDS)),
    ("2023/11/14", list(RECORDS)),
    ("2023y11M14d22h", list(RECORDS)),
    ("2023", list(RECORDS)),
    ("1700000000", list(RECORDS)),
    ("22", []),
    ("14.22:13:21-14.22:13:22", []),
    ("2026y11M14d22h", []),
    ("2023y11m14d22h", []),      # m is the minute: 22:14 of the current month's 14th
    ("****/11/14", list(RECORDS)),
    ("**.22", []),               # any day of the current month (2026/12), 22:00-23:00
    ("****/**/**.22:13:22", ["F3"]),
    ("****/11/14.**:13:25", ["F5"]),
    ("2023/11/14.**:**:40", ["L1"]),
    ("14d22h13m*s", []),         # the 14th of the current month
    ("2023y11M14d*h13m25s", ["F5"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_worked_examples(text, expected):
    assert matching(text) == expected


def every_ten_minutes() -> pa.Table:
    start = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
    stamps = [start + 600 * step for step in range(int((NOW - start) // 600) + 1)]
    return times_table([(stamp, stamp) for stamp in stamps])


@pytest.mark.parametrize(("text", "count"), [
    ("10", 6),                  # 3.0.8: 7 (11:00 included)
    ("-1h", 2),                 # 19:00 and 19:10
    ("-10m", 1),                # 19:03 to now: 19:10
    ("-2M", 30 * 144 + 3 * 144 + 19 * 6 + 2),
    ("2026/11", 30 * 144),      # 3.0.8: 4321 (Dec 1 00:00 included)
    ("11/30.23-12/01.01", 18),  # 3.0.8: 13 (B is a point there)
    ("12/01+1d", 144),          # 3.0.8: 145
    ("2026/10-2026/11", 61 * 144),
    ("**.10", 4 * 6),           # 3.0.8: 28 (Dec 1 to 4, 11:00 included)
    ("****/11/14", 144),
    ("4d*h*m0s", 19 * 6 + 2),   # every record of today: all fall on second 0
    ("*h", 19 * 6 + 2),         # any hour today
    ("**/04.10", 6 + 6 + 6),    # the 4th of any month this year, 10:00-11:00
])
def test_fixture_every_ten_minutes(text, count):
    table = every_ten_minutes()
    assert sum(parse_time_range(text, NOW).mask(table).to_pylist()) == count


def moment(text: str, now: float = NOW) -> tuple[str, str]:
    parsed = parse_time_range(text, now)

    def show(micros: int) -> str:
        return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    return show(parsed.start), show(parsed.end)


def test_relative_units_truncate_to_unit():
    assert moment("-10m")[0] == "2026-12-04 19:03:00.000000"
    assert moment("-1h")[0] == "2026-12-04 19:00:00.000000"
    assert moment("-2h")[0] == "2026-12-04 18:00:00.000000"
    assert moment("-1d")[0] == "2026-12-04 00:00:00.000000"
    assert moment("-1M")[0] == "2026-12-01 00:00:00.000000"
    assert moment("-2M")[0] == "2026-11-01 00:00:00.000000"
    assert moment("-1y")[0] == "2026-01-01 00:00:00.000000"
    assert moment("-1M+1d") == ("2026-12-01 00:00:00.000000", "2026-12-02 00:00:00.000000")


def test_range_end_includes_whole_unit():
    assert moment("2011/08-2011/10") == ("2011-08-01 00:00:00.000000",
                                         "2011-11-01 00:00:00.000000")
    assert moment("2026/12/04.10:05-10:25") == ("2026-12-04 10:05:00.000000",
                                                "2026-12-04 10:26:00.000000")


def test_durations_use_calendar_months():
    assert moment("2024/01/31+1M")[1] == "2024-02-29 00:00:00.000000"
    assert moment("2026/12/04.10+2h30m")[1] == "2026-12-04 12:30:00.000000"


def test_mode_and_negation_flags():
    parsed = parse_time_range("xc2023/11", NOW)
    assert parsed.mode == "c"
    assert parsed.negate


@pytest.mark.parametrize("text", [
    "", "junk", "12/4", "2023/13", "2023/11/14.25", "-0m", "-5q", "10-09", "2023/11+2x",
    "2023/11/14.22:13:61", "****/11/14-2023/11/15", "2*23/11/14",
])
def test_invalid_ranges_name_the_text(text):
    with pytest.raises(TimeRangeError) as caught:
        parse_time_range(text, NOW)
    assert repr(text) in str(caught.value)
