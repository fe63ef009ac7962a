"""Bearer tokens: creation and revocation in the file, 401 and 403 responses, scopes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from appliance.cli.main import main as wirewatch
from appliance.config import load_config
from appliance.tokens import create_token, hash_token, revoke_token, verify_token

#: (method, path, scope needed); job paths use a job id that does not exist.
MISSING_JOB = "00000000-0000-4000-8000-000000000000"
ROUTES = [
    ("GET", "/api/v1/jobs", "read"),
    ("POST", "/api/v1/jobs", "jobs"),
    ("GET", f"/api/v1/jobs/{MISSING_JOB}", "read"),
    ("DELETE", f"/api/v1/jobs/{MISSING_JOB}", "jobs"),
    ("GET", f"/api/v1/jobs/{MISSING_JOB}/result", "read"),
    ("GET", "/api/v1/capture", "read"),
    ("PUT", "/api/v1/capture", "admin"),
    ("PATCH", "/api/v1/capture", "admin"),
    ("POST", "/api/v1/capture/stop", "admin"),
    ("GET", "/api/v1/readyz", "read"),
    ("GET", "/api/v1/metrics", "read"),
    ("GET", "/api/v1/archives", "read"),
    ("GET", "/api/v1/archives/records?t=-1h", "read"),
    ("GET", "/api/v1/sensors", "read"),
    ("GET", "/api/v1/openapi.json", "read"),
    ("GET", "/api/v1/docs", "read"),
]


def secret_part(token: str) -> str:
    """Return the random part of ``ww_<16 hex id>_<secret>``; the secret may contain '_'."""
    return token[len("ww_") + 16 + 1:]


@pytest.fixture
def config_path(write_sensor_config: Callable[..., Path],
                monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    return write_sensor_config()


@pytest.fixture
def app(config_path: Path) -> Flask:
    return create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)})


def call(client: FlaskClient, method: str, path: str, token: str | None) -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.open(path, method=method, headers=headers, json={"user_data_len": 64}
                       if method in ("PUT", "PATCH") else {"analysis": "ra"})


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_route_without_token_401(app: Flask, method: str, path: str, scope: str) -> None:
    response = call(app.test_client(), method, path, None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["field"] == "Authorization"


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_route_scopes(app: Flask, config_path: Path, method: str, path: str,
                      scope: str) -> None:
    client = app.test_client()
    for granted in ("read", "jobs", "admin"):
        _, token = create_token(config_path, [granted])
        response = call(client, method, path, token)
        allowed = granted == scope or granted == "admin"
        if allowed:
            assert response.status_code not in (401, 403), (granted, response.get_json())
        else:
            assert response.status_code == 403, (granted, response.get_json())
            body = response.get_json()
            assert body["field"] == "scope"
            assert body["value"] == scope


def test_capture_start_needs_admin(app: Flask, config_path: Path) -> None:
    # Only refusals are checked here: an admin token would start a capture daemon.
    client = app.test_client()
    assert client.post("/api/v1/capture/start").status_code == 401
    for scope in ("read", "jobs"):
        _, token = create_token(config_path, [scope])
        response = client.post("/api/v1/capture/start",
                               headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403
        assert response.get_json()["value"] == "admin"


def test_healthz_is_open(app: Flask) -> None:
    assert app.test_client().get("/api/v1/healthz").status_code == 200


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ",
                                    "Bearer ww_0000000000000000_" + "A" * 43,
                                    "Bearer not-a-token", "Token abc"])
def test_invalid_authorization_401(app: Flask, header: str) -> None:
    response = app.test_client().get("/api/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    body = response.get_json()
    assert body["field"] == "Authorization"
    assert "ww_" not in (body["value"] or "")


def test_revoked_token_401_without_restart(app: Flask, config_path: Path) -> None:
    record, token = create_token(config_path, ["read"])
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200

    assert revoke_token(config_path, record.id) is True

    assert client.get("/api/v1/jobs", headers=headers).status_code == 401
    assert revoke_token(config_path, record.id) is False


def test_file_stores_only_digest(config_path: Path) -> None:
    record, token = create_token(config_path, ["read", "jobs"], label="ci")
    text = config_path.read_text()
    secret = secret_part(token)
    assert len(secret) == 43
    assert secret not in text
    assert hash_token(token) in text
    stored = load_config(config_path).api.tokens
    assert stored == (record,)
    assert verify_token(stored, token) == record
    assert verify_token(stored, token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_token_never_logged(app: Flask, config_path: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    record, token = create_token(config_path, ["read"])
    client = app.test_client()
    client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}x"})
    client.put("/api/v1/capture", headers={"Authorization": f"Bearer {token}"}, json={})
    assert record.id in caplog.text
    assert token not in caplog.text
    assert secret_part(token) not in caplog.text


def test_cli_token_create_and_revoke(config_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status = wirewatch(["token", "create", "--scopes", "read,jobs", "--config",
                        str(config_path)])
    token = capsys.readouterr().out.strip()
    assert status == 0
    records = load_config(config_path).api.tokens
    assert [item.scopes for item in records] == [("read", "jobs")]
    assert verify_token(records, token) == records[0]

    assert wirewatch(["token", "revoke", records[0].id, "--config", str(config_path)]) == 0
    assert load_config(config_path).api.tokens == ()


def test_cli_token_errors(config_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    before = config_path.read_bytes()
    assert wirewatch(["token", "create", "--scopes", "read,root", "--config",
                      str(config_path)]) == 2
    assert "read,root" in capsys.readouterr().err
    assert wirewatch(["token", "revoke", "0123456789abcdef", "--config",
                      str(config_path)]) == 2
    assert "0123456789abcdef" in capsys.readouterr().err
    monkeypatch.delenv("WIREWATCH_CONFIG", raising=False)
    assert wirewatch(["token", "create"]) == 2
    assert "--config" in capsys.readouterr().err
    assert config_path.read_bytes() == before


def test_cli_config_init_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert wirewatch(["config", "init", "--data-dir", str(tmp_path / "data"), "--srcid",
                      "edge-1"]) == 0
    path = tmp_path / "wirewatch.toml"
    path.write_text(capsys.readouterr().out)
    config = load_config(path)
    assert config.srcid == "edge-1"
    assert config.data_dir == tmp_path / "data"
    assert config.api.tokens == ()
    assert wirewatch(["config", "init", "--data-dir", "x", "--srcid", "a/b"]) == 2
