"""REST API through Flask's test client: validation, errors, job records, capture settings.

Submissions go to the embedded SQLite broker in the temporary data directory. No worker
consumes them here, so a submitted job stays queued; test_queue runs real workers.
The client sends an admin token; test_auth covers tokens and scopes.
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
from appliance.tokens import create_token

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
def client(app: Flask, config_path: Path) -> FlaskClient:
    _, token = create_token(config_path, ["admin"])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def authorized(app: Flask) -> FlaskClient:
    """Return a test client with a new admin token for an app built from a file."""
    _, token = create_token(app.extensions["wirewatch"]["config"].path, ["admin"])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


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
        ({"source": "an-interface-name-too-long"}, "capture.source"),
        ({"snapshot_length": 96}, "capture.snapshot_length"),
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
    from dataclasses import replace

    from appliance.tokens import new_token

    record, token = new_token(["admin"])
    config = load_config(None)
    config = replace(config, api=replace(config.api, tokens=(record,)))
    app = create_app({"TESTING": True, "WIREWATCH": config})
    response = app.test_client().put("/api/v1/capture", json={"user_data_len": 64},
                                     headers={"Authorization": f"Bearer {token}"})
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
    client = authorized(create_app({"TESTING": True,
                                    "WIREWATCH_CONFIG_PATH": str(config_path)}))
    response = client.post("/api/v1/jobs", json={"analysis": "label"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["spec"]["label"] == {"geoip": str(database)}


def test_job_list_pagination(client: FlaskClient) -> None:
    submitted = [client.post("/api/v1/jobs", json=CLUSTER_JOB).get_json()["id"]
                 for _ in range(5)]

    first = client.get("/api/v1/jobs?limit=2").get_json()
    assert first["total"] == 5
    assert [job["id"] for job in first["jobs"]] == submitted[::-1][:2]
    second = client.get(first["links"]["next"]).get_json()
    assert [job["id"] for job in second["jobs"]] == submitted[::-1][2:4]
    last = client.get("/api/v1/jobs?limit=2&offset=4").get_json()
    assert [job["id"] for job in last["jobs"]] == [submitted[0]]
    assert "next" not in last["links"]


def test_job_list_state_filter(client: FlaskClient) -> None:
    kept = client.post("/api/v1/jobs", json=CLUSTER_JOB).get_json()["id"]
    cancelled = client.post("/api/v1/jobs", json=CLUSTER_JOB).get_json()["id"]
    assert client.delete(f"/api/v1/jobs/{cancelled}").status_code == 200

    queued = client.get("/api/v1/jobs?state=queued").get_json()
    assert [job["id"] for job in queued["jobs"]] == [kept]
    either = client.get("/api/v1/jobs?state=queued,cancelled").get_json()
    assert either["total"] == 2


@pytest.mark.parametrize(("query", "field"), [("state=sleeping", "state"),
                                              ("limit=0", "limit"), ("limit=x", "limit"),
                                              ("offset=-1", "offset")])
def test_job_list_invalid_query(client: FlaskClient, query: str, field: str) -> None:
    assert_error(client.get(f"/api/v1/jobs?{query}"), 400, field)


def test_cancel_queued_job(client: FlaskClient) -> None:
    job_id = client.post("/api/v1/jobs", json=CLUSTER_JOB).get_json()["id"]

    response = client.delete(f"/api/v1/jobs/{job_id}")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["state"] == "cancelled"
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["state"] == "cancelled"
    body = assert_error(client.delete(f"/api/v1/jobs/{job_id}"), 409, "state")
    assert body["value"] == "cancelled"
    assert_error(client.get(f"/api/v1/jobs/{job_id}/result"), 409, "state")


def test_cancel_unknown_job(client: FlaskClient) -> None:
    assert_error(client.delete(f"/api/v1/jobs/{uuid.uuid4()}"), 404, "job_id")


def test_result_unknown_format(client: FlaskClient) -> None:
    job_id = client.post("/api/v1/jobs", json=CLUSTER_JOB).get_json()["id"]
    body = assert_error(client.get(f"/api/v1/jobs/{job_id}/result?format=xlsx"), 400,
                        "format")
    assert body["value"] == "xlsx"


@pytest.mark.parametrize(("sensors", "value"), [([], []), (["../etc"], "../etc"),
                                                ("a", "a")])
def test_fleet_invalid_sensors(client: FlaskClient, sensors: Any, value: Any) -> None:
    body = assert_error(client.post("/api/v1/jobs", json={**CLUSTER_JOB, "sensors": sensors}),
                        400, "sensors")
    assert body["value"] == value


def test_readyz_without_capture(client: FlaskClient) -> None:
    response = client.get("/api/v1/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["ready"] is False
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["capture"] == {"ok": False, "state": None}
    assert body["checks"]["disk"]["ok"] is True


def test_readyz_broker_down(write_sensor_config: Callable[..., Path],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.services import free_port

    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    config_path = write_sensor_config(broker={"url": f"redis://127.0.0.1:{free_port()}/0"})
    client = authorized(create_app({"TESTING": True,
                                    "WIREWATCH_CONFIG_PATH": str(config_path)}))
    body = client.get("/api/v1/readyz").get_json()
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]
    response = client.post("/api/v1/jobs", json=CLUSTER_JOB)
    assert_error(response, 503, "broker")
    assert client.get("/api/v1/jobs").get_json()["total"] == 0


def test_metrics_format(client: FlaskClient) -> None:
    client.post("/api/v1/jobs", json=CLUSTER_JOB)
    response = client.get("/api/v1/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'wirewatch_jobs{analysis="cluster",state="queued"} 1.0' in text
    assert "wirewatch_capture_packets_total 0.0" in text
    assert 'wirewatch_queue_depth{queue="sensor.test-sensor"} 1.0' in text
    assert "wirewatch_archive_bytes 0.0" in text


def test_sensors_lists_own_sensor(client: FlaskClient) -> None:
    body = client.get("/api/v1/sensors").get_json()
    assert [sensor["srcid"] for sensor in body["sensors"]] == ["test-sensor"]
    assert body["sensors"][0]["state"] == "unknown"


def test_openapi_document(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    jobs = document["paths"]["/api/v1/jobs"]
    assert jobs["post"]["x-scope"] == "jobs"
    assert "202" in jobs["post"]["responses"]
    assert document["paths"]["/api/v1/healthz"]["get"]["security"] == []
    assert set(document["paths"]["/api/v1/jobs/{job_id}"]) == {"get", "delete"}
    docs = client.get("/api/v1/docs")
    assert docs.mimetype == "text/html"
    assert "DELETE /api/v1/jobs/{job_id}" in docs.get_data(as_text=True)


def test_capture_start_without_source(client: FlaskClient, app: Flask) -> None:
    body = assert_error(client.post("/api/v1/capture/start"), 409, "capture.source")
    assert body["value"] == ""
    config = app.extensions["wirewatch"]["config"]
    assert not config.capture_pid_path.exists()
