"""Capture daemon: replay into the archive, status file, signals, rotation, systemd notify."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from api import create_app
from appliance.archive import ACTIVE_NAME, read_records
from appliance.capture import CaptureSettings, flows_from_file
from appliance.config import load_config
from appliance.tokens import create_token
from tests.services import REPO, service_env, stop_process, wait_for
from worker.capture_daemon import CaptureDaemon

pytestmark = pytest.mark.slow


def read_status(config_path: Path) -> dict[str, Any] | None:
    # The status file sits in the data directory that write_sensor_config always sets.
    path = config_path.parent / "data" / "capture-status.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status_is(config_path: Path, state: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = read_status(config_path)
        return status if status and status["state"] == state else None

    return check


def start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "worker.capture_daemon", "--config",
                                 str(config_path)], cwd=REPO, env=service_env(config_path),
                                stdout=log, stderr=subprocess.STDOUT)


def expected_records(capture: Path) -> tuple[int, int, int]:
    """Return (records, pkts, bytes) that the flow meter makes of ``capture`` in-process."""
    settings = CaptureSettings(status_interval=60.0, user_data_len=128, appbytes=True,
                               srcid="test-sensor")
    records = pkts = total_bytes = 0
    for batch in flows_from_file(capture, settings):
        records += batch.num_rows
        pkts += pc.sum(batch.column("pkts")).as_py() or 0
        total_bytes += pc.sum(batch.column("bytes")).as_py() or 0
    return records, pkts, total_bytes


def test_replay_then_sigterm(corpus_dir: Path, write_sensor_config: Callable[..., Path],
                             tmp_path: Path) -> None:
    capture = corpus_dir / "http-wikipedia.pcap"
    config_path = write_sensor_config(capture={"source": str(capture)})
    config = load_config(config_path)
    daemon = start_daemon(config_path, tmp_path / "daemon.log")
    try:
        status = wait_for(status_is(config_path, "finished"), 120, "replay to finish")
        assert int(config.capture_pid_path.read_text()) == daemon.pid
        assert daemon.poll() is None, "the daemon must stay up after the replay"
    finally:
        exit_status = stop_process(daemon)

    log = (tmp_path / "daemon.log").read_text()
    assert exit_status == 0, log
    records, pkts, total_bytes = expected_records(capture)
    archived = read_records(config.archive_dir)
    assert archived.num_rows == records
    assert status["records"] == records
    assert pc.sum(archived.column("pkts")).as_py() == pkts
    assert pc.sum(archived.column("bytes")).as_py() == total_bytes
    assert set(archived.column("srcid").to_pylist()) == {"test-sensor"}

    final = read_status(config_path)
    assert final is not None
    assert final["state"] == "stopped"
    assert final["last_rotation"]["file"].endswith(".arrows")
    assert not (config.archive_dir / ACTIVE_NAME).exists()
    assert not config.capture_pid_path.exists()
    assert "capture daemon stopped" in log


def test_sighup_rejects_invalid_then_applies(corpus_dir: Path,
                                             write_sensor_config: Callable[..., Path],
                                             tmp_path: Path) -> None:
    first = corpus_dir / "dns-udp-basic.pcap"
    second = corpus_dir / "icmp-ping.pcap"
    config_path = write_sensor_config(capture={"source": str(first)})
    config = load_config(config_path)
    daemon = start_daemon(config_path, tmp_path / "daemon.log")
    try:
        wait_for(status_is(config_path, "finished"), 120, "first replay to finish")

        write_sensor_config(capture={"source": str(first), "user_data_len": 70000})
        daemon.send_signal(signal.SIGHUP)
        rejected = wait_for(lambda: (read_status(config_path) or {}).get("reload_error"), 30,
                            "the invalid reload to be reported")
        assert "capture.user_data_len" in rejected
        assert daemon.poll() is None

        write_sensor_config(capture={"source": str(second)})
        daemon.send_signal(signal.SIGHUP)
        status = wait_for(
            lambda: (s := status_is(config_path, "finished")()) and s["source"] == str(second)
            and s,
            120, "second replay to finish")
        assert status["reload_error"] is None
    finally:
        exit_status = stop_process(daemon)

    log = (tmp_path / "daemon.log").read_text()
    assert exit_status == 0, log
    assert "configuration reload rejected" in log
    archived = read_records(config.archive_dir)
    assert archived.num_rows == expected_records(first)[0] + expected_records(second)[0]


def test_stop_midway_keeps_records(corpus_dir: Path, write_sensor_config: Callable[..., Path]
                                   ) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    config = load_config(write_sensor_config(capture={"source": str(capture)}))
    stop = threading.Event()
    daemon = CaptureDaemon(config, stop)
    daemon.batch_size = 40
    process = daemon.meter.process

    def process_then_stop(batch: Any) -> Any:
        stop.set()  # as if SIGTERM arrived while the first batch was metered
        return process(batch)

    daemon.meter.process = process_then_stop
    assert daemon.run() == 0

    assert daemon.status["state"] == "stopped"
    assert daemon.status["packets"] == 40
    archived = read_records(config.archive_dir)
    assert archived.num_rows > 0
    assert archived.num_rows == daemon.status["records"]
    assert 0 < pc.sum(archived.column("pkts")).as_py() <= 40
    assert not (config.archive_dir / ACTIVE_NAME).exists()


def test_missing_source_reports_failure(write_sensor_config: Callable[..., Path]) -> None:
    config = load_config(write_sensor_config())
    stop = threading.Event()
    daemon = CaptureDaemon(config, stop)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        status = wait_for(lambda: daemon.status["state"] == "failed" and daemon.status, 10,
                          "the daemon to report a missing source")
        assert "capture.source is empty" in status["error"]
    finally:
        stop.set()
        thread.join(10)
    assert daemon.status["state"] == "stopped"


def test_invalid_config_exits_2(write_sensor_config: Callable[..., Path],
                                tmp_path: Path) -> None:
    config_path = write_sensor_config(capture={"user_data_len": -5})
    result = subprocess.run([sys.executable, "-m", "worker.capture_daemon", "--config",
                             str(config_path)], cwd=REPO, env=service_env(config_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "capture.user_data_len" in result.stderr


def test_api_put_signals_daemon(corpus_dir: Path, write_sensor_config: Callable[..., Path],
                                tmp_path: Path) -> None:
    first = corpus_dir / "dns-tcp-basic.pcap"
    second = corpus_dir / "icmp-ping.pcap"
    config_path = write_sensor_config(capture={"source": str(first)})
    client = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)}
                        ).test_client()
    _, token = create_token(config_path, ["admin"])
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    daemon = start_daemon(config_path, tmp_path / "daemon.log")
    try:
        wait_for(status_is(config_path, "finished"), 120, "first replay to finish")
        wait_for(lambda: load_config(config_path).capture_pid_path.exists(), 10, "pid file")

        response = client.put("/api/v1/capture", json={"source": str(second),
                                                       "user_data_len": 256})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["daemon_signalled"] is True

        status = wait_for(
            lambda: (s := status_is(config_path, "finished")()) and s["source"] == str(second)
            and s,
            120, "the daemon to replay the new source")
        assert status["reload_error"] is None
        view = client.get("/api/v1/capture").get_json()
        assert view["status"]["source"] == str(second)
        assert view["capture"]["user_data_len"] == 256
    finally:
        exit_status = stop_process(daemon)
    assert exit_status == 0, (tmp_path / "daemon.log").read_text()


def receive_notifications(sock: socket.socket, until: Callable[[list[str]], bool],
                          timeout: float) -> list[str]:
    """Collect datagrams from the notify socket until ``until(messages)`` holds."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(messages):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"notifications so far: {messages}")
        sock.settimeout(remaining)
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_systemd_notify_ready_status_watchdog(corpus_dir: Path,
                                              write_sensor_config: Callable[..., Path],
                                              tmp_path: Path) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    config_path = write_sensor_config(capture={"source": str(capture)})
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        env = service_env(config_path) | {"NOTIFY_SOCKET": str(notify_path),
                                          "WATCHDOG_USEC": "400000"}
        with open(tmp_path / "daemon.log", "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "worker.capture_daemon",
                                       "--config", str(config_path)], cwd=REPO, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        try:
            messages = receive_notifications(
                sock, lambda m: sum("WATCHDOG=1" in text for text in m) >= 3
                and any("STATUS=finished" in text for text in m), 60)
        finally:
            exit_status = stop_process(daemon)
        stopping = receive_notifications(sock, lambda m: any("STOPPING=1" in t for t in m), 10)
    assert exit_status == 0, (tmp_path / "daemon.log").read_text()
    ready = [text for text in messages if "READY=1" in text]
    assert len(ready) == 1
    assert f"STATUS=running: {capture}" in ready[0]
    assert messages.index(ready[0]) < messages.index(next(t for t in messages if "finished" in t))
    assert stopping


