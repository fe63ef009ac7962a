"""The ra ``-t`` time-range language: parsing a range and selecting the records it covers.

Grammar: ``[x][i|c|n] A[-B | +DURATION]``, or ``-DURATION[+DURATION]`` relative to now.
A time ``A`` is one of::

    [[[yyyy/]mm/]dd.]HH[:MM[:SS[.frac]]]   leading parts missing are taken from now
    yyyy/mm/dd   yyyy/mm   mm/dd   yyyy    a whole day, month or year
    2026y11M4d10h                          unit letters y M d h m s, finest unit = the span
    1700000000[.5]                         epoch seconds

A date or clock part written as stars is a wildcard: ``****/11/14`` is November 14
of any year, ``**.10`` 10:00 to 11:00 on any day of the current month, ``10d*h*m15s``
second 15 of any minute on the 10th. A wildcard part is ignored in the records too:
each record time gets the same fixed value in that part before it is compared.

A lone time covers one unit of its finest given part (``2023/11`` is November,
``10:30`` one minute). ``A-B`` runs from the start of A to the end of B's unit, so
``2011/08-2011/10`` includes October. ``A+D`` runs from A for D. A lone epoch time
runs from that instant on. ``-10m`` starts at now truncated to the minute, minus 9
minutes, and ends at now (``-1h`` at 19:12 starts at 19:00).

Every range is half-open, [start, end). A record [stime, ltime] matches mode
``i`` (the default) when it overlaps the range at all, ``c`` when it lies inside
it, ``n`` when it spans all of it; ``x`` negates. Wall-clock times are UTC.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import polars as pl

MICROS = 1_000_000
#: End of a range that is open to the future (a lone epoch time), in microseconds.
OPEN_END = 2**62

#: Duration and unit-letter units, in the order of a date, largest first.
UNITS = ("y", "M", "w", "d", "h", "m", "s")
_DURATION = re.compile(r"(\d+)([yMwdhms])")
_LETTER_TIME = re.compile(r"^(?:(?:\d+|\*+)[yMdhms])+$")
_LETTER_PIECE = re.compile(r"(\d+|\*+)([yMdhms])")
_EPOCH = re.compile(r"^\d{5,}(?:\.\d+)?$")
_CLOCK = re.compile(
    r"^(\d{1,2}|\*{1,2})(?::(\d{1,2}|\*{1,2})(?::(\d{1,2}|\*{1,2})(?:\.(\d{1,6}))?)?)?$")
#: Value of a date or clock part written as a wildcard.
WILD = -1
#: Values that replace a wildcard part, in the range and in every record: a leap year,
#: a month of 31 days, the first day, and hour, minute and second 0.
WILDCARD_FILLER = {"year": 2000, "month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0}


class TimeRangeError(ValueError):
    """A ``-t`` value that does not follow the time-range grammar."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid time range {text!r}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class TimeRange:
    """A half-open time range [start, end) in epoch microseconds, with its match mode."""

    start: int
    end: int
    mode: str = "i"
    negate: bool = False
    text: str = ""
    #: Date and clock parts given as wildcards (year, month, day, hour, minute, second).
    wildcards: frozenset[str] = frozenset()

    def mask(self, table: pa.Table) -> pa.ChunkedArray:
        """Return a boolean mask of the records of ``table`` that this range selects."""
        if self.wildcards:
            return self._wildcard_mask(table)
        stime = pc.cast(table.column("stime"), pa.int64())
        ltime = pc.cast(table.column("ltime"), pa.int64())
        if self.mode == "c":
            selected = pc.and_(pc.greater_equal(stime, self.start), pc.less(ltime, self.end))
        elif self.mode == "n":
            selected = pc.and_(pc.less_equal(stime, self.start),
                               pc.greater_equal(ltime, self.end - 1))
        else:
            selected = pc.and_(pc.less(stime, self.end), pc.greater_equal(ltime, self.start))
        selected = pc.fill_null(selected, False)
        return pc.invert(selected) if self.negate else selected

    def _wildcard_mask(self, table: pa.Table) -> pa.Array:
        """Match with the wildcard parts of each record time set to the range's filler."""
        import polars as pl  # loaded only for wildcard ranges: it takes 0.1 s to import

        frame = pl.from_arrow(table.select(["stime", "ltime"]))
        stime, ltime = _blank("stime", self.wildcards), _blank("ltime", self.wildcards)
        if self.mode == "c":
            selected = (stime >= self.start) & (ltime < self.end) & (ltime >= stime)
        elif self.mode == "n":
            selected = (stime <= self.start) & (ltime >= self.end - 1) & (ltime >= stime)
        else:
            # A record that crosses a wildcard boundary (midnight for a day wildcard)
            # wraps around: it covers the filler period from its start and up to its end.
            inside = (stime < self.end) & (ltime >= self.start)
            wrapped = (stime < self.end) | (ltime >= self.start)
            selected = pl.when(ltime >= stime).then(inside).otherwise(wrapped)
        result = frame.select(selected.fill_null(False).alias("mask")).to_series().to_arrow()
        result = result.cast(pa.bool_())
        return pc.invert(result) if self.negate else result


