"""Argus-style command lines for ra, racluster, rasort, ralabel and radump.

The switches are Argus's, parsed by hand because argus argv does not fit argparse:
``-s`` and ``-m`` take several words, and a lone ``-`` (or ``--``) starts the filter
expression, which runs to the end of the line. The switches build a JobSpec, and
``appliance.jobs.execute`` runs it, the same path the Celery tasks and the API take.

Output is argus text by default. ``-M json`` prints one JSON object per row, and
radump ``-M json`` one per decoded DNS message. ``-w FILE`` writes a record stream,
or CSV, NDJSON or Parquet when FILE ends in .csv, .ndjson/.json or .parquet.
Relative and partial ``-t`` times resolve against ``WIREWATCH_NOW`` (epoch seconds)
when it is set, else the wall clock.

Exit status, as ra: 0 when a record was printed or written, 1 when none matched,
2 for invalid input (the message on stderr names the value).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from appliance.jobs import JobContext, JobResult, Rows, execute, printed_columns, result_rows
from appliance.jobspec import JobSpec, SpecError, parse_record_range
from appliance.query.fields import CATALOGUE, split_field
from appliance.query.filter import FilterSyntaxError, parse_filter
from appliance.query.render import field_label, render_text
from appliance.query.writers import (
    csv_lines,
    format_for_path,
    ndjson_lines,
    write_parquet,
    write_text,
)

log = logging.getLogger(__name__)

TOOLS = {"ra": "ra", "racluster": "cluster", "rasort": "sort", "ralabel": "label",
         "radump": "ra"}
#: Switches followed by one value.
VALUE_SWITCHES = {"-r", "-p", "-c", "-t", "-N", "-L", "-w", "-f", "-M", "--geoip"}
#: Switches followed by a list of words, up to the next switch.
LIST_SWITCHES = {"-s", "-m"}
#: ralabel.conf variables Wirewatch reads, and the label setting each one sets.
RALABEL_VARIABLES = {
    "RALABEL_GEOIP_FILE": "geoip",
    "RALABEL_GEOIP_COUNTRY_FILE": "geoip",
    "RALABEL_GEOIP_CITY_FILE": "geoip",
    "RALABEL_IANA_ADDRESS_FILE": "address_file",
}

#: -M values: racluster modes, and the JSON output format.
CLUSTER_MODES = ("rmon", "norep")
OUTPUT_MODES = ("json",)
NOW_VARIABLE = "WIREWATCH_NOW"

USAGE = """usage: {tool} -r FILE|DIR|- [-n] [-u] [-p N] [-c C] [-s FIELD ...] [-m KEY ...]
          [-t RANGE] [-N N|START-END|START+N] [-L N] [-M rmon|norep|json]
          [-w FILE|-] [-f RALABEL.CONF] [--geoip MMDB] [- FILTER]"""


class UsageError(ValueError):
    """A command line that the ra tools cannot run: a missing or invalid switch value."""


@dataclass
class Switches:
    """The parsed argus-style command line."""

    reads: list[str] = field(default_factory=list)
    numeric: int = 0
    epoch: bool = False
    precision: int = 6
    delimiter: str | None = None
    fields: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    time: str | None = None
    top: int | str | None = None
    labels: int = 0
    write: str | None = None
    label_config: str | None = None
    geoip: str | None = None
    modes: list[str] = field(default_factory=list)
    filter: list[str] = field(default_factory=list)

    @property
    def cluster_mode(self) -> str | None:
        """The racluster -M mode (rmon or norep), if one was given."""
        return next((mode for mode in self.modes if mode in CLUSTER_MODES), None)

    @property
    def json(self) -> bool:
        """Whether -M json asked for one JSON object per row."""
        return "json" in self.modes


def _is_field_removal(word: str) -> bool:
    """Tell whether ``-word`` after ``-s`` removes a field (``-proto``) rather than a switch."""
    name = word.lstrip("-").split(":")[0]
    return word.startswith("-") and word not in VALUE_SWITCHES and name in CATALOGUE


def _whole_number(switch: str, text: str, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{switch} needs a whole number, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise UsageError(f"{switch} needs a number of at least {minimum}, not {text!r}")
    return value


def parse_switches(argv: list[str]) -> Switches:
    """Parse argus-style switches; raises UsageError naming the switch and the value."""
    switches = Switches()
    index = 0
    while index < len(argv):
        word = argv[index]
        index += 1
        if word in ("-", "--"):
            switches.filter = argv[index:]
            break
        if word in LIST_SWITCHES:
            items = []
            while index < len(argv) and (not argv[index].startswith("-")
                                         or word == "-s" and _is_field_removal(argv[index])):
                items.append(argv[index])
                index += 1
            if not items:
                raise UsageError(f"{word} needs at least one name")
            (switches.fields if word == "-s" else switches.keys).extend(items)
            continue
        switch, attached = word, None
        if word[:2] in VALUE_SWITCHES and len(word) > 2 and not word.startswith("--"):
            switch, attached = word[:2], word[2:]
        if switch in VALUE_SWITCHES:
            if attached is None:
                if index >= len(argv):
                    raise UsageError(f"{switch} needs a value")
                attached = argv[index]
                index += 1
            _apply_value(switches, switch, attached)
        elif word.startswith("-n") and set(word[1:]) == {"n"}:
            switches.numeric = (switches.numeric + len(word) - 1) % 4
        elif word == "-u":
            switches.epoch = True
        elif word == "-X":
            continue
        else:
            raise UsageError(f"unknown switch {word!r}")
    return switches


def _apply_value(switches: Switches, switch: str, value: str) -> None:
    if switch == "-r":
        switches.reads.append(value)
    elif switch == "-p":
        switches.precision = _whole_number("-p", value, 0)
        if switches.precision > 9:
            raise UsageError(f"-p takes 0 to 9 digits, not {value!r}")
    elif switch == "-c":
        if len(value) != 1 and value not in ("\\t", "TAB"):
            raise UsageError(f"-c needs one delimiter character, not {value!r}")
        switches.delimiter = "\t" if value in ("\\t", "TAB") else value
    elif switch == "-t":
        switches.time = value
    elif switch == "-N":
        try:
            parse_record_range(value)
        except ValueError as error:
            raise UsageError(f"-N {value!r}: {error}") from None
        switches.top = int(value) if value.isdigit() else value
    elif switch == "-L":
        switches.labels = _whole_number("-L", value, -1)
    elif switch == "-w":
        switches.write = value
    elif switch == "-f":
        switches.label_config = value
    elif switch == "--geoip":
        switches.geoip = value
    elif switch == "-M":
        for mode in value.replace(",", " ").split():
            if mode not in CLUSTER_MODES + OUTPUT_MODES:
                known = ", ".join(CLUSTER_MODES + OUTPUT_MODES)
                raise UsageError(f"-M {mode!r} is not supported; use one of {known}")
            switches.modes.append(mode)


def read_label_config(path: str) -> dict[str, Any]:
    """Read the ralabel.conf variables Wirewatch supports into label settings."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UsageError(f"cannot read ralabel configuration {path!r}: {error.strerror}") from None
    settings: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise UsageError(f"{path}:{number}: expected VARIABLE=value, not {line!r}")
        name, value = name.strip(), value.strip().strip('"')
        if name in RALABEL_VARIABLES:
            settings[RALABEL_VARIABLES[name]] = value
        elif name == "RALABEL_IANA_PORT":
            settings["port_labels"] = value.lower() == "yes"
        else:
            log.warning("%s:%d: ignoring unsupported variable %s", path, number, name)
    return settings


