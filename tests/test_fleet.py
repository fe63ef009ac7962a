"""Fleet jobs: two simulated sensors with their own Celery workers, queues and archives.

Sensor "fa" coordinates (its worker consumes sensor.fa and fleet.fa) and sensor "fb" runs
parts only. Both share one real redis-server as broker, result backend and heartbeat
store. Each fleet result is checked against the same analysis run here on the union of
both archives. A third sensor without a worker must make the job partial, not hang it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import tomli_w
from flask.testing import FlaskClient

from api import create_app
from appliance import jobs
from appliance.archive import read_records
from appliance.config import load_config
from appliance.jobspec import JobSpec
from appliance.tokens import create_token
from tests.services import REPO, build_archive, service_env, stop_process, wait_for
from worker.fleet import decode_table, encode_table, merge_parts

pytestmark = pytest.mark.slow

SENSOR_CAPTURES = {"fa": ["dns-udp-basic.pcap"],
                   "fb": ["dns-udp-basic.pcap", "http-wikipedia.pcap"]}
FLEET_TIMEOUT = 40
JOB_TIMEOUT = 120.0


def write_config(directory: Path, srcid: str, redis_url: str) -> Path:
    document = {"data_dir": str(directory / "data"), "srcid": srcid,
                "broker": {"url": redis_url},
                "jobs": {"fleet_timeout": FLEET_TIMEOUT},
                "sensors": {"members": [*sorted(SENSOR_CAPTURES), "fc"], "heartbeat_interval": 1,
                            "stale_after": 5}}
    path = directory / "wirewatch.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fleet(redis_url: str, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    """Start one worker per sensor through ``wirewatch worker``; yield configs and client."""
    configs: dict[str, Path] = {}
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for srcid, captures in SENSOR_CAPTURES.items():
            directory = tmp_path_factory.mktemp(srcid)
            configs[srcid] = write_config(directory, srcid, redis_url)
            archive_dir = load_config(configs[srcid]).archive_dir
            for capture in captures:
                assert build_archive(corpus_dir / capture, archive_dir, srcid) > 0
            log_path = directory / "worker.log"
            with open(log_path, "wb") as log:
                command = [sys.executable, "-m", "appliance.cli.main", "worker", "--config",
                           str(configs[srcid]), "--concurrency", "2"]
                if srcid != "fa":
                    command.append("--no-fleet")
                process = subprocess.Popen(command, cwd=REPO, stdout=log,
                                           stderr=subprocess.STDOUT,
                                           env=service_env(configs[srcid], None))
            workers.append((process, log_path))

        _, token = create_token(configs["fa"], ["read", "jobs"])
        client = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(configs["fa"])}
                            ).test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

        def both_up() -> bool:
            for process, log_path in workers:
                if process.poll() is not None:
                    pytest.fail(f"worker exited: {log_path.read_text(errors='replace')}")
            sensors = client.get("/api/v1/sensors").get_json()["sensors"]
            return sum(item["state"] == "up" for item in sensors) == 2

        wait_for(both_up, 90, "heartbeats of both sensor workers")
        yield {"configs": configs, "client": client}
    finally:
        for process, log_path in workers:
            status = stop_process(process)
            assert status == 0, log_path.read_text(errors="replace")


def union_rows(configs: dict[str, Path], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``spec`` here on the union of both sensors' archives; return the printed rows."""
    tables = [read_records(load_config(configs[srcid]).archive_dir)
              for srcid in sorted(SENSOR_CAPTURES)]
    result = jobs.execute(JobSpec.from_dict(spec), pa.concat_tables(tables))
    return jobs.result_rows(result)


