"""Sensor configuration: one TOML file with embedded defaults, validated when it is loaded.

The file has top-level keys ``data_dir`` and ``srcid`` and the sections ``[capture]``,
``[archive]``, ``[jobs]``, ``[broker]``, ``[geoip]``, ``[api]`` and ``[sensors]``; every key
is optional. Relative
paths in a file are resolved against the file's directory. ``WIREWATCH_CONFIG`` selects the
file, ``WIREWATCH_DATA_DIR`` sets the default data directory and ``WIREWATCH_BROKER_URL``
overrides ``[broker] url``. Writes go through a temporary file and a rename, so a reader
sees either the old file or the new one.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from appliance.atomic import write_atomically
from appliance.retention import RetentionPolicy

CONFIG_ENV = "WIREWATCH_CONFIG"
DATA_DIR_ENV = "WIREWATCH_DATA_DIR"
BROKER_ENV = "WIREWATCH_BROKER_URL"

#: File names inside the data directory.
BROKER_DB = "broker.sqlite"
RESULTS_DB = "results.sqlite"
CAPTURE_STATUS_NAME = "capture-status.json"
CAPTURE_PID_NAME = "capture.pid"

#: Suffixes that mark a capture source as a file to replay rather than an interface.
CAPTURE_FILE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")
#: Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no slash or white space.
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
#: Sensor ids become queue names (``sensor.<srcid>``) and record values.
SRCID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

MAX_USER_DATA_LEN = 65535
MAX_ROTATE_SECONDS = 7 * 86400
MAX_STATUS_INTERVAL = 86400.0

CAPTURE_DEFAULTS: dict[str, Any] = {
    "source": "",
    "status_interval": 60,
    "user_data_len": 128,
    "appbytes": True,
    "rotate_seconds": 3600,
    "rotate_bytes": 0,
    "filter": "",
    "snaplen": 65535,
    "promisc": True,
    "fanout_group": 0,
    "block_timeout_ms": 100,
    "ring_mb": 64,
}
ARCHIVE_DEFAULTS: dict[str, Any] = {
    "dir": "",
    "max_age_days": 0,
    "max_bytes": 0,
    "min_free_percent": 0,
}
#: Snap lengths below this cannot hold an Ethernet, IPv6 and TCP header.
MIN_SNAPLEN = 96
MAX_SNAPLEN = 262144
MAX_FANOUT_GROUP = 65535
MAX_BLOCK_TIMEOUT_MS = 10_000
MAX_RING_MB = 4096
JOBS_DEFAULTS: dict[str, Any] = {
    "results_dir": "",
    "result_ttl": 7 * 86400,
    "soft_time_limit": 600,
    "time_limit": 660,
    "fleet_timeout": 300,
    "fleet_part_max_bytes": 64 * 1024 * 1024,
}
#: Largest fleet part accepted by [jobs] fleet_part_max_bytes. A part travels base64 in
#: one Redis value (4/3 of its size), and Redis limits a value to 512 MB by default
#: (its proto-max-bulk-len setting).
MAX_FLEET_PART_BYTES = 384 * 1024 * 1024
API_DEFAULTS: dict[str, Any] = {
    "tokens": [],
    "max_body_bytes": 64 * 1024,
    "disk_low_water_mb": 512,
}
SENSORS_DEFAULTS: dict[str, Any] = {
    "members": [],
    "heartbeat_interval": 10,
    "stale_after": 60,
}
#: Token scopes: read (GET), jobs (submit and cancel jobs), admin (capture, everything).
TOKEN_SCOPES = ("read", "jobs", "admin")
TOKEN_KEYS = {"id", "sha256", "scopes", "created", "label"}
SECTION_KEYS: dict[str, set[str]] = {
    "capture": set(CAPTURE_DEFAULTS),
    "archive": set(ARCHIVE_DEFAULTS),
    "jobs": set(JOBS_DEFAULTS),
    "broker": {"url", "result_backend"},
    "geoip": {"country_db"},
    "api": set(API_DEFAULTS),
    "sensors": set(SENSORS_DEFAULTS),
}
TOP_LEVEL_KEYS = {"data_dir", "srcid"} | set(SECTION_KEYS)


class ConfigError(ValueError):
    """A configuration value is invalid; ``key`` is its dotted name (``capture.user_data_len``)."""

    def __init__(self, key: str, value: object, message: str) -> None:
        super().__init__(f"{key} = {value!r}: {message}")
        self.key = key
        self.value = value
        self.message = message


@dataclass(frozen=True)
class CaptureConfig:
    """The ``[capture]`` section: where packets come from and how flows are metered."""

    #: A capture file to replay (resolved path) or a network interface name; "" = none.
    source: str
    #: Seconds between status records of a long flow (argus -S).
    status_interval: float
    #: User-data bytes kept per direction (argus -U), 0..65535.
    user_data_len: int
    #: Whether sappbytes/dappbytes are counted (argus -A).
    appbytes: bool
    #: Length of an archive file's period, in seconds of packet time for a replay.
    rotate_seconds: int
    #: Size in bytes at which the active file is rotated early; 0 = by time only.
    rotate_bytes: int = 0
    #: tcpdump filter expression run in the kernel on a live interface; "" = every packet.
    filter: str = ""
    #: Bytes kept of each packet captured live.
    snaplen: int = 65535
    #: Whether a live interface is put in promiscuous mode.
    promisc: bool = True
    #: PACKET_FANOUT group shared by daemons capturing one interface together; 0 = none.
    fanout_group: int = 0
    #: Milliseconds after which the kernel hands over a ring block that is not full.
    block_timeout_ms: int = 100
    #: Size of the capture ring in MiB.
    ring_mb: int = 64

    @property
    def mode(self) -> str:
        """Return "replay" for a capture file, "live" for an interface, "" for no source."""
        if not self.source:
            return ""
        return "replay" if is_capture_file_name(self.source) else "live"

    def to_dict(self) -> dict[str, Any]:
        """Return the section as TOML-ready values."""
        return {
            "source": self.source,
            "status_interval": self.status_interval,
            "user_data_len": self.user_data_len,
            "appbytes": self.appbytes,
            "rotate_seconds": self.rotate_seconds,
            "rotate_bytes": self.rotate_bytes,
            "filter": self.filter,
            "snaplen": self.snaplen,
            "promisc": self.promisc,
            "fanout_group": self.fanout_group,
            "block_timeout_ms": self.block_timeout_ms,
            "ring_mb": self.ring_mb,
        }


@dataclass(frozen=True)
class JobsConfig:
    """The ``[jobs]`` section: where results go, how long they stay, how long a job may run."""

    results_dir: Path
    result_ttl: int
    soft_time_limit: int
    time_limit: int
    #: Seconds a fleet job waits for each sensor's part before marking it timed out.
    fleet_timeout: int = 300
    #: Largest compressed Arrow IPC size of one sensor's part of a fleet job, in bytes.
    fleet_part_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class TokenRecord:
    """One API token as stored in ``[[api.tokens]]``: the SHA-256 of the token, not the token."""

    id: str
    sha256: str
    scopes: tuple[str, ...]
    created: float
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the token as TOML-ready values."""
        return {"id": self.id, "sha256": self.sha256, "scopes": list(self.scopes),
                "created": self.created, "label": self.label}


