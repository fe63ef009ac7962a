"""Flow record files: Arrow IPC streams, the rotating archive, and reading them back.

A record file is an Arrow IPC stream with the flow schema. The archive is a directory
with one active file, ``flows.active.arrows``, that grows while the sensor writes, and
closed files under ``%Y/%m/%d/flows.%Y.%m.%d.%H.%M.%S.arrows`` named by the start of
their rotation period. Records that cross a period boundary are split there, and for a
hold time after a boundary the previous period's file stays open as
``flows.held.arrows`` for records that arrive late. Rotation closes a file and renames
it, so a reader never sees a half-renamed file.
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

import numpy as np
import pyarrow as pa

from appliance.records import FLOW_SCHEMA, conform

log = logging.getLogger(__name__)

ACTIVE_NAME = "flows.active.arrows"
#: The previous period's file while it is held open for late records.
HELD_NAME = "flows.held.arrows"
#: Schema metadata key of a file's rotation period start (epoch seconds, as text).
PERIOD_KEY = b"wirewatch.period_start"
#: Seconds added to twice the status interval for the hold time (ring block latency).
HOLD_MARGIN = 5.0
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


#: The maximum number of records ``RecordWriter`` puts in one batch.
BATCH_ROWS = 65_536


class RecordWriter:
    """Write flow records to one Arrow IPC stream: a file path, ``-`` (stdout) or a binary file.

    Archive files use zstd-compressed batches, about a third of the size. The stream to
    stdout stays uncompressed, so that the next tool in a pipe reads it cheaply. A file
    opened here is synced to the disk when it is closed, unless ``sync`` is false (the
    output of a one-off command, which the page cache may write when it likes).

    With ``joined``, the records of small writes are held back and written as batches of
    ``BATCH_ROWS``. The ra tools read a file of few large batches faster, because they
    work on each batch's columns separately. ``flush`` and ``close`` write the records
    held back.
    """

    def __init__(self, sink: str | Path | BinaryIO, compression: str | None = None,
                 metadata: dict[bytes, bytes] | None = None, sync: bool = True,
                 joined: bool = False) -> None:
        self._sync = sync
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
        schema = FLOW_SCHEMA.with_metadata(metadata) if metadata else FLOW_SCHEMA
        self._writer = pa.ipc.new_stream(stream, schema, options=options)
        self._joined = joined
        self._unwritten: list[pa.Table] = []
        self._unwritten_rows = 0
        self.records = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append records; columns missing from ``batch`` are written as nulls."""
        table = _as_schema(batch)
        if table.num_rows == 0:
            return
        self.records += table.num_rows
        if not self._joined:
            self._writer.write_table(table, max_chunksize=BATCH_ROWS)
            return
        self._unwritten.append(table)
        self._unwritten_rows += table.num_rows
        if self._unwritten_rows >= BATCH_ROWS:
            whole = self._unwritten_rows - self._unwritten_rows % BATCH_ROWS
            unwritten = pa.concat_tables(self._unwritten).combine_chunks()
            self._writer.write_table(unwritten.slice(0, whole), max_chunksize=BATCH_ROWS)
            rest = unwritten.slice(whole)
            self._unwritten, self._unwritten_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def _write_unwritten(self) -> None:
        if self._unwritten:
            self._writer.write_table(pa.concat_tables(self._unwritten).combine_chunks())
            self._unwritten, self._unwritten_rows = [], 0

    @property
    def size(self) -> int:
        """Bytes written to the file so far (0 for stdout or a stream not opened here)."""
        return self._owned.tell() if self._owned is not None else 0

    def flush(self, sync: bool = False) -> None:
        """Push written batches to the operating system, and to the disk when ``sync``."""
        self._write_unwritten()
        self._stream.flush()
        if sync and self._owned is not None:
            os.fsync(self._owned.fileno())

    def close(self) -> None:
        """Write the end-of-stream marker and close the file if this writer opened it."""
        self._write_unwritten()
        self._writer.close()
        self._stream.flush()
        if self._owned is not None:
            if self._sync:
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


def hold_for_status_interval(status_interval: float) -> float:
    """Return the hold time that catches every record a flow meter can write late.

    The flow meter reports a record at the first status tick at least one status
    interval after the record's ``stime``, and ticks are one interval apart. So a record
    that began before a boundary is written at most two intervals after it.
    """
    return 2 * status_interval + HOLD_MARGIN


