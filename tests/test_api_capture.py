"""Capture start and stop through the API, with a real capture daemon replaying a capture."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api import create_app
from api.capture import daemon_pid
from appliance.config import load_config
from appliance.tokens import create_token
from tests.services import wait_for

pytestmark = pytest.mark.slow

CAPTURE = "dns-udp-basic.pcap"


def status_state(status_path: Path) -> str | None:
    try:
        return json.loads(status_path.read_text()).get("state")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_capture_start_stop(corpus_dir: Path, write_sensor_config: Callable[..., Path],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    config_path = write_sensor_config(capture={"source": str(corpus_dir / CAPTURE)})
    config = load_config(config_path)
    _, token = create_token(config_path, ["admin"])
    client = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)}
                        ).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    started: dict[str, Any] = {}
    try:
        response = client.post("/api/v1/capture/start")
        assert response.status_code == 202, response.get_json()
        started["pid"] = response.get_json()["pid"]

        wait_for(lambda: status_state(config.capture_status_path) == "finished", 60,
                 "the replay to finish")
        assert daemon_pid(config.capture_pid_path) == started["pid"]
        again = client.post("/api/v1/capture/start")
        assert again.status_code == 409
        assert again.get_json()["value"] == "running"
        status = client.get("/api/v1/capture").get_json()["status"]
        assert status["packets"] > 0

        assert client.post("/api/v1/capture/stop").status_code == 202
        wait_for(lambda: status_state(config.capture_status_path) == "stopped", 30,
                 "the daemon to stop")
        wait_for(lambda: daemon_pid(config.capture_pid_path) is None, 30,
                 "the daemon process to exit")
        stopped = client.post("/api/v1/capture/stop")
        assert stopped.status_code == 409
        assert stopped.get_json()["value"] == "stopped"
    finally:
        pid = daemon_pid(config.capture_pid_path)
        if pid is not None and pid == started.get("pid"):
            os.kill(pid, signal.SIGKILL)