@dataclass(frozen=True)
class ApiConfig:
    """The ``[api]`` section: tokens, request size limit and the disk low-water mark."""

    tokens: tuple[TokenRecord, ...] = ()
    max_body_bytes: int = 64 * 1024
    #: Free space (MiB) in the data directory below which /readyz reports not ready.
    disk_low_water_mb: int = 512


@dataclass(frozen=True)
class SensorsConfig:
    """The ``[sensors]`` section: the fleet's sensor ids and heartbeat timing in seconds."""

    members: tuple[str, ...] = ()
    heartbeat_interval: int = 10
    stale_after: int = 60


@dataclass(frozen=True)
class Config:
    """A validated sensor configuration; every path is absolute."""

    path: Path | None
    data_dir: Path
    srcid: str
    capture: CaptureConfig
    archive_dir: Path
    jobs: JobsConfig
    broker_url: str
    result_backend: str
    geoip_country_db: Path | None
    api: ApiConfig = ApiConfig()
    sensors: SensorsConfig = SensorsConfig()
    retention: RetentionPolicy = RetentionPolicy()

    @property
    def queue(self) -> str:
        """Return the Celery queue that this sensor's worker consumes."""
        return sensor_queue(self.srcid)

    @property
    def capture_status_path(self) -> Path:
        return self.data_dir / CAPTURE_STATUS_NAME

    @property
    def capture_pid_path(self) -> Path:
        return self.data_dir / CAPTURE_PID_NAME

    def with_capture(self, capture: CaptureConfig) -> Config:
        """Return a copy with another ``[capture]`` section."""
        return replace(self, capture=capture)


