"""Archive retention: age, total size and free-disk limits, dry runs, the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.archive import ACTIVE_NAME, ArchiveWriter
from appliance.capture import CaptureSettings, flows_from_file
from appliance.config import ConfigError, load_config, parse_config
from appliance.retention import (
    DAY,
    RetentionPolicy,
    apply_retention,
    archive_files,
    enforce_retention,
    plan_retention,
)
from tests.services import REPO

#: 2026-01-01 00:00:00 UTC: the first hourly period of the test archives.
FIRST = 1767225600.0
HOUR = 3600.0


def make_archive(directory: Path, capture: Path, periods: int, active: bool = False) -> None:
    """Write the capture's records into ``periods`` consecutive hourly archive files."""
    settings = CaptureSettings(status_interval=60.0, user_data_len=128, appbytes=True,
                               srcid="test-sensor")
    records = list(flows_from_file(capture, settings))
    writer = ArchiveWriter(directory, rotate_seconds=3600)
    for index in range(periods):
        for batch in records:
            writer.write(batch, now=FIRST + index * HOUR + 1)
        writer.rotate()
    if active:
        for batch in records:
            writer.write(batch, now=FIRST + periods * HOUR + 1)
        writer.flush()


@pytest.fixture
def archive(tmp_path: Path, corpus_dir: Path) -> Path:
    directory = tmp_path / "archive"
    make_archive(directory, corpus_dir / "http-wikipedia.pcap", periods=5, active=True)
    return directory


def test_archive_files_oldest_first(archive: Path) -> None:
    files = archive_files(archive)
    assert [item.start for item in files] == [FIRST + index * HOUR for index in range(5)]
    assert all(item.path.name != ACTIVE_NAME for item in files)


def test_size_limit_dry_run_then_real(archive: Path) -> None:
    files = archive_files(archive)
    active = (archive / ACTIVE_NAME).stat().st_size
    keep_two = active + files[-1].size + files[-2].size
    policy = RetentionPolicy(max_bytes=keep_two)

    dry = enforce_retention(archive, policy, dry_run=True)
    assert [item.path for item, _ in dry.delete] == [item.path for item in files[:3]]
    assert all(item.path.exists() for item in files), "a dry run deletes nothing"
    assert all("archive above" in reason for _, reason in dry.delete)

    real = enforce_retention(archive, policy)
    assert [item.path for item, _ in real.delete] == [item.path for item in files[:3]]
    assert [item.path for item in archive_files(archive)] == [item.path for item in files[3:]]
    assert (archive / ACTIVE_NAME).exists(), "the active file is never deleted"
    assert sum(f.stat().st_size for f in archive.rglob("*.arrows")) <= keep_two


def test_age_limit_uses_last_write(archive: Path) -> None:
    files = archive_files(archive)
    now = 1_800_000_000.0
    for age_days, item in zip([10, 8, 3, 1, 0.5], files, strict=True):
        os.utime(item.path, (now - age_days * DAY, now - age_days * DAY))
    plan = plan_retention(archive, RetentionPolicy(max_age_days=5), now=now)
    assert [item.path for item, _ in plan.delete] == [item.path for item in files[:2]]
    assert plan.days_of_history is not None and plan.days_of_history <= 5
    deleted = apply_retention(plan)
    assert deleted == [item.path for item in files[:2]]
    assert not any(path.exists() for path in deleted)


def test_empty_day_directories_are_removed(tmp_path: Path, corpus_dir: Path) -> None:
    directory = tmp_path / "archive"
    make_archive(directory, corpus_dir / "icmp-ping.pcap", periods=30)  # 2026-01-01 and -02
    first_day = directory / "2026" / "01" / "01"
    count = len(list(first_day.iterdir()))
    assert count == 24
    plan = plan_retention(directory, RetentionPolicy(max_bytes=1))
    apply_retention(plan)
    assert not first_day.exists()
    assert directory.is_dir()


def test_days_of_history_estimate(archive: Path) -> None:
    files = archive_files(archive)
    total = sum(item.size for item in files) + (archive / ACTIVE_NAME).stat().st_size
    now = FIRST + 2 * DAY  # the archive grew by ``total`` bytes in two days
    plan = plan_retention(archive, RetentionPolicy(max_bytes=total * 10), now=now)
    assert plan.delete == []
    assert plan.days_of_history == pytest.approx(20.0, abs=0.01)
    capped = plan_retention(archive, RetentionPolicy(max_bytes=total * 10, max_age_days=7),
                            now=now)
    assert capped.days_of_history == 7


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test, so the free-disk limit meets a real file system."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "wirewatch-test",
                             str(mount_point)], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30)


def test_free_disk_low_water_mark(small_disk: Path, corpus_dir: Path) -> None:
    archive = small_disk / "archive"
    make_archive(archive, corpus_dir / "http-wikipedia.pcap", periods=6)
    files = archive_files(archive)
    usage = shutil.disk_usage(archive)
    # Ask for the free space that deleting exactly the three oldest files gives.
    wanted = usage.free + sum(item.disk for item in files[:3])
    percent = wanted * 100 / usage.total

    plan = plan_retention(archive, RetentionPolicy(min_free_percent=percent))
    assert [item.path for item, _ in plan.delete] == [item.path for item in files[:3]]
    assert all("free disk below" in reason for _, reason in plan.delete)
    apply_retention(plan)
    assert shutil.disk_usage(archive).free >= usage.total * percent / 100
    assert [item.path for item in archive_files(archive)] == [item.path for item in files[3:]]


def test_command_line_dry_run_and_apply(archive: Path, tmp_path: Path,
                                       write_sensor_config: Callable[..., Path]) -> None:
    files = archive_files(archive)
    config_path = write_sensor_config(archive={"dir": str(archive), "max_bytes": 1})
    command = [sys.executable, "-m", "appliance.retention", "--config", str(config_path)]
    dry = subprocess.run([*command, "--dry-run"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    document = json.loads(dry.stdout)
    assert document["dry_run"] is True
    assert [entry["file"] for entry in document["delete"]] == [str(f.path) for f in files]
    assert all(item.path.exists() for item in files)
    assert "would delete" in dry.stderr

    real = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    assert archive_files(archive) == []
    assert "retention: deleted" in real.stderr


def test_invalid_retention_settings_name_the_key(tmp_path: Path) -> None:
    for key, value in (("max_bytes", -1), ("max_age_days", "a week"),
                       ("min_free_percent", 100)):
        with pytest.raises(ConfigError) as caught:
            parse_config({"archive": {key: value}}, None)
        assert caught.value.key == f"archive.{key}"
    config = parse_config({"archive": {"max_age_days": 30, "max_bytes": 10**9,
                                       "min_free_percent": 10}}, None)
    assert config.retention == RetentionPolicy(30.0, 10**9, 10.0)
    assert load_config().retention.enabled is False
