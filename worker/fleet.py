"""Fleet jobs: one analysis over several sensors' archives, merged on the coordinating sensor.

The coordinator task (queue ``fleet.<srcid>``) sends a Celery group of part tasks, one to
each chosen sensor's queue ``sensor.<srcid>``. Each part runs the spec on that sensor's
archive and returns its rows as a zstd-compressed Arrow IPC stream through the result
backend, because the sensors share no file system. A part larger than the coordinator's
``[jobs] fleet_part_max_bytes`` fails with a message instead of filling Redis. The
coordinator polls the parts until each is done, failed or past ``[jobs] fleet_timeout``,
so a sensor that is down makes the job partial, never hung. The merge:

* cluster: ``cluster_records`` again on the concatenated parts, so counters are summed,
  stime is the minimum and ltime the maximum per key;
* sort: the concatenated sorted runs sorted again by the same keys;
* ra, dns: the parts concatenated in stime order (stable, so ties keep sensor order).

An output ``top`` (-N) applies after the merge; the parts run without it.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from celery import group, shared_task

from appliance import jobs
from appliance.config import Config, sensor_queue
from appliance.jobspec import JobSpec, parse_record_range
from worker.celery_app import BROKER_ERRORS, FLEET_JOB, RUN_PART, TASK_RETRY
from worker.tasks import (
    config_of,
    fail,
    finish,
    is_cancelled,
    progress_reporter,
    run_spec,
    store_result,
    write_run_record,
)

log = logging.getLogger(__name__)

#: Seconds between checks of the parts' states.
POLL_INTERVAL = 0.2
#: Part states that end a sensor's part.
PART_FINAL = ("done", "failed", "timeout", "cancelled")


class PartTooLarge(Exception):
    """A sensor's part of a fleet job is larger than the coordinator accepts."""


@shared_task(name=RUN_PART, bind=True, **TASK_RETRY)
def run_part(self: Any, job_id: str, spec_dict: dict[str, Any],
             max_bytes: int | None = None) -> dict[str, Any]:
    """Run a fleet job's spec on this sensor's archive; return the rows as Arrow IPC.

    ``max_bytes`` is the coordinator's ``[jobs] fleet_part_max_bytes`` (this sensor's
    own setting when absent). A larger part raises PartTooLarge, so that sensor's part
    fails with a message and the fleet job is partial.
    """
    config = config_of(self.app)
    limit = max_bytes or config.jobs.fleet_part_max_bytes
    started = time.time()
    log.info("job %s: part on sensor %s started", job_id, config.srcid)
    result = run_spec(job_id, spec_dict, config, progress_reporter(self))
    ipc = encode_ipc(result.rows)
    if len(ipc) > limit:
        message = (f"job {job_id}: the part on sensor {config.srcid} is {len(ipc)} bytes "
                   f"of compressed Arrow IPC ({result.rows.num_rows} rows), above [jobs] "
                   f"fleet_part_max_bytes = {limit} of the coordinating sensor; narrow the "
                   "job with a time range or a filter, or raise that limit")
        log.error("%s", message)
        raise PartTooLarge(message)
    payload = base64.b64encode(ipc).decode("ascii")
    log.info("job %s: part on sensor %s finished, %d rows, %d bytes of Arrow IPC", job_id,
             config.srcid, result.rows.num_rows, len(ipc))
    return {"srcid": config.srcid, "rows": result.rows.num_rows, "fields": result.fields,
            "input_records": result.metadata.get("input_records"),
            "selected_records": result.metadata.get("selected_records"),
            "seconds": round(time.time() - started, 6), "arrow": payload}


@shared_task(name=FLEET_JOB, bind=True, **TASK_RETRY)
def run_fleet_job(self: Any, job_id: str, spec_dict: dict[str, Any],
                  sensors: list[str]) -> dict[str, Any]:
    """Fan a job out to ``sensors``, wait for the parts (bounded) and merge them."""
    config = config_of(self.app)
    directory = config.jobs.results_dir / job_id
    if is_cancelled(directory):
        log.info("job %s: cancelled before it started; skipped", job_id)
        return {"job_id": job_id, "state": "cancelled"}
    started = time.time()
    write_run_record(directory, {"state": "running", "started": started,
                                 "parts": {srcid: {"state": "queued"} for srcid in sensors}})
    log.info("job %s: fleet job over %s", job_id, ", ".join(sensors))

    spec = JobSpec.from_dict(spec_dict)
    part_spec = {**spec.to_dict(), "top": None}
    signatures = [self.app.signature(RUN_PART, args=(job_id, part_spec),
                                     kwargs={"max_bytes": config.jobs.fleet_part_max_bytes},
                                     queue=sensor_queue(srcid),
                                     expires=config.jobs.fleet_timeout)
                  for srcid in sensors]
    parts_result = group(signatures).apply_async()
    parts, tables = collect_parts(self, job_id, sensors, parts_result.results, config)
    if is_cancelled(directory):
        return {"job_id": job_id, "state": "cancelled"}

    if not tables:
        fail(directory, started, f"job {job_id}: no sensor returned a result: "
             + "; ".join(f"{srcid} {part['state']}" + (f" ({part['error']})"
                                                        if part.get("error") else "")
                         for srcid, part in parts.items()), {"parts": parts})
        return {"job_id": job_id, "state": "failed", "parts": parts}

    fields = next(part["fields"] for part in parts.values() if part["state"] == "done")
    merged = merge_parts(spec, tables)
    metadata = {"input_records": sum(p.get("input_records") or 0 for p in parts.values()),
                "selected_records": sum(p.get("selected_records") or 0
                                        for p in parts.values())}
    result = jobs.JobResult(spec, merged, fields, metadata)
    summary = store_result(job_id, result, directory)
    for part in parts.values():
        part.pop("fields", None)
    summary.update(parts=parts, partial=any(p["state"] != "done" for p in parts.values()))
    finish(directory, started, summary)
    log.info("job %s: fleet job merged %d rows from %d of %d sensors", job_id,
             merged.num_rows, len(tables), len(sensors))
    return summary