def _blank(column: str, wildcards: frozenset[str]) -> pl.Expr:
    """Epoch microseconds of a time column with its wildcard parts set to their filler."""
    import polars as pl

    time = pl.col(column)
    parts = {"year": time.dt.year(), "month": time.dt.month(), "day": time.dt.day(),
             "hour": time.dt.hour(), "minute": time.dt.minute(), "second": time.dt.second()}
    for name in wildcards:
        parts[name] = pl.lit(WILDCARD_FILLER[name])
    moment = pl.datetime(**parts, microsecond=time.dt.microsecond(), time_unit="us",
                         time_zone="UTC")
    return moment.dt.epoch("us")


@dataclass
class _Point:
    """A parsed time: its start and the start of the next unit (None for an instant)."""

    start: datetime
    unit_end: datetime | None
    parts: dict[str, int]
    wildcards: frozenset[str] = frozenset()


def parse_time_range(text: str, now: float) -> TimeRange:
    """Parse a ``-t`` range; partial and relative times resolve against ``now`` (epoch seconds).

    Raises TimeRangeError naming the text and what is wrong with it.
    """
    body = text.strip()
    if not body:
        raise TimeRangeError(text, "empty")
    reference = datetime.fromtimestamp(now, UTC)
    negate = body.startswith("x")
    body = body[1:] if negate else body
    mode = "i"
    if body[:1] in ("i", "c", "n"):
        mode, body = body[0], body[1:]
    try:
        start, end, wildcards = _parse_body(body, reference)
    except TimeRangeError:
        raise
    except ValueError as error:
        raise TimeRangeError(text, str(error)) from None
    if end <= start:
        raise TimeRangeError(text, "the end is not after the start")
    return TimeRange(start, end, mode, negate, text, wildcards)


def _parse_body(body: str, reference: datetime) -> tuple[int, int, frozenset[str]]:
    if body.startswith("-"):
        return (*_parse_relative(body[1:], reference), frozenset())
    split = re.search(r"[-+]", body)
    if split is None:
        point = _parse_point(body, reference)
        if point.unit_end is None:
            return _micros(point.start), OPEN_END, point.wildcards
        return _micros(point.start), _micros(point.unit_end), point.wildcards
    first, separator, second = body[: split.start()], body[split.start()], body[split.end():]
    point = _parse_point(first, reference)
    if separator == "+":
        return _micros(point.start), _micros(add_duration(point.start, second)), point.wildcards
    last = _parse_point(second, reference, inherit=point.parts)
    if last.wildcards != point.wildcards:
        raise ValueError("the start and the end of a range must have the same wildcard parts")
    end = last.unit_end or last.start + timedelta(seconds=1)
    return _micros(point.start), _micros(end), point.wildcards


def _parse_relative(text: str, reference: datetime) -> tuple[int, int]:
    """Parse ``N unit[+DURATION]`` after the leading ``-`` of a relative time."""
    duration, plus, extra = text.partition("+")
    match = re.fullmatch(r"(\d+)([yMwdhms])", duration)
    if match is None:
        raise ValueError(f"a relative time is -N followed by one of {' '.join(UNITS)}")
    count, unit = int(match[1]), match[2]
    if count < 1:
        raise ValueError("a relative time counts at least 1 unit")
    start = _truncate(reference, unit)
    start = subtract_units(start, count - 1, unit)
    if plus:
        return _micros(start), _micros(add_duration(start, extra))
    return _micros(start), _micros(reference) + 1


