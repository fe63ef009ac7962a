"""Sensors: the fleet with each sensor's last heartbeat, version and capture state."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, jsonify

from api.auth import requires
from api.context import sensor_config
from api.errors import ApiError
from api.openapi import document
from worker.heartbeat import read_all

log = logging.getLogger(__name__)

bp = Blueprint("sensors", __name__, url_prefix="/api/v1/sensors")


@bp.get("")
@requires("read")
@document(responses={200: "SensorList", 503: None})
def list_sensors() -> Response:
    """List the configured and heartbeating sensors: up, stale, stopped or unknown."""
    config = sensor_config()
    try:
        beats = read_all(config)
    except Exception as error:  # the heartbeat store is the broker, a remote service
        log.error("cannot read heartbeats: %s", error)
        raise ApiError(503, f"cannot read sensor heartbeats from the broker ({error}); "
                       "check that the broker is running", "broker", None) from None

    now = time.time()
    names = sorted(set(config.sensors.members) | set(beats) | {config.srcid})
    sensors = []
    for srcid in names:
        beat = beats.get(srcid)
        if beat is None:
            state = "unknown"
        elif beat.get("state") == "stopped":
            state = "stopped"
        else:
            state = "up" if now - beat["at"] <= config.sensors.stale_after else "stale"
        sensors.append({
            "srcid": srcid,
            "state": state,
            "queue": f"sensor.{srcid}",
            "last_heartbeat": beat.get("at") if beat else None,
            "version": beat.get("version") if beat else None,
            "host": beat.get("host") if beat else None,
            "capture": beat.get("capture") if beat else None,
            "member": srcid in config.sensors.members,
        })
    return jsonify({"sensors": sensors, "stale_after": config.sensors.stale_after})