def sensor_queue(srcid: str) -> str:
    """Return the queue name for the sensor ``srcid``."""
    return f"sensor.{srcid}"


def is_capture_file_name(source: str) -> bool:
    """Tell whether a capture source names a file (path separator or capture suffix)."""
    return "/" in source or source.lower().endswith(CAPTURE_FILE_SUFFIXES)


def default_data_dir() -> Path:
    """Return the data directory used when the file sets none: $WIREWATCH_DATA_DIR or ./var."""
    return Path(os.environ.get(DATA_DIR_ENV) or "var").resolve()


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate the configuration file ``path`` (default: $WIREWATCH_CONFIG).

    With neither, the embedded defaults are used. Raises ConfigError for a missing or
    unreadable file, TOML syntax errors and invalid values.
    """
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        return parse_config({}, None)

    file = Path(chosen).expanduser().resolve()
    try:
        with open(file, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError("config", str(file), "file not found; create it or fix the "
                          f"path (set by argument or ${CONFIG_ENV})") from error
    except OSError as error:
        raise ConfigError("config", str(file), f"cannot read the file ({error})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", str(file), f"invalid TOML ({error})") from error
    return parse_config(document, file)


def parse_config(document: Mapping[str, Any], path: Path | None = None) -> Config:
    """Validate a parsed TOML document; ``path`` is the file it came from (for relative paths)."""
    _reject_unknown(document, TOP_LEVEL_KEYS, "")
    base = path.parent if path is not None else Path.cwd()
    sections = {name: _section(document, name) for name in SECTION_KEYS}

    data_dir = _path_value(document, "data_dir", base) or default_data_dir()
    srcid = _srcid(document.get("srcid", ""))
    capture = validate_capture(sections["capture"], base)
    archive_dir = _path_value(sections["archive"], "archive.dir", base) or data_dir / "archive"
    jobs = _jobs(sections["jobs"], base, data_dir)
    broker_url, result_backend = _broker(sections["broker"], data_dir)
    country_db = _path_value(sections["geoip"], "geoip.country_db", base)
    api = _api(sections["api"])
    sensors = _sensors(sections["sensors"])
    retention = validate_retention(sections["archive"])

    return Config(
        path=path,
        data_dir=data_dir,
        srcid=srcid,
        capture=capture,
        archive_dir=archive_dir,
        jobs=jobs,
        broker_url=broker_url,
        result_backend=result_backend,
        geoip_country_db=country_db,
        api=api,
        sensors=sensors,
        retention=retention,
    )


def validate_capture(section: Mapping[str, Any], base: Path | None = None) -> CaptureConfig:
    """Validate a ``[capture]`` mapping (missing keys take their defaults).

    A relative capture file path is resolved against ``base`` (default: the working
    directory) and must name an existing file. Raises ConfigError naming the key.
    """
    _reject_unknown(section, set(CAPTURE_DEFAULTS), "capture.")
    values = {**CAPTURE_DEFAULTS, **section}

    source = values["source"]
    if not isinstance(source, str):
        raise ConfigError("capture.source", source, "expected a capture file path or an "
                          "interface name (a string)")
    source = _capture_source(source.strip(), base or Path.cwd())

    status_interval = _number("capture.status_interval", values["status_interval"])
    if not 0 < status_interval <= MAX_STATUS_INTERVAL:
        raise ConfigError("capture.status_interval", values["status_interval"],
                          f"expected seconds greater than 0 and at most {MAX_STATUS_INTERVAL:g}")

    user_data_len = _integer("capture.user_data_len", values["user_data_len"])
    if not 0 <= user_data_len <= MAX_USER_DATA_LEN:
        raise ConfigError("capture.user_data_len", user_data_len,
                          f"expected bytes from 0 to {MAX_USER_DATA_LEN}")

    appbytes = values["appbytes"]
    if not isinstance(appbytes, bool):
        raise ConfigError("capture.appbytes", appbytes, "expected true or false")

    rotate_seconds = _integer("capture.rotate_seconds", values["rotate_seconds"])
    if not 1 <= rotate_seconds <= MAX_ROTATE_SECONDS:
        raise ConfigError("capture.rotate_seconds", rotate_seconds,
                          f"expected seconds from 1 to {MAX_ROTATE_SECONDS}")

    return CaptureConfig(
        source=source,
        status_interval=status_interval,
        user_data_len=user_data_len,
        appbytes=appbytes,
        rotate_seconds=rotate_seconds,
        **_live_capture(values),
    )


def _bounded(key: str, value: object, low: int, high: int, unit: str) -> int:
    number = _integer(key, value)
    if not low <= number <= high:
        raise ConfigError(key, number, f"expected {unit} from {low} to {high}")
    return number


def _live_capture(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the live-capture and size-rotation keys of ``[capture]``."""
    from appliance.live.bpf import FilterError, compile_filter

    expression = values["filter"]
    if not isinstance(expression, str):
        raise ConfigError("capture.filter", expression, "expected a tcpdump filter "
                          "expression (a string)")
    snaplen = _bounded("capture.snaplen", values["snaplen"], MIN_SNAPLEN, MAX_SNAPLEN, "bytes")
    try:
        compile_filter(expression.strip(), snaplen)
    except FilterError as error:
        raise ConfigError("capture.filter", expression, error.reason) from None
    promisc = values["promisc"]
    if not isinstance(promisc, bool):
        raise ConfigError("capture.promisc", promisc, "expected true or false")
    rotate_bytes = _integer("capture.rotate_bytes", values["rotate_bytes"])
    if rotate_bytes != 0 and rotate_bytes < 4096:
        raise ConfigError("capture.rotate_bytes", rotate_bytes,
                          "expected 0 (rotate by time only) or at least 4096 bytes")
    return {
        "rotate_bytes": rotate_bytes,
        "filter": expression.strip(),
        "snaplen": snaplen,
        "promisc": promisc,
        "fanout_group": _bounded("capture.fanout_group", values["fanout_group"], 0,
                                 MAX_FANOUT_GROUP, "a group id (0 = no fanout)"),
        "block_timeout_ms": _bounded("capture.block_timeout_ms", values["block_timeout_ms"],
                                     1, MAX_BLOCK_TIMEOUT_MS, "milliseconds"),
        "ring_mb": _bounded("capture.ring_mb", values["ring_mb"], 1, MAX_RING_MB, "MiB"),
    }


