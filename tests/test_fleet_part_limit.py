"""The fleet part size limit, with a real Redis and a real worker of one sensor.

The sensor coordinates a fleet job over itself, so its worker runs both the part and the
merge. ``[jobs] fleet_part_max_bytes`` is set between the compressed size of an empty
part (the schema alone, under 2 KiB) and that of the full capture (over 8 KiB).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config import load_config
from tests.services import REPO, build_archive, service_env, stop_process
from tests.test_queue import run_job, token_client

pytestmark = pytest.mark.slow

CAPTURE = "http-wikipedia.pcap"
PART_LIMIT = 4096


def test_fleet_part_over_limit(redis_url: str, corpus_dir: Path,
                               write_sensor_config: Callable[..., Path], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_BROKER_URL", raising=False)
    srcid = f"l{uuid.uuid4().hex[:10]}"
    config_path = write_sensor_config(
        srcid=srcid, broker={"url": redis_url},
        jobs={"fleet_timeout": 60, "fleet_part_max_bytes": PART_LIMIT})
    config = load_config(config_path)
    assert config.jobs.fleet_part_max_bytes == PART_LIMIT
    assert build_archive(corpus_dir / CAPTURE, config.archive_dir, srcid) > 0
    client = token_client(config_path)
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli.main", "worker", "--config",
             str(config_path), "--concurrency", "2"], cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT, env=service_env(config_path, None))
    try:
        too_large = run_job(client, {"analysis": "ra", "sensors": [srcid]})
        small = run_job(client, {"analysis": "ra", "filter": "icmp", "sensors": [srcid]})
    finally:
        exit_status = stop_process(worker)
    assert exit_status == 0, worker_log.read_text(errors="replace")

    assert too_large["state"] == "failed", too_large
    part = too_large["parts"][srcid]
    assert part["state"] == "failed"
    assert f"above [jobs] fleet_part_max_bytes = {PART_LIMIT}" in part["error"]
    assert f"the part on sensor {srcid}" in part["error"]
    assert "narrow the job" in part["error"]
    assert srcid in too_large["error"]

    assert small["state"] == "done", small
    assert small["parts"][srcid]["state"] == "done"
    assert small["result"]["rows"] == 0
