"""The OpenAPI 3 document, generated from the app's routes and the views' declarations.

Each view declares its query parameters, request body and responses with
``@document(...)``. The summary is the first line of its docstring, and the security
requirement comes from its ``@requires`` scope. ``build_document(app)`` walks the URL map,
so a route added without a declaration still appears, with its path parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

from api.auth import OPEN, required_scope
from api.schemas import PARAMETERS, SCHEMAS
from appliance import __version__

DOC_ATTRIBUTE = "wirewatch_openapi"
View = TypeVar("View", bound=Callable[..., Any])

#: Media types of a 200 response that is not JSON.
RESPONSE_MEDIA = {
    "Result": {
        "text/csv": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        "text/plain": {"schema": {"type": "string"}},
    },
    "RecordStream": {
        "application/vnd.apache.arrow.stream": {"schema": {"type": "string",
                                                           "format": "binary"}},
    },
    "Metrics": {"text/plain": {"schema": {"type": "string"}}},
    "Html": {"text/html": {"schema": {"type": "string"}}},
}
STATUS_TEXT = {200: "OK", 202: "Accepted", 400: "Invalid request (the field is named)",
               401: "Missing, invalid or revoked token", 403: "Token lacks the scope",
               404: "Not found", 409: "Conflict with the resource's state",
               413: "Request body too large", 415: "Body is not JSON",
               503: "Broker, disk or capture not ready"}


def document(parameters: list[str] | None = None, request_body: str | None = None,
             responses: dict[int, str | None] | None = None) -> Callable[[View], View]:
    """Declare a view's query parameters, request body schema and responses."""

    def mark(view: View) -> View:
        setattr(view, DOC_ATTRIBUTE, {"parameters": parameters or [],
                                      "request_body": request_body,
                                      "responses": responses or {200: None}})
        return view

    return mark


def build_document(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI 3.0 document of every route under /api/."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda item: item.rule):
        if not rule.rule.startswith("/api/"):
            continue
        view = app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, view,
                                                                     rule.arguments)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Wirewatch sensor API", "version": __version__,
                 "description": "Flow-record analyses, capture control and fleet jobs of "
                                "a Wirewatch sensor. Send 'Authorization: Bearer <token>'."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(endpoint: str, view: Callable[..., Any], path_arguments: set[str]
               ) -> dict[str, Any]:
    declared = getattr(view, DOC_ATTRIBUTE, {"parameters": [], "request_body": None,
                                             "responses": {200: None}})
    summary = (view.__doc__ or endpoint).strip().splitlines()[0]
    scope = required_scope(view)
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string"}} for name in sorted(path_arguments)]
    parameters += [PARAMETERS[name] for name in declared["parameters"]]

    responses = {str(status): _response(status, schema)
                 for status, schema in declared["responses"].items()}
    operation: dict[str, Any] = {"operationId": endpoint.replace(".", "_"),
                                 "summary": summary, "parameters": parameters,
                                 "responses": responses}
    if scope is OPEN:
        operation["security"] = []
    else:
        operation["security"] = [{"bearer": []}]
        operation["x-scope"] = scope
        operation["description"] = f"Needs a token with scope `{scope}` (or `admin`)."
        responses.setdefault("401", _response(401, None))
        responses.setdefault("403", _response(403, None))
    if declared["request_body"]:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{declared['request_body']}"}}}}
    return operation


def _response(status: int, schema: str | None) -> dict[str, Any]:
    description = STATUS_TEXT.get(status, "Response")
    if status >= 400:
        schema = schema or "Error"
    if schema is None:
        return {"description": description}
    if schema in RESPONSE_MEDIA:
        return {"description": description, "content": RESPONSE_MEDIA[schema]}
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref":
                                                        f"#/components/schemas/{schema}"}}}}
