"""The Celery application: broker, result backend and queue of one sensor.

``celery -A worker.celery_app worker -Q sensor.<srcid>`` starts a worker for the sensor
described by $WIREWATCH_CONFIG. Without a configured broker, kombu's SQLAlchemy transport
and Celery's database result backend keep their SQLite files in the data directory.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.exceptions import BackendError
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from appliance.config import Config, load_config

log = logging.getLogger(__name__)

#: Task names; the API sends tasks by name.
RUN_ANALYSIS = "wirewatch.run_analysis"
#: One sensor's part of a fleet job, sent to queue ``sensor.<srcid>``.
RUN_PART = "wirewatch.run_part"
#: A fleet job's fan-out and merge, sent to queue ``fleet.<srcid>`` of the API's sensor.
FLEET_JOB = "wirewatch.fleet_job"


#: Errors of a lost broker or result-backend connection. A task that raises one is
#: retried (see TASK_RETRY) instead of failing, because the job itself is fine.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, RedisConnectionError, RedisTimeoutError, BackendError, ConnectionError,
    TimeoutError)
#: Options of every Wirewatch task: retry on BROKER_ERRORS after a random delay of up to
#: 2, 4, 8 ... seconds (at most 60), at most 5 times, then fail.
TASK_RETRY: dict[str, Any] = {"autoretry_for": BROKER_ERRORS, "retry_backoff": 2,
                              "retry_backoff_max": 60, "retry_jitter": True, "max_retries": 5}
#: Publishing (a job's retry message, a fleet job's parts) retries for about 40 s while
#: the broker is unreachable, rather than Celery's default of under one second.
PUBLISH_RETRY_POLICY = {"max_retries": 10, "interval_start": 0.5, "interval_step": 1.0,
                        "interval_max": 5.0}


def fleet_queue(srcid: str) -> str:
    """Return the queue of the fleet jobs that the sensor ``srcid`` coordinates."""
    return f"fleet.{srcid}"


def make_celery(config: Config) -> Celery:
    """Build a Celery app for ``config``: its broker, result backend, queue and time limits."""
    if config.broker_url.startswith("sqla+sqlite:"):
        config.data_dir.mkdir(parents=True, exist_ok=True)

    app = Celery("wirewatch", broker=config.broker_url, backend=config.result_backend,
                 include=["worker.tasks", "worker.fleet"])
    app.conf.update(
        task_default_queue=config.queue,
        task_routes={RUN_ANALYSIS: {"queue": config.queue},
                     FLEET_JOB: {"queue": fleet_queue(config.srcid)}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=config.jobs.soft_time_limit,
        task_time_limit=config.jobs.time_limit,
        result_expires=config.jobs.result_ttl,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        # Storing a state or result retries through a Redis restart instead of failing.
        result_backend_always_retry=True,
        result_backend_max_retries=10,
        broker_transport_options=_transport_options(config),
        worker_hijack_root_logger=True,
    )
    # Tasks read the archive and results paths from here rather than from global state.
    app.wirewatch_config = config
    return app


def _transport_options(config: Config) -> dict[str, Any]:
    if config.broker_url.startswith(("redis://", "rediss://")):
        # A job may run up to its hard limit; redelivery must not start before that.
        return {"visibility_timeout": config.jobs.time_limit + 60}
    return {}


_app: Celery | None = None
_heartbeat: Any = None


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Start publishing this sensor's heartbeat once the worker consumes its queue."""
    global _heartbeat
    from worker.heartbeat import HeartbeatThread

    config = getattr(getattr(sender, "app", None), "wirewatch_config", None)
    if config is None or _heartbeat is not None:
        return
    _heartbeat = HeartbeatThread(config)
    _heartbeat.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def __getattr__(name: str) -> Any:
    """Build the module-level ``app`` on first use, so importing this module reads no file."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_celery(load_config())
            log.info("Celery app for sensor queue %s, broker %s", _app.conf.task_default_queue,
                     _app.conf.broker_url.split("://", 1)[0])
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
