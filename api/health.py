"""Liveness and readiness: /healthz (open to all) and /readyz (broker, disk, capture)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from flask import Blueprint, Response, jsonify

from api.auth import OPEN, requires
from api.context import celery_client, sensor_config
from api.openapi import document
from appliance import __version__
from appliance.config import Config
from worker.capture_status import read_status

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/healthz")
@requires(OPEN)
@document(responses={200: "Health"})
def healthz() -> Response:
    """Report that the API runs, with the sensor id, queue and capture state."""
    config = sensor_config()
    return jsonify({"status": "ok", "version": __version__, "srcid": config.srcid,
                    "queue": config.queue, "capture": capture_state(config)})


@bp.get("/readyz")
@requires("read")
@document(responses={200: "Ready", 503: "Ready"})
def readyz() -> tuple[Response, int]:
    """Report readiness: the broker accepts connections, the disk has room, capture runs."""
    config = sensor_config()
    checks = {"broker": _broker_check(), "disk": _disk_check(config),
              "capture": _capture_check(config)}
    ready = all(check["ok"] for check in checks.values())
    return jsonify({"ready": ready, "checks": checks}), 200 if ready else 503


def capture_state(config: Config) -> str | None:
    """Return the capture daemon's state (Redis or the status file), or None without one."""
    status = read_status(config)
    return None if status is None else status.get("state")


def broker_reachable() -> tuple[bool, str | None]:
    """Connect to the broker once; return (reachable, error text)."""
    try:
        with celery_client().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    except Exception as error:  # any transport error means not reachable
        return False, str(error)
    return True, None


def _broker_check() -> dict[str, Any]:
    ok, error = broker_reachable()
    if not ok:
        log.warning("readiness: broker unreachable: %s", error)
    return {"ok": ok, "error": error}


def _disk_check(config: Config) -> dict[str, Any]:
    directory = config.data_dir if config.data_dir.is_dir() else config.data_dir.parent
    free_mb = shutil.disk_usage(directory).free // (1024 * 1024)
    low_water = config.api.disk_low_water_mb
    return {"ok": free_mb >= low_water, "free_mb": free_mb, "low_water_mb": low_water}


def _capture_check(config: Config) -> dict[str, Any]:
    """A live capture must be running; a replay also counts once it has finished."""
    state = capture_state(config)
    ok = state == "running" or (state == "finished" and config.capture.mode == "replay")
    return {"ok": ok, "state": state}
