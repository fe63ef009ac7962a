"""The Celery task that runs one analysis job on this sensor's archive.

The task is a thin wrapper: it rebuilds the job spec, reads the archive, calls
appliance.jobs and writes the result files. Result files live in
``<results_dir>/<job_id>/``; the result backend holds only state and progress.
Running a job again (a redelivered message) returns the stored summary of a job that
is already done, and a job the API cancelled before it started is skipped.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from celery import shared_task, signals
from celery.exceptions import SoftTimeLimitExceeded

from appliance import jobs
from appliance.archive import RecordFileError, read_records
from appliance.atomic import write_atomically
from appliance.config import Config, load_config
from appliance.jobspec import JobSpec, SpecError
from appliance.query.render import render_lines
from worker.celery_app import BROKER_ERRORS, FLEET_JOB, RUN_ANALYSIS, TASK_RETRY

log = logging.getLogger(__name__)

#: Files in a job's directory: the API writes the job record, the worker the run record.
JOB_RECORD = "job.json"
RUN_RECORD = "run.json"
#: Written by the API when a client cancels the job, and kept until the job's directory
#: expires: once it exists the job is cancelled, whatever a worker writes afterwards.
CANCEL_RECORD = "cancel.json"
#: Tasks whose id is a job id and whose results live in the job's directory.
JOB_TASKS = (RUN_ANALYSIS, FLEET_JOB)
#: Result files of a job. A cancelled job's partial files are removed.
RESULT_FILES = ("result.csv", "result.json", "result.ndjson", "result.parquet", "result.txt",
                "meta.json")
#: Progress in percent reported after each step of a job.
PROGRESS_STEPS = {"reading the archive": 10.0, "selected": 40.0, "produced": 80.0,
                  "writing the result": 90.0}


class JobFailed(Exception):
    """A job could not produce a result; the message names the job and the reason."""


@shared_task(name=RUN_ANALYSIS, bind=True, **TASK_RETRY)
def run_analysis(self: Any, job_id: str, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Run the analysis ``spec_dict`` over the archive and write its result files."""
    config = config_of(self.app)
    directory = config.jobs.results_dir / job_id
    if is_cancelled(directory):
        log.info("job %s: cancelled before it started; skipped", job_id)
        return {"job_id": job_id, "state": "cancelled"}
    previous = read_run_record(directory)
    if previous.get("state") == "done" and (directory / "result.csv").is_file():
        log.info("job %s: already done; returning the stored summary", job_id)
        return previous

    started = time.time()
    log.info("job %s: started (%s) on %s", job_id, spec_dict.get("analysis"), config.srcid)
    write_run_record(directory, {"state": "running", "started": started})
    try:
        summary = _run(self, job_id, spec_dict, config, directory)
    except SoftTimeLimitExceeded:
        message = (f"job {job_id}: exceeded the time limit of "
                   f"{config.jobs.soft_time_limit} s; narrow the time range or filter")
        fail(directory, started, message)
        raise JobFailed(message) from None
    except (SpecError, RecordFileError) as error:
        fail(directory, started, f"job {job_id}: {error}")
        raise JobFailed(f"job {job_id}: {error}") from None
    except BROKER_ERRORS as error:
        # Not recorded as failed: Celery retries the task (TASK_RETRY), and the re-run
        # writes every result file again through a temporary file and a rename.
        log.warning("job %s: broker or result backend connection lost (%s: %s); retry %d "
                    "of %d", job_id, type(error).__name__, error, self.request.retries + 1,
                    self.max_retries)
        raise
    except Exception as error:
        log.exception("job %s: failed", job_id)
        fail(directory, started, f"job {job_id}: {type(error).__name__}: {error}")
        raise

    finish(directory, started, summary)
    log.info("job %s: finished, %s rows in %.3f s", job_id, summary.get("rows"),
             summary["seconds"])
    purge_due_results(config.jobs.results_dir, config.jobs.result_ttl)
    return summary


def _run(task: Any, job_id: str, spec_dict: dict[str, Any], config: Config,
         directory: Path) -> dict[str, Any]:
    progress = progress_reporter(task)
    result = run_spec(job_id, spec_dict, config, progress)
    progress("writing the result")
    return store_result(job_id, result, directory)


def run_spec(job_id: str, spec_dict: dict[str, Any], config: Config,
             progress: Callable[[str], None]) -> jobs.JobResult:
    """Read this sensor's archive and run the spec on it."""
    spec = JobSpec.from_dict(spec_dict)
    progress("reading the archive")
    records = read_records(config.archive_dir)
    log.info("job %s: read %d records from %s", job_id, records.num_rows, config.archive_dir)
    context = jobs.JobContext(job_id=job_id, progress=progress)
    return jobs.execute(spec, records, context)


def store_result(job_id: str, result: jobs.JobResult, directory: Path) -> dict[str, Any]:
    """Write every result format into ``directory``; return the JSON-safe summary."""
    metadata = jobs.write_result(result, directory)
    write_extra_formats(result, directory)
    # The summary travels through the JSON result backend, so keep it to JSON types.
    return json.loads(json.dumps({"job_id": job_id, **metadata}, default=str))


