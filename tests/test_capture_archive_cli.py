"""``wirewatch capture --archive``: a capture file metered into a rotating archive."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from appliance.archive import ACTIVE_NAME, read_records
from appliance.cli.main import main
from tests.netns import VethPair, veth_pair  # noqa: F401 - pytest fixture
from tests.services import REPO, stop_process, wait_for
from tests.test_live_capture import flow_totals, offline_records

ARCHIVE_NAME = re.compile(r"flows\.(\d{4})\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)(\.\d+)?\.arrows")


def totals(path: Path) -> tuple[int, int, int]:
    table = read_records(path)
    return (table.num_rows, pc.sum(table.column("pkts")).as_py(),
            pc.sum(table.column("bytes")).as_py())


@pytest.mark.parametrize(("name", "rotate", "status", "files"), [
    ("http-wikipedia.pcap", 3600, 60, 1),
    # Packet times run from 00:00:xx to 00:03:0x, and records are split at each minute.
    ("big-synthetic-mix.pcap", 60, 60, 4),
    # A read batch spans about 30 s of this capture, close to the 45 s hold of -S 20:
    # its records must still reach the file of their period.
    ("big-synthetic-mix.pcap", 60, 20, 4),
])
def test_archive_holds_the_records_of_w(corpus_dir: Path, tmp_path: Path, name: str,
                                        rotate: int, status: int, files: int) -> None:
    capture = corpus_dir / name
    single = tmp_path / "single.arrows"
    archive = tmp_path / "archive"
    switches = ["-A", "-U", "64", "-S", str(status)]
    assert main(["capture", "-r", str(capture), "-w", str(single), *switches]) == 0
    assert main(["capture", "-r", str(capture), "--archive", str(archive), *switches,
                 "--rotate", str(rotate)]) == 0

    expected = totals(single)
    assert expected[0] > 0
    # Records that cross a period boundary are split, so only packets and bytes add up.
    assert totals(archive)[1:] == expected[1:]
    assert not (archive / ACTIVE_NAME).exists(), "exit must rotate the active file"

    paths = sorted(archive.rglob("*.arrows"))
    assert len(paths) == files
    starts = set()
    for path in paths:
        match = ARCHIVE_NAME.fullmatch(path.name)
        assert match, path.name
        start = datetime(*map(int, match.groups()[:6]), tzinfo=UTC).timestamp()
        assert start % rotate == 0, f"{path.name} does not start a {rotate} s period"
        assert path.parent == archive / match[1] / match[2] / match[3]
        # Rotation follows packet time and records are split at period boundaries, so
        # no record of a file ends after the period.
        records = read_records(path)
        assert max(t.timestamp() for t in records.column("ltime").to_pylist()) <= start + rotate
        assert min(t.timestamp() for t in records.column("stime").to_pylist()) >= start
        starts.add(start)
    assert len(starts) == files


def test_w_and_archive_exclude_each_other(corpus_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    status = main(["capture", "-r", str(capture), "-w", str(tmp_path / "out.arrows"),
                   "--archive", str(tmp_path / "archive")])
    assert status == 2
    error = capsys.readouterr().err
    assert "-w" in error
    assert "--archive" in error
    assert not (tmp_path / "archive").exists()
    assert not (tmp_path / "out.arrows").exists()


def test_archive_needs_an_output_and_a_valid_period(corpus_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    assert main(["capture", "-r", str(capture)]) == 2
    assert "-w FILE or --archive DIR" in capsys.readouterr().err
    assert main(["capture", "-r", str(capture), "--archive", str(tmp_path / "a"),
                 "--rotate", "0"]) == 2
    assert "--rotate 0" in capsys.readouterr().err
    missing = tmp_path / "missing.pcap"
    assert main(["capture", "-r", str(missing), "--archive", str(tmp_path / "a")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_archive_from_the_console_script(corpus_dir: Path, tmp_path: Path) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    archive = tmp_path / "archive"
    done = subprocess.run([sys.executable, "-m", "appliance.cli.main", "capture", "-r",
                           str(capture), "--archive", str(archive)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_records(archive).num_rows > 0
    assert not (archive / ACTIVE_NAME).exists()


def test_live_archive_flushes_and_rotates_by_wall_time(veth_pair: VethPair,  # noqa: F811
                                                       corpus_dir: Path,
                                                       tmp_path: Path) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    archive = tmp_path / "archive"
    log_path = tmp_path / "cli.log"
    started = time.time()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            veth_pair.in_receiver([sys.executable, "-m", "appliance.cli.main", "capture",
                                   "-i", veth_pair.receiver, "--archive", str(archive),
                                   "--rotate", "2", "-S", "1", "-A"]),
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=log,
            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: process.poll() is None and "listening on" in log_path.read_text(),
                 60, "the capture to start")
        veth_pair.replay(capture)
        # Status records every second reach the archive while the capture runs. The
        # deadline allows for numba compiling the packet path on its first use, when
        # its on-disk cache is empty (a fresh checkout).
        wait_for(lambda: any(archive.rglob("*.arrows")) and read_records(archive).num_rows,
                 90, "records in the archive during the capture")
    finally:
        exit_status = stop_process(process)
    stopped = time.time()
    assert exit_status == 0, log_path.read_text()
    assert not (archive / ACTIVE_NAME).exists(), "SIGTERM must rotate the active file"

    expected = offline_records([capture], user_data_len=0)
    assert flow_totals(read_records(archive)) == flow_totals(expected)
    for path in archive.rglob("*.arrows"):
        match = ARCHIVE_NAME.fullmatch(path.name)
        assert match, path.name
        start = datetime(*map(int, match.groups()[:6]), tzinfo=UTC).timestamp()
        assert start % 2 == 0
        assert started - 2 <= start <= stopped, f"{path.name} is not named by wall time"
