"""Helpers for tests that run real services: ports, polling, subprocesses, archives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / ".." / "shared" / "corpus"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns a true value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    """Send SIGTERM to a process started by a test, then SIGKILL if it does not exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


def build_archive(capture: Path, archive_dir: Path, srcid: str = "test-sensor") -> int:
    """Meter a capture file into an archive directory; return the number of records."""
    from appliance.archive import ArchiveWriter
    from appliance.capture import CaptureSettings, flows_from_file

    settings = CaptureSettings(status_interval=86400.0, user_data_len=128, appbytes=True,
                               srcid=srcid)
    writer = ArchiveWriter(archive_dir, rotate_seconds=3600)
    records = 0
    for batch in flows_from_file(capture, settings):
        stime = batch.column("stime")[0].as_py().timestamp() if batch.num_rows else 0.0
        writer.write(batch, now=stime)
        records += batch.num_rows
    writer.close()
    return records


def service_env(config_path: Path, broker_url: str | None = None) -> dict[str, str]:
    """Return the environment for a worker, daemon or API subprocess of one sensor."""
    env = dict(os.environ)
    env["WIREWATCH_CONFIG"] = str(config_path)
    env.pop("WIREWATCH_BROKER_URL", None)
    if broker_url:
        env["WIREWATCH_BROKER_URL"] = broker_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_worker(config_path: Path, queue: str, log_path: Path,
                 broker_url: str | None = None) -> subprocess.Popen[bytes]:
    """Start a real Celery worker for one sensor queue (prefork, one process)."""
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps the descriptor
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queue,
             "--concurrency", "1", "--pool", "prefork", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO, env=service_env(config_path, broker_url), stdout=log,
            stderr=subprocess.STDOUT)
    finally:
        log.close()
