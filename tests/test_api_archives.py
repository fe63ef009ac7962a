"""Archive endpoints: file listing, single-file download, -t range download, bad names."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from flask.testing import FlaskClient

from api import create_app
from appliance.archive import iter_record_files, read_records
from appliance.config import load_config
from appliance.query.timerange import parse_time_range
from appliance.tokens import create_token
from tests.services import build_archive

CAPTURE = "http-wikipedia.pcap"


@pytest.fixture
def sensor(corpus_dir: Path, write_sensor_config: Callable[..., Path],
           monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, Path]:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    config_path = write_sensor_config()
    archive_dir = load_config(config_path).archive_dir
    assert build_archive(corpus_dir / CAPTURE, archive_dir) > 0
    _, token = create_token(config_path, ["read"])
    client = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)}
                        ).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client, archive_dir


def test_archive_listing(sensor: tuple[FlaskClient, Path]) -> None:
    client, archive_dir = sensor
    body = client.get("/api/v1/archives").get_json()

    files = list(iter_record_files(archive_dir))
    assert [item["name"] for item in body["files"]] == \
        [str(path.relative_to(archive_dir)) for path in files]
    table = read_records(archive_dir)
    assert body["total_records"] == table.num_rows
    assert body["total_bytes"] == sum(path.stat().st_size for path in files)
    first = min(item["stime"] for item in body["files"])
    assert first == pc.min(table.column("stime")).as_py().timestamp()


def test_archive_file_download(sensor: tuple[FlaskClient, Path]) -> None:
    client, archive_dir = sensor
    name = client.get("/api/v1/archives").get_json()["files"][0]["name"]
    response = client.get(f"/api/v1/archives/files/{name}")
    assert response.status_code == 200
    assert response.get_data() == (archive_dir / name).read_bytes()


@pytest.mark.parametrize("name", ["../wirewatch.toml", "..%2F..%2Fetc%2Fpasswd",
                                  "%2Fetc%2Fpasswd", "2020/../../wirewatch.toml",
                                  "flows.nothere.arrows"])
def test_archive_file_traversal_404(sensor: tuple[FlaskClient, Path], name: str) -> None:
    client, _ = sensor
    # Werkzeug redirects a doubled slash to the merged path, which must then be a 404.
    response = client.get(f"/api/v1/archives/files/{name}", follow_redirects=True)
    assert response.status_code == 404
    assert set(response.get_json()) == {"error", "field", "value"}


def test_archive_records_range(sensor: tuple[FlaskClient, Path]) -> None:
    client, archive_dir = sensor
    table = read_records(archive_dir)
    start = pc.min(table.column("stime")).as_py()
    text = start.strftime("%Y/%m/%d.%H:%M:%S") + "+2s"
    query = urllib.parse.urlencode({"t": text, "filter": "tcp"})

    response = client.get(f"/api/v1/archives/records?{query}")

    assert response.status_code == 200
    got = pa.ipc.open_stream(response.get_data()).read_all()
    expected = table.filter(parse_time_range(text, 0).mask(table))
    expected = expected.filter(pc.equal(expected.column("proto"), 6))
    assert 0 < got.num_rows < table.num_rows
    assert got.num_rows == expected.num_rows
    assert sorted(got.column("seq").to_pylist()) == sorted(expected.column("seq").to_pylist())


@pytest.mark.parametrize(("query", "field"), [("", "t"), ("t=tomorrow-ish", "t"),
                                              ("t=-1h&filter=port+eq", "filter")])
def test_archive_records_invalid(sensor: tuple[FlaskClient, Path], query: str,
                                 field: str) -> None:
    client, _ = sensor
    response = client.get(f"/api/v1/archives/records?{query}")
    assert response.status_code == 400
    assert response.get_json()["field"] == field
