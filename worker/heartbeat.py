"""Sensor heartbeats: each worker records that it is alive, the API lists the fleet.

With a Redis broker the heartbeats of every sensor share one Redis hash
(``wirewatch:heartbeats``, field = srcid), so a controller reads the whole fleet. With
the embedded SQLite broker there is no shared store, and each heartbeat is a JSON file
in ``<data_dir>/heartbeats/``, which only that machine's API reads.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from appliance import __version__
from appliance.atomic import write_json_atomically
from appliance.config import Config

log = logging.getLogger(__name__)

REDIS_KEY = "wirewatch:heartbeats"
HEARTBEAT_DIR = "heartbeats"


def _redis(config: Config) -> Any | None:
    if not config.broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(config.broker_url, socket_connect_timeout=2, socket_timeout=2)


def heartbeat_document(config: Config, state: str) -> dict[str, Any]:
    """Return a heartbeat: sensor id, queue, version, worker and capture state."""
    try:
        with open(config.capture_status_path, encoding="utf-8") as handle:
            capture = json.load(handle).get("state")
    except (OSError, json.JSONDecodeError):
        capture = None
    return {"srcid": config.srcid, "queue": config.queue, "state": state, "at": time.time(),
            "version": __version__, "host": socket.gethostname(), "pid": os.getpid(),
            "capture": capture}


def publish(config: Config, state: str = "up") -> None:
    """Record one heartbeat of this sensor."""
    document = heartbeat_document(config, state)
    client = _redis(config)
    if client is not None:
        with client:
            client.hset(REDIS_KEY, config.srcid, json.dumps(document))
        return
    write_json_atomically(config.data_dir / HEARTBEAT_DIR / f"{config.srcid}.json", document)


def read_all(config: Config) -> dict[str, dict[str, Any]]:
    """Return the latest heartbeat of every sensor that sent one, by srcid."""
    client = _redis(config)
    if client is not None:
        with client:
            raw = client.hgetall(REDIS_KEY)
        return {key.decode(): json.loads(value) for key, value in raw.items()}
    beats = {}
    directory = config.data_dir / HEARTBEAT_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            beats[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            log.warning("skipping heartbeat file %s: %s", path, error)
    return beats


class HeartbeatThread(threading.Thread):
    """Publish a heartbeat every ``[sensors] heartbeat_interval`` seconds until stopped."""

    def __init__(self, config: Config) -> None:
        super().__init__(name="wirewatch-heartbeat", daemon=True)
        self.config = config
        self.stopped = threading.Event()

    def run(self) -> None:
        log.info("heartbeat of sensor %s started, every %d s", self.config.srcid,
                 self.config.sensors.heartbeat_interval)
        failures = 0
        while not self.stopped.is_set():
            try:
                publish(self.config)
                failures = 0
            except Exception as error:  # a broker outage must not stop the worker
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.error("heartbeat of sensor %s failed (%d in a row): %s",
                              self.config.srcid, failures, error)
            self.stopped.wait(self.config.sensors.heartbeat_interval)

    def stop(self) -> None:
        """Stop the thread and record that this worker went down."""
        self.stopped.set()
        try:
            publish(self.config, state="stopped")
        except Exception as error:
            log.error("final heartbeat of sensor %s failed: %s", self.config.srcid, error)
        log.info("heartbeat of sensor %s stopped", self.config.srcid)
