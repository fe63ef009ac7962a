"""Jobs: submit an analysis, list and follow jobs, cancel them, download their results.

A job runs on this sensor's queue, or, when the body names ``sensors``, as a fleet job:
each named sensor runs its part on its own archive and a merge step on this sensor
combines the parts. A result requested before the job is done gets 409 Conflict.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, send_file, url_for
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from api.auth import requires
from api.context import celery_client, read_json_object, reset_celery_client, sensor_config
from api.errors import ApiError
from api.jobstore import (
    CANCEL_RECORD,
    FINAL_STATES,
    JOB_RECORD,
    JOB_STATES,
    RESULT_FORMATS,
    RUN_RECORD,
    job_directory,
    job_view,
    list_job_ids,
    load_job,
    write_job_record,
    write_json,
)
from api.openapi import document
from appliance.config import SRCID_PATTERN, Config
from appliance.jobspec import JobSpec, SpecError
from worker.celery_app import FLEET_JOB, RUN_ANALYSIS, fleet_queue

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")

#: Publishing retries when the broker is unreachable, so a request fails within seconds.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                 "interval_max": 1}
DEFAULT_PAGE = 50
MAX_PAGE = 1000


@bp.post("")
@requires("jobs")
@document(request_body="JobRequest", responses={202: "Job", 400: None, 413: None, 415: None,
                                                 503: None})
def submit_job() -> tuple[Response, int, dict[str, str]]:
    """Accept a job spec, record the job and queue it."""
    body = read_json_object()
    sensors = _take_sensors(body)
    if "analysis" not in body:
        raise ApiError(400, "missing 'analysis'; expected one of ra, cluster, sort, label, "
                       "dns", "analysis", None)
    body.setdefault("now", time.time())
    config = sensor_config()
    _apply_sensor_label_sources(body, config)
    try:
        spec = JobSpec.from_dict(body)
    except SpecError:
        raise
    except (ValueError, OverflowError, OSError) as error:
        # A 'now' or time far outside the calendar fails inside date arithmetic.
        raise ApiError(400, f"invalid time range {body.get('time')!r} with now = "
                       f"{body.get('now')!r}: {error}; use epoch seconds of a real date",
                       "now", body.get("now")) from None
    if sensors is not None:
        _check_fleet_spec(spec)

    job_id = str(uuid.uuid4())
    spec_dict = spec.to_dict()
    record = {"id": job_id, "srcid": config.srcid, "queue": config.queue,
              "sensors": sensors, "submitted": time.time(), "spec": spec_dict}
    write_job_record(job_id, record)
    _publish(job_id, spec, spec_dict, sensors, config)
    log.info("job %s: queued %s for %s", job_id, spec.analysis,
             ",".join(sensors) if sensors else config.queue)

    location = url_for("jobs.get_job", job_id=job_id)
    return jsonify(job_view(job_id, record, new=True)), 202, {"Location": location}


@bp.get("")
@requires("read")
@document(parameters=["state", "limit", "offset"], responses={200: "JobList", 400: None})
def list_jobs() -> Response:
    """List jobs, newest first, optionally only those in the given states."""
    states = _state_filter(request.args.get("state"))
    limit = _int_argument("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _int_argument("offset", 0, 0, 10**9)

    matching = []
    for _submitted, job_id, record in list_job_ids():
        view = job_view(job_id, record)
        if states is None or view["state"] in states:
            matching.append(view)
    page = matching[offset:offset + limit]
    links: dict[str, str] = {}
    if offset + limit < len(matching):
        links["next"] = url_for("jobs.list_jobs", state=request.args.get("state"),
                                limit=limit, offset=offset + limit)
    return jsonify({"jobs": page, "total": len(matching), "limit": limit, "offset": offset,
                    "links": links})


@bp.get("/<job_id>")
@requires("read")
@document(responses={200: "Job", 404: None})
def get_job(job_id: str) -> Response:
    """Return a job's state, progress, timings, spec, parts and result summary."""
    return jsonify(job_view(job_id, load_job(job_id)))


@bp.delete("/<job_id>")
@requires("jobs")
@document(responses={200: "Job", 404: None, 409: None})
def cancel_job(job_id: str) -> Response:
    """Cancel a queued or running job; a finished job gets 409 Conflict."""
    record = load_job(job_id)
    view = job_view(job_id, record)
    if view["state"] in FINAL_STATES:
        raise ApiError(409, f"job {job_id} is already {view['state']} and cannot be "
                       "cancelled", "state", view["state"])

    now = time.time()
    directory = job_directory(job_id)
    reason = "cancelled by a client"
    write_json(directory / CANCEL_RECORD, {"cancelled": now, "error": reason,
                                           "token": g.get("token_id"),
                                           "state_before": view["state"]})
    write_json(directory / RUN_RECORD, {"state": "cancelled", "error": reason,
                                        "started": view.get("started"), "finished": now})
    try:
        # terminate=True stops a running job: the worker sends SIGTERM to the pool
        # process that runs it and starts a new pool process.
        celery_client().control.revoke(job_id, terminate=True, signal="SIGTERM")
    except Exception as error:  # remote control is best effort; the run record decides
        log.warning("job %s: revoke broadcast failed (%s); the worker skips the job when "
                    "it reads the cancelled run record", job_id, error)
    log.info("job %s: cancelled (was %s)", job_id, view["state"])
    return jsonify(job_view(job_id, record))


