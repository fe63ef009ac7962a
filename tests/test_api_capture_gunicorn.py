"""Capture start and stop through a real gunicorn: the daemon's exit leaves no zombie."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.tokens import create_token
from tests.services import REPO, free_port, service_env, stop_process, wait_for

pytestmark = pytest.mark.slow

CAPTURE = "dns-udp-basic.pcap"


def request_json(method: str, url: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def process_state(pid: int) -> tuple[str, int] | None:
    """Return (state letter, parent pid) of a process, or None when it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def zombie_children(parent: int) -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and process_state(int(entry.name)) == ("Z", parent):
            zombies.append(int(entry.name))
    return zombies


def test_capture_daemon_reaped_under_gunicorn(corpus_dir: Path,
                                               write_sensor_config: Callable[..., Path],
                                               tmp_path: Path) -> None:
    config_path = write_sensor_config(capture={"source": str(corpus_dir / CAPTURE)})
    config = load_config(config_path)
    _, token = create_token(config_path, ["admin"])
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    server_log = tmp_path / "gunicorn.log"
    with open(server_log, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli.main", "serve", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--config", str(config_path)],
            cwd=REPO, env=service_env(config_path), stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited: {server_log.read_text()}")
        try:
            return request_json("GET", f"{base}/healthz", token)[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    daemon = None
    try:
        wait_for(healthy, 60, f"gunicorn on port {port}")
        status, body = request_json("POST", f"{base}/capture/start", token)
        assert status == 202, body
        daemon = body["pid"]
        state = process_state(daemon)
        assert state is not None
        gunicorn_worker = state[1]
        assert process_state(gunicorn_worker)[1] == server.pid  # the daemon's parent

        def replay_finished() -> bool:
            return (request_json("GET", f"{base}/capture", token)[1]["status"] or {}).get(
                "state") == "finished"

        wait_for(replay_finished, 60, "the replay to finish")
        status, body = request_json("POST", f"{base}/capture/stop", token)
        assert status == 202, body

        wait_for(lambda: process_state(daemon) is None, 30,
                 f"capture daemon pid {daemon} to exit and be reaped")
        assert zombie_children(gunicorn_worker) == []
        status, body = request_json("POST", f"{base}/capture/stop", token)
        assert status == 409
        assert config.capture_status_path.is_file()
    finally:
        leftover = process_state(daemon) if daemon is not None else None
        if leftover is not None and leftover[0] != "Z":
            os.kill(daemon, signal.SIGKILL)
        exit_status = stop_process(server)
    assert exit_status == 0, server_log.read_text()
    assert f"capture daemon pid {daemon} exited with status 0" in server_log.read_text()
