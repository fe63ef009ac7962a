"""The rotating archive splits records at period boundaries, keeping the last file open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from appliance.archive import ACTIVE_NAME, HELD_NAME, ArchiveWriter, read_records
from appliance.records import FLOW_SCHEMA
from appliance.retention import ARCHIVE_FILE

HOUR = 3600
TEN = datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC).timestamp()
COUNTERS = ["pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes"]


def flows(*spans: tuple[float, float, int]) -> pa.Table:
    """Build one record per (stime, ltime, packets each way) span, in epoch seconds."""
    def at(seconds: float) -> datetime:
        return datetime.fromtimestamp(0, tz=UTC) + timedelta(seconds=seconds)

    rows = [{"stime": at(start), "ltime": at(end), "pkts": 2 * count, "spkts": count,
             "dpkts": count, "bytes": 200 * count, "sbytes": 80 * count,
             "dbytes": 120 * count, "seq": index, "suser": b"hello"}
            for index, (start, end, count) in enumerate(spans)]
    fields = [FLOW_SCHEMA.field(name) for name in rows[0]]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def closed_files(directory: Path) -> dict[float, Path]:
    """Map each archive file's period start to its path."""
    found = {}
    for path in directory.rglob("flows.*.arrows"):
        match = ARCHIVE_FILE.match(path.name)
        if match:
            start = datetime(*map(int, match.groups()[:6]), tzinfo=UTC).timestamp()
            found[start] = path
    return found


def assert_inside_period(path: Path, start: float) -> None:
    table = read_records(path)
    assert table.num_rows > 0, path
    stimes = [value.timestamp() for value in table.column("stime").to_pylist()]
    ltimes = [value.timestamp() for value in table.column("ltime").to_pylist()]
    assert min(stimes) >= start, path
    assert max(ltimes) <= start + HOUR, path


def test_record_across_hour_is_split(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, rotate_seconds=HOUR, hold_seconds=125)
    writer.write(flows((TEN + 3000, TEN + 3500, 5)), now=TEN + 3500)
    # Written 60 s after the boundary, as a status record would be.
    crossing = flows((TEN + 3540, TEN + 3660, 40))
    writer.write(crossing, now=TEN + HOUR + 60)
    writer.write(flows((TEN + HOUR + 100, TEN + HOUR + 200, 3)), now=TEN + HOUR + 200)
    writer.close()

    files = closed_files(tmp_path)
    assert sorted(files) == [TEN, TEN + HOUR]
    for start, path in files.items():
        assert_inside_period(path, start)
    first = read_records(files[TEN])
    second = read_records(files[TEN + HOUR])
    assert first.num_rows == 2
    assert second.num_rows == 2
    # 40 packets each way: 60 of the 120 seconds fall before the boundary.
    assert first.column("spkts").to_pylist() == [5, 20]
    assert second.column("spkts").to_pylist() == [20, 3]
    assert second.column("suser").to_pylist() == [None, b"hello"]


def test_totals_are_preserved_across_files(tmp_path: Path) -> None:
    # Records of 30 s, two per batch, each batch written 20 s after its last record ends:
    # at most 30 + 7 + 20 s after a boundary, which the hold time of 60 s covers.
    writer = ArchiveWriter(tmp_path, rotate_seconds=60, hold_seconds=60)
    spans = [(TEN + second, TEN + second + 30, 7 + second % 13) for second in range(0, 600, 7)]
    written = flows(*spans)
    for offset in range(0, written.num_rows, 2):
        batch = written.slice(offset, 2)
        latest = max(value.timestamp() for value in batch.column("ltime").to_pylist())
        writer.write(batch, now=latest + 20)
    writer.close()

    archived = read_records(tmp_path)
    for name in COUNTERS:
        assert pc.sum(archived.column(name)).as_py() == pc.sum(written.column(name)).as_py()
    files = closed_files(tmp_path)
    assert len(files) >= 10
    for start, path in files.items():
        assert_inside_period(path, start)
    assert not (tmp_path / ACTIVE_NAME).exists()
    assert not (tmp_path / HELD_NAME).exists()


def test_held_file_closes_after_hold(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, rotate_seconds=HOUR, hold_seconds=120)
    writer.write(flows((TEN + 10, TEN + 20, 1)), now=TEN + 20)

    assert writer.maybe_rotate(TEN + HOUR + 5) is None
    assert (tmp_path / HELD_NAME).exists()
    writer.write(flows((TEN + 3590, TEN + 3595, 1)), now=TEN + HOUR + 90)
    writer.flush()
    assert read_records(tmp_path / HELD_NAME).num_rows == 2

    rotated = writer.maybe_rotate(TEN + HOUR + 120)

    assert rotated == tmp_path / "2024/01/01/flows.2024.01.01.10.00.00.arrows"
    assert not (tmp_path / HELD_NAME).exists()
    writer.close()


def test_late_record_goes_to_active_file(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, rotate_seconds=HOUR, hold_seconds=60)
    writer.write(flows((TEN + 10, TEN + 20, 1)), now=TEN + 20)
    writer.write(flows((TEN + HOUR + 10, TEN + HOUR + 20, 1)), now=TEN + HOUR + 70)
    # The ten o'clock file closed at 11:01:00; this piece of it arrives at 11:05.
    writer.write(flows((TEN + 3000, TEN + 3100, 1)), now=TEN + HOUR + 300)

    assert writer.late_records == 1
    writer.close()
    eleven = read_records(closed_files(tmp_path)[TEN + HOUR])
    assert eleven.num_rows == 2
    assert sum(read_records(tmp_path).column("pkts").to_pylist()) == 6


def test_open_files_recover_into_their_periods(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, rotate_seconds=HOUR, hold_seconds=125)
    writer.write(flows((TEN + 3500, TEN + 3700, 10)), now=TEN + HOUR + 30)
    writer.flush()
    assert (tmp_path / HELD_NAME).exists()
    assert (tmp_path / ACTIVE_NAME).exists()
    # The process dies here (kill -9): nothing closes the two open files.

    ArchiveWriter(tmp_path, rotate_seconds=HOUR)

    files = closed_files(tmp_path)
    assert sorted(files) == [TEN, TEN + HOUR]
    for start, path in files.items():
        assert_inside_period(path, start)
    assert sum(read_records(tmp_path).column("pkts").to_pylist()) == 20
