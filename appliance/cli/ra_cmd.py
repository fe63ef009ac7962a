"""Argus-style command lines for ra, racluster, rasort, ralabel and radump.

The switches are Argus's, parsed by hand because argus argv does not fit argparse:
``-s`` and ``-m`` take several words, and a lone ``-`` (or ``--``) starts the filter
expression, which runs to the end of the line. The switches build a JobSpec, and
``appliance.jobs.execute`` runs it, the same path the Celery tasks and the API take.

Exit status, as ra: 0 when a record was printed or written, 1 when none matched,
2 for invalid input (the message on stderr names the value).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from appliance.jobs import JobContext, execute
from appliance.jobspec import JobSpec, SpecError
from appliance.query.fields import CATALOGUE
from appliance.query.render import render_lines

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

USAGE = """usage: {tool} -r FILE|DIR|- [-n] [-u] [-p N] [-c C] [-s FIELD ...] [-m KEY ...]
          [-t RANGE] [-N N] [-L N] [-w FILE|-] [-f RALABEL.CONF] [--geoip MMDB] [- FILTER]"""


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
    top: int | None = None
    labels: int = 0
    write: str | None = None
    label_config: str | None = None
    geoip: str | None = None
    mode: str | None = None
    filter: list[str] = field(default_factory=list)


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
        switches.top = _whole_number("-N", value, 1)
    elif switch == "-L":
        switches.labels = _whole_number("-L", value, -1)
    elif switch == "-w":
        switches.write = value
    elif switch == "-f":
        switches.label_config = value
    elif switch == "--geoip":
        switches.geoip = value
    elif switch == "-M":
        switches.mode = value


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
    if tool == "radump":
        render["user_data"] = "dns"
    label: dict[str, Any] = {}
    if switches.label_config:
        label.update(read_label_config(switches.label_config))
    if switches.geoip:
        label["geoip"] = switches.geoip
    return JobSpec.from_dict({
        "analysis": TOOLS[tool],
        "time": switches.time,
        "filter": " ".join(switches.filter) or None,
        "now": now,
        "fields": switches.fields or None,
        "keys": switches.keys,
        "top": switches.top,
        "label": label,
        "mode": switches.mode,
        "render": render,
    })


def _read(paths: list[str]) -> pa.Table:
    from appliance.archive import read_records

    tables = [read_records(path) for path in paths]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def _write_records(target: str, rows: pa.Table) -> None:
    from appliance.archive import RecordWriter

    with RecordWriter(target) as writer:
        writer.write(rows)


def _print(lines: list[str] | Any) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


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
        spec = build_spec(tool, switches, time.time())
        records = _read(switches.reads)
        result = execute(spec, records, JobContext(job_id=f"{tool}-cli"))
    except (UsageError, SpecError) as error:
        print(f"{tool}: {error}", file=sys.stderr)
        print(USAGE.format(tool=tool), file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"{tool}: {error}", file=sys.stderr)
        return 2

    if result.rows.num_rows == 0:
        return 1
    try:
        if switches.write is not None:
            _write_records(switches.write, result.rows)
        else:
            _print(render_lines(result.rows, result.fields, result.render_options()))
    except BrokenPipeError:
        sys.stderr.close()
    return 0
