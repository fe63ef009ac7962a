"""Record files and the rotating archive: round trips, rotation, damage."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from appliance.archive import (
    ACTIVE_NAME,
    BATCH_ROWS,
    ArchiveWriter,
    RecordFileError,
    RecordWriter,
    iter_record_files,
    read_records,
)
from appliance.records import FLOW_SCHEMA, pack_address


def make_records(start: float, count: int, step: float = 1.0) -> pa.Table:
    """Build ``count`` UDP records one ``step`` apart, starting at epoch ``start``."""
    stimes = [datetime.fromtimestamp(start + i * step, tz=UTC) for i in range(count)]
    columns = {
        "srcid": ["sensor-1"] * count,
        "seq": list(range(count)),
        "stime": stimes,
        "ltime": stimes,
        "etype": [0x0800] * count,
        "proto": [17] * count,
        "saddr": [pack_address("10.0.0.1")] * count,
        "sport": [40000 + i for i in range(count)],
        "daddr": [pack_address("10.0.0.2")] * count,
        "dport": [53] * count,
        "pkts": [2] * count,
        "bytes": [200 + i for i in range(count)],
    }
    fields = [FLOW_SCHEMA.field(name) for name in columns]
    return pa.table(columns, schema=pa.schema(fields))


def test_record_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "flows.arrows"
    with RecordWriter(path) as writer:
        writer.write(make_records(1_700_000_000, 5))
        writer.write(make_records(1_700_000_100, 3))

    table = read_records(path)

    assert table.schema.names[: len(FLOW_SCHEMA)] == FLOW_SCHEMA.names
    assert table.num_rows == 8
    assert table.column("bytes").to_pylist()[:2] == [200, 201]
    assert table.column("sco").null_count == 8


def test_joined_writer_writes_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "flows.arrows"
    pieces = [pa.concat_tables([make_records(1_700_000_000 + index, 1_000)] * 50)
              for index in range(3)]
    with RecordWriter(path, joined=True) as writer:
        for piece in pieces:
            writer.write(piece)

    with pa.memory_map(str(path)) as source:
        batches = list(pa.ipc.open_stream(source))
    table = read_records(path)

    assert [batch.num_rows for batch in batches] == [BATCH_ROWS, BATCH_ROWS, 18_928]
    assert table.column("bytes").equals(pa.concat_tables(pieces).column("bytes"))
    assert writer.records == 150_000


def test_archive_rotates_on_aligned_periods(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, rotate_seconds=3600)
    base = datetime(2024, 1, 1, 10, 59, 0, tzinfo=UTC).timestamp()

    writer.write(make_records(base, 2), now=base)
    assert (tmp_path / ACTIVE_NAME).exists()
    writer.write(make_records(base + 120, 2), now=base + 120)
    writer.close()

    files = [path.relative_to(tmp_path).as_posix() for path in iter_record_files(tmp_path)]
    assert files == [
        "2024/01/01/flows.2024.01.01.10.00.00.arrows",
        "2024/01/01/flows.2024.01.01.11.00.00.arrows",
    ]
    assert not (tmp_path / ACTIVE_NAME).exists()
    assert read_records(tmp_path).num_rows == 4


def test_active_file_is_readable_while_growing(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, rotate_seconds=3600)
    writer.write(make_records(1_700_000_000, 3), now=1_700_000_000)
    writer.flush()

    assert read_records(tmp_path).num_rows == 3
    writer.close()


def test_torn_last_batch_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "torn.arrows"
    with RecordWriter(path) as writer:
        writer.write(make_records(1_700_000_000, 4))
        writer.write(make_records(1_700_000_100, 4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])

    problems: list[str] = []
    table = read_records(path, problems)

    assert table.num_rows == 4
    assert len(problems) == 1
    assert "damaged after 1 batches" in problems[0]


def test_broken_file_in_directory_is_reported(tmp_path: Path) -> None:
    day = tmp_path / "2024" / "01" / "01"
    day.mkdir(parents=True)
    with RecordWriter(day / "flows.2024.01.01.10.00.00.arrows") as writer:
        writer.write(make_records(1_704_103_200, 5))
    (day / "flows.2024.01.01.11.00.00.arrows").write_bytes(b"this is not arrow data" * 10)

    problems: list[str] = []
    table = read_records(tmp_path, problems)

    assert table.num_rows == 5
    assert len(problems) == 1
    assert "flows.2024.01.01.11.00.00.arrows" in problems[0]


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(RecordFileError) as raised:
        read_records(missing)
    assert str(missing) in str(raised.value)


def test_pcap_given_as_record_file_is_rejected(tmp_path: Path) -> None:
    pcap = tmp_path / "capture.pcap"
    pcap.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    with pytest.raises(RecordFileError) as raised:
        read_records(pcap)
    assert "is a packet capture" in str(raised.value)
    assert "wirewatch capture -r" in str(raised.value)


def test_parquet_export_given_as_record_file_is_rejected(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    export = tmp_path / "result.parquet"
    pq.write_table(FLOW_SCHEMA.empty_table(), export)
    with pytest.raises(RecordFileError) as raised:
        read_records(export)
    assert "is a Parquet export" in str(raised.value)
    assert "-w FILE.arrows" in str(raised.value)


def test_other_file_is_not_a_record_stream(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not flow records\n" * 20)
    with pytest.raises(RecordFileError) as raised:
        read_records(path)
    assert "not an Arrow record stream" in str(raised.value)


def test_left_over_active_file_moves_into_archive(tmp_path: Path) -> None:
    start = datetime(2024, 3, 5, 7, 30, 0, tzinfo=UTC).timestamp()
    with RecordWriter(tmp_path / ACTIVE_NAME) as writer:
        writer.write(make_records(start, 3))

    ArchiveWriter(tmp_path, rotate_seconds=3600)

    expected = tmp_path / "2024/03/05/flows.2024.03.05.07.00.00.arrows"
    assert expected.exists()
    assert not (tmp_path / ACTIVE_NAME).exists()
    assert read_records(tmp_path).num_rows == 3


def test_rotation_never_overwrites(tmp_path: Path) -> None:
    start = 1_704_103_200.0
    for _ in range(2):
        writer = ArchiveWriter(tmp_path, rotate_seconds=3600)
        writer.write(make_records(start, 1), now=start)
        writer.close()

    names = sorted(path.name for path in iter_record_files(tmp_path))
    assert names == ["flows.2024.01.01.10.00.00.1.arrows", "flows.2024.01.01.10.00.00.arrows"]


def test_stream_reads_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "flows.arrows"
    with RecordWriter(path) as writer:
        writer.write(make_records(1_700_000_000, 6))
    script = "from appliance.archive import read_records; print(read_records('-').num_rows)"

    result = subprocess.run(
        [sys.executable, "-c", script],
        stdin=path.open("rb"),
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == "6"


def test_empty_directory_is_reported(tmp_path: Path) -> None:
    problems: list[str] = []

    table = read_records(tmp_path, problems)

    assert table.num_rows == 0
    assert problems == [f"{tmp_path}: no record files (*.arrows) in this directory"]
