"""The Wirewatch REST API: a Flask app factory with one blueprint per resource.

Serve it with ``gunicorn 'api:create_app()'``. The sensor configuration comes from
$WIREWATCH_CONFIG (or the ``WIREWATCH_CONFIG_PATH`` key of the mapping given to
create_app, or a ready ``WIREWATCH`` Config object in it).
"""

from __future__ import annotations

# First, so that its allocator and thread settings apply before NumPy and pyarrow load.
import appliance  # noqa: F401

# isort: split
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from api import archives, capture, docs, health, jobs, metrics, sensors
from api.auth import check_token
from api.context import EXTENSION
from api.errors import register_error_handlers
from appliance.config import load_config

log = logging.getLogger(__name__)

#: Loggers of the packages the API runs code from.
PACKAGE_LOGGERS = ("api", "appliance", "worker")


def use_gunicorn_logging() -> None:
    """Send the Wirewatch packages' log records to gunicorn's error log, when under gunicorn.

    Gunicorn configures only its own loggers, so without this the API's INFO records
    (jobs queued, cancelled, capture daemon started) would be dropped.
    """
    gunicorn_log = logging.getLogger("gunicorn.error")
    if not gunicorn_log.handlers:
        return
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            continue
        for handler in gunicorn_log.handlers:
            logger.addHandler(handler)
        logger.setLevel(gunicorn_log.level)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API app; ``config`` overrides Flask settings (tests pass their own)."""
    use_gunicorn_logging()
    app = Flask(__name__)
    app.config.from_mapping(WIREWATCH_CONFIG_PATH=None, WIREWATCH=None)
    if config is not None:
        app.config.update(config)

    sensor = app.config["WIREWATCH"] or load_config(app.config["WIREWATCH_CONFIG_PATH"])
    # Largest request body accepted (413 above it); job specs and settings are small.
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = sensor.api.max_body_bytes
    app.extensions[EXTENSION] = {"config": sensor, "celery": None}

    register_error_handlers(app)
    app.before_request(check_token)
    for blueprint in (jobs.bp, capture.bp, health.bp, archives.bp, sensors.bp, metrics.bp,
                      docs.bp):
        app.register_blueprint(blueprint)
    log.info("API for sensor %s, results in %s", sensor.srcid, sensor.jobs.results_dir)
    return app
