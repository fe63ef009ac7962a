"""Flow record files: Arrow IPC streams, the rotating archive, and reading them back.

A record file is an Arrow IPC stream with the flow schema. The archive is a directory
with one active file, ``flows.active.arrows``, that grows while the sensor writes, and
closed files under ``%Y/%m/%d/flows.%Y.%m.%d.%H.%M.%S.arrows`` named by the start of
their rotation period. Rotation closes the active file and renames it, so a
reader never sees a half-renamed file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from appliance.records import FLOW_SCHEMA, conform

log = logging.getLogger(__name__)

ACTIVE_NAME = "flows.active.arrows"
RECORD_SUFFIX = ".arrows"
ARCHIVE_NAME_FORMAT = "%Y/%m/%d/flows.%Y.%m.%d.%H.%M.%S"


class RecordFileError(ValueError):
    """A path that should hold flow records does not exist or is not a record stream."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _as_schema(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    return conform(table).select(FLOW_SCHEMA.names)


class RecordWriter:
    """Write flow records to one Arrow IPC stream: a file path, ``-`` (stdout) or a binary file.

    Archive files use zstd-compressed batches, about a third of the size. The stream to
    stdout stays uncompressed, so that the next tool in a pipe reads it cheaply.
    """

    def __init__(self, sink: str | Path | BinaryIO, compression: str | None = None) -> None:
        self._owned: BinaryIO | None = None
        if sink == "-":
            stream: BinaryIO = sys.stdout.buffer
        elif isinstance(sink, str | Path):
            self._owned = open(sink, "wb")  # noqa: SIM115 - closed in close()
            stream = self._owned
        else:
            stream = sink
        self._stream = stream
        options = pa.ipc.IpcWriteOptions(compression=compression)
        self._writer = pa.ipc.new_stream(stream, FLOW_SCHEMA, options=options)
        self.records = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append records; columns missing from ``batch`` are written as nulls."""
        table = _as_schema(batch)
        if table.num_rows == 0:
            return
        self._writer.write_table(table)
        self.records += table.num_rows

    @property
    def size(self) -> int:
        """Bytes written to the file so far (0 for stdout or a stream not opened here)."""
        return self._owned.tell() if self._owned is not None else 0

    def flush(self, sync: bool = False) -> None:
        """Push written batches to the operating system, and to the disk when ``sync``."""
        self._stream.flush()
        if sync and self._owned is not None:
            os.fsync(self._owned.fileno())

    def close(self) -> None:
        """Write the end-of-stream marker and close the file if this writer opened it."""
        self._writer.close()
        self._stream.flush()
        if self._owned is not None:
            os.fsync(self._owned.fileno())
            self._owned.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def archive_path(directory: Path, period_start: float) -> Path:
    """Return the archive file path for a rotation period that starts at ``period_start``."""
    stamp = datetime.fromtimestamp(period_start, tz=UTC).strftime(ARCHIVE_NAME_FORMAT)
    return directory / f"{stamp}{RECORD_SUFFIX}"


def _free_name(target: Path) -> Path:
    """Return ``target``, or ``target`` with a ``.1``, ``.2`` ... suffix if it already exists."""
    if not target.exists():
        return target
    stem = target.name[: -len(RECORD_SUFFIX)]
    for index in range(1, 10_000):
        candidate = target.with_name(f"{stem}.{index}{RECORD_SUFFIX}")
        if not candidate.exists():
            return candidate
    raise RecordFileError(target, "too many archive files for one rotation period")


class ArchiveWriter:
    """Write flow records into an archive directory, rotating the active file by time.

    Periods are aligned to the clock (hourly files start at minute 0). ``now`` is the
    caller's clock: wall time for a live interface, packet time for a replayed file.
    With ``rotate_bytes`` the active file is also rotated once it reaches that size; the
    next file of the same period gets a ``.1``, ``.2`` ... suffix. Callers flush at least
    once a second so that records reach the file (the daemon does, on a timer).
    """

    def __init__(self, directory: str | Path, rotate_seconds: int = 3600,
                 rotate_bytes: int = 0) -> None:
        if rotate_seconds < 1:
            raise ValueError(f"rotate_seconds must be at least 1, got {rotate_seconds}")
        self.directory = Path(directory)
        self.rotate_seconds = rotate_seconds
        self.rotate_bytes = rotate_bytes
        self.active_path = self.directory / ACTIVE_NAME
        self.last_rotation: Path | None = None
        self._writer: RecordWriter | None = None
        self._period_start: float | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover_active_file()

    def _period_of(self, now: float) -> float:
        return float(int(now // self.rotate_seconds) * self.rotate_seconds)

    def _recover_active_file(self) -> None:
        """Move an active file left by an earlier run (a crash, a kill) into the archive."""
        if not self.active_path.exists():
            return
        problems: list[str] = []
        try:
            table = _read_stream_file(self.active_path, problems)
        except RecordFileError as error:
            aside = self.active_path.with_name(f"{ACTIVE_NAME}.damaged-{int(time.time())}")
            os.replace(self.active_path, aside)
            log.error("active file left by an earlier run is unreadable (%s); kept as %s",
                      error.reason, aside)
            return
        if table.num_rows == 0:
            log.warning("removing empty active file %s left by an earlier run", self.active_path)
            self.active_path.unlink()
            return
        first = table.column("stime").to_pylist()[0]
        start = self._period_of(first.timestamp())
        target = _free_name(archive_path(self.directory, start))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.active_path, target)
        log.warning(
            "moved active file left by an earlier run to %s (%d records)", target, table.num_rows
        )

    def write(self, batch: pa.RecordBatch | pa.Table, now: float | None = None) -> None:
        """Append records to the active file, rotating first if ``now`` is in a new period."""
        now = time.time() if now is None else now
        self.maybe_rotate(now)
        if self._writer is None:
            self._writer = RecordWriter(self.active_path, compression="zstd")
            self._period_start = self._period_of(now)
            log.info("opened active file %s", self.active_path)
        self._writer.write(batch)
        if self.rotate_bytes and self._writer.size >= self.rotate_bytes:
            self.rotate()

    def flush(self) -> None:
        """Make the records written so far readable by other processes."""
        if self._writer is not None:
            self._writer.flush()

    def maybe_rotate(self, now: float) -> Path | None:
        """Rotate when ``now`` lies past the active file's period; return the new archive path."""
        if self._period_start is None:
            return None
        if now < self._period_start + self.rotate_seconds:
            return None
        return self.rotate()

    def rotate(self) -> Path | None:
        """Close the active file and rename it into the archive; return its new path."""
        if self._writer is None or self._period_start is None:
            return None
        self._writer.close()
        records = self._writer.records
        target = _free_name(archive_path(self.directory, self._period_start))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.active_path, target)
        self._writer = None
        self._period_start = None
        self.last_rotation = target
        log.info("rotated %s to %s (%d records)", self.active_path, target, records)
        return target

    def close(self) -> Path | None:
        """Rotate the active file, so that everything written is in the archive."""
        return self.rotate()


