"""The API served by a real gunicorn (through ``wirewatch serve``) on a loopback port."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.tokens import create_token
from tests.services import REPO, free_port, service_env, stop_process, wait_for

pytestmark = pytest.mark.slow


def request_json(method: str, url: str, body: bytes | None = None,
                 token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_gunicorn_serves_api(write_sensor_config: Callable[..., Path], tmp_path: Path) -> None:
    config_path = write_sensor_config()
    _, token = create_token(config_path, ["jobs"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "gunicorn.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli.main", "serve", "--bind",
             f"127.0.0.1:{port}", "--config", str(config_path)],
            cwd=REPO, env=service_env(config_path), stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> tuple[int, Any] | None:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited: {(tmp_path / 'gunicorn.log').read_text()}")
        try:
            return request_json("GET", f"{base}/api/v1/healthz")
        except (urllib.error.URLError, ConnectionError):
            return None

    try:
        status, body = wait_for(healthy, 60, f"gunicorn on port {port}")
        assert status == 200
        assert body["status"] == "ok"
        assert body["srcid"] == "test-sensor"

        status, body = request_json("POST", f"{base}/api/v1/jobs",
                                    json.dumps({"analysis": "cluster"}).encode())
        assert status == 401
        assert body["field"] == "Authorization"

        status, body = request_json("POST", f"{base}/api/v1/jobs",
                                    json.dumps({"analysis": "histogram"}).encode(), token)
        assert status == 400
        assert body["field"] == "analysis"
        assert body["value"] == "histogram"

        status, body = request_json("POST", f"{base}/api/v1/jobs", b"{broken", token)
        assert status == 400
        assert body["field"] == "body"

        status, body = request_json("POST", f"{base}/api/v1/jobs",
                                    json.dumps({"analysis": "cluster"}).encode(), token)
        assert status == 202
        status, listing = request_json("GET", f"{base}/api/v1/jobs", None, token)
        assert status == 403
        assert listing["value"] == "read"
    finally:
        exit_status = stop_process(server)
    assert exit_status == 0, (tmp_path / "gunicorn.log").read_text()