def validate_retention(section: Mapping[str, Any]) -> RetentionPolicy:
    """Validate the retention keys of ``[archive]`` (0 turns a limit off)."""
    values = {**ARCHIVE_DEFAULTS, **section}
    max_age_days = _number("archive.max_age_days", values["max_age_days"])
    max_bytes = _integer("archive.max_bytes", values["max_bytes"])
    min_free = _number("archive.min_free_percent", values["min_free_percent"])
    if max_age_days < 0:
        raise ConfigError("archive.max_age_days", max_age_days, "expected days >= 0 (0 = off)")
    if max_bytes < 0:
        raise ConfigError("archive.max_bytes", max_bytes, "expected bytes >= 0 (0 = off)")
    if not 0 <= min_free < 100:
        raise ConfigError("archive.min_free_percent", min_free,
                          "expected a percentage from 0 (off) to below 100")
    return RetentionPolicy(max_age_days=max_age_days, max_bytes=max_bytes,
                           min_free_percent=min_free)


def write_config(document: Mapping[str, Any], path: str | Path) -> None:
    """Write a TOML document to ``path`` atomically (temporary file, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, tomli_w.dumps(dict(document)))


def update_capture_section(path: str | Path, capture: CaptureConfig) -> None:
    """Replace the ``[capture]`` section of the file at ``path``, keeping every other key."""
    target = Path(path)
    try:
        with open(target, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        document = {}
    document["capture"] = capture.to_dict()
    write_config(document, target)


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = document.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(name, section, f"expected a [{name}] table")
    _reject_unknown(section, SECTION_KEYS[name], f"{name}.")
    return section


def _reject_unknown(mapping: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for key in mapping:
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(f"{prefix}{key}", mapping[key],
                              f"unknown key; expected one of: {choices}")


def _path_value(mapping: Mapping[str, Any], key: str, base: Path) -> Path | None:
    """Return the resolved path stored under the last part of ``key``, or None when empty."""
    value = mapping.get(key.rsplit(".", 1)[-1], "")
    if not isinstance(value, str):
        raise ConfigError(key, value, "expected a path (a string)")
    if not value.strip():
        return None
    return (base / Path(value.strip()).expanduser()).resolve()


def _srcid(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError("srcid", value, "expected a string")
    srcid = value.strip() or socket.gethostname()
    if not SRCID_PATTERN.fullmatch(srcid):
        raise ConfigError("srcid", srcid, "expected 1 to 64 letters, digits, '.', '_', ':' "
                          "or '-' (it becomes the queue name sensor.<srcid>)")
    return srcid


def _capture_source(source: str, base: Path) -> str:
    if not source:
        return ""
    if is_capture_file_name(source):
        file = (base / Path(source).expanduser()).resolve()
        if not file.is_file():
            raise ConfigError("capture.source", source,
                              f"capture file not found (looked at {file})")
        return str(file)
    if not INTERFACE_NAME.fullmatch(source):
        raise ConfigError("capture.source", source, "expected a capture file path (with a "
                          "'/' or a .pcap/.pcapng suffix) or an interface name of at most 15 "
                          "characters")
    return source


def _jobs(section: Mapping[str, Any], base: Path, data_dir: Path) -> JobsConfig:
    values = {**JOBS_DEFAULTS, **section}
    results_dir = _path_value(values, "jobs.results_dir", base) or data_dir / "results"
    ttl = _integer("jobs.result_ttl", values["result_ttl"])
    if ttl < 60:
        raise ConfigError("jobs.result_ttl", ttl, "expected at least 60 seconds")
    fleet_timeout = _integer("jobs.fleet_timeout", values["fleet_timeout"])
    if fleet_timeout < 1:
        raise ConfigError("jobs.fleet_timeout", fleet_timeout, "expected at least 1 second")
    part_max = _bounded("jobs.fleet_part_max_bytes", values["fleet_part_max_bytes"], 1024,
                        MAX_FLEET_PART_BYTES, "bytes")
    soft = _integer("jobs.soft_time_limit", values["soft_time_limit"])
    hard = _integer("jobs.time_limit", values["time_limit"])
    if soft < 1:
        raise ConfigError("jobs.soft_time_limit", soft, "expected at least 1 second")
    if hard <= soft:
        raise ConfigError("jobs.time_limit", hard,
                          f"expected more seconds than jobs.soft_time_limit ({soft})")
    return JobsConfig(results_dir=results_dir, result_ttl=ttl, soft_time_limit=soft,
                      time_limit=hard, fleet_timeout=fleet_timeout,
                      fleet_part_max_bytes=part_max)


def _api(section: Mapping[str, Any]) -> ApiConfig:
    values = {**API_DEFAULTS, **section}
    tokens = values["tokens"]
    if not isinstance(tokens, list):
        raise ConfigError("api.tokens", tokens, "expected an array of [[api.tokens]] tables")
    records = tuple(_token(index, item) for index, item in enumerate(tokens))
    max_body = _integer("api.max_body_bytes", values["max_body_bytes"])
    if max_body < 1024:
        raise ConfigError("api.max_body_bytes", max_body, "expected at least 1024 bytes")
    low_water = _integer("api.disk_low_water_mb", values["disk_low_water_mb"])
    if low_water < 0:
        raise ConfigError("api.disk_low_water_mb", low_water, "expected 0 or more MiB")
    return ApiConfig(tokens=records, max_body_bytes=max_body, disk_low_water_mb=low_water)


def _token(index: int, item: object) -> TokenRecord:
    key = f"api.tokens[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(key, item, "expected a table with id, sha256 and scopes")
    _reject_unknown(item, TOKEN_KEYS, f"{key}.")
    token_id, digest = item.get("id"), item.get("sha256")
    if not isinstance(token_id, str) or not re.fullmatch(r"[0-9a-f]{8,32}", token_id):
        raise ConfigError(f"{key}.id", token_id, "expected 8 to 32 lowercase hex digits")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(f"{key}.sha256", "(hidden)", "expected 64 lowercase hex digits")
    scopes = item.get("scopes")
    if not isinstance(scopes, list) or not scopes or any(s not in TOKEN_SCOPES for s in scopes):
        raise ConfigError(f"{key}.scopes", scopes,
                          f"expected a non-empty list of {', '.join(TOKEN_SCOPES)}")
    created = _number(f"{key}.created", item.get("created", 0))
    label = item.get("label", "")
    if not isinstance(label, str):
        raise ConfigError(f"{key}.label", label, "expected a string")
    return TokenRecord(id=token_id, sha256=digest, scopes=tuple(scopes), created=created,
                       label=label)


def _sensors(section: Mapping[str, Any]) -> SensorsConfig:
    values = {**SENSORS_DEFAULTS, **section}
    members = values["members"]
    if not isinstance(members, list) or any(not isinstance(m, str) for m in members):
        raise ConfigError("sensors.members", members, "expected a list of sensor ids")
    for member in members:
        if not SRCID_PATTERN.fullmatch(member):
            raise ConfigError("sensors.members", member, "expected a sensor id of 1 to 64 "
                              "letters, digits, '.', '_', ':' or '-'")
    interval = _integer("sensors.heartbeat_interval", values["heartbeat_interval"])
    stale = _integer("sensors.stale_after", values["stale_after"])
    if interval < 1:
        raise ConfigError("sensors.heartbeat_interval", interval, "expected at least 1 second")
    if stale <= interval:
        raise ConfigError("sensors.stale_after", stale, "expected more seconds than "
                          f"sensors.heartbeat_interval ({interval})")
    return SensorsConfig(members=tuple(members), heartbeat_interval=interval, stale_after=stale)


def _broker(section: Mapping[str, Any], data_dir: Path) -> tuple[str, str]:
    """Return (broker URL, result backend URL); empty means SQLite files in the data dir."""
    url = os.environ.get(BROKER_ENV) or section.get("url", "")
    backend = section.get("result_backend", "")
    for key, value in (("broker.url", url), ("broker.result_backend", backend)):
        if not isinstance(value, str):
            raise ConfigError(key, value, "expected a URL string")
    url = url.strip()
    backend = backend.strip()
    if not url:
        return (f"sqla+sqlite:///{data_dir / BROKER_DB}",
                backend or f"db+sqlite:///{data_dir / RESULTS_DB}")
    if not re.match(r"^[a-z][a-z0-9+.-]*://", url):
        raise ConfigError("broker.url", url, "expected a URL such as "
                          "redis://127.0.0.1:6379/0 (or empty for the embedded SQLite broker)")
    if not backend:
        if not url.startswith(("redis://", "rediss://")):
            raise ConfigError("broker.result_backend", backend, "set a result backend URL; "
                              "only a Redis broker URL doubles as the result backend")
        backend = url
    return url, backend


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, "expected an integer")
    return value


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, value, "expected a number")
    return float(value)
