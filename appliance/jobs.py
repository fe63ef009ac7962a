"""Running a job specification on flow records and storing its result files.

``execute`` is the one path shared by the ra command line, the Celery tasks and the
REST API: select by time range, then by filter, run the analysis, keep the first
``top`` rows. ``write_result`` stores result.csv, result.json and meta.json, each
written to a temporary file and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa

from appliance.analyses.keys import with_mac_sources
from appliance.jobspec import JobSpec, parse_record_range
from appliance.query.fields import DEFAULT_FIELDS, source_columns, split_field
from appliance.query.filter import parse_filter
from appliance.query.render import RenderOptions, field_label, to_rows
from appliance.query.rows import filter_rows
from appliance.query.timerange import parse_time_range
from appliance.records import address_to_text

if TYPE_CHECKING:
    from appliance.analyses.sort import SortedRecords

log = logging.getLogger(__name__)

#: Result rows: a table, or sorted records not yet gathered (see ``run_analysis``).
Rows: TypeAlias = "pa.Table | SortedRecords"

#: Printed fields whose JSON value is a number when the text is all digits.
INTEGER_FIELDS = frozenset(
    ["trans", "seq", "pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "appbytes",
     "sappbytes", "dappbytes", "sttl", "dttl", "stos", "dtos", "sas", "das", "vlan", "sport",
     "dport"])


@dataclass
class JobContext:
    """Job identity for logging and progress: the job id and an optional progress callback."""

    job_id: str = "cli"
    progress: Callable[[str], None] | None = None

    def report(self, step: str) -> None:
        """Log a step of the job and pass it to the progress callback."""
        log.info("job %s: %s", self.job_id, step)
        if self.progress is not None:
            self.progress(step)


@dataclass
class JobResult:
    """The outcome of a job: result rows, the printed fields and metadata."""

    spec: JobSpec
    rows: Rows
    fields: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def render_options(self, **overrides: Any) -> RenderOptions:
        """Return the spec's output switches as RenderOptions, with ``overrides`` applied."""
        settings = {**self.spec.render, **overrides}
        return RenderOptions(**settings)


def select(spec: JobSpec, records: pa.Table, columns: set[str] | None = None) -> pa.Table:
    """Return the records inside the spec's time range that match its filter.

    The filter is evaluated on the records inside the time range only. With ``columns``
    (see ``printed_columns``) the result contains only those columns. The rows are then
    selected from them plus the columns that the time range and the filter read.
    """
    condition = parse_filter(spec.filter) if spec.filter else None
    table = records
    kept: set[str] | None = None
    if columns is not None:
        kept = with_mac_sources(records, columns)
        read = kept | (condition.columns if condition else set())
        if spec.time:
            read |= {"stime", "ltime"}
        table = records.select([name for name in records.column_names if name in read])
    if spec.time:
        table = filter_rows(table, parse_time_range(spec.time, spec.now).mask(table))
    if condition is not None:
        table = filter_rows(table, condition.mask(table))
    if kept is not None:
        table = table.select([name for name in table.column_names if name in kept])
    return table


def printed_columns(spec: JobSpec) -> set[str] | None:
    """Return the record columns that printing the result of ``spec`` needs.

    None for analyses whose rows are not projected (label, dns). Given this set,
    ``execute`` makes ra keep, and cluster and sort build, only the printed columns.
    Such a result is for printing only, not for writing as records.
    """
    if spec.analysis not in ("ra", "cluster", "sort"):
        return None
    return source_columns(spec.fields or DEFAULT_FIELDS)


def run_analysis(spec: JobSpec, table: pa.Table, columns: set[str] | None = None,
                 gather: bool = True) -> tuple[Rows, dict[str, Any]]:
    """Run the spec's analysis on selected records; returns rows and analysis metadata.

    A sort with an output-side -N window gathers only the rows up to the window's end.
    ``columns`` (see ``printed_columns``) limits the columns cluster and sort build.
    Without ``gather`` a sort returns ``SortedRecords``, for writing a slice at a time.
    """
    if spec.analysis == "cluster":
        from appliance.analyses.cluster import cluster_records

        return cluster_records(table, spec.keys or None, spec.mode, columns), {}
    if spec.analysis == "sort":
        from appliance.analyses.sort import sort_records

        window = parse_record_range(spec.top) if spec.top is not None else None
        limit = None
        if window is not None and window.side == "o" and window.count is not None:
            limit = window.first - 1 + window.count
        if not gather:
            from appliance.analyses.sort import sorted_records

            return sorted_records(table, spec.keys or None, limit), {}
        return sort_records(table, spec.keys or None, limit, columns), {}
    if spec.analysis == "label":
        return _label(spec, table)
    if spec.analysis == "dns":
        from appliance.analyses.dns import extract_dns

        return extract_dns(table), {}
    return table, {}


