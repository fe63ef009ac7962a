"""Liveness: the API responds, with the sensor id, queue and capture state."""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify

from api.context import sensor_config
from appliance import __version__

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the API runs; the capture state comes from the daemon's status file."""
    config = sensor_config()
    try:
        with open(config.capture_status_path, encoding="utf-8") as handle:
            capture_state = json.load(handle).get("state")
    except (OSError, json.JSONDecodeError):
        capture_state = None
    return jsonify({"status": "ok", "version": __version__, "srcid": config.srcid,
                    "queue": config.queue, "capture": capture_state})