class ArchiveWriter:
    """Write flow records into an archive directory, rotating the active file by time.

    Periods are aligned to the clock (hourly files start at minute 0). ``now`` is the
    caller's clock: wall time for a live interface, packet time for a replayed file.
    Records are split at period boundaries (``appliance.split``) and each piece goes to
    the file of the period holding its ``stime``. When ``now`` passes a boundary, or a
    piece of a newer period arrives, the active file is renamed to ``flows.held.arrows``
    and stays open until ``hold_seconds`` (at most one period) after its period ended,
    so pieces of that period that arrive late still go into its file. A piece for a
    period whose file is already closed goes into the active file, and the writer logs
    how many did at each rotation.

    With ``rotate_bytes`` the active file is also rotated once it reaches that size; the
    next file of the same period gets a ``.1``, ``.2`` ... suffix, and records are not
    split there. Callers flush at least once a second so that records reach the files
    (the daemon does, on a timer); both open files are flushed.
    """

    def __init__(self, directory: str | Path, rotate_seconds: int = 3600,
                 rotate_bytes: int = 0, hold_seconds: float | None = None) -> None:
        if rotate_seconds < 1:
            raise ValueError(f"rotate_seconds must be at least 1, got {rotate_seconds}")
        self.directory = Path(directory)
        self.rotate_seconds = rotate_seconds
        self.rotate_bytes = rotate_bytes
        #: Seconds the previous period's file stays open after its period ended.
        self.hold_seconds = hold_for_status_interval(60.0) if hold_seconds is None \
            else hold_seconds
        self.active_path = self.directory / ACTIVE_NAME
        self.held_path = self.directory / HELD_NAME
        self.last_rotation: Path | None = None
        #: Pieces written to the active file although they belong to another period.
        self.late_records = 0
        self._writer: RecordWriter | None = None
        self._period_start: float | None = None
        self._held: RecordWriter | None = None
        self._held_period: float | None = None
        #: Start of the latest period that got an active file.
        self._last_opened: float | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover(self.held_path, HELD_NAME)
        self._recover(self.active_path, ACTIVE_NAME)

    def _period_of(self, now: float) -> float:
        return float(int(now // self.rotate_seconds) * self.rotate_seconds)

    @property
    def _hold(self) -> float:
        return max(0.0, min(self.hold_seconds, float(self.rotate_seconds)))

    def _recover(self, path: Path, name: str) -> None:
        """Move a file left open by an earlier run (a crash, a kill) into the archive."""
        if not path.exists():
            return
        problems: list[str] = []
        try:
            table = _read_stream_file(path, problems)
        except RecordFileError as error:
            aside = path.with_name(f"{name}.damaged-{int(time.time())}")
            os.replace(path, aside)
            log.error("%s left by an earlier run is unreadable (%s); kept as %s", path,
                      error.reason, aside)
            return
        if table.num_rows == 0:
            log.warning("removing empty file %s left by an earlier run", path)
            path.unlink()
            return
        start = _recorded_period(path)
        if start is None:
            start = self._period_of(table.column("stime").to_pylist()[0].timestamp())
        target = _free_name(archive_path(self.directory, start))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        log.warning("moved %s left by an earlier run to %s (%d records)", path, target,
                    table.num_rows)

    def write(self, batch: pa.RecordBatch | pa.Table, now: float | None = None) -> None:
        """Append records, split at period boundaries, then rotate what ``now`` has ended.

        The records go to the open files first: a batch of records produced while packet
        time moved past a hold time still reaches the file of its period.
        """
        # Imported here: splitting needs pyarrow.compute (about 50 ms to import), which
        # 'wirewatch capture -r PCAP -w FILE' does not.
        from appliance.split import bucket_starts, split_records

        now = time.time() if now is None else now
        pieces = split_records(batch, self.rotate_seconds)
        if pieces.num_rows == 0:
            self.maybe_rotate(now)
            return
        starts = bucket_starts(pieces, self.rotate_seconds)
        periods = [float(start // 1_000_000) if start >= 0 else None
                   for start in np.unique(starts)]
        fresh = [period for period in periods if self._is_fresh(period, now)]
        if self._writer is None and fresh:
            # Before late pieces could open it for the period of ``now``.
            self._open_active(fresh[0])
        # One pass per period in the batch (a handful), not per record.
        for start, period in zip(np.unique(starts), periods, strict=True):
            self._write_period(pieces.filter(pa.array(starts == start)), period, now)
        if self.rotate_bytes and self._writer is not None \
                and self._writer.size >= self.rotate_bytes:
            self._close_active()
        self.maybe_rotate(now)

    def _write_period(self, pieces: pa.Table, period: float | None, now: float) -> None:
        """Write the pieces of one period (None: no stime) to the file that covers it.

        A period newer than the active file's opens a new active file and keeps the old
        one open as the held file. A period whose file is closed, or that is older than
        every open file, is late, and its pieces go to the active file.
        """
        if period is not None and period == self._held_period and self._held is not None:
            self._held.write(pieces)
            return
        if period is not None and self._period_start is not None \
                and period > self._period_start:
            if self._held is not None:
                self._close_held()
            self._hold_active()
        if self._writer is None:
            self._open_active(period if self._is_fresh(period, now) else self._period_of(now))
        if period is None or period != self._period_start:
            self.late_records += pieces.num_rows
        self._writer.write(pieces)

    def _is_fresh(self, period: float | None, now: float) -> bool:
        """Tell whether ``period`` never had a file and may still get one.

        That is a period after the latest one opened, or, for a writer that has not opened
        a file yet, one that ends less than the hold time before ``now``. An earlier
        period's pieces are late.
        """
        if period is None or period > self._period_of(now):
            return False
        if self._last_opened is not None:
            return period > self._last_opened
        return now < period + self.rotate_seconds + self._hold

    def _open_active(self, period: float) -> None:
        self._period_start = self._last_opened = period
        metadata = {PERIOD_KEY: repr(period).encode()}
        self._writer = RecordWriter(self.active_path, compression="zstd", metadata=metadata)
        log.info("opened active file %s", self.active_path)

    def flush(self) -> None:
        """Make the records written so far readable by other processes."""
        if self._writer is not None:
            self._writer.flush()
        if self._held is not None:
            self._held.flush()

    def maybe_rotate(self, now: float) -> Path | None:
        """Rotate whatever ``now`` has ended; return the last archive path written, if any.

        The held file closes once its hold time is over. The active file closes when
        ``now`` lies past its period: it is held first when the hold time has not passed.
        """
        rotated = None
        if self._held is not None and self._held_period is not None \
                and now >= self._held_period + self.rotate_seconds + self._hold:
            rotated = self._close_held()
        if self._period_start is None or now < self._period_start + self.rotate_seconds:
            return rotated
        if now < self._period_start + self.rotate_seconds + self._hold:
            if self._held is not None:
                rotated = self._close_held()
            self._hold_active()
            return rotated
        return self._close_active()

    def _hold_active(self) -> None:
        """Rename the active file to the held name and keep writing to it for late records."""
        if self._writer is None or self._period_start is None:
            return
        os.replace(self.active_path, self.held_path)
        self._held, self._held_period = self._writer, self._period_start
        self._writer, self._period_start = None, None
        log.info("holding %s open as %s for late records, for %.0f s", self.active_path,
                 self.held_path, self._hold)

    def rotate(self) -> Path | None:
        """Close the held and the active file into the archive; return the last new path."""
        held = self._close_held()
        active = self._close_active()
        return active if active is not None else held

    def _close_held(self) -> Path | None:
        if self._held is None or self._held_period is None:
            return None
        target = self._archive(self._held, self.held_path, self._held_period)
        self._held, self._held_period = None, None
        return target

    def _close_active(self) -> Path | None:
        if self._writer is None or self._period_start is None:
            return None
        target = self._archive(self._writer, self.active_path, self._period_start)
        self._writer, self._period_start = None, None
        return target

    def _archive(self, writer: RecordWriter, path: Path, period_start: float) -> Path | None:
        """Close ``writer`` and rename its file into the archive as ``period_start``'s file.

        A file without records is removed instead, and None returned.
        """
        writer.close()
        if writer.records == 0:
            path.unlink()
            log.info("removed %s: no records were written to it", path)
            return None
        target = _free_name(archive_path(self.directory, period_start))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        self.last_rotation = target
        log.info("rotated %s to %s (%d records)", path, target, writer.records)
        if self.late_records:
            log.warning("%d record pieces arrived after their period's file was closed; "
                        "they are in the active file (a longer hold time keeps them in "
                        "their own period's file)", self.late_records)
            self.late_records = 0
        return target

    def close(self) -> Path | None:
        """Rotate the held and the active file, so that everything written is in the archive."""
        return self.rotate()


def _recorded_period(path: Path) -> float | None:
    """Return the period start stored in a record file's schema, if it has one."""
    try:
        with open(path, "rb") as source:
            metadata = pa.ipc.open_stream(source).schema.metadata or {}
    except (pa.ArrowInvalid, OSError):
        return None
    value = metadata.get(PERIOD_KEY)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def iter_record_files(directory: str | Path) -> Iterator[Path]:
    """Yield the record files below ``directory``: archived ones in time order, then open ones.

    The open files are the held file (the previous period, while it takes late records)
    and then the active file.
    """
    root = Path(directory)
    open_names = (HELD_NAME, ACTIVE_NAME)
    archived = sorted(
        path for path in root.rglob(f"*{RECORD_SUFFIX}") if path.name not in open_names
    )
    yield from archived
    for name in open_names:
        path = root / name
        if path.exists():
            yield path


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


#: First bytes of a Parquet file, which ``-w FILE.parquet`` writes.
PARQUET_MAGIC = b"PAR1"

#: First bytes of capture files, which users sometimes give where flow records belong.
CAPTURE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                  b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")


def _read_stream_file(path: Path, problems: list[str]) -> pa.Table:
    if path.stat().st_size == 0:
        # A file that was just created and has no schema message yet contains no records.
        return FLOW_SCHEMA.empty_table()
    with open(path, "rb") as source:
        magic = source.read(4)
        if magic in CAPTURE_MAGICS:
            raise RecordFileError(path, "is a packet capture, not flow records; make records "
                                  f"first with 'wirewatch capture -r {path} -w FLOWS.arrows'")
        if magic == PARQUET_MAGIC:
            raise RecordFileError(path, "is a Parquet export, which the ra tools do not read "
                                  "back; write records to chain with '-w FILE.arrows' or "
                                  "'-w -' instead")
    # Mapped, not read: the records refer to the file's pages, and an analysis pages in
    # only the columns it touches.
    with pa.memory_map(str(path)) as source:
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
