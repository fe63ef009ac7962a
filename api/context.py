"""Per-app services the views use: the sensor configuration and the Celery client."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from flask import current_app, request

from api.errors import ApiError
from appliance.config import Config, ConfigError, TokenRecord, load_config
from worker.celery_app import make_celery

log = logging.getLogger(__name__)

EXTENSION = "wirewatch"
_token_lock = threading.Lock()


def sensor_config() -> Config:
    """Return the configuration the app was started with."""
    return current_app.extensions[EXTENSION]["config"]


class PublishOnlyRedisBackend(RedisBackend):
    """Redis result backend of the API: sending a task subscribes to nothing.

    Celery's Redis backend subscribes to a task's result channel on every send, so that
    ``AsyncResult.get()`` can wait for it. The API never waits, because clients poll the
    job view, so the subscription would only cost two Redis round trips per submission.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


def celery_client() -> Celery:
    """Return the Celery app used to send tasks and read their state (built on first use)."""
    services = current_app.extensions[EXTENSION]
    if services.get("celery") is None:
        client = make_celery(services["config"])
        # A request reports a backend outage at once rather than retrying like a worker.
        client.conf.result_backend_always_retry = False
        backend_url = client.conf.result_backend or ""
        if backend_url.startswith(("redis://", "rediss://")):
            # Celery's "module.Class+url" form selects a backend class for a URL.
            client.conf.result_backend = \
                f"{__name__}.{PublishOnlyRedisBackend.__name__}+{backend_url}"
        services["celery"] = client
    return services["celery"]


def reset_celery_client() -> None:
    """Drop the Celery client after a broker or backend error, so the next use reconnects.

    Celery's Redis result consumer stays broken after it gives up reconnecting.
    """
    current_app.extensions[EXTENSION]["celery"] = None


def current_tokens() -> tuple[TokenRecord, ...]:
    """Return the API tokens, reading the configuration file again when it has changed.

    A file that became invalid is logged and the tokens loaded before stay in force.
    """
    services = current_app.extensions[EXTENSION]
    config: Config = services["config"]
    if config.path is None:
        return config.api.tokens
    try:
        status = config.path.stat()
        stamp = (status.st_mtime_ns, status.st_ino, status.st_size)
    except OSError as error:
        log.error("cannot stat configuration %s: %s; keeping the loaded tokens", config.path,
                  error)
        return services.get("tokens", config.api.tokens)
    with _token_lock:
        if services.get("tokens_stamp") != stamp:
            try:
                services["tokens"] = load_config(config.path).api.tokens
            except ConfigError as error:
                log.error("cannot reload tokens from %s: %s; keeping the loaded tokens",
                          config.path, error)
                services.setdefault("tokens", config.api.tokens)
            services["tokens_stamp"] = stamp
        return services["tokens"]


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
