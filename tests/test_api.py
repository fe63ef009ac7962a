"""REST API through Flask's test client: validation, errors, job records, capture settings.

Submissions go to the embedded SQLite broker in the temporary data directory. No worker
consumes them here, so a submitted job stays queued; test_queue runs real workers.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from appliance.config import load_config

CLUSTER_JOB = {"analysis": "cluster", "keys": ["saddr", "daddr"], "output": "json"}


@pytest.fixture
def config_path(write_sensor_config: Callable[..., Path],
                monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    return write_sensor_config()


@pytest.fixture
def app(config_path: Path) -> Flask:
    return create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_error(response: Any, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "field", "value"}
    assert body["field"] == field
    assert body["error"]
    return body


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/api/v1/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["srcid"] == "test-sensor"
    assert body["queue"] == "sensor.test-sensor"


def test_invalid_json_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", data="{not json",
                           content_type="application/json")
    body = assert_error(response, 400, "body")
    assert "invalid JSON" in body["error"]


def test_json_array_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json=["cluster"])
    assert_error(response, 400, "body")


def test_wrong_content_type(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", data="analysis=cluster",
                           content_type="application/x-www-form-urlencoded")
    body = assert_error(response, 415, "Content-Type")
    assert body["value"] == "application/x-www-form-urlencoded"


def test_oversized_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", data=b"{" + b" " * 100_000 + b"}",
                           content_type="application/json")
    body = assert_error(response, 413, None)
    assert "larger than 65536 bytes" in body["error"]


def test_unknown_analysis(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json={"analysis": "histogram"})
    body = assert_error(response, 400, "analysis")
    assert body["value"] == "histogram"


def test_missing_analysis(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json={"keys": ["saddr"]})
    assert_error(response, 400, "analysis")


def test_unknown_field(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json={**CLUSTER_JOB, "colour": "blue"})
    body = assert_error(response, 400, "colour")
    assert "colour" in body["error"]


def test_invalid_cluster_key(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json={**CLUSTER_JOB, "keys": ["nosuchfield"]})
    body = assert_error(response, 400, "keys")
    assert "nosuchfield" in body["error"]


def test_unknown_job_404(client: FlaskClient) -> None:
    job_id = str(uuid.uuid4())
    body = assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "job_id")
    assert body["value"] == job_id
    assert_error(client.get(f"/api/v1/jobs/{job_id}/result"), 404, "job_id")


def test_job_id_not_uuid_404(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/jobs/..%2F..%2Fetc"), 404, None)
    assert_error(client.get("/api/v1/jobs/not-a-uuid"), 404, "job_id")


def test_unknown_path_and_method(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/nothing"), 404, None)
    response = client.delete("/api/v1/jobs")
    assert_error(response, 405, None)
    assert "POST" in response.headers["Allow"]


def test_submit_job_queues_and_records(client: FlaskClient, app: Flask) -> None:
    response = client.post("/api/v1/jobs", json=CLUSTER_JOB)

    assert response.status_code == 202, response.get_data(as_text=True)
    job = response.get_json()
    assert str(uuid.UUID(job["id"])) == job["id"]
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{job['id']}")
    assert job["state"] == "queued"
    assert job["spec"]["analysis"] == "cluster"
    assert job["spec"]["keys"] == ["saddr", "daddr"]
    assert isinstance(job["spec"]["now"], int | float)

    again = client.get(f"/api/v1/jobs/{job['id']}")
    assert again.status_code == 200
    assert again.get_json()["state"] == "queued"
    assert again.get_json()["submitted"] == job["submitted"]

    result = client.get(f"/api/v1/jobs/{job['id']}/result")
    body = assert_error(result, 409, "state")
    assert body["value"] == "queued"

    config = app.extensions["wirewatch"]["config"]
    assert (config.jobs.results_dir / job["id"] / "job.json").is_file()
    assert (config.data_dir / "broker.sqlite").is_file()


def test_capture_get(client: FlaskClient, config_path: Path) -> None:
    response = client.get("/api/v1/capture")
    assert response.status_code == 200
    body = response.get_json()
    assert body["capture"]["user_data_len"] == 128
    assert body["config_file"] == str(config_path)
    assert body["status"] is None


def test_capture_put_updates_file(client: FlaskClient, config_path: Path) -> None:
    response = client.put("/api/v1/capture", json={"user_data_len": 512, "appbytes": False})

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["capture"]["user_data_len"] == 512
    assert body["daemon_signalled"] is False
    config = load_config(config_path)
    assert config.capture.user_data_len == 512
    assert config.capture.appbytes is False
    assert config.srcid == "test-sensor"
    assert client.get("/api/v1/capture").get_json()["capture"]["user_data_len"] == 512


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_data_len": 70000}, "capture.user_data_len"),
        ({"status_interval": "soon"}, "capture.status_interval"),
        ({"source": "/no/such/capture.pcap"}, "capture.source"),
        ({"source": "eth0"}, "capture.source"),
        ({"snaplen": 96}, "capture.snaplen"),
    ],
)
def test_capture_put_invalid(client: FlaskClient, config_path: Path, change: dict[str, Any],
                             field: str) -> None:
    before = config_path.read_bytes()
    response = client.put("/api/v1/capture", json=change)
    body = assert_error(response, 400, field)
    assert body["value"] == next(iter(change.values()))
    assert config_path.read_bytes() == before


def test_capture_put_ignores_foreign_pid(client: FlaskClient, app: Flask) -> None:
    config = app.extensions["wirewatch"]["config"]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    # The test process is alive but is not a capture daemon, so it must not get SIGHUP.
    config.capture_pid_path.write_text(f"{os.getpid()}\n")
    response = client.put("/api/v1/capture", json={"user_data_len": 64})
    assert response.status_code == 200
    assert response.get_json()["daemon_signalled"] is False


def test_capture_put_without_file(tmp_path: Path) -> None:
    config = load_config(None)
    app = create_app({"TESTING": True, "WIREWATCH": config})
    response = app.test_client().put("/api/v1/capture", json={"user_data_len": 64})
    assert_error(response, 409, "config")


def test_capture_put_source_relative_to_file(client: FlaskClient, config_path: Path) -> None:
    replay = config_path.parent / "replay.pcap"
    replay.write_bytes(b"")
    response = client.put("/api/v1/capture", json={"source": "replay.pcap"})
    assert response.status_code == 200, response.get_data(as_text=True)
    with open(config_path, "rb") as handle:
        assert tomllib.load(handle)["capture"]["source"] == str(replay)


def test_label_path_from_client_rejected(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs",
                           json={"analysis": "label", "label": {"geoip": "/etc/passwd"}})
    body = assert_error(response, 400, "label.geoip")
    assert body["value"] == "/etc/passwd"


def test_label_without_sensor_geoip(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json={"analysis": "label"})
    body = assert_error(response, 400, "analysis")
    assert "country_db" in body["error"]


def test_label_uses_sensor_geoip(write_sensor_config: Callable[..., Path],
                                 tmp_path: Path) -> None:
    database = tmp_path / "countries.mmdb"
    config_path = write_sensor_config(geoip={"country_db": str(database)})
    client = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)}
                        ).test_client()
    response = client.post("/api/v1/jobs", json={"analysis": "label"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["spec"]["label"] == {"geoip": str(database)}