def run_fleet_job(client: FlaskClient, spec: dict[str, Any],
                  sensors: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = client.post("/api/v1/jobs", json={**spec, "sensors": sensors})
    assert response.status_code == 202, response.get_data(as_text=True)
    location = response.headers["Location"]

    def finished() -> dict[str, Any] | None:
        view = client.get(location).get_json()
        return view if view["state"] in ("done", "failed", "cancelled") else None

    view = wait_for(finished, JOB_TIMEOUT, f"fleet job {spec}", interval=0.2)
    assert view["state"] == "done", view
    rows = client.get(f"{location}/result?format=json").get_json()
    return view, rows


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def test_fleet_cluster_matches_union(fleet: dict[str, Any]) -> None:
    spec = {"analysis": "cluster", "keys": ["saddr", "daddr", "proto"],
            "fields": ["saddr", "daddr", "proto", "pkts", "bytes", "trans", "stime", "ltime"],
            "now": 0}
    view, rows = run_fleet_job(fleet["client"], spec, ["fa", "fb"])

    expected = union_rows(fleet["configs"], spec)
    assert canonical(rows) == canonical(expected)
    assert view["result"]["rows"] == len(expected)
    assert {srcid: part["state"] for srcid, part in view["parts"].items()} == \
        {"fa": "done", "fb": "done"}
    # The dns-udp-basic flows were seen by both sensors, so their counts doubled.
    assert max(row["trans"] for row in rows) >= 2


def test_fleet_ra_in_time_order(fleet: dict[str, Any]) -> None:
    spec = {"analysis": "ra", "filter": "udp", "fields": ["stime", "srcid", "saddr", "daddr",
                                                          "pkts"], "render": {"epoch": True},
            "now": 0}
    _, rows = run_fleet_job(fleet["client"], spec, ["fa", "fb"])

    expected = union_rows(fleet["configs"], spec)
    assert canonical(rows) == canonical(expected)
    times = [float(row["stime"]) for row in rows]
    assert times == sorted(times)
    assert {row["srcid"].strip() for row in rows} == {"fa", "fb"}


def test_fleet_sort_top(fleet: dict[str, Any]) -> None:
    spec = {"analysis": "sort", "keys": ["bytes"], "top": 10,
            "fields": ["saddr", "daddr", "bytes"], "now": 0}
    _, rows = run_fleet_job(fleet["client"], spec, ["fa", "fb"])

    expected = union_rows(fleet["configs"], spec)
    assert [row["bytes"] for row in rows] == [row["bytes"] for row in expected]
    assert len(rows) == 10


def test_fleet_sensor_down_is_partial(fleet: dict[str, Any]) -> None:
    spec = {"analysis": "cluster", "keys": ["saddr"], "fields": ["saddr", "pkts"], "now": 0}
    started = time.monotonic()
    view, rows = run_fleet_job(fleet["client"], spec, ["fa", "fb", "fc"])

    assert time.monotonic() - started < FLEET_TIMEOUT + 60
    assert view["partial"] is True
    assert view["parts"]["fc"]["state"] == "timeout"
    assert "fc" in view["parts"]["fc"]["error"]
    assert view["parts"]["fa"]["state"] == "done"
    assert view["parts"]["fb"]["state"] == "done"
    assert canonical(rows) == canonical(union_rows(fleet["configs"], spec))
    sensors = {item["srcid"]: item for item in
               fleet["client"].get("/api/v1/sensors").get_json()["sensors"]}
    assert sensors["fa"]["state"] == "up"
    assert sensors["fc"]["state"] == "unknown"


def test_merge_parts_cluster_equals_union(corpus_dir: Path, tmp_path: Path) -> None:
    tables = []
    for index, capture in enumerate(["dns-udp-basic.pcap", "dns-udp-basic.pcap",
                                     "http-wikipedia.pcap"]):
        build_archive(corpus_dir / capture, tmp_path / str(index), f"s{index}")
        tables.append(read_records(tmp_path / str(index)))
    spec = JobSpec.from_dict({"analysis": "cluster", "keys": ["saddr", "daddr"], "now": 0})
    parts = [decode_table(encode_table(jobs.execute(spec, table).rows)) for table in tables]

    merged = merge_parts(spec, parts)
    union = jobs.execute(spec, pa.concat_tables(tables)).rows

    def totals(table: pa.Table) -> list[tuple[Any, ...]]:
        return sorted(zip(*(table.column(name).to_pylist()
                            for name in ("saddr", "daddr", "pkts", "bytes", "trans", "stime",
                                         "ltime")), strict=True))

    assert totals(merged) == totals(union)
