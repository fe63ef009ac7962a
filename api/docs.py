"""The OpenAPI document at /api/v1/openapi.json and a readable HTML page of it at /api/v1/docs."""

from __future__ import annotations

import html

from flask import Blueprint, Response, current_app, jsonify

from api.auth import requires
from api.openapi import build_document, document

bp = Blueprint("docs", __name__, url_prefix="/api/v1")


@bp.get("/openapi.json")
@requires("read")
@document(responses={200: None})
def openapi_json() -> Response:
    """Return the OpenAPI 3 document of this API."""
    return jsonify(build_document(current_app))


@bp.get("/docs")
@requires("read")
@document(responses={200: "Html"})
def docs_page() -> Response:
    """Return an HTML page listing every operation, its scope, parameters and responses."""
    spec = build_document(current_app)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>"
             f"{html.escape(spec['info']['title'])}</title><style>body{{font-family:sans-serif;"
             "max-width:60em;margin:auto}code{background:#eee}</style></head><body>",
             f"<h1>{html.escape(spec['info']['title'])} {spec['info']['version']}</h1>",
             f"<p>{html.escape(spec['info']['description'])}</p>",
             "<p>Machine-readable: <a href='openapi.json'>openapi.json</a></p>"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            scope = operation.get("x-scope", "none (open)")
            parts.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>"
                         f"<p>{html.escape(operation['summary'])}</p>"
                         f"<p>Token scope: <code>{html.escape(scope)}</code></p>")
            names = [param["name"] for param in operation["parameters"]]
            if names:
                parts.append("<p>Parameters: " + ", ".join(
                    f"<code>{html.escape(name)}</code>" for name in names) + "</p>")
            if "requestBody" in operation:
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                parts.append(f"<p>Body: <code>{html.escape(ref.rsplit('/', 1)[-1])}</code></p>")
            statuses = ", ".join(f"{code} {html.escape(item['description'])}"
                                 for code, item in operation["responses"].items())
            parts.append(f"<p>Responses: {statuses}</p>")
    parts.append("</body></html>")
    return Response("".join(parts), mimetype="text/html")
