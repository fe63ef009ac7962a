"""Jobs survive a broker outage and run again idempotently, with real Redis and Celery.

These tests start their own redis-server with an append-only file, because they stop
and restart it; the session's shared redis-server stays up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from appliance.archive import read_records
from appliance.config import load_config
from tests.services import free_port, start_worker, stop_process, wait_for
from tests.test_queue import run_job, token_client
from tests.test_queue_cancel import long_job_archive
from worker.celery_app import BROKER_ERRORS, RUN_ANALYSIS, TASK_RETRY
from worker.tasks import run_analysis

pytestmark = pytest.mark.slow


class RedisServer:
    """A redis-server on a fixed 127.0.0.1 port that a test can stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.directory / "redis.log", "ab") as log:
            # The append-only file keeps the queue and the results across the restart.
            self.process = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--dir",
                 str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_for(answers, 15, f"redis-server on port {self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            assert stop_process(self.process) == 0
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: Copies of the capture's records in the job's archive: enough that the job still runs
#: through the two-second broker outage on a fast machine (about 170,000 records).
OUTAGE_JOB_COPIES = 5000


def test_job_survives_broker_restart(own_redis: RedisServer, corpus_dir: Path,
                                     write_sensor_config: Callable[..., Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    srcid = f"r{uuid.uuid4().hex[:10]}"
    config_path = write_sensor_config(srcid=srcid, broker={"url": own_redis.url})
    config = load_config(config_path)
    records = long_job_archive(corpus_dir, config.archive_dir, srcid,
                               copies=OUTAGE_JOB_COPIES)
    client = token_client(config_path)
    worker_log = tmp_path / "worker.log"
    worker = start_worker(config_path, config.queue, worker_log)
    try:
        response = client.post("/api/v1/jobs", json={"analysis": "ra"})
        assert response.status_code == 202
        job_id = response.get_json()["id"]
        wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["state"]
                 == "running", 60, f"job {job_id} to start")

        own_redis.stop()
        time.sleep(2.0)
        # While the broker is down the API still responds, with the state unknown.
        during_outage = client.get(f"/api/v1/jobs/{job_id}")
        assert during_outage.status_code == 200
        assert during_outage.get_json()["state"] == "unknown", during_outage.get_json()
        own_redis.start()

        def finished() -> dict | None:
            view = client.get(f"/api/v1/jobs/{job_id}").get_json()
            return view if view["state"] in ("done", "failed") else None

        view = wait_for(finished, 120, f"job {job_id} to finish after the restart",
                        interval=0.25)
        assert view["state"] == "done", view
        assert view["result"]["rows"] == records
        rows = client.get(f"/api/v1/jobs/{job_id}/result?format=ndjson").get_data(
            as_text=True).splitlines()
        assert len(rows) == records

        # The worker reconnected: it takes and runs the next job.
        later = run_job(client, {"analysis": "ra", "filter": "udp", "top": "3"})
        assert later["state"] == "done", later
    finally:
        exit_status = stop_process(worker)
    log = worker_log.read_text(errors="replace")
    assert exit_status == 0, log
    assert "Connection to broker lost" in log or "Cannot connect to redis" in log, log


def test_redelivered_job_runs_idempotently(redis_url: str, corpus_dir: Path,
                                           write_sensor_config: Callable[..., Path],
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    srcid = f"i{uuid.uuid4().hex[:10]}"
    config_path = write_sensor_config(srcid=srcid, broker={"url": redis_url})
    config = load_config(config_path)
    from tests.services import build_archive

    records = build_archive(corpus_dir / "dns-udp-basic.pcap", config.archive_dir, srcid)
    client = token_client(config_path)
    celery = client.application.extensions["wirewatch"]
    worker_log = tmp_path / "worker.log"
    worker = start_worker(config_path, config.queue, worker_log)
    try:
        first = run_job(client, {"analysis": "ra", "output": "csv"})
        assert first["state"] == "done", first
        directory = config.jobs.results_dir / first["id"]
        csv = (directory / "result.csv").read_bytes()
        spec = json.loads((directory / "job.json").read_text())["spec"]
        app = celery["celery"]

        def redeliver() -> dict:
            # Forget the stored result first, so get() waits for this delivery's result.
            app.backend.forget(first["id"])
            return app.send_task(RUN_ANALYSIS, args=[first["id"], spec], task_id=first["id"],
                                 queue=config.queue).get(timeout=60)

        # A second delivery of a finished job returns the stored summary and keeps the files.
        stored = redeliver()
        assert stored["finished"] == first["finished"]
        assert (directory / "result.csv").read_bytes() == csv

        # A delivery after an interrupted run (run record "running", a torn result file)
        # runs the job again and replaces every result file.
        (directory / "run.json").write_text(json.dumps({"state": "running",
                                                        "started": time.time()}))
        (directory / "result.csv").write_bytes(csv[: len(csv) // 3])
        summary = redeliver()
        assert summary["rows"] == records
        assert summary["finished"] > first["finished"]
        assert (directory / "result.csv").read_bytes() == csv
        assert json.loads((directory / "run.json").read_text())["state"] == "done"
        leftovers = [path.name for path in directory.iterdir() if path.name.startswith(".")]
        assert leftovers == []
    finally:
        exit_status = stop_process(worker)
    assert exit_status == 0, worker_log.read_text(errors="replace")
    assert records == read_records(config.archive_dir).num_rows


def test_tasks_retry_on_broker_errors() -> None:
    """Every task retries a lost connection a bounded number of times with backoff."""
    from worker.fleet import run_fleet_job, run_part

    for task in (run_analysis, run_part, run_fleet_job):
        assert set(task.autoretry_for) == set(BROKER_ERRORS), task.name
        assert task.max_retries == TASK_RETRY["max_retries"], task.name
        assert task.retry_backoff == TASK_RETRY["retry_backoff"], task.name
        assert task.retry_backoff_max == TASK_RETRY["retry_backoff_max"], task.name
