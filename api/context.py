"""Per-app services the views use: the sensor configuration and the Celery client."""

from __future__ import annotations

import json
from typing import Any

from celery import Celery
from flask import current_app, request

from api.errors import ApiError
from appliance.config import Config
from worker.celery_app import make_celery

EXTENSION = "wirewatch"


def sensor_config() -> Config:
    """Return the configuration the app was started with."""
    return current_app.extensions[EXTENSION]["config"]


def celery_client() -> Celery:
    """Return the Celery app used to send tasks and read their state (built on first use)."""
    services = current_app.extensions[EXTENSION]
    if services.get("celery") is None:
        services["celery"] = make_celery(services["config"])
    return services["celery"]


def read_json_object() -> dict[str, Any]:
    """Return the request body as a JSON object, or raise ApiError (415 or 400)."""
    if request.mimetype != "application/json":
        raise ApiError(415, f"expected Content-Type application/json, got "
                       f"{request.mimetype or 'none'}", "Content-Type", request.mimetype)
    text = request.get_data(as_text=True)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, f"invalid JSON: {error.msg} at line {error.lineno} column "
                       f"{error.colno}", "body", text[:200]) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"expected a JSON object, got {type(body).__name__}", "body",
                       text[:200])
    return body
