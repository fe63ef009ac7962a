"""Storage of the capture daemon's status document, and how the API reads it.

The daemon always writes ``<data_dir>/capture-status.json``. With a Redis broker it also
publishes the same document to one Redis hash shared by the fleet (``wirewatch:capture``,
field = srcid), as the heartbeats do. Readers prefer Redis when it is configured and fall
back to the file when Redis has no entry for this sensor, cannot be reached, or contains an
older document than the file (a publication lost while Redis was down).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from appliance.config import Config

log = logging.getLogger(__name__)

REDIS_KEY = "wirewatch:capture"
#: Seconds between Redis publications of an unchanged state.
PUBLISH_PERIOD = 1.0


def uses_redis(config: Config) -> bool:
    """Return True when the configured broker is Redis."""
    return config.broker_url.startswith(("redis://", "rediss://"))


def _client(config: Config) -> Any:
    import redis

    return redis.Redis.from_url(config.broker_url, socket_connect_timeout=2, socket_timeout=2)


class StatusPublisher:
    """Publish status documents to Redis, at most once a second.

    A change of ``state`` is published at once, so that readers see "stopped" or
    "failed" without waiting. A document held back by the one-second limit is kept and
    sent by ``publish_pending``, which the daemon calls from its idle loop too. Redis
    errors are logged (the first, then every 60th in a row) and never raised: the
    status file stays the record of last resort.
    """

    def __init__(self, config: Config) -> None:
        self.srcid = config.srcid
        self.url = config.broker_url
        self.client = _client(config) if uses_redis(config) else None
        self.failures = 0
        self._published = float("-inf")
        self._state: object = None
        self._pending: str | None = None

    def publish(self, status: dict[str, Any], force: bool = False) -> bool:
        """Publish ``status`` unless one went out less than a second ago; return True if sent."""
        if self.client is None:
            return False
        now = time.monotonic()
        changed = status.get("state") != self._state
        self._pending = json.dumps(status, default=str)
        if not (force or changed or now - self._published >= PUBLISH_PERIOD):
            return False
        return self._send(now, status.get("state"))

    def publish_pending(self) -> bool:
        """Send the document held back by the one-second limit once it is due."""
        now = time.monotonic()
        if self.client is None or self._pending is None or now - self._published < PUBLISH_PERIOD:
            return False
        return self._send(now, self._state)

    def _send(self, now: float, state: object) -> bool:
        try:
            self.client.hset(REDIS_KEY, self.srcid, self._pending)
        except Exception as error:  # a broker outage must not stop the capture
            self.failures += 1
            if self.failures == 1 or self.failures % 60 == 0:
                log.error("publishing capture status of %s to %s failed (%d in a row): %s",
                          self.srcid, REDIS_KEY, self.failures, error)
            return False
        if self.failures:
            log.info("publishing capture status of %s to %s works again", self.srcid, REDIS_KEY)
        self.failures = 0
        self._published = now
        self._state = state
        self._pending = None
        return True

    def close(self) -> None:
        """Close the Redis connection."""
        if self.client is not None:
            self.client.close()


def read_status(config: Config) -> dict[str, Any] | None:
    """Return this sensor's capture status: from Redis when configured, else the file.

    The file wins only when it is newer (its ``updated`` time) than the Redis document.
    Returns None when neither contains a status document.
    """
    local = _read_file(config)
    if not uses_redis(config):
        return local
    shared = _read_redis(config)
    if shared is None:
        return local
    if local is not None and _updated(local) > _updated(shared):
        return local
    return shared


def _updated(document: dict[str, Any]) -> float:
    value = document.get("updated")
    return float(value) if isinstance(value, int | float) else 0.0


def _read_redis(config: Config) -> dict[str, Any] | None:
    try:
        with _client(config) as client:
            raw = client.hget(REDIS_KEY, config.srcid)
    except Exception as error:  # fall back to the file when Redis is unreachable
        log.warning("cannot read capture status of %s from Redis, using %s: %s",
                    config.srcid, config.capture_status_path, error)
        return None
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        log.error("capture status of %s in Redis %s is not JSON: %s", config.srcid,
                  REDIS_KEY, error)
        return None
    return document if isinstance(document, dict) else None


def _read_file(config: Config) -> dict[str, Any] | None:
    path = config.capture_status_path
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        log.error("cannot read capture status %s: %s", path, error)
        return None
    return document if isinstance(document, dict) else None