def test_replay_rotates_by_packet_time_and_size(corpus_dir: Path,
                                               write_sensor_config: Callable[..., Path]
                                               ) -> None:
    capture = corpus_dir / "http-wikipedia.pcap"
    _records, pkts, _bytes = expected_records(capture)
    by_time = load_config(write_sensor_config(capture={"source": str(capture),
                                                       "rotate_seconds": 1,
                                                       "status_interval": 1}))
    stop = threading.Event()
    daemon = CaptureDaemon(by_time, stop)
    daemon.batch_size = 8
    thread = threading.Thread(target=daemon.run)
    thread.start()
    wait_for(lambda: daemon.status["state"] == "finished", 60, "the replay")
    stop.set()
    thread.join(30)
    files = sorted(by_time.archive_dir.rglob("flows.*.arrows"))
    assert len(files) > 1
    names = [file.name for file in files]
    assert len(set(names)) == len(names), "one file per one-second period"
    archived = read_records(by_time.archive_dir)
    assert pc.sum(archived.column("pkts")).as_py() == pkts

    for file in by_time.archive_dir.rglob("*.arrows"):
        file.unlink()
    by_size = load_config(write_sensor_config(capture={"source": str(capture),
                                                       "rotate_bytes": 4096,
                                                       "status_interval": 1}))
    stop = threading.Event()
    daemon = CaptureDaemon(by_size, stop)
    daemon.batch_size = 8
    stop_after_replay(daemon, stop)
    files = sorted(by_size.archive_dir.rglob("flows.*.arrows"))
    assert len(files) > 1
    assert any(".1.arrows" in file.name for file in files), "same period, numbered files"
    assert pc.sum(read_records(by_size.archive_dir).column("pkts")).as_py() == pkts


def stop_after_replay(daemon: CaptureDaemon, stop: threading.Event) -> None:
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        wait_for(lambda: daemon.status["state"] in ("finished", "failed"), 60, "the replay")
    finally:
        stop.set()
        thread.join(30)
    assert daemon.status["state"] == "stopped"


def test_retention_runs_after_rotation(corpus_dir: Path,
                                       write_sensor_config: Callable[..., Path]) -> None:
    capture = corpus_dir / "http-wikipedia.pcap"
    config = load_config(write_sensor_config(capture={"source": str(capture),
                                                      "rotate_bytes": 4096,
                                                      "status_interval": 1},
                                             archive={"max_bytes": 10_000}))
    stop = threading.Event()
    daemon = CaptureDaemon(config, stop)
    daemon.batch_size = 8
    stop_after_replay(daemon, stop)
    files = list(config.archive_dir.rglob("flows.*.arrows"))
    assert files
    assert sum(file.stat().st_size for file in files) <= 10_000
    retention = daemon.status["retention"]
    assert retention["deleted_files"] > 0
    assert retention["days_of_history"] is not None
