"""Prometheus metrics: capture counters, archive size, retention, queue depth and jobs.

Every scrape builds the values from the files and the broker (a custom collector), so
the numbers agree across gunicorn workers without shared memory.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.auth import requires
from api.context import celery_client, sensor_config
from api.jobstore import RUN_RECORD, list_job_ids, read_json
from api.openapi import document
from appliance.archive import iter_record_files
from appliance.config import Config
from worker.capture_status import read_status

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__, url_prefix="/api/v1")

SECONDS_PER_DAY = 86400.0


@bp.get("/metrics")
@requires("read")
@document(responses={200: "Metrics"})
def metrics() -> Response:
    """Return the sensor's metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SensorCollector(sensor_config()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class SensorCollector:
    """Collect the metrics of one sensor at scrape time."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def collect(self) -> Iterator[Metric]:
        yield from self._capture()
        yield from self._archive()
        yield from self._queue()
        yield from self._jobs()

    def _capture(self) -> Iterator[Metric]:
        status = read_status(self.config) or {}
        meter = status.get("meter") or {}
        packets = CounterMetricFamily("wirewatch_capture_packets", "Packets metered")
        packets.add_metric([], float(status.get("packets") or 0))
        records = CounterMetricFamily("wirewatch_capture_records", "Flow records written")
        records.add_metric([], float(status.get("records") or 0))
        drops = CounterMetricFamily("wirewatch_capture_dropped_packets",
                                    "Packets skipped as malformed or dropped, by reason",
                                    labels=["reason"])
        for key, value in sorted(meter.items()):
            if key.startswith(("malformed_", "dropped")) and isinstance(value, int | float):
                drops.add_metric([key], float(value))
        running = GaugeMetricFamily("wirewatch_capture_running",
                                    "1 while the capture daemon's state is running")
        running.add_metric([], 1.0 if status.get("state") == "running" else 0.0)
        yield from (packets, records, drops, running)

    def _archive(self) -> Iterator[Metric]:
        files = list(iter_record_files(self.config.archive_dir)) \
            if self.config.archive_dir.is_dir() else []
        sizes = [(path.stat().st_size, path.stat().st_mtime) for path in files]
        total = sum(size for size, _ in sizes)
        size_metric = GaugeMetricFamily("wirewatch_archive_bytes", "Bytes in record files")
        size_metric.add_metric([], float(total))
        count = GaugeMetricFamily("wirewatch_archive_files", "Record files in the archive")
        count.add_metric([], float(len(files)))
        yield from (size_metric, count)

        days = _retention_days_left(self.config, total, [mtime for _, mtime in sizes])
        if days is not None:
            left = GaugeMetricFamily("wirewatch_archive_retention_days_left",
                                     "Estimated days until the disk reaches its low-water "
                                     "mark at the archive's average growth rate")
            left.add_metric([], days)
            yield left

    def _queue(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("wirewatch_queue_depth", "Messages waiting in the queue",
                                  labels=["queue"])
        try:
            with celery_client().connection_for_read() as connection:
                channel = connection.default_channel
                _, messages, _ = channel.queue_declare(queue=self.config.queue, passive=True)
            depth.add_metric([self.config.queue], float(messages))
        except Exception as error:  # broker down or queue not declared yet
            log.warning("metrics: queue depth of %s unavailable: %s", self.config.queue, error)
        yield depth

    def _jobs(self) -> Iterator[Metric]:
        counts: Counter[tuple[str, str]] = Counter()
        seconds: dict[str, list[float]] = defaultdict(list)
        for _submitted, job_id, record in list_job_ids():
            run = read_json(self.config.jobs.results_dir / job_id / RUN_RECORD) or {}
            analysis = (record.get("spec") or {}).get("analysis", "unknown")
            state = run.get("state") or "queued"
            counts[(analysis, state)] += 1
            if state == "done" and isinstance(run.get("seconds"), int | float):
                seconds[analysis].append(float(run["seconds"]))
        jobs = GaugeMetricFamily("wirewatch_jobs", "Jobs on disk by analysis and state",
                                 labels=["analysis", "state"])
        for (analysis, state), number in sorted(counts.items()):
            jobs.add_metric([analysis, state], float(number))
        durations = GaugeMetricFamily("wirewatch_job_seconds_sum",
                                      "Total run time of finished jobs by analysis",
                                      labels=["analysis"])
        finished = GaugeMetricFamily("wirewatch_job_seconds_count",
                                     "Finished jobs counted in wirewatch_job_seconds_sum",
                                     labels=["analysis"])
        for analysis, values in sorted(seconds.items()):
            durations.add_metric([analysis], sum(values))
            finished.add_metric([analysis], float(len(values)))
        yield from (jobs, durations, finished)


def _retention_days_left(config: Config, total: int, mtimes: list[float]) -> float | None:
    """Estimate the days until archive growth fills the free space above the low-water mark.

    The growth rate is the archive's bytes over the span of its files' modification
    times. With less than an hour of history there is no estimate (None).
    """
    if len(mtimes) < 2 or total <= 0:
        return None
    span = max(mtimes) - min(mtimes)
    if span < 3600:
        return None
    rate = total / (span / SECONDS_PER_DAY)
    free = shutil.disk_usage(config.archive_dir).free
    headroom = max(0, free - config.api.disk_low_water_mb * 1024 * 1024)
    return round(headroom / rate, 3) if rate > 0 else None
