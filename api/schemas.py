"""JSON schemas and query parameters of the API, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from api.jobstore import JOB_STATES, RESULT_FORMATS
from appliance.config import CAPTURE_DEFAULTS
from appliance.jobspec import ANALYSES, OUTPUTS

_NULLABLE_STRING = {"type": "string", "nullable": True}
_NUMBER = {"type": "number", "nullable": True}

#: Keys of the [capture] section whose values may have a fraction.
_FRACTIONAL_KEYS = frozenset(["status_interval"])


def _json_type(key: str, default: Any) -> dict[str, str]:
    """Return the JSON schema type of a [capture] key, from the type of its default."""
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "number" if key in _FRACTIONAL_KEYS else "integer"}
    return {"type": "string"}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "field", "value"],
        "properties": {"error": {"type": "string"}, "field": _NULLABLE_STRING,
                       "value": {"nullable": True}},
    },
    "JobRequest": {
        "type": "object",
        "required": ["analysis"],
        "additionalProperties": False,
        "properties": {
            "analysis": {"type": "string", "enum": list(ANALYSES)},
            "time": {**_NULLABLE_STRING, "description": "-t time range, e.g. 2024/03/01.12"},
            "filter": {**_NULLABLE_STRING, "description": "ra filter, e.g. 'udp and port 53'"},
            "now": {"type": "number", "description": "epoch seconds for relative -t ranges"},
            "fields": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "keys": {"type": "array", "items": {"type": "string"}},
            "top": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
            "label": {"type": "object", "properties": {"port_labels": {"type": "boolean"}}},
            "output": {"type": "string", "enum": list(OUTPUTS)},
            "mode": {"type": "string", "enum": ["rmon", "norep"], "nullable": True},
            "render": {"type": "object"},
            "sensors": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "run on these sensors and merge (a fleet job)"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "state", "spec", "links"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "srcid": _NULLABLE_STRING,
            "sensors": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "state": {"type": "string", "enum": [*JOB_STATES, "unknown"]},
            "progress": _NUMBER,
            "submitted": _NUMBER, "started": _NUMBER, "finished": _NUMBER,
            "seconds": _NUMBER, "expires": _NUMBER,
            "timings": {"type": "object", "nullable": True},
            "spec": {"type": "object"},
            "parts": {"type": "object", "nullable": True,
                      "description": "per-sensor state of a fleet job"},
            "partial": {"type": "boolean", "nullable": True,
                        "description": "a fleet job whose result lacks some sensors"},
            "result": {"type": "object", "nullable": True},
            "error": _NULLABLE_STRING,
            "links": {"type": "object"},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "total", "limit", "offset"],
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                       "total": {"type": "integer"}, "limit": {"type": "integer"},
                       "offset": {"type": "integer"}, "links": {"type": "object"}},
    },
    "Capture": {
        "type": "object",
        "properties": {"capture": {"type": "object"}, "mode": _NULLABLE_STRING,
                       "config_file": _NULLABLE_STRING,
                       "status": {"type": "object", "nullable": True},
                       "daemon_signalled": {"type": "boolean"}},
    },
    "CaptureUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: _json_type(key, value) for key, value in CAPTURE_DEFAULTS.items()},
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string"},
                                                "version": {"type": "string"}}},
    "Ready": {"type": "object", "required": ["ready", "checks"],
              "properties": {"ready": {"type": "boolean"}, "checks": {"type": "object"}}},
    "ArchiveList": {
        "type": "object",
        "properties": {"files": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "bytes": {"type": "integer"},
            "records": {"type": "integer"}, "stime": _NUMBER, "ltime": _NUMBER,
            "active": {"type": "boolean"}}}}, "total_bytes": {"type": "integer"}},
    },
    "SensorList": {
        "type": "object",
        "properties": {"sensors": {"type": "array", "items": {"type": "object", "properties": {
            "srcid": {"type": "string"}, "state": {"type": "string"},
            "last_heartbeat": _NUMBER, "version": _NULLABLE_STRING,
            "capture": {"nullable": True}}}}},
    },
}

PARAMETERS: dict[str, dict[str, Any]] = {
    "state": {"name": "state", "in": "query", "required": False,
              "description": "comma-separated job states: " + ", ".join(JOB_STATES),
              "schema": {"type": "string"}},
    "limit": {"name": "limit", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
    "offset": {"name": "offset", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 0, "default": 0}},
    "format": {"name": "format", "in": "query", "required": False,
               "schema": {"type": "string", "enum": list(RESULT_FORMATS)}},
    "time": {"name": "t", "in": "query", "required": False,
             "description": "-t time range of the records, e.g. 2024/03/01.12-2024/03/01.13",
             "schema": {"type": "string"}},
    "filter": {"name": "filter", "in": "query", "required": False,
               "description": "ra filter expression", "schema": {"type": "string"}},
}