def build_spec(tool: str, switches: Switches, now: float) -> JobSpec:
    """Turn parsed switches into a validated JobSpec; raises SpecError."""
    render: dict[str, Any] = {"numeric": switches.numeric, "epoch": switches.epoch,
                              "precision": switches.precision,
                              "delimiter": switches.delimiter, "labels": switches.labels}
    analysis = TOOLS[tool]
    if switches.cluster_mode is not None and tool != "racluster":
        raise UsageError(f"-M {switches.cluster_mode} is a racluster mode")
    if switches.cluster_mode == "rmon":
        render["rmon"] = True
    if tool == "radump":
        render["user_data"] = "dns"
        if switches.json:
            analysis = "dns"
    label: dict[str, Any] = {}
    if switches.label_config:
        label.update(read_label_config(switches.label_config))
    if switches.geoip:
        label["geoip"] = switches.geoip
    return JobSpec.from_dict({
        "analysis": analysis,
        "time": switches.time,
        "filter": " ".join(switches.filter) or None,
        "now": now,
        "fields": switches.fields or None,
        "keys": switches.keys,
        "top": switches.top,
        "label": label,
        "mode": switches.cluster_mode,
        "render": render,
    })


def _read(paths: list[str]) -> pa.Table:
    from appliance.archive import read_records

    tables = [read_records(path) for path in paths]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


#: Compression of record files written with -w FILE: LZ4 writes a sixth of the bytes in
#: less time than writing them uncompressed takes. The stream to stdout (-w -) stays
#: uncompressed for the next tool in the pipe.
FILE_COMPRESSION = "lz4"


def write_records(target: str, rows: Rows) -> None:
    """Write result rows to a record file (LZ4-compressed) or, for ``-``, to stdout.

    Sorted records not yet gathered (``SortedRecords``) are gathered and written a slice
    at a time.
    """
    from appliance.archive import RecordWriter

    compression = None if target == "-" else FILE_COMPRESSION
    with RecordWriter(target, compression=compression, sync=False) as writer:
        if isinstance(rows, pa.Table):
            writer.write(rows)
            return
        for part in rows.slices():
            writer.write(part)