def collect_parts(task: Any, job_id: str, sensors: list[str], results: list[Any],
                  config: Config) -> tuple[dict[str, dict[str, Any]], list[pa.Table]]:
    """Poll the parts until each ends or the fleet timeout passes; return states and tables.

    Parts still unfinished at the deadline are revoked and marked "timeout".
    """
    parts: dict[str, dict[str, Any]] = {srcid: {"state": "queued"} for srcid in sensors}
    tables: dict[str, pa.Table] = {}
    deadline = time.monotonic() + config.jobs.fleet_timeout
    directory = config.jobs.results_dir / job_id
    backend_down = False
    while True:
        try:
            for srcid, async_result in zip(sensors, results, strict=True):
                if parts[srcid]["state"] in PART_FINAL:
                    continue
                _update_part(srcid, async_result, parts, tables)
        except BROKER_ERRORS as error:
            # The parts keep running on their sensors; read their states again until
            # the fleet deadline instead of failing the whole job.
            if not backend_down:
                log.warning("job %s: failed to read the parts' states (%s: %s); retrying until "
                            "the fleet deadline", job_id, type(error).__name__, error)
            backend_down = True
        else:
            if backend_down:
                log.info("job %s: result backend reachable again", job_id)
            backend_down = False
        pending = [srcid for srcid in sensors if parts[srcid]["state"] not in PART_FINAL]
        cancelled = is_cancelled(directory)
        if not pending or cancelled or time.monotonic() >= deadline:
            break
        _report(task, parts)
        time.sleep(POLL_INTERVAL)

    for srcid, async_result in zip(sensors, results, strict=True):
        if parts[srcid]["state"] in PART_FINAL:
            continue
        parts[srcid] = {"state": "cancelled" if cancelled else "timeout",
                        "error": None if cancelled else f"no result from sensor {srcid} "
                        f"within {config.jobs.fleet_timeout} s; is its worker running?"}
        log.warning("job %s: part on sensor %s %s", job_id, srcid, parts[srcid]["state"])
        try:
            async_result.revoke()
        except Exception as error:  # revoking is best effort; the part also expires
            log.warning("job %s: cannot revoke the part on %s: %s", job_id, srcid, error)
    return parts, [tables[srcid] for srcid in sensors if srcid in tables]


def _update_part(srcid: str, async_result: Any, parts: dict[str, dict[str, Any]],
                 tables: dict[str, pa.Table]) -> None:
    state = async_result.state
    if state in ("STARTED", "PROGRESS"):
        parts[srcid] = {"state": "running"}
    elif state == "SUCCESS":
        value = async_result.result
        tables[srcid] = decode_table(value.pop("arrow"))
        parts[srcid] = {"state": "done", **value}
    elif state in ("FAILURE", "REVOKED"):
        parts[srcid] = {"state": "failed", "error": str(async_result.result)}


def _report(task: Any, parts: dict[str, dict[str, Any]]) -> None:
    if task.request.id is None:
        return
    finished = sum(part["state"] in PART_FINAL for part in parts.values())
    percent = round(80.0 * finished / len(parts), 1)
    try:
        task.update_state(state="PROGRESS", meta={"step": f"{finished} of {len(parts)} "
                                                  "sensors finished", "percent": percent,
                                                  "parts": parts, "at": time.time()})
    except Exception as error:  # progress is advisory
        log.warning("fleet progress not stored: %s", error)


def merge_parts(spec: JobSpec, tables: list[pa.Table]) -> pa.Table:
    """Merge the sensors' partial results of ``spec`` into one result table."""
    combined = pa.concat_tables(tables, promote_options="default")
    if spec.analysis == "cluster":
        from appliance.analyses.cluster import cluster_records

        merged = cluster_records(combined, spec.keys or None, spec.mode)
    elif spec.analysis == "sort":
        from appliance.analyses.sort import sort_records

        merged = sort_records(combined, spec.keys or None)
    elif "stime" in combined.column_names and combined.num_rows:
        order = pc.sort_indices(combined, sort_keys=[("stime", "ascending")])
        merged = combined.take(order)
    else:
        merged = combined
    if spec.top is not None:
        merged = parse_record_range(spec.top).apply(merged)
    return merged


def encode_ipc(table: pa.Table) -> bytes:
    """Return a table as an Arrow IPC stream with zstd-compressed buffers."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def encode_table(table: pa.Table) -> str:
    """Return a table as a base64 Arrow IPC stream (the result backend carries JSON)."""
    return base64.b64encode(encode_ipc(table)).decode("ascii")


def decode_table(text: str) -> pa.Table:
    """Read a table written by ``encode_table``."""
    return pa.ipc.open_stream(base64.b64decode(text)).read_all()
