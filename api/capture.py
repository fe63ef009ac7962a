"""Capture settings: read the ``[capture]`` section, change it, and tell the daemon.

PUT takes a JSON object with ``[capture]`` keys; keys left out keep their current values.
The whole section is validated before the configuration file is rewritten (atomically),
then the capture daemon named by ``<data_dir>/capture.pid`` gets SIGHUP to apply it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

from api.auth import requires
from api.context import read_json_object, sensor_config
from api.errors import ApiError
from api.openapi import document
from appliance.config import Config, load_config, update_capture_section, validate_capture
from worker.capture_status import read_status

log = logging.getLogger(__name__)

bp = Blueprint("capture", __name__, url_prefix="/api/v1/capture")

#: Text that the capture daemon's command line contains, checked before signalling a pid.
DAEMON_MODULE = "worker.capture_daemon"
#: Log file of a daemon started through the API, in the data directory.
DAEMON_LOG = "capture-daemon.log"


@bp.get("")
@requires("read")
@document(responses={200: "Capture"})
def get_capture() -> Response:
    """Return the capture settings in the configuration file and the daemon's status."""
    config = _current_config()
    return jsonify(_capture_view(config, daemon=None))


@bp.route("", methods=["PUT", "PATCH"])
@requires("admin")
@document(request_body="CaptureUpdate", responses={200: "Capture", 400: None, 409: None,
                                                    413: None, 415: None})
def put_capture() -> Response:
    """Validate new capture settings, write them to the file and signal the daemon.

    PUT and PATCH both merge: keys left out keep their current values.
    """
    body = read_json_object()
    config = _current_config()
    if config.path is None:
        raise ApiError(409, "the API was started without a configuration file, so there is "
                       "nothing to update; start it with WIREWATCH_CONFIG=PATH", "config", None)

    section = _file_capture_section(config.path)
    section.update(body)
    capture = validate_capture(section, config.path.parent)
    update_capture_section(config.path, capture)
    log.info("capture settings written to %s: %s", config.path, capture.to_dict())

    signalled = signal_daemon(config.capture_pid_path)
    return jsonify(_capture_view(config.with_capture(capture), daemon=signalled))


def _current_config() -> Config:
    """Load the configuration file again, because a PUT or an operator may have changed it."""
    started = sensor_config()
    return load_config(started.path) if started.path is not None else started


def _file_capture_section(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        document = tomllib.load(handle)
    return dict(document.get("capture", {}))


def _capture_view(config: Config, daemon: bool | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "capture": config.capture.to_dict(),
        "mode": config.capture.mode or None,
        "config_file": str(config.path) if config.path else None,
        "status": read_status(config),
    }
    if daemon is not None:
        view["daemon_signalled"] = daemon
    return view


@bp.post("/start")
@requires("admin")
@document(responses={202: "Capture", 409: None})
def start_capture() -> tuple[Response, int]:
    """Start the capture daemon for this configuration file unless one runs."""
    config = _current_config()
    if config.path is None:
        raise ApiError(409, "the API was started without a configuration file, so it cannot "
                       "start a capture daemon; start it with WIREWATCH_CONFIG=PATH", "config",
                       None)
    if not config.capture.source:
        raise ApiError(409, "capture.source is empty, so there is nothing to capture; set it "
                       "with PUT /api/v1/capture first", "capture.source", "")
    running = daemon_pid(config.capture_pid_path)
    if running is not None:
        raise ApiError(409, f"the capture daemon already runs as pid {running}", "state",
                       "running")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with open(config.data_dir / DAEMON_LOG, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", DAEMON_MODULE, "--config",
                                    str(config.path)], stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    # Written at once, so a second start request sees this daemon before it writes the file.
    config.capture_pid_path.write_text(f"{process.pid}\n", encoding="ascii")
    log.info("started capture daemon pid %d for %s", process.pid, config.path)
    _reap_when_done(process)
    view = _capture_view(config, daemon=None)
    view["pid"] = process.pid
    return jsonify(view), 202


@bp.post("/stop")
@requires("admin")
@document(responses={202: "Capture", 409: None})
def stop_capture() -> tuple[Response, int]:
    """Ask the capture daemon to write out open flows and exit (SIGTERM)."""
    config = _current_config()
    if not signal_daemon(config.capture_pid_path, signal.SIGTERM):
        raise ApiError(409, "no capture daemon runs for this sensor", "state",
                       (read_status(config) or {}).get("state"))
    return jsonify(_capture_view(config, daemon=True)), 202


def _reap_when_done(process: subprocess.Popen[bytes]) -> None:
    """Wait for a daemon started here in a background thread, so it leaves no zombie.

    The daemon is a child of this API process (a gunicorn worker), which would otherwise
    never collect its exit status. If this process exits first, the daemon is adopted and
    reaped by init (or by the nearest subreaper).
    """

    def wait() -> None:
        status = process.wait()
        log.info("capture daemon pid %d exited with status %d", process.pid, status)

    threading.Thread(target=wait, name=f"reap-capture-{process.pid}", daemon=True).start()


def daemon_pid(pid_path: Path) -> int | None:
    """Return the pid of the running capture daemon named by ``pid_path``, or None."""
    try:
        pid = int(pid_path.read_text(encoding="ascii").strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if DAEMON_MODULE in command else None


def signal_daemon(pid_path: Path, signum: int = signal.SIGHUP) -> bool:
    """Send ``signum`` to the capture daemon in ``pid_path``; return False when none runs."""
    try:
        pid = int(pid_path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        log.info("no capture daemon pid file at %s; settings apply at its next start", pid_path)
        return False
    except (OSError, ValueError) as error:
        log.error("unreadable capture daemon pid file %s: %s", pid_path, error)
        return False

    # A stale pid file may name a pid that now belongs to another program.
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        if cmdline.exists() and DAEMON_MODULE not in cmdline.read_bytes().decode(errors="replace"):
            log.warning("pid %d in %s is not the capture daemon; not signalled", pid, pid_path)
            return False
        os.kill(pid, signum)
    except ProcessLookupError:
        log.info("capture daemon pid %d from %s is not running", pid, pid_path)
        return False
    except OSError as error:
        log.error("cannot signal capture daemon pid %d: %s", pid, error)
        return False
    log.info("sent %s to capture daemon pid %d", signal.Signals(signum).name, pid)
    return True
