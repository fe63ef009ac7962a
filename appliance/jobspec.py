"""The job specification shared by the ra command line, the Celery tasks and the REST API.

A spec says which records to select (``time`` as a ``-t`` range resolved against
``now``, ``filter`` as a filter expression), which analysis to run with its
parameters (``keys`` for cluster and sort, ``label`` sources), and how to print
the result (``fields`` as ``-s`` items, ``output`` format). The same spec gives
the same rows on every path, because relative times resolve against the
recorded ``now`` instead of the wall clock.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from time import time as _clock
from typing import Any

import pyarrow as pa

from appliance.query.fields import UnknownFieldError, parse_field_list
from appliance.query.filter import FilterSyntaxError, parse_filter
from appliance.query.timerange import TimeRangeError, parse_time_range

ANALYSES = ("ra", "cluster", "sort", "label", "dns")
OUTPUTS = ("csv", "json")
#: Label settings a spec may carry: GeoIP database, ralabel address file, port labels.
LABEL_KEYS = ("geoip", "address_file", "port_labels")
#: Output switches a spec may carry, named after their ra options.
RENDER_KEYS = ("numeric", "epoch", "precision", "delimiter", "labels", "user_data", "rmon")
SPEC_KEYS = ("analysis", "time", "filter", "now", "fields", "keys", "top", "label", "output",
             "mode", "render")


_RECORD_RANGE = re.compile(r"^([io]?)(\d+)(?:([-+])(\d+))?$")


@dataclass(frozen=True)
class RecordRange:
    """An ra ``-N`` selection: records ``first`` (1-based) on, ``count`` of them (None = all).

    ``side`` is "i" to count input records (before the time range and filter) or "o"
    (the default) to count result rows after the analysis, so ``rasort -N 10`` keeps
    the top ten.
    """

    side: str
    first: int
    count: int | None

    def apply(self, table: pa.Table) -> pa.Table:
        """Return the rows of ``table`` inside this range."""
        return table.slice(self.first - 1, self.count)


def parse_record_range(value: int | str) -> RecordRange:
    """Parse ``-N``: ``N``, ``START-END`` (inclusive) or ``START+COUNT``, after an optional i/o.

    Raises ValueError saying what a valid value looks like.
    """
    hint = "use N, START-END or START+COUNT (records counted from 1), optionally after i or o"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(hint)
    match = _RECORD_RANGE.match(str(value).strip())
    if match is None:
        raise ValueError(hint)
    side, first, separator, second = match[1] or "o", int(match[2]), match[3], match[4]
    if separator is None:
        if first < 1:
            raise ValueError("the record count must be at least 1")
        return RecordRange(side, 1, first)
    last = int(second)
    if first < 1:
        raise ValueError("records are counted from 1")
    if separator == "-":
        if last < first:
            raise ValueError(f"the range ends before it starts: {value}")
        return RecordRange(side, first, last - first + 1)
    if last < 1:
        raise ValueError("the record count after '+' must be at least 1")
    return RecordRange(side, first, last)


class SpecError(ValueError):
    """An invalid job specification: names the field, the value and what is wrong."""

    def __init__(self, field_name: str, value: Any, message: str) -> None:
        super().__init__(f"invalid job field {field_name!r} = {value!r}: {message}")
        self.field = field_name
        self.value = value
        self.message = message


@dataclass
class JobSpec:
    """One analysis job: selection, analysis with its parameters, and output."""

    analysis: str = "ra"
    time: str | None = None
    filter: str | None = None
    now: float = field(default_factory=_clock)
    fields: list[str] | None = None
    keys: list[str] = field(default_factory=list)
    #: -N: a record count, or a range such as "5-10", "5+3", "i100" (see RecordRange).
    top: int | str | None = None
    label: dict[str, Any] = field(default_factory=dict)
    output: str = "csv"
    #: racluster -M mode ("rmon" or "norep"); None for the default merge.
    mode: str | None = None
    #: ra output switches (numeric, epoch, precision, delimiter, labels).
    render: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build and validate a spec from a JSON-style mapping; raises SpecError."""
        if not isinstance(data, dict):
            raise SpecError("spec", data, "expected a JSON object")
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise SpecError(unknown[0], data[unknown[0]],
                            f"unknown field; known fields: {', '.join(SPEC_KEYS)}")
        values = dict(data)
        if "now" not in values or values["now"] is None:
            values["now"] = time.time()
        spec = cls(**{key: value for key, value in values.items() if value is not None
                      or key in ("time", "filter", "fields", "top", "mode")})
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-serialisable mapping (``from_dict`` reads it back)."""
        return asdict(self)

    def validate(self) -> None:
        """Check every field; raises SpecError naming the first invalid one."""
        _check_choice("analysis", self.analysis, ANALYSES)
        _check_choice("output", self.output, OUTPUTS)
        self._validate_now()
        self._validate_selection()
        self._validate_fields()
        if self.mode not in (None, "rmon", "norep"):
            raise SpecError("mode", self.mode, "expected 'rmon', 'norep' or null")
        self._validate_keys()
        if self.top is not None:
            try:
                parse_record_range(self.top)
            except ValueError as error:
                raise SpecError("top", self.top, str(error)) from None
        self._validate_label()
        self._validate_render()

    def _validate_now(self) -> None:
        if isinstance(self.now, bool) or not isinstance(self.now, int | float) \
                or not math.isfinite(self.now):
            raise SpecError("now", self.now, "expected epoch seconds as a number")

    def _validate_selection(self) -> None:
        if self.time is not None:
            if not isinstance(self.time, str):
                raise SpecError("time", self.time, "expected a -t range as a string")
            try:
                parse_time_range(self.time, self.now)
            except TimeRangeError as error:
                raise SpecError("time", self.time, error.reason) from None
        if self.filter is not None:
            if not isinstance(self.filter, str):
                raise SpecError("filter", self.filter, "expected a filter expression string")
            try:
                parse_filter(self.filter)
            except FilterSyntaxError as error:
                raise SpecError("filter", self.filter, str(error)) from None

    def _validate_fields(self) -> None:
        if self.fields is None:
            return
        if not _is_string_list(self.fields):
            raise SpecError("fields", self.fields, "expected a list of field names")
        try:
            self.fields = parse_field_list(self.fields)
        except UnknownFieldError as error:
            raise SpecError("fields", error.name, str(error)) from None

    def _validate_keys(self) -> None:
        if not _is_string_list(self.keys):
            raise SpecError("keys", self.keys, "expected a list of key names")
        if self.analysis in ("ra", "label", "dns") and self.keys:
            raise SpecError("keys", self.keys, f"the {self.analysis} analysis takes no keys")
        if self.analysis in ("cluster", "sort"):
            _check_analysis_keys(self.analysis, self.keys, self.mode)

    def _validate_label(self) -> None:
        if not isinstance(self.label, dict):
            raise SpecError("label", self.label, "expected an object")
        for key in self.label:
            if key not in LABEL_KEYS:
                raise SpecError(f"label.{key}", self.label[key],
                                f"unknown label setting; known: {', '.join(LABEL_KEYS)}")
        if self.analysis == "label" and not (self.label.get("geoip")
                                            or self.label.get("address_file")):
            raise SpecError("label", self.label,
                            "the label analysis needs 'geoip' or 'address_file'")

    def _validate_render(self) -> None:
        if not isinstance(self.render, dict):
            raise SpecError("render", self.render, "expected an object")
        for key, value in self.render.items():
            if key not in RENDER_KEYS:
                raise SpecError(f"render.{key}", value,
                                f"unknown output switch; known: {', '.join(RENDER_KEYS)}")
            if key in ("numeric", "precision", "labels") and not _is_int(value):
                raise SpecError(f"render.{key}", value, "expected a whole number")
            if key == "precision" and not 0 <= value <= 9:
                raise SpecError("render.precision", value, "expected 0 to 9 digits")
            if key in ("epoch", "rmon") and not isinstance(value, bool):
                raise SpecError(f"render.{key}", value, "expected true or false")
            if key == "user_data" and value not in ("ascii", "dns"):
                raise SpecError("render.user_data", value, "expected 'ascii' or 'dns'")
            if key == "delimiter" and value is not None and (
                    not isinstance(value, str) or len(value) != 1):
                raise SpecError("render.delimiter", value, "expected one character")


def _check_analysis_keys(analysis: str, keys: list[str], mode: str | None) -> None:
    """Validate -m keys by running the analysis on an empty table, so the rules live there."""
    from appliance.analyses.keys import AnalysisKeyError
    from appliance.records import empty_table

    try:
        if analysis == "cluster":
            from appliance.analyses.cluster import cluster_records

            cluster_records(empty_table(), keys or None, mode)
        else:
            from appliance.analyses.sort import sort_records

            sort_records(empty_table(), keys or None)
    except AnalysisKeyError as error:
        raise SpecError("keys", keys, str(error)) from None


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(name, value, f"expected one of {', '.join(choices)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
