"""JSON error responses: every 4xx and 5xx carries ``{"error", "field", "value"}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from appliance.config import ConfigError
from appliance.jobspec import SpecError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error to report to the client with an HTTP status, naming the field and value."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 value: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.value = value
        self.headers = headers or {}


def error_response(status: int, message: str, field: str | None = None,
                   value: Any = None) -> tuple[Response, int]:
    """Build the JSON error body and status."""
    return jsonify({"error": message, "field": field, "value": _jsonable(value)}), status


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    message = error.description or error.name
    if status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"request body is larger than {limit} bytes; send a smaller job spec"
    response, status = error_response(status, message)
    if status >= 500:
        log.error("HTTP %d: %s", status, message)
    if status == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response, status


def _api_error(error: ApiError) -> tuple[Response, int]:
    if error.status >= 500:
        log.error("%s", error.message)
    response, status = error_response(error.status, error.message, error.field, error.value)
    response.headers.update(error.headers)
    return response, status


def _spec_error(error: SpecError) -> tuple[Response, int]:
    return error_response(400, str(error), error.field, error.value)


def _config_error(error: ConfigError) -> tuple[Response, int]:
    return error_response(400, str(error), error.key, error.value)


def _unexpected(error: Exception) -> tuple[Response, int]:
    log.exception("unhandled error: %s", error)
    return error_response(500, f"internal error ({type(error).__name__}); the API log "
                          "has the details")


def register_error_handlers(app: Flask) -> None:
    """Make the app respond to every error with a JSON body."""
    app.register_error_handler(Exception, _unexpected)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(SpecError, _spec_error)
    app.register_error_handler(ConfigError, _config_error)
    app.register_error_handler(HTTPException, _http_error)