def write_extra_formats(result: jobs.JobResult, directory: Path) -> None:
    """Write result.ndjson, result.parquet and result.txt beside result.csv and result.json."""
    rows = json.loads((directory / "result.json").read_text(encoding="utf-8"))
    ndjson = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomically(directory / "result.ndjson", ndjson.encode())

    sink = pa.BufferOutputStream()
    pq.write_table(result.rows, sink, compression="zstd")
    write_atomically(directory / "result.parquet", sink.getvalue().to_pybytes())

    if result.spec.analysis == "dns":
        lines = [str(text) for text in result.rows.column("radump").to_pylist()] \
            if "radump" in result.rows.column_names else []
    else:
        lines = list(render_lines(result.rows, result.fields, result.render_options()))
    write_atomically(directory / "result.txt", "".join(line + "\n" for line in lines).encode())


def progress_reporter(task: Any) -> Callable[[str], None]:
    """Return a callback that reports a job step and its percentage through the backend."""

    def report(step: str) -> None:
        if task.request.id is None:  # called directly, not through a worker
            return
        percent = next((value for prefix, value in PROGRESS_STEPS.items()
                        if step.startswith(prefix) or prefix in step), None)
        try:
            task.update_state(state="PROGRESS",
                              meta={"step": step, "percent": percent, "at": time.time()})
        except Exception as error:  # progress is advisory; the job goes on without it
            log.warning("job %s: progress not stored (%s)", task.request.id, error)

    return report


def finish(directory: Path, started: float, summary: dict[str, Any]) -> None:
    """Record a finished job, unless the API cancelled it while it ran."""
    finished = time.time()
    summary.update(started=started, finished=finished, seconds=round(finished - started, 6))
    if is_cancelled(directory):
        log.info("job %s: finished after it was cancelled; result discarded",
                 directory.name)
        discard_results(directory)
        return
    write_run_record(directory, {"state": "done", **summary})


def fail(directory: Path, started: float, message: str,
         extra: dict[str, Any] | None = None) -> None:
    """Record a failed job with its error message, unless a client cancelled it."""
    log.error("%s", message)
    if is_cancelled(directory):
        log.info("job %s: failed after it was cancelled; kept as cancelled", directory.name)
        discard_results(directory)
        return
    finished = time.time()
    write_run_record(directory, {"state": "failed", "error": message, "started": started,
                                 "finished": finished, "seconds": round(finished - started, 6),
                                 **(extra or {})})


def config_of(app: Any) -> Config:
    """Return the sensor configuration the Celery app was built with."""
    config = getattr(app, "wirewatch_config", None)
    return config if config is not None else load_config()


def is_cancelled(directory: Path) -> bool:
    """Return True when a client cancelled the job whose directory is ``directory``."""
    if (directory / CANCEL_RECORD).exists():
        return True
    return read_run_record(directory).get("state") == "cancelled"


def discard_results(directory: Path) -> None:
    """Remove the result files of a cancelled job and their temporary files."""
    if not directory.is_dir():
        return
    # write_atomically names its temporary files ".<name>.<random>".
    temporary = [path for path in directory.iterdir()
                 if any(path.name.startswith(f".{name}.") for name in RESULT_FILES)]
    for path in [directory / name for name in RESULT_FILES] + temporary:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.error("job %s: cannot remove %s of the cancelled job: %s", directory.name,
                      path.name, error)


@signals.task_revoked.connect
def _discard_terminated_job(sender: Any = None, request: Any = None, terminated: bool = False,
                            **_: Any) -> None:
    """Remove the partial result of a job whose pool process was terminated by a revoke.

    Celery runs this in the worker's main process after it sent the signal to the pool
    process and stored the REVOKED state.
    """
    if not terminated or request is None or getattr(sender, "name", None) not in JOB_TASKS:
        return
    config = getattr(sender.app, "wirewatch_config", None)
    if config is None:
        return
    # NOTE: a pool process that ignored or delayed SIGTERM could still rename a result
    # file into place after this. The API does not serve it, because the job is cancelled.
    log.info("job %s: terminated by a revoke; removing its partial result", request.id)
    discard_results(config.jobs.results_dir / request.id)


def read_run_record(directory: Path) -> dict[str, Any]:
    """Return a job's run record, or {} when there is none yet."""
    try:
        with open(directory / RUN_RECORD, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_run_record(directory: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` atomically, so the API never reads a half-written record."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / RUN_RECORD,
                      json.dumps(record, indent=2, default=str).encode())


#: Seconds between scans of the results directory for expired jobs, per worker process.
PURGE_INTERVAL = 60.0
_last_purge: dict[Path, float] = {}


def purge_due_results(results_dir: Path, ttl: int) -> None:
    """Purge expired job directories unless this process did so in the last PURGE_INTERVAL.

    A scan stats every job directory, so running it after every job would cost a busy
    sensor time in proportion to the jobs it keeps.
    """
    now = time.monotonic()
    if now - _last_purge.get(results_dir, -PURGE_INTERVAL) < PURGE_INTERVAL:
        return
    _last_purge[results_dir] = now
    purge_expired_results(results_dir, ttl)


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
