"""Job records on disk and the job view the API returns.

A job's directory ``<results_dir>/<job_id>/`` contains ``job.json`` (written by the API
when the job is accepted), ``run.json`` (state and timings, written by the worker, or
by the API when it cancels the job), ``cancel.json`` (written by the API when a client
cancels the job, and stronger than the run record) and the result files. The result
backend supplies the state and progress of queued and running jobs.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from flask import url_for

from api.context import celery_client, reset_celery_client, sensor_config
from api.errors import ApiError
from appliance.atomic import write_json_atomically
from worker.tasks import CANCEL_RECORD, JOB_RECORD, RUN_RECORD

log = logging.getLogger(__name__)

#: Result formats: file written by the worker and its media type.
RESULT_FORMATS = {
    "csv": ("result.csv", "text/csv"),
    "json": ("result.json", "application/json"),
    "ndjson": ("result.ndjson", "application/x-ndjson"),
    "parquet": ("result.parquet", "application/vnd.apache.parquet"),
    "text": ("result.txt", "text/plain"),
}
#: Celery states as the API reports them.
STATES = {"PENDING": "queued", "RECEIVED": "queued", "STARTED": "running",
          "PROGRESS": "running", "RETRY": "running", "SUCCESS": "done", "FAILURE": "failed",
          "REVOKED": "cancelled"}
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
#: Keys of the worker's run record shown as the result summary.
SUMMARY_KEYS = ("rows", "fields", "sha256", "input_records", "selected_records", "geoip")


def job_directory(job_id: str) -> Path:
    """Return the directory of a job id that is a canonical UUID, else raise ApiError (404)."""
    try:
        canonical = str(uuid.UUID(job_id))
    except ValueError:
        canonical = None
    if canonical != job_id:
        raise ApiError(404, f"no job with id {job_id}; job ids are UUIDs", "job_id", job_id)
    return sensor_config().jobs.results_dir / canonical


def load_job(job_id: str) -> dict[str, Any]:
    """Return the job record of ``job_id``; raise ApiError (404) when there is none."""
    record = read_json(job_directory(job_id) / JOB_RECORD)
    if record is None:
        raise ApiError(404, f"no job with id {job_id}", "job_id", job_id)
    return record


def job_view(job_id: str, record: dict[str, Any], new: bool = False) -> dict[str, Any]:
    """Combine the job record, the run record and the backend's state.

    ``new`` marks a job accepted in this request: it is queued, so nothing is read.

    The run record is the authority on a finished job. The worker writes it before the
    task returns, so it is read again after asking the backend: a job that finished
    between the two reads then shows its final record, never "done" without a result.
    """
    config = sensor_config()
    directory = config.jobs.results_dir / job_id
    run = {} if new else read_json(directory / RUN_RECORD) or {}
    backend: dict[str, Any] = {}
    if run.get("state") not in FINAL_STATES and not new:
        backend = backend_state(job_id)
        run = read_json(directory / RUN_RECORD) or {}
    if not new and run.get("state") != "cancelled":
        cancel = read_json(directory / CANCEL_RECORD)
        if cancel is not None:
            # A worker that was finishing when the client cancelled may have written
            # "done" or "failed" after the API's record; the cancellation wins.
            run = {**run, "state": "cancelled", "error": cancel.get("error"),
                   "finished": run.get("finished") or cancel.get("cancelled")}
    view: dict[str, Any] = {
        "id": job_id,
        "srcid": record.get("srcid"),
        "sensors": record.get("sensors"),
        "state": "queued",
        "progress": None,
        "submitted": record.get("submitted"),
        "started": run.get("started"),
        "finished": run.get("finished"),
        "seconds": run.get("seconds"),
        "expires": None,
        "timings": run.get("timings"),
        "spec": record.get("spec"),
        "parts": run.get("parts"),
        "partial": run.get("partial"),
        "result": None,
        "error": None,
        "links": {"self": url_for("jobs.get_job", job_id=job_id)},
    }
    if run.get("state") in FINAL_STATES:
        view["state"] = run["state"]
        view["error"] = run.get("error")
        view["progress"] = 100.0 if run["state"] == "done" else view["progress"]
    else:
        view.update(backend)
        if view["state"] == "done":
            # A success without the worker's final run record is not readable yet.
            # A failure is kept: a killed worker may never write its run record.
            view["state"] = "running"
    if view["finished"] is not None:
        view["expires"] = view["finished"] + config.jobs.result_ttl
    if view["state"] == "done":
        view["result"] = {key: run[key] for key in SUMMARY_KEYS if key in run}
        view["links"].update({fmt: url_for("jobs.get_result", job_id=job_id, format=fmt)
                              for fmt in RESULT_FORMATS})
    return view


def backend_state(job_id: str) -> dict[str, Any]:
    """Return the state and progress the result backend holds for a job."""
    try:
        # One read of the stored meta: AsyncResult.state and .info would each read it.
        meta = celery_client().backend.get_task_meta(job_id)
        state = meta["status"]
        info = meta.get("result")
    except Exception as error:  # the backend is a remote service; report, don't crash
        log.error("job %s: cannot read state from the result backend: %s", job_id, error)
        reset_celery_client()
        return {"state": "unknown", "error": f"result backend unreachable ({error})"}
    view: dict[str, Any] = {"state": STATES.get(state, state.lower())}
    if state == "PROGRESS" and isinstance(info, dict):
        view["progress"] = info.get("percent")
        view["step"] = info.get("step")
        if isinstance(info.get("parts"), dict):
            view["parts"] = info["parts"]
    if state == "FAILURE":
        view["error"] = str(info)
    return view


def list_job_ids() -> list[tuple[float, str, dict[str, Any]]]:
    """Return (submitted, id, record) of every job on disk, newest first."""
    results_dir = sensor_config().jobs.results_dir
    jobs = []
    if not results_dir.is_dir():
        return jobs
    for directory in results_dir.iterdir():
        record = read_json(directory / JOB_RECORD) if directory.is_dir() else None
        if record is None or record.get("id") != directory.name:
            continue
        jobs.append((float(record.get("submitted") or 0.0), directory.name, record))
    jobs.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return jobs


def read_json(path: Path) -> dict[str, Any] | None:
    """Return a JSON file's object, or None when the file does not exist or is damaged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError) as error:
        log.error("cannot read %s: %s", path, error)
        return None


def write_job_record(job_id: str, record: dict[str, Any]) -> None:
    """Create the directory of a new job and write its ``job.json`` (temporary file, rename).

    The directory is new and named by a random UUID, so a fixed temporary name cannot
    collide. The file is not fsynced: after a crash the queued message may name a job
    whose record is gone, and the API then reports that job as not found.
    """
    directory = job_directory(job_id)
    try:
        directory.mkdir()
    except FileNotFoundError:
        directory.mkdir(parents=True)
    temporary = directory / f".{JOB_RECORD}.tmp"
    temporary.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, directory / JOB_RECORD)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON file through a temporary file and a rename."""
    write_json_atomically(path, document)
