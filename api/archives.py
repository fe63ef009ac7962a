"""Archives: list the record files with their time ranges, download records by -t range.

File summaries (record count, first stime, last ltime) are cached per app by path,
size and modification time, so a listing reads only files that changed. A file name
from a client is accepted only when it is one of the listed files.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from flask import Blueprint, Response, current_app, jsonify, request, send_file

from api.auth import requires
from api.context import EXTENSION, sensor_config
from api.errors import ApiError
from api.openapi import document
from appliance.archive import ACTIVE_NAME, HELD_NAME, iter_record_files, read_records
from appliance.query.filter import FilterSyntaxError, parse_filter
from appliance.query.timerange import TimeRangeError, parse_time_range
from appliance.records import FLOW_SCHEMA

log = logging.getLogger(__name__)

bp = Blueprint("archives", __name__, url_prefix="/api/v1/archives")

STREAM_TYPE = "application/vnd.apache.arrow.stream"
_cache_lock = threading.Lock()


@bp.get("")
@requires("read")
@document(responses={200: "ArchiveList"})
def list_archives() -> Response:
    """List the archive's record files with sizes, record counts and time ranges."""
    files = [_summary(path) for path in _record_files()]
    return jsonify({"directory": str(sensor_config().archive_dir), "files": files,
                    "total_bytes": sum(item["bytes"] for item in files),
                    "total_records": sum(item["records"] for item in files)})


@bp.get("/files/<path:name>")
@requires("read")
@document(responses={200: "RecordStream", 404: None})
def download_file(name: str) -> Response:
    """Download one record file by the name the listing shows."""
    archive_dir = sensor_config().archive_dir.resolve()
    wanted = (archive_dir / name).resolve()
    listed = {path.resolve() for path in _record_files()}
    if not wanted.is_relative_to(archive_dir) or wanted not in listed:
        raise ApiError(404, f"no record file {name!r} in the archive; GET /api/v1/archives "
                       "lists the file names", "name", name)
    return send_file(wanted, mimetype=STREAM_TYPE, download_name=wanted.name, max_age=0)


@bp.get("/records")
@requires("read")
@document(parameters=["time", "filter"], responses={200: "RecordStream", 400: None})
def download_records() -> Response:
    """Stream the records inside a -t range (and matching a filter) as an Arrow IPC stream."""
    text = request.args.get("t")
    if not text:
        raise ApiError(400, "missing t; give a -t time range such as 2024/03/01.12 or -1h",
                       "t", text)
    try:
        time_range = parse_time_range(text, time.time())
    except TimeRangeError as error:
        raise ApiError(400, f"invalid time range {text!r}: {error.reason}", "t", text) \
            from None
    expression = request.args.get("filter")
    try:
        selector = parse_filter(expression) if expression else None
    except FilterSyntaxError as error:
        raise ApiError(400, str(error), "filter", expression) from None

    files = [path for path in _record_files() if _overlaps(_summary(path), time_range)]
    log.info("record download %s (filter %r): %d files", text, expression, len(files))
    return Response(_stream(files, time_range, selector), mimetype=STREAM_TYPE,
                    headers={"Content-Disposition": "attachment; filename=records.arrows"})


def _stream(files: list[Path], time_range: Any, selector: Any) -> Iterator[bytes]:
    """Yield an Arrow IPC stream: the schema, then the selected records file by file."""
    buffer = io.BytesIO()
    writer = pa.ipc.new_stream(buffer, FLOW_SCHEMA)
    yield _drain(buffer)
    for path in files:
        table = read_records(path)
        table = table.filter(time_range.mask(table))
        if selector is not None and table.num_rows:
            table = table.filter(selector.mask(table))
        for batch in table.to_batches():
            writer.write_batch(batch)
            yield _drain(buffer)
    writer.close()
    yield _drain(buffer)


def _drain(buffer: io.BytesIO) -> bytes:
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return data


def _record_files() -> list[Path]:
    archive_dir = sensor_config().archive_dir
    return list(iter_record_files(archive_dir)) if archive_dir.is_dir() else []


def _overlaps(summary: dict[str, Any], time_range: Any) -> bool:
    if summary["stime"] is None:
        return False  # a file without records has nothing to select
    start_us = round(summary["stime"] * 1_000_000)
    end_us = round(summary["ltime"] * 1_000_000)
    return start_us < time_range.end and end_us >= time_range.start


def _summary(path: Path) -> dict[str, Any]:
    """Return a file's name, size, record count and time range (cached while unchanged)."""
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    cache = current_app.extensions[EXTENSION].setdefault("archive_summaries", {})
    with _cache_lock:
        cached = cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]

    table = read_records(path)
    times = None
    if table.num_rows:
        first = pc.min(table.column("stime")).as_py()
        last = pc.max(table.column("ltime")).as_py()
        times = (first.timestamp(), last.timestamp())
    summary = {
        "name": str(path.relative_to(sensor_config().archive_dir)),
        "bytes": stat.st_size,
        "records": table.num_rows,
        "stime": times[0] if times else None,
        "ltime": times[1] if times else None,
        "active": path.name in (ACTIVE_NAME, HELD_NAME),
    }
    with _cache_lock:
        cache[path] = (stamp, summary)
    return summary