def _label(spec: JobSpec, table: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    from appliance.analyses.label import database_info, label_records

    geoip = spec.label.get("geoip")
    labelled = label_records(table, geoip, address_file=spec.label.get("address_file"),
                             port_labels=bool(spec.label.get("port_labels", False)))
    metadata = {"geoip": database_info(geoip)} if geoip else {}
    return labelled, metadata


def execute(spec: JobSpec, records: pa.Table, context: JobContext | None = None,
            columns: set[str] | None = None, gather: bool = True) -> JobResult:
    """Run ``spec`` on ``records``: time range, filter, analysis, then the ``top`` (-N) rows.

    An input-side ``top`` (``i100``) keeps those input records before anything else.
    ``columns`` limits the columns ra keeps and cluster and sort build (see
    ``printed_columns``). Without ``gather`` a sort's rows are ``SortedRecords`` (see
    ``run_analysis``).
    """
    context = context or JobContext()
    timings: dict[str, float] = {}
    window = parse_record_range(spec.top) if spec.top is not None else None
    if window is not None and window.side == "i":
        records = window.apply(records)

    started = time.perf_counter()
    selected = select(spec, records, columns if spec.analysis == "ra" else None)
    timings["select_seconds"] = time.perf_counter() - started
    context.report(f"selected {selected.num_rows} of {records.num_rows} records")

    started = time.perf_counter()
    rows, metadata = run_analysis(spec, selected, columns, gather)
    timings["analysis_seconds"] = time.perf_counter() - started
    context.report(f"{spec.analysis} produced {rows.num_rows} rows")

    if window is not None and window.side == "o":
        rows = window.apply(rows)
    fields = _output_fields(spec, rows)
    metadata.update(timings=timings, input_records=records.num_rows,
                    selected_records=selected.num_rows)
    return JobResult(spec, rows, fields, metadata)


def _output_fields(spec: JobSpec, rows: Rows) -> list[str]:
    """Return the spec's fields, or the defaults for its analysis.

    DNS rows have their own columns. Label jobs add the columns they fill, so that the
    labels show without a field list.
    """
    if spec.analysis == "dns":
        return list(rows.column_names)
    if spec.fields:
        return list(spec.fields)
    if spec.analysis != "label":
        return list(DEFAULT_FIELDS)
    added = ["sco", "dco"] if spec.label.get("geoip") else []
    if spec.label.get("address_file") or spec.label.get("port_labels"):
        added.append("label")
    return [*DEFAULT_FIELDS, *added]


def result_rows(result: JobResult) -> list[dict[str, Any]]:
    """Return the result as one dict per row, keyed by field name, values as printed."""
    if result.spec.analysis == "dns":
        return _plain_rows(result.rows)
    options = result.render_options(delimiter=",")
    rows = to_rows(result.rows, result.fields, options)
    for row in rows:
        for name, text in row.items():
            text = text.strip()
            row[name] = int(text) if name in INTEGER_FIELDS and text.isdigit() else text
    return rows


def _plain_value(value: Any) -> Any:
    if isinstance(value, bytes) and len(value) == 16:
        return address_to_text(value)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "timestamp"):
        return round(value.timestamp(), 6)
    return value


def _csv_cell(value: Any) -> str:
    """Format one JSON-ready value for CSV: lists joined by ';', booleans in lower case."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value)


def _plain_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of a table outside the flow catalogue (DNS messages), with readable values."""
    rows = table.to_pylist()
    return [{name: _plain_value(value) for name, value in row.items()} for row in rows]


def _csv_text(result: JobResult, rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [split_field(item)[0] for item in result.fields]
    if result.spec.analysis == "dns":
        writer.writerow(names)
    else:
        options = result.render_options()
        writer.writerow([field_label(name, options) for name in names])
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in names])
    return buffer.getvalue()


def write_result(result: JobResult, directory: Path) -> dict[str, Any]:
    """Write result.csv, result.json and meta.json into ``directory``; return the metadata.

    The metadata contains the spec, the row count, the printed fields, the SHA-256
    digest of result.csv, the timings and any analysis metadata (GeoIP database).
    """
    # Imported here: the ra commands, which never write result files, start faster
    # without hashlib's OpenSSL and tempfile (7 ms).
    import hashlib

    from appliance.atomic import write_atomically

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = result_rows(result)
    csv_bytes = _csv_text(result, rows).encode()
    json_bytes = json.dumps(rows, ensure_ascii=False).encode()
    write_atomically(directory / "result.csv", csv_bytes)
    write_atomically(directory / "result.json", json_bytes)

    metadata = {
        **result.metadata,
        "spec": result.spec.to_dict(),
        "rows": len(rows),
        "fields": [split_field(item)[0] for item in result.fields],
        "sha256": hashlib.sha256(csv_bytes).hexdigest(),
        "json_sha256": hashlib.sha256(json_bytes).hexdigest(),
    }
    metadata["timings"] = {**metadata.get("timings", {}),
                           "write_seconds": time.perf_counter() - started}
    write_atomically(directory / "meta.json",
                      json.dumps(metadata, indent=2, default=str).encode())
    log.info("wrote result of %s job: %d rows to %s", result.spec.analysis, len(rows), directory)
    return metadata
