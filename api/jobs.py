"""Jobs: submit an analysis to the sensor's queue, follow its state, fetch its result.

A job's directory ``<results_dir>/<job_id>/`` contains ``job.json`` (written here when the
job is accepted), ``run.json`` (written by the worker: state and timings) and the result
files. The result backend supplies the state and progress of queued and running jobs.
A result requested before the job is done gets 409 Conflict with the job's state.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file, url_for
from kombu.exceptions import OperationalError

from api.context import celery_client, read_json_object, sensor_config
from api.errors import ApiError
from appliance.config import Config
from appliance.jobspec import JobSpec
from worker.celery_app import RUN_ANALYSIS

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")

JOB_RECORD = "job.json"
RUN_RECORD = "run.json"
RESULT_FORMATS = {"csv": ("result.csv", "text/csv"), "json": ("result.json", "application/json")}
#: Celery states as the API reports them.
STATES = {"PENDING": "queued", "RECEIVED": "queued", "STARTED": "running",
          "PROGRESS": "running", "RETRY": "running", "SUCCESS": "done", "FAILURE": "failed",
          "REVOKED": "cancelled"}
#: Keys of the worker's run record shown as the result summary.
SUMMARY_KEYS = ("rows", "fields", "sha256", "input_records", "selected_records", "geoip")
#: Publishing retries when the broker is unreachable, so a request fails within seconds.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                 "interval_max": 1}


@bp.post("")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    """Accept a job spec, record the job and queue it for the sensor's worker."""
    body = read_json_object()
    if "analysis" not in body:
        raise ApiError(400, "missing 'analysis'; expected one of ra, cluster, sort, label, "
                       "dns", "analysis", None)
    body.setdefault("now", time.time())
    config = sensor_config()
    _apply_sensor_label_sources(body, config)
    spec = JobSpec.from_dict(body)

    job_id = str(uuid.uuid4())
    record = {"id": job_id, "srcid": config.srcid, "queue": config.queue,
              "submitted": time.time(), "spec": spec.to_dict()}
    directory = config.jobs.results_dir / job_id
    _write_json(directory / JOB_RECORD, record)

    try:
        celery_client().send_task(RUN_ANALYSIS, args=[job_id, spec.to_dict()], task_id=job_id,
                                  queue=config.queue, retry=True, retry_policy=PUBLISH_RETRY)
    except (OperationalError, OSError) as error:
        (directory / JOB_RECORD).unlink(missing_ok=True)
        directory.rmdir()
        raise ApiError(503, f"job not queued: broker unreachable ({error}); check that the "
                       "broker is running and retry", "broker", None) from None
    log.info("job %s: queued %s on %s", job_id, spec.analysis, config.queue)

    location = url_for("jobs.get_job", job_id=job_id)
    return jsonify(_job_view(job_id, record)), 202, {"Location": location}


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    """Return a job's state, progress, timings, spec and result summary."""
    return jsonify(_job_view(job_id, _load_job(job_id)))


@bp.get("/<job_id>/result")
def get_result(job_id: str) -> Response:
    """Return a finished job's rows as CSV or JSON (``?format=``, default: the spec's)."""
    record = _load_job(job_id)
    view = _job_view(job_id, record)
    if view["state"] != "done":
        message = (f"job {job_id} is {view['state']}, so it has no result yet; poll "
                   f"GET /api/v1/jobs/{job_id} until its state is done")
        if view.get("error"):
            message += f": {view['error']}"
        raise ApiError(409, message, "state", view["state"])

    wanted = request.args.get("format") or record["spec"].get("output") or "json"
    if wanted not in RESULT_FORMATS:
        raise ApiError(400, f"unknown result format {wanted!r}; expected csv or json",
                       "format", wanted)
    name, mimetype = RESULT_FORMATS[wanted]
    path = sensor_config().jobs.results_dir / job_id / name
    if not path.is_file():
        raise ApiError(404, f"result file {name} of job {job_id} is missing (expired?)",
                       "job_id", job_id)
    return send_file(path, mimetype=mimetype, download_name=f"{job_id}.{wanted}")