def iter_record_files(directory: str | Path) -> Iterator[Path]:
    """Yield the record files below ``directory``: archived ones in time order, then the active."""
    root = Path(directory)
    archived = sorted(
        path for path in root.rglob(f"*{RECORD_SUFFIX}") if path.name != ACTIVE_NAME
    )
    yield from archived
    active = root / ACTIVE_NAME
    if active.exists():
        yield active


def _read_stream(source: BinaryIO, name: str, problems: list[str]) -> pa.Table:
    """Read every whole batch of one Arrow stream; a damaged tail is reported and skipped."""
    try:
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError) as error:
        raise RecordFileError(name, f"not an Arrow record stream ({error}); give records "
                              "written by 'wirewatch capture -w' or a ra tool's '-w'") from error
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as error:
            message = f"{name}: damaged after {len(batches)} batches, rest skipped ({error})"
            log.warning("%s", message)
            problems.append(message)
            break
    if not batches:
        return conform(reader.schema.empty_table())
    return conform(pa.Table.from_batches(batches, schema=reader.schema))


#: First bytes of capture files, which users sometimes give where flow records belong.
CAPTURE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                  b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")


def _read_stream_file(path: Path, problems: list[str]) -> pa.Table:
    if path.stat().st_size == 0:
        # A file that was just created and has no schema message yet contains no records.
        return FLOW_SCHEMA.empty_table()
    with open(path, "rb") as source:
        if source.read(4) in CAPTURE_MAGICS:
            raise RecordFileError(path, "is a packet capture, not flow records; make records "
                                  f"first with 'wirewatch capture -r {path} -w FLOWS.arrows'")
        source.seek(0)
        return _read_stream(source, str(path), problems)


def read_records(path: str | Path, problems: list[str] | None = None) -> pa.Table:
    """Read flow records from a record file, an archive directory, or ``-`` (stdin).

    In a directory, a file that is not a record stream is reported (logged and appended
    to ``problems``) and the other files are read. Raises RecordFileError when ``path``
    does not exist, or when a single file given by name is not a record stream.
    """
    problems = [] if problems is None else problems
    if str(path) == "-":
        return _read_stream(sys.stdin.buffer, "standard input", problems)
    target = Path(path)
    if target.is_file():
        return _read_stream_file(target, problems)
    if not target.is_dir():
        raise RecordFileError(target, "no such file or directory; give a record file written "
                              "by 'wirewatch capture -w' or an archive directory")
    tables = []
    for file in iter_record_files(target):
        try:
            tables.append(_read_stream_file(file, problems))
        except RecordFileError as error:
            log.warning("skipping %s: %s", file, error.reason)
            problems.append(str(error))
    if not tables and not problems:
        message = f"{target}: no record files (*{RECORD_SUFFIX}) in this directory"
        log.warning("%s", message)
        problems.append(message)
    if not tables:
        return FLOW_SCHEMA.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")
