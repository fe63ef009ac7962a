"""Cancelling a running job through the API, with a real Redis and a real Celery worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from appliance.archive import RecordWriter, read_records
from appliance.config import load_config
from tests.services import build_archive, start_worker, stop_process, wait_for
from tests.test_queue import run_job, token_client

pytestmark = pytest.mark.slow

CAPTURE = "dns-udp-basic.pcap"
#: Copies of the capture's records in the archive. Writing the text and JSON results of
#: this many records takes seconds, which leaves time to cancel the job while it runs.
COPIES = 1500


def long_job_archive(corpus_dir: Path, archive_dir: Path, srcid: str,
                     copies: int = COPIES) -> int:
    """Write an archive of the capture's records repeated ``copies`` times; return its size."""
    build_archive(corpus_dir / CAPTURE, archive_dir, srcid)
    records = read_records(archive_dir)
    with RecordWriter(archive_dir / "copies.arrows") as writer:
        writer.write(pa.concat_tables([records] * (copies - 1)))
    return read_records(archive_dir).num_rows


def test_cancel_running_job(redis_url: str, corpus_dir: Path,
                            write_sensor_config: Callable[..., Path], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    srcid = f"c{uuid.uuid4().hex[:10]}"
    config_path = write_sensor_config(srcid=srcid, broker={"url": redis_url})
    config = load_config(config_path)
    assert long_job_archive(corpus_dir, config.archive_dir, srcid) > 50_000
    client = token_client(config_path)
    worker_log = tmp_path / "worker.log"
    worker = start_worker(config_path, config.queue, worker_log)
    try:
        response = client.post("/api/v1/jobs", json={"analysis": "ra"})
        assert response.status_code == 202
        job_id = response.get_json()["id"]
        directory = config.jobs.results_dir / job_id

        def running() -> bool:
            return client.get(f"/api/v1/jobs/{job_id}").get_json()["state"] == "running"

        wait_for(running, 60, f"job {job_id} to start")
        cancelled = client.delete(f"/api/v1/jobs/{job_id}")
        assert cancelled.status_code == 200, cancelled.get_json()
        assert cancelled.get_json()["state"] == "cancelled"

        # The worker stores REVOKED once the pool process running the job is gone.
        celery = client.application.extensions["wirewatch"]["celery"]
        wait_for(lambda: celery.backend.get_task_meta(job_id)["status"] == "REVOKED", 60,
                 f"job {job_id} to be revoked")
        assert f"Terminating {job_id}" in worker_log.read_text(errors="replace")

        # The worker survived and runs the next job.
        later = run_job(client, {"analysis": "ra", "filter": "udp", "top": "5"})
        assert later["state"] == "done", later
        assert later["result"]["rows"] == 5

        view = client.get(f"/api/v1/jobs/{job_id}").get_json()
        assert view["state"] == "cancelled"
        assert view["error"] == "cancelled by a client"
        result = client.get(f"/api/v1/jobs/{job_id}/result?format=csv")
        assert result.status_code == 409
        assert result.get_json()["value"] == "cancelled"
        again = client.delete(f"/api/v1/jobs/{job_id}")
        assert again.status_code == 409
        leftovers = sorted(path.name for path in directory.iterdir()
                           if path.name.startswith((".result", "result", ".meta", "meta")))
        assert leftovers == []
        assert (directory / "job.json").is_file()
    finally:
        exit_status = stop_process(worker)
    assert exit_status == 0, worker_log.read_text(errors="replace")