def _apply_sensor_label_sources(body: dict[str, Any], config: Config) -> None:
    """Fill the label sources from the sensor configuration; reject paths from clients.

    A client may not name files on the sensor, so the GeoIP database always comes from
    ``[geoip] country_db``. Raises ApiError (400) when a label job cannot run here.
    """
    label = body.get("label")
    if label is None:
        label = {}
    if not isinstance(label, dict):
        return  # JobSpec.from_dict reports the wrong type
    for key in ("geoip", "address_file"):
        if key in label:
            raise ApiError(400, f"label.{key} is a file path on the sensor and cannot be set "
                           "through the API; the GeoIP database comes from [geoip] country_db "
                           "in the sensor configuration", f"label.{key}", label[key])
    if body.get("analysis") != "label":
        return
    if config.geoip_country_db is None:
        raise ApiError(400, "this sensor has no GeoIP database; set [geoip] country_db in "
                       "its configuration", "analysis", "label")
    body["label"] = {**label, "geoip": str(config.geoip_country_db)}


def _load_job(job_id: str) -> dict[str, Any]:
    try:
        canonical = str(uuid.UUID(job_id))
    except ValueError:
        canonical = None
    path = sensor_config().jobs.results_dir / (canonical or "") / JOB_RECORD
    if canonical != job_id or not path.is_file():
        raise ApiError(404, f"no job with id {job_id}", "job_id", job_id)
    return _read_json(path)


FINAL_STATES = ("done", "failed")


def _job_view(job_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """Combine the job record, the worker's run record and the backend's state.

    The run record is the authority on a finished job. The worker writes it before the
    task returns, so it is read again after asking the backend: a job that finished
    between the two reads then shows its final record, never "done" without a result.
    """
    run_path = sensor_config().jobs.results_dir / job_id / RUN_RECORD
    run = _read_json(run_path) or {}
    backend: dict[str, Any] = {}
    if run.get("state") not in FINAL_STATES:
        backend = _backend_state(job_id)
        run = _read_json(run_path) or {}
    view: dict[str, Any] = {
        "id": job_id,
        "srcid": record.get("srcid"),
        "state": "queued",
        "progress": None,
        "submitted": record.get("submitted"),
        "started": run.get("started"),
        "finished": run.get("finished"),
        "seconds": run.get("seconds"),
        "timings": run.get("timings"),
        "spec": record.get("spec"),
        "result": None,
        "error": None,
        "links": {"self": url_for("jobs.get_job", job_id=job_id)},
    }
    if run.get("state") in FINAL_STATES:
        view["state"] = run["state"]
        view["error"] = run.get("error")
    else:
        view.update(backend)
        if view["state"] == "done":
            # A success without the worker's final run record is not readable yet.
            # A failure is kept: a killed worker may never write its run record.
            view["state"] = "running"
    if view["state"] == "done":
        view["result"] = {key: run[key] for key in SUMMARY_KEYS if key in run}
        view["links"].update({fmt: url_for("jobs.get_result", job_id=job_id, format=fmt)
                              for fmt in RESULT_FORMATS})
    return view


def _backend_state(job_id: str) -> dict[str, Any]:
    try:
        result = celery_client().AsyncResult(job_id)
        state = result.state
        info = result.info
    except Exception as error:  # the backend is a remote service; report, don't crash
        log.error("job %s: cannot read state from the result backend: %s", job_id, error)
        return {"state": "unknown", "error": f"result backend unreachable ({error})"}
    view: dict[str, Any] = {"state": STATES.get(state, state.lower())}
    if state == "PROGRESS" and isinstance(info, dict):
        view["progress"] = info
    if state == "FAILURE":
        view["error"] = str(info)
    return view


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
    os.replace(temporary, path)
