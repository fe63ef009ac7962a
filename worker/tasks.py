"""The Celery task that runs one analysis job on this sensor's archive.

The task is a thin wrapper: it rebuilds the job spec, reads the archive, calls
appliance.jobs and writes the result files. Result files live in
``<results_dir>/<job_id>/``; the result backend holds only state and progress.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from appliance import jobs
from appliance.archive import RecordFileError, read_records
from appliance.config import Config, load_config
from appliance.jobspec import JobSpec, SpecError
from worker.celery_app import RUN_ANALYSIS

log = logging.getLogger(__name__)

#: Files in a job's directory: the API writes the job record, the worker the run record.
JOB_RECORD = "job.json"
RUN_RECORD = "run.json"


class JobFailed(Exception):
    """A job could not produce a result; the message names the job and the reason."""


@shared_task(name=RUN_ANALYSIS, bind=True)
def run_analysis(self: Any, job_id: str, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Run the analysis ``spec_dict`` over the archive and write its result files."""
    config = _config_of(self.app)
    directory = config.jobs.results_dir / job_id
    started = time.time()
    log.info("job %s: started (%s) on %s", job_id, spec_dict.get("analysis"), config.srcid)
    _write_run_record(directory, {"state": "running", "started": started})

    try:
        summary = _run(self, job_id, spec_dict, config, directory)
    except SoftTimeLimitExceeded:
        message = (f"job {job_id}: exceeded the time limit of "
                   f"{config.jobs.soft_time_limit} s; narrow the time range or filter")
        _fail(directory, started, message)
        raise JobFailed(message) from None
    except (SpecError, RecordFileError) as error:
        _fail(directory, started, f"job {job_id}: {error}")
        raise JobFailed(f"job {job_id}: {error}") from None
    except Exception as error:
        log.exception("job %s: failed", job_id)
        _fail(directory, started, f"job {job_id}: {type(error).__name__}: {error}")
        raise

    finished = time.time()
    summary.update(started=started, finished=finished, seconds=round(finished - started, 6))
    _write_run_record(directory, {"state": "done", **summary})
    log.info("job %s: finished, %s rows in %.3f s", job_id, summary.get("rows"),
             finished - started)
    purge_expired_results(config.jobs.results_dir, config.jobs.result_ttl)
    return summary


def _run(task: Any, job_id: str, spec_dict: dict[str, Any], config: Config,
         directory: Path) -> dict[str, Any]:
    spec = JobSpec.from_dict(spec_dict)

    _progress(task, "reading the archive")
    records = read_records(config.archive_dir)
    log.info("job %s: read %d records from %s", job_id, records.num_rows, config.archive_dir)

    context = jobs.JobContext(job_id=job_id, progress=lambda step: _progress(task, step))
    result = jobs.execute(spec, records, context)

    _progress(task, "writing the result")
    metadata = jobs.write_result(result, directory)
    # The summary travels through the JSON result backend, so keep it to JSON types.
    return json.loads(json.dumps({"job_id": job_id, **metadata}, default=str))


def _progress(task: Any, step: str) -> None:
    if task.request.id is None:  # called directly, not through a worker
        return
    task.update_state(state="PROGRESS", meta={"step": step, "at": time.time()})


def _fail(directory: Path, started: float, message: str) -> None:
    log.error("%s", message)
    finished = time.time()
    _write_run_record(directory, {"state": "failed", "error": message, "started": started,
                                  "finished": finished, "seconds": round(finished - started, 6)})


def _config_of(app: Any) -> Config:
    config = getattr(app, "wirewatch_config", None)
    return config if config is not None else load_config()


def _write_run_record(directory: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` atomically, so the API never reads a half-written record."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".run.", dir=directory)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, default=str)
    os.replace(temporary, directory / RUN_RECORD)


def purge_expired_results(results_dir: Path, ttl: int, now: float | None = None) -> list[str]:
    """Delete job directories whose last change is older than ``ttl`` seconds; return their ids."""
    now = time.time() if now is None else now
    removed = []
    if not results_dir.is_dir():
        return removed
    for directory in results_dir.iterdir():
        if not directory.is_dir():
            continue
        try:
            age = now - directory.stat().st_mtime
            if age <= ttl:
                continue
            shutil.rmtree(directory)
        except OSError as error:
            log.error("job %s: cannot remove expired result (%s)", directory.name, error)
            continue
        log.info("job %s: result expired after %d s, removed", directory.name, int(age))
        removed.append(directory.name)
    return removed