def _print(lines: list[str] | Any) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


def _print_blocks(blocks: Iterator[bytes]) -> None:
    sys.stdout.flush()
    out = sys.stdout.buffer
    for block in blocks:
        out.write(block)
    out.flush()


def reference_now() -> float:
    """Return "now" for relative -t times: WIREWATCH_NOW (epoch seconds) or the clock."""
    text = os.environ.get(NOW_VARIABLE)
    if not text:
        return time.time()
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{NOW_VARIABLE}={text!r} is not epoch seconds") from None


def _check_filter(tool: str, words: list[str]) -> bool:
    """Parse the filter; on a syntax error print it with a pointer under the token."""
    try:
        parse_filter(" ".join(words))
    except FilterSyntaxError as error:
        print(f"{tool}: {error}", file=sys.stderr)
        print(error.pointer(), file=sys.stderr)
        return False
    return True


def _row_labels(result: JobResult) -> tuple[list[str], list[str]]:
    names = [split_field(item)[0] for item in result.fields]
    if result.spec.analysis == "dns":
        return names, names
    options = result.render_options()
    return names, [field_label(name, options) for name in names]


def emit(result: JobResult, switches: Switches) -> None:
    """Print or write the result as the switches ask: text, NDJSON, CSV, Parquet or records."""
    target = switches.write
    if target is None:
        if switches.json or result.spec.analysis == "dns":
            _print(ndjson_lines(result_rows(result)))
        else:
            _print_blocks(render_text(result.rows, result.fields, result.render_options()))
        return
    kind = format_for_path(target)
    if kind == "parquet":
        write_parquet(result.rows, target)
    elif kind == "csv":
        write_text(target, csv_lines(result_rows(result), *_row_labels(result)))
    elif kind == "ndjson":
        write_text(target, ndjson_lines(result_rows(result)))
    elif result.spec.analysis == "dns":
        raise UsageError("DNS messages are not flow records: write them to .ndjson or .csv")
    else:
        write_records(target, result.rows)


def _writes_records(switches: Switches) -> bool:
    """Tell whether the result goes to a record stream (-w FILE or -w -), not text or Parquet."""
    return switches.write is not None and format_for_path(switches.write) == "arrow"


def _projection(spec: JobSpec, switches: Switches) -> set[str] | None:
    """Return the columns to build when the result is only printed (text, CSV, NDJSON)."""
    if switches.write is not None and format_for_path(switches.write) not in ("csv", "ndjson"):
        return None
    return printed_columns(spec)


#: The switch that sets each job spec field, for error messages on the command line.
SPEC_FIELD_SWITCHES = {
    "fields": "-s", "keys": "-m", "time": "-t", "filter": "the filter", "top": "-N",
    "mode": "-M", "label": "--geoip or -f", "render.precision": "-p",
    "render.delimiter": "-c", "render.labels": "-L",
}


def _switch_message(error: SpecError) -> str:
    """Reword a job spec error in terms of the switch that set the field."""
    switch = SPEC_FIELD_SWITCHES.get(error.field)
    if switch is None and error.field.startswith("label."):
        switch = "--geoip or -f"
    if switch is None:
        return str(error)
    if error.field == "label" and not error.value:
        return "labels need a source: give --geoip DB.mmdb or -f RALABEL.CONF"
    value = " ".join(map(str, error.value)) if isinstance(error.value, list) else error.value
    return f"invalid {switch} value {value!r}: {error.message}"


def main(tool: str, argv: list[str]) -> int:
    """Run one of ra, racluster, rasort, ralabel, radump with argus switches; return exit status."""
    if tool not in TOOLS:
        print(f"wirewatch: unknown tool {tool!r}; use one of {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE.format(tool=tool))
        return 0
    try:
        switches = parse_switches(argv)
        if not switches.reads:
            raise UsageError("-r is missing: give a record file, an archive directory or -")
        if not _check_filter(tool, switches.filter):
            return 2
        spec = build_spec(tool, switches, reference_now())
        records = _read(switches.reads)
        result = execute(spec, records, JobContext(job_id=f"{tool}-cli"),
                         columns=_projection(spec, switches), gather=not _writes_records(switches))
    except SpecError as error:
        print(f"{tool}: {_switch_message(error)}", file=sys.stderr)
        print(USAGE.format(tool=tool), file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"{tool}: {error}", file=sys.stderr)
        print(USAGE.format(tool=tool), file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"{tool}: {error}", file=sys.stderr)
        return 2

    if result.rows.num_rows == 0:
        return 1
    try:
        emit(result, switches)
    except BrokenPipeError:
        sys.stderr.close()
    except (UsageError, OSError) as error:
        print(f"{tool}: {error}", file=sys.stderr)
        return 2
    return 0
