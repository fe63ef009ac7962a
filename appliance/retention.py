"""Archive retention: delete the oldest closed archive files by age, total size and free disk.

One policy joins three limits (0 turns a limit off): files whose newest record is older
than ``max_age_days``; the oldest files while the archive is larger than ``max_bytes``;
the oldest files while the file system has less than ``min_free_percent`` free. The
active file is never deleted. A plan lists what would go (a dry run stops there) and
estimates how many days of history the archive holds at the rate it has grown so far.

``python -m appliance.retention --config PATH [--dry-run]`` applies the configured policy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DAY = 86400.0
#: Archive file names: flows.%Y.%m.%d.%H.%M.%S.arrows, with .N before the suffix on a clash.
ARCHIVE_FILE = re.compile(
    r"flows\.(\d{4})\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)(?:\.(\d+))?\.arrows$")
#: Shortest growth period the days-of-history estimate trusts.
MIN_RATE_SPAN = 3600.0

DiskUsage = Callable[[Path], Any]


@dataclass(frozen=True)
class RetentionPolicy:
    """Limits on the archive; 0 turns a limit off."""

    max_age_days: float = 0.0
    max_bytes: int = 0
    min_free_percent: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.max_age_days or self.max_bytes or self.min_free_percent)


@dataclass(frozen=True)
class ArchiveFile:
    """A closed archive file: its period start (epoch seconds), last write and sizes."""

    path: Path
    start: float
    mtime: float
    #: Length in bytes.
    size: int
    #: Bytes the file occupies on disk (whole blocks), which deleting it frees.
    disk: int


@dataclass
class RetentionPlan:
    """The files a policy deletes from one archive, oldest first, and the figures behind it."""

    directory: Path
    files: list[ArchiveFile]
    delete: list[tuple[ArchiveFile, str]] = field(default_factory=list)
    archive_bytes: int = 0
    disk_total: int = 0
    disk_free: int = 0
    days_of_history: float | None = None

    @property
    def freed_bytes(self) -> int:
        return sum(item.size for item, _reason in self.delete)

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-ready values."""
        return {
            "directory": str(self.directory),
            "files": len(self.files),
            "archive_bytes": self.archive_bytes,
            "delete": [{"file": str(item.path), "bytes": item.size, "reason": reason}
                       for item, reason in self.delete],
            "freed_bytes": self.freed_bytes,
            "disk_total": self.disk_total,
            "disk_free": self.disk_free,
            "days_of_history": self.days_of_history,
        }


def archive_files(directory: str | Path) -> list[ArchiveFile]:
    """Return the closed archive files below ``directory``, oldest period first."""
    found = []
    for path in Path(directory).rglob("flows.*.arrows"):
        match = ARCHIVE_FILE.match(path.name)
        if match is None:
            continue
        parts = [int(part) for part in match.groups()[:6]]
        start = datetime(*parts, tzinfo=UTC).timestamp()
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        item = ArchiveFile(path, start, stat.st_mtime, stat.st_size, stat.st_blocks * 512)
        found.append((start, int(match.group(7) or 0), item))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return [entry[2] for entry in found]


def _active_bytes(directory: Path) -> int:
    """Bytes in the files still being written: the active file and the held one."""
    from appliance.archive import ACTIVE_NAME, HELD_NAME

    total = 0
    for name in (ACTIVE_NAME, HELD_NAME):
        try:
            total += (directory / name).stat().st_size
        except FileNotFoundError:
            pass
    return total


def plan_retention(directory: str | Path, policy: RetentionPolicy, now: float | None = None,
                   disk_usage: DiskUsage = shutil.disk_usage) -> RetentionPlan:
    """Decide which files ``policy`` deletes from the archive at ``directory`` (nothing yet)."""
    root = Path(directory)
    now = time.time() if now is None else now
    files = archive_files(root)
    usage = disk_usage(root)
    plan = RetentionPlan(root, files, disk_total=usage.total, disk_free=usage.free)
    plan.archive_bytes = sum(item.size for item in files) + _active_bytes(root)

    remaining = plan.archive_bytes
    free = usage.free
    low_water = usage.total * policy.min_free_percent / 100.0
    for item in files:
        reason = None
        if policy.max_age_days and item.mtime < now - policy.max_age_days * DAY:
            reason = f"older than {policy.max_age_days:g} days"
        elif policy.max_bytes and remaining > policy.max_bytes:
            reason = f"archive above {policy.max_bytes} bytes"
        elif policy.min_free_percent and free < low_water:
            reason = f"free disk below {policy.min_free_percent:g}%"
        if reason is None:
            continue
        plan.delete.append((item, reason))
        remaining -= item.size
        free += item.disk
    plan.days_of_history = _days_of_history(files, plan.archive_bytes, usage, policy, now)
    return plan


def _days_of_history(files: list[ArchiveFile], archive_bytes: int, usage: Any,
                     policy: RetentionPolicy, now: float) -> float | None:
    """Estimate how many days of records the archive can hold at its growth rate so far."""
    if not files or archive_bytes <= 0:
        return None
    span = max(now - files[0].start, MIN_RATE_SPAN)
    rate = archive_bytes / (span / DAY)  # bytes a day
    capacity = archive_bytes + usage.free - usage.total * policy.min_free_percent / 100.0
    if policy.max_bytes:
        capacity = min(capacity, policy.max_bytes)
    days = max(capacity, 0.0) / rate
    if policy.max_age_days:
        days = min(days, policy.max_age_days)
    return round(days, 2)


def apply_retention(plan: RetentionPlan) -> list[Path]:
    """Delete the files ``plan`` lists and the day directories left empty; return the paths."""
    deleted = []
    for item, reason in plan.delete:
        try:
            item.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            log.error("retention: cannot delete %s: %s", item.path, error.strerror)
            continue
        deleted.append(item.path)
        log.info("retention: deleted %s (%d bytes, %s)", item.path, item.size, reason)
        _remove_empty_parents(item.path.parent, plan.directory)
    return deleted


def _remove_empty_parents(directory: Path, root: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def enforce_retention(directory: str | Path, policy: RetentionPolicy, dry_run: bool = False,
                      now: float | None = None) -> RetentionPlan:
    """Plan retention for the archive and, unless ``dry_run``, delete what the plan lists."""
    plan = plan_retention(directory, policy, now)
    if dry_run:
        for item, reason in plan.delete:
            log.info("retention dry run: would delete %s (%d bytes, %s)", item.path, item.size,
                     reason)
    else:
        apply_retention(plan)
    return plan


def main(argv: list[str] | None = None) -> int:
    """Apply (or with --dry-run, list) the configured retention policy; print the plan."""
    from appliance.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m appliance.retention",
                                     description="Delete the oldest archive files that the "
                                     "[archive] retention limits exclude.")
    parser.add_argument("--config", help="configuration file (default: $WIREWATCH_CONFIG)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be deleted and delete nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"retention: invalid configuration: {error}", file=sys.stderr)
        return 2
    if not config.archive_dir.is_dir():
        print(f"retention: archive directory {config.archive_dir} does not exist",
              file=sys.stderr)
        return 2
    plan = enforce_retention(config.archive_dir, config.retention, dry_run=args.dry_run)
    document = plan.to_dict() | {"dry_run": args.dry_run}
    sys.stdout.write(json.dumps(document, indent=2) + os.linesep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