def _truncate(moment: datetime, unit: str) -> datetime:
    if unit == "y":
        return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "M":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - timedelta(days=day.weekday())
    fields = {"d": "hour", "h": "minute", "m": "second", "s": "microsecond"}
    keep = ["hour", "minute", "second", "microsecond"]
    cut = keep[keep.index(fields[unit]):]
    return moment.replace(**{name: 0 for name in cut})


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(total, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _shift(moment: datetime, count: int, unit: str) -> datetime:
    if unit == "y":
        return _add_months(moment, 12 * count)
    if unit == "M":
        return _add_months(moment, count)
    seconds = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return moment + timedelta(seconds=seconds * count)


def subtract_units(moment: datetime, count: int, unit: str) -> datetime:
    """Move ``moment`` back by ``count`` calendar units (y M w d h m s)."""
    return _shift(moment, -count, unit)


def add_duration(moment: datetime, text: str) -> datetime:
    """Add a duration such as ``2h30m`` or ``1M`` (calendar months and years) to ``moment``."""
    if not text or _DURATION.sub("", text):
        raise ValueError(f"invalid duration {text!r}: use N followed by one of {' '.join(UNITS)}")
    for count, unit in _DURATION.findall(text):
        moment = _shift(moment, int(count), unit)
    return moment


def _micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * MICROS + delta.microseconds


def _parse_point(text: str, reference: datetime, inherit: dict[str, int] | None = None) -> _Point:
    """Parse one time. Parts missing on the left come from ``inherit`` (A of A-B) or now."""
    if not text:
        raise ValueError("a time is missing")
    if _EPOCH.match(text):
        seconds, _, fraction = text.partition(".")
        micros = int(fraction.ljust(6, "0")[:6]) if fraction else 0
        start = datetime.fromtimestamp(int(seconds), UTC) + timedelta(microseconds=micros)
        return _Point(start, None, {})
    if _LETTER_TIME.match(text):
        parts = {_LETTER_PART[unit]: _part_value(count)
                 for count, unit in _LETTER_PIECE.findall(text)}
    else:
        parts = _parse_date_clock(text)
    return _resolve(parts, reference, inherit or {})


_LETTER_PART = {"y": "year", "M": "month", "d": "day", "h": "hour", "m": "minute",
                "s": "second"}
_ORDER = ("year", "month", "day", "hour", "minute", "second", "micro")


def _parse_date_clock(text: str) -> dict[str, int]:
    date, clock = text, ""
    head, dot, tail = text.partition(".")
    if dot and ":" not in head:
        date, clock = head, tail
    elif ":" in text or (text.isdigit() and len(text) <= 2):
        date, clock = "", text
    parts = _parse_date(date, has_clock=bool(clock)) if date else {}
    if clock:
        parts.update(_parse_clock(clock))
    return parts


def _part_value(piece: str) -> int:
    """Return a date or clock part's number, or WILD for a part written as stars."""
    return WILD if piece.startswith("*") else int(piece)


def _parse_date(text: str, has_clock: bool) -> dict[str, int]:
    pieces = text.split("/")
    if not all(piece.isdigit() or set(piece) == {"*"} for piece in pieces):
        raise ValueError(f"invalid date {text!r}: use yyyy/mm/dd, yyyy/mm, mm/dd or yyyy")
    values = [_part_value(piece) for piece in pieces]
    if len(pieces) == 3:
        year, month, day = pieces
        if len(year) != 4 or len(month) != 2 or len(day) != 2:
            raise ValueError(f"invalid date {text!r}: use yyyy/mm/dd with two-digit mm and dd")
        return dict(zip(("year", "month", "day"), values, strict=True))
    if len(pieces) == 2:
        first, second = pieces
        if len(first) == 4 and len(second) == 2 and not has_clock:
            return dict(zip(("year", "month"), values, strict=True))
        if len(first) == 2 and len(second) == 2:
            return dict(zip(("month", "day"), values, strict=True))
        raise ValueError(f"invalid date {text!r}: use yyyy/mm or mm/dd with two-digit parts")
    if len(text) == 4 and not has_clock:
        return {"year": values[0]}
    if len(text) <= 2 and has_clock:
        return {"day": values[0]}
    raise ValueError(f"invalid date {text!r}")


def _parse_clock(text: str) -> dict[str, int]:
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"invalid time of day {text!r}: use HH[:MM[:SS[.frac]]]")
    parts = {"hour": _part_value(match[1])}
    if match[2] is not None:
        parts["minute"] = _part_value(match[2])
    if match[3] is not None:
        parts["second"] = _part_value(match[3])
    if match[4] is not None:
        parts["micro"] = int(match[4].ljust(6, "0"))
        parts["micro_digits"] = len(match[4])
    return parts


def _resolve(parts: dict[str, int], reference: datetime, inherit: dict[str, int]) -> _Point:
    """Fill the missing leading parts and compute the start and the end of the finest unit."""
    given = [name for name in _ORDER if name in parts]
    if not given:
        raise ValueError("no date or time parts")
    finest = given[-1]
    coarsest = _ORDER.index(given[0])
    current = {"year": reference.year, "month": reference.month, "day": reference.day,
               "hour": reference.hour, "minute": reference.minute, "second": reference.second}
    values = {}
    wildcards = frozenset(name for name, value in parts.items() if value == WILD)
    for index, name in enumerate(_ORDER[:-1]):
        if name in wildcards:
            values[name] = WILDCARD_FILLER[name]
        elif name in parts:
            values[name] = parts[name]
        elif index < coarsest:
            values[name] = inherit.get(name, current[name])
        else:
            values[name] = 1 if name in ("month", "day") else 0
    try:
        start = datetime(values["year"], values["month"], values["day"], values["hour"],
                         values["minute"], values["second"], parts.get("micro", 0), tzinfo=UTC)
    except ValueError as error:
        raise ValueError(f"invalid date or time: {error}") from None
    resolved = dict(values, micro=parts.get("micro", 0))
    if finest == "micro":
        step = timedelta(microseconds=10 ** (6 - parts["micro_digits"]))
        return _Point(start, start + step, resolved, wildcards)
    unit = {"year": "y", "month": "M", "day": "d", "hour": "h", "minute": "m", "second": "s"}
    return _Point(start, _shift(start, 1, unit[finest]), resolved, wildcards)
