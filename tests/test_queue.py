"""Jobs through a real broker and a real Celery worker, submitted through the API.

The archive is metered from a corpus capture; the cluster result is checked against a
group-by over the same archive computed here with pyarrow.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from flask.testing import FlaskClient

from api import create_app
from appliance.archive import read_records
from appliance.config import load_config
from appliance.records import EtherType, address_to_text
from appliance.tokens import create_token
from tests.services import build_archive, start_worker, stop_process, wait_for
from worker.tasks import purge_expired_results

pytestmark = pytest.mark.slow

CAPTURE = "http-wikipedia.pcap"
JOB_TIMEOUT = 180.0


def host_pairs(archive_dir: Path) -> tuple[dict[tuple[str, str], tuple[int, int]], int]:
    """Sum (pkts, bytes) per (saddr, daddr) of the IP records in the archive.

    Returns the pairs as text and the number of groups over all records. ARP records
    carry IPv4 addresses and are included; LLC records print MAC addresses and are
    only counted.
    """
    table = read_records(archive_dir)
    all_groups = table.group_by(["saddr", "daddr"]).aggregate([("pkts", "sum")]).num_rows
    printed_as_ip = pa.array([EtherType.IPV4, EtherType.IPV6, EtherType.ARP], pa.uint16())
    ip = pc.is_in(table.column("etype"), printed_as_ip)
    grouped = table.filter(ip).group_by(["saddr", "daddr"]).aggregate(
        [("pkts", "sum"), ("bytes", "sum")])
    pairs = {}
    for row in grouped.to_pylist():
        key = (address_to_text(row["saddr"]), address_to_text(row["daddr"]))
        pairs[key] = (row["pkts_sum"], row["bytes_sum"])
    return pairs, all_groups


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def run_job(client: FlaskClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 202, response.get_data(as_text=True)
    location = response.headers["Location"]

    def finished() -> dict[str, Any] | None:
        view = client.get(location).get_json()
        return view if view["state"] in ("done", "failed") else None

    return wait_for(finished, JOB_TIMEOUT, f"job {spec} to finish", interval=0.25)


def token_client(config_path: Path) -> FlaskClient:
    """Return a test client of the API for ``config_path`` that sends a jobs token."""
    _, token = create_token(config_path, ["read", "jobs"])
    client = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(config_path)}
                        ).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def sensor(corpus_dir: Path, write_sensor_config: Callable[..., Path], tmp_path: Path,
           broker: dict[str, str] | None) -> tuple[Path, FlaskClient, str]:
    srcid = f"q{uuid.uuid4().hex[:10]}"
    sections: dict[str, Any] = {"srcid": srcid}
    if broker:
        sections["broker"] = broker
    config_path = write_sensor_config(**sections)
    config = load_config(config_path)
    records = build_archive(corpus_dir / CAPTURE, config.archive_dir, srcid)
    assert records > 0
    return config_path, token_client(config_path), config.queue


def check_cluster_result(client: FlaskClient, view: dict[str, Any],
                         archive_dir: Path) -> None:
    assert view["state"] == "done", view
    expected, groups = host_pairs(archive_dir)
    assert view["result"]["rows"] == groups

    rows = client.get(f"/api/v1/jobs/{view['id']}/result?format=json").get_json()
    assert len(rows) == groups
    got = {(row["saddr"], row["daddr"]): (row["pkts"], row["bytes"]) for row in rows
           if is_ip_address(row["saddr"])}
    assert got == expected

    csv_response = client.get(f"/api/v1/jobs/{view['id']}/result?format=csv")
    assert csv_response.status_code == 200
    assert csv_response.mimetype == "text/csv"
    assert len(csv_response.get_data(as_text=True).splitlines()) == groups + 1

    ndjson = client.get(f"/api/v1/jobs/{view['id']}/result?format=ndjson")
    assert ndjson.mimetype == "application/x-ndjson"
    assert [json.loads(line) for line in ndjson.get_data(as_text=True).splitlines()] == rows

    parquet = client.get(f"/api/v1/jobs/{view['id']}/result?format=parquet")
    assert parquet.status_code == 200
    table = pq.read_table(io.BytesIO(parquet.get_data()))
    assert table.num_rows == groups
    assert pc.sum(table.column("pkts")).as_py() == pc.sum(
        read_records(archive_dir).column("pkts")).as_py()

    text = client.get(f"/api/v1/jobs/{view['id']}/result?format=text").get_data(as_text=True)
    lines = text.splitlines()
    assert len(lines) == groups + 1
    assert lines[0].split() == ["SrcAddr", "DstAddr", "TotPkts", "TotBytes"]


def test_cluster_job_through_redis(redis_url: str, corpus_dir: Path,
                                   write_sensor_config: Callable[..., Path],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    config_path, client, queue = sensor(corpus_dir, write_sensor_config, tmp_path,
                                        {"url": redis_url})
    worker = start_worker(config_path, queue, tmp_path / "worker.log")
    try:
        spec = {"analysis": "cluster", "keys": ["saddr", "daddr"],
                "fields": ["saddr", "daddr", "pkts", "bytes"], "output": "json"}
        view = run_job(client, spec)
        check_cluster_result(client, view, load_config(config_path).archive_dir)
        assert view["started"] <= view["finished"]
        assert view["submitted"] <= view["started"]

        empty = run_job(client, {"analysis": "ra", "time": "2000/01/01", "filter": "tcp"})
        assert empty["state"] == "done"
        assert empty["result"]["rows"] == 0
    finally:
        exit_status = stop_process(worker)

    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert exit_status == 0, log
    assert view["id"] in log


def test_job_failure_is_reported(redis_url: str, write_sensor_config: Callable[..., Path],
                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    srcid = f"q{uuid.uuid4().hex[:10]}"
    config_path = write_sensor_config(srcid=srcid, broker={"url": redis_url})
    client = token_client(config_path)
    worker = start_worker(config_path, f"sensor.{srcid}", tmp_path / "worker.log")
    try:
        # No archive was written for this sensor, so the job cannot read records.
        view = run_job(client, {"analysis": "cluster", "keys": ["saddr"]})
        result = client.get(f"/api/v1/jobs/{view['id']}/result")
    finally:
        stop_process(worker)

    assert view["state"] == "failed"
    assert "no such file or directory" in view["error"]
    assert view["id"] in view["error"]
    assert result.status_code == 409
    assert result.get_json()["value"] == "failed"


def test_cluster_job_embedded_sqlite(corpus_dir: Path, write_sensor_config: Callable[..., Path],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    config_path, client, queue = sensor(corpus_dir, write_sensor_config, tmp_path, None)
    config = load_config(config_path)
    assert config.broker_url.startswith("sqla+sqlite:")
    worker = start_worker(config_path, queue, tmp_path / "worker.log")
    try:
        spec = {"analysis": "cluster", "keys": ["saddr", "daddr"],
                "fields": ["saddr", "daddr", "pkts", "bytes"]}
        view = run_job(client, spec)
        check_cluster_result(client, view, config.archive_dir)
    finally:
        exit_status = stop_process(worker)
    assert exit_status == 0, (tmp_path / "worker.log").read_text(errors="replace")
    assert (config.data_dir / "broker.sqlite").is_file()
    assert (config.data_dir / "results.sqlite").is_file()


def test_expired_results_are_purged(tmp_path: Path) -> None:
    results = tmp_path / "results"
    old, fresh = results / str(uuid.uuid4()), results / str(uuid.uuid4())
    for directory in (old, fresh):
        directory.mkdir(parents=True)
        (directory / "job.json").write_text("{}")
    now = time.time()
    os.utime(old, (now - 7200, now - 7200))

    removed = purge_expired_results(results, ttl=3600, now=now)

    assert removed == [old.name]
    assert not old.exists()
    assert fresh.is_dir()


def test_cancelled_job_is_skipped(redis_url: str, corpus_dir: Path,
                                  write_sensor_config: Callable[..., Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    config_path, client, queue = sensor(corpus_dir, write_sensor_config, tmp_path,
                                        {"url": redis_url})
    spec = {"analysis": "cluster", "keys": ["saddr"]}
    cancelled = client.post("/api/v1/jobs", json=spec).get_json()["id"]
    assert client.delete(f"/api/v1/jobs/{cancelled}").get_json()["state"] == "cancelled"

    # The worker starts after the cancellation, so it receives the cancelled job first.
    worker = start_worker(config_path, queue, tmp_path / "worker.log")
    try:
        later = run_job(client, spec)
    finally:
        stop_process(worker)

    assert later["state"] == "done"
    view = client.get(f"/api/v1/jobs/{cancelled}").get_json()
    assert view["state"] == "cancelled"
    directory = load_config(config_path).jobs.results_dir / cancelled
    assert not (directory / "result.csv").exists()
    assert cancelled in (tmp_path / "worker.log").read_text(errors="replace")
    listing = client.get("/api/v1/jobs?state=done").get_json()
    assert [job["id"] for job in listing["jobs"]] == [later["id"]]
    assert listing["jobs"][0]["progress"] == 100.0
    assert listing["jobs"][0]["expires"] == pytest.approx(
        listing["jobs"][0]["finished"] + load_config(config_path).jobs.result_ttl)