@bp.get("/<job_id>/result")
@requires("read")
@document(parameters=["format"], responses={200: "Result", 400: None, 404: None, 409: None})
def get_result(job_id: str) -> Response:
    """Stream a finished job's rows as CSV, JSON, NDJSON, Parquet or argus text."""
    record = load_job(job_id)
    wanted = request.args.get("format") or record["spec"].get("output") or "json"
    if wanted not in RESULT_FORMATS:
        raise ApiError(400, f"unknown result format {wanted!r}; expected one of "
                       f"{', '.join(RESULT_FORMATS)}", "format", wanted)
    view = job_view(job_id, record)
    if view["state"] != "done":
        message = (f"job {job_id} is {view['state']}, so it has no result; poll "
                   f"GET /api/v1/jobs/{job_id} until its state is done")
        if view.get("error"):
            message += f": {view['error']}"
        raise ApiError(409, message, "state", view["state"])

    name, mimetype = RESULT_FORMATS[wanted]
    path = job_directory(job_id) / name
    if not path.is_file():
        raise ApiError(404, f"result file {name} of job {job_id} is missing; it expired or "
                       "was written by an older worker", "format", wanted)
    return send_file(path, mimetype=mimetype, download_name=f"{job_id}.{wanted}",
                     max_age=0)


def _publish(job_id: str, spec: JobSpec, spec_dict: dict[str, Any], sensors: list[str] | None,
             config: Config) -> None:
    """Send the job's task; on a broker failure remove the job record and raise 503."""
    if sensors is None:
        name, args, queue = RUN_ANALYSIS, [job_id, spec_dict], config.queue
    else:
        name, args, queue = FLEET_JOB, [job_id, spec_dict, sensors], fleet_queue(config.srcid)
    try:
        # An explicit argsrepr spares Celery a saferepr() walk over the whole spec.
        celery_client().send_task(name, args=args, task_id=job_id, queue=queue, retry=True,
                                  retry_policy=PUBLISH_RETRY,
                                  argsrepr=f"[{job_id!r}, <{spec.analysis} spec>]",
                                  kwargsrepr="{}")
    except (OperationalError, OSError, RuntimeError, RedisError) as error:
        reset_celery_client()
        directory = job_directory(job_id)
        (directory / JOB_RECORD).unlink(missing_ok=True)
        directory.rmdir()
        raise ApiError(503, f"job not queued: broker unreachable ({error}); check that the "
                       "broker is running and retry", "broker", None) from None


def _take_sensors(body: dict[str, Any]) -> list[str] | None:
    """Remove and validate ``sensors`` from a job body; None means this sensor only."""
    sensors = body.pop("sensors", None)
    if sensors is None:
        return None
    if not isinstance(sensors, list) or not sensors or len(sensors) > 256:
        raise ApiError(400, "sensors must be a list of 1 to 256 sensor ids", "sensors",
                       sensors)
    for srcid in sensors:
        if not isinstance(srcid, str) or not SRCID_PATTERN.fullmatch(srcid):
            raise ApiError(400, f"invalid sensor id {srcid!r}; expected 1 to 64 letters, "
                           "digits, '.', '_', ':' or '-'", "sensors", srcid)
    return list(dict.fromkeys(sensors))


def _check_fleet_spec(spec: JobSpec) -> None:
    if spec.analysis == "label":
        raise ApiError(400, "label jobs run on one sensor, because the GeoIP database is "
                       "configured per sensor; omit 'sensors'", "analysis", spec.analysis)
    if isinstance(spec.top, str) and spec.top.startswith("i"):
        raise ApiError(400, "an input-side record range (i...) has no meaning across "
                       "sensors; use an output range or omit 'sensors'", "top", spec.top)


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


def _state_filter(text: str | None) -> set[str] | None:
    if text is None or text == "":
        return None
    states = {part.strip() for part in text.split(",")}
    unknown = sorted(states - set(JOB_STATES))
    if unknown:
        raise ApiError(400, f"unknown job state {unknown[0]!r}; expected a comma-separated "
                       f"list of {', '.join(JOB_STATES)}", "state", text)
    return states


def _int_argument(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}", name, text)
    return value
