"""The capture daemon: packets from the configured source to flow records in the archive.

``python -m worker.capture_daemon --config PATH`` meters ``[capture] source`` into the
archive directory. A network interface is captured live through an AF_PACKET ring and
archive files rotate by wall time; a capture file is replayed and files rotate by packet
time. Either way files also rotate by size, the retention policy runs after each rotation
and once a minute, and records reach the active file at least once a second.

It writes its pid to ``<data_dir>/capture.pid`` and its progress to
``<data_dir>/capture-status.json``; with a Redis broker the same status document also goes
to the Redis hash ``wirewatch:capture`` (field = srcid), at most once a second.
SIGTERM or SIGINT flushes open flows, closes the archive and exits; SIGHUP reloads the
configuration file (an invalid file is logged and the running configuration kept).
After a replay ends the daemon stays up, idle, with state "finished", until it is stopped
or reloaded with another source. Under systemd (Type=notify) it sends READY=1 once
capturing, STATUS= lines, and WATCHDOG=1 pings.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from appliance.archive import ArchiveWriter, hold_for_status_interval
from appliance.atomic import write_json_atomically
from appliance.capture import CaptureSettings, FlowMeter, warm_up
from appliance.config import CaptureConfig, Config, ConfigError, load_config
from appliance.live import FilterError, LiveCaptureError, LiveSettings, RingSource
from appliance.pcapio import CaptureFileError, read_packets
from appliance.retention import enforce_retention
from worker.capture_status import StatusPublisher
from worker.systemd import Notifier

log = logging.getLogger(__name__)

#: Seconds between status file updates while packets flow.
STATUS_PERIOD = 1.0
#: Seconds between checks for a stop or reload request while idle.
IDLE_WAIT = 0.5
#: Packets per batch read from a capture file.
BATCH_SIZE = 65536
#: Seconds between flushes of the active file: records are readable at most this late.
FLUSH_PERIOD = 1.0
#: Seconds a live read waits for a ring block before the loop checks its timers.
READ_TIMEOUT = 0.2
#: Seconds between retention runs (one also follows every rotation).
RETENTION_PERIOD = 60.0
#: Capture settings that need the ring reopened (the flow table stays).
RING_KEYS = ("promisc", "fanout_group", "block_timeout_ms", "ring_mb")
#: Capture settings of the flow meter; a change writes out open flows first.
METER_KEYS = ("status_interval", "user_data_len", "appbytes")


class CaptureDaemon:
    """One sensor's capture loop: flow meter, archive writer and status file."""

    def __init__(self, config: Config, stop_event: threading.Event,
                 reload_event: threading.Event | None = None,
                 config_path: str | Path | None = None) -> None:
        self.config = config
        self.stop_event = stop_event
        self.reload_event = reload_event or threading.Event()
        self.config_path = config_path if config_path is not None else config.path
        self.writer = self._archive_writer(config.capture)
        self.meter = FlowMeter(self._settings(config.capture))
        self.status: dict[str, Any] = {
            "state": "starting", "srcid": config.srcid, "pid": os.getpid(),
            "source": config.capture.source, "packets": 0, "bytes": 0, "records": 0,
            "current_file": None, "last_rotation": None, "started": time.time(),
            "error": None, "kernel": None, "retention": None,
        }
        self._packet_time = 0.0
        self._status_written = 0.0
        self._flushed = 0.0
        self._retention_run = 0.0
        self._replayed_source: str | None = None
        self.ring: RingSource | None = None
        self.notifier = Notifier()
        self.publisher = StatusPublisher(config)
        self.batch_size = BATCH_SIZE

    def _archive_writer(self, capture: CaptureConfig) -> ArchiveWriter:
        # The flow meter writes a record at most two status intervals after its stime.
        return ArchiveWriter(self.config.archive_dir, capture.rotate_seconds,
                             capture.rotate_bytes,
                             hold_seconds=hold_for_status_interval(capture.status_interval))

    def _settings(self, capture: CaptureConfig) -> CaptureSettings:
        return CaptureSettings(status_interval=capture.status_interval,
                               user_data_len=capture.user_data_len,
                               appbytes=capture.appbytes, srcid=self.config.srcid)

    def run(self) -> int:
        """Capture until stopped; return the process exit status."""
        log.info("capture daemon started: srcid %s, source %s, archive %s", self.config.srcid,
                 self.config.capture.source or "(none)", self.config.archive_dir)
        try:
            while not self.stop_event.is_set():
                if self.reload_event.is_set():
                    self.reload()
                if self._replayed_source != self.config.capture.source:
                    self._start_source()
                else:
                    self.notifier.heartbeat()
                    self.publisher.publish_pending()
                    self.stop_event.wait(IDLE_WAIT)
        finally:
            self._shutdown()
        return 0

    def _start_source(self) -> None:
        """Replay the configured source once; a live source is reported as unsupported."""
        capture = self.config.capture
        self._replayed_source = capture.source
        self.status.update(source=capture.source, error=None)
        if capture.mode == "replay":
            self._replay(capture.source)
        elif capture.mode == "live":
            self._live(capture)
        else:
            self._set_failed("capture.source is empty; set it to a pcap or pcapng file")

    def _live(self, capture: CaptureConfig) -> None:
        """Capture from an interface until stopped or until a reload changes the source."""
        settings = LiveSettings(interface=capture.source, snaplen=capture.snaplen,
                                filter=capture.filter, promisc=capture.promisc,
                                fanout_group=capture.fanout_group,
                                block_size=1 << 20, block_count=capture.ring_mb,
                                block_timeout_ms=capture.block_timeout_ms)
        warm_up(self.meter.settings)
        try:
            self.ring = RingSource(settings)
        except (LiveCaptureError, FilterError) as error:
            self._set_failed(f"cannot capture: {error}")
            return
        self._set_state("running")
        try:
            while not self.stop_event.is_set():
                batch = self.ring.read(READ_TIMEOUT)
                if batch is not None and len(batch):
                    self._count(batch)
                    self._write(self.meter.process(batch))
                else:
                    # A quiet link: let status ticks and idle timeouts fire on wall time.
                    self._write(self.meter.advance(int(time.time() * 1_000_000)))
                self._on_timer()
                if self.reload_event.is_set() and self.reload():
                    break
            for batch in self.ring.drain():
                self._count(batch)
                self._write(self.meter.process(batch))
        finally:
            self.status["kernel"] = self.ring.statistics()
            self.ring.close()
            self.ring = None
            log.info("stopped capturing on %s: kernel counted %d packets, dropped %d",
                     capture.source, self.status["kernel"]["kernel_packets"],
                     self.status["kernel"]["kernel_drops"])

    def _clock(self) -> float:
        """Return the time rotation follows: wall time live, packet time in a replay."""
        return time.time() if self.config.capture.mode == "live" else self._packet_time

    def _count(self, batch: Any) -> None:
        self.status["packets"] += len(batch)
        self.status["bytes"] += int(batch.wirelen.sum())

    def _on_timer(self) -> None:
        """Flush, rotate by wall time, run retention and report status when they are due."""
        now = time.monotonic()
        if now - self._flushed >= FLUSH_PERIOD:
            self.writer.flush()
            self._flushed = now
        rotated = self.writer.maybe_rotate(self._clock())
        if rotated is not None:
            self._note_rotation(rotated)
        if now - self._retention_run >= RETENTION_PERIOD:
            self._run_retention()
        self._maybe_write_status()
        self.notifier.heartbeat()

    def _run_retention(self) -> None:
        self._retention_run = time.monotonic()
        policy = self.config.retention
        if not policy.enabled:
            return
        try:
            plan = enforce_retention(self.config.archive_dir, policy)
        except OSError as error:
            log.error("retention on %s failed: %s", self.config.archive_dir, error)
            return
        previous = self.status["retention"] or {}
        deleted_files = previous.get("deleted_files", 0) + len(plan.delete)
        freed_bytes = previous.get("freed_bytes", 0) + plan.freed_bytes
        self.status["retention"] = {
            "at": time.time(),
            "deleted_files": deleted_files,
            "freed_bytes": freed_bytes,
            "archive_bytes": plan.archive_bytes - plan.freed_bytes,
            "days_of_history": plan.days_of_history,
        }

    def _replay(self, source: str) -> None:
        log.info("replaying %s", source)
        self._set_state("running")
        try:
            batches = read_packets(source, self.batch_size)
            completed = self._consume(batches)
        except CaptureFileError as error:
            self._set_failed(f"cannot replay {source}: {error.reason}")
            return
        self._write(self.meter.flush_batches())
        self._rotate()
        if completed:
            log.info("replay of %s finished: %d packets, %d records", source,
                     self.status["packets"], self.status["records"])
            self._set_state("finished")

    def _consume(self, batches: Iterable[Any]) -> bool:
        """Feed batches to the flow meter; return False when stopped or reloaded midway."""
        for batch in batches:
            if len(batch):
                self._packet_time = max(self._packet_time, float(batch.ts_us.max()) / 1e6)
            self._write(self.meter.process(batch))
            self._count(batch)
            self._maybe_write_status()
            self.notifier.heartbeat()
            if self.stop_event.is_set():
                return False
            if self.reload_event.is_set() and self.reload():
                return False
        return True

    def _write(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Append records, rotating by time and size, then flush the active file."""
        for batch in batches:
            if batch.num_rows == 0:
                continue
            rotated = self.writer.maybe_rotate(self._clock())
            if rotated is not None:
                self._note_rotation(rotated)
            before = self.writer.last_rotation
            self.writer.write(batch, now=self._clock())
            if self.writer.last_rotation != before:
                self._note_rotation(self.writer.last_rotation)
            self.status["records"] += batch.num_rows
            self.status["current_file"] = str(self.writer.active_path)
        self.writer.flush()
        self._flushed = time.monotonic()

    def _rotate(self) -> None:
        rotated = self.writer.rotate()
        if rotated is not None:
            self._note_rotation(rotated)
        self.status["current_file"] = None

    def _note_rotation(self, path: Path) -> None:
        self.status["last_rotation"] = {"file": str(path), "at": time.time()}
        self._run_retention()

    def reload(self) -> bool:
        """Apply the configuration file again; return True when the source must restart.

        An invalid file is logged and ignored. A new filter or snap length is attached to
        the open socket and keeps the flow table; open flows are written out before new
        flow-meter settings take effect, so no flow is lost. New ring settings reopen the
        ring with the same flow table.
        """
        self.reload_event.clear()
        log.info("SIGHUP: reloading configuration from %s", self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error("configuration reload rejected, keeping the running one: %s", error)
            self.status["reload_error"] = str(error)
            self.write_status()
            return False
        self.status["reload_error"] = None

        old = self.config
        self.config = replace(new, data_dir=old.data_dir, archive_dir=old.archive_dir,
                              srcid=old.srcid)
        for key in ("data_dir", "archive_dir", "srcid"):
            if getattr(new, key) != getattr(old, key):
                log.warning("reload: %s changed to %s; restart the daemon to apply it", key,
                            getattr(new, key))
        if new.retention != old.retention:
            log.info("reload: retention policy now %s", new.retention)
            self._run_retention()
        if new.capture == old.capture:
            log.info("reload: capture settings unchanged")
            self.write_status()
            return False
        try:
            restart = self._apply_capture(old.capture, new.capture)
        except FilterError as error:
            log.error("configuration reload rejected, keeping the running one: %s", error)
            self.status["reload_error"] = str(error)
            self.config = old
            self.write_status()
            return False
        log.info("reload: applied capture settings %s", new.capture.to_dict())
        self.write_status()
        return restart

    def _apply_capture(self, old: CaptureConfig, new: CaptureConfig) -> bool:
        """Apply a changed ``[capture]`` section; return True when the source must restart."""
        live = self.ring is not None and new.source == old.source
        if live and (new.filter, new.snaplen) != (old.filter, old.snaplen):
            self.ring.set_filter(new.filter, new.snaplen)
        changed = {key for key in METER_KEYS if getattr(new, key) != getattr(old, key)}
        if changed or not live:
            self._write(self.meter.flush_batches())
            self.meter = FlowMeter(self._settings(new))
        if (new.rotate_seconds, new.rotate_bytes) != (old.rotate_seconds, old.rotate_bytes):
            self._rotate()
            self.writer = self._archive_writer(new)
        else:
            self.writer.hold_seconds = hold_for_status_interval(new.status_interval)
        if new.source != old.source:
            return True
        if live and any(getattr(new, key) != getattr(old, key) for key in RING_KEYS):
            self._replayed_source = None  # reopen the ring; the flow table stays
            return True
        return False

    def _set_state(self, state: str) -> None:
        self.status["state"] = state
        self.write_status()
        summary = f"{state}: {self.status['source'] or 'no source'}"
        if state == "running":
            self.notifier.ready(summary)
        else:
            self.notifier.status(summary)

    def _set_failed(self, message: str) -> None:
        log.error("%s", message)
        self.status["error"] = message
        self._set_state("failed")

    def _maybe_write_status(self) -> None:
        if time.monotonic() - self._status_written >= STATUS_PERIOD:
            self.write_status()

    def write_status(self, final: bool = False) -> None:
        """Write the status file atomically and publish the status to Redis when configured.

        Redis gets at most one document a second, except on a state change or when
        ``final``.
        """
        self.status["updated"] = time.time()
        self.status["meter"] = dict(self.meter.stats)
        if self.ring is not None:
            self.status["kernel"] = self.ring.statistics()
            self.status["filter"] = self.ring.filter
            self.status["snaplen"] = self.ring.snaplen
        write_json_atomically(self.config.capture_status_path, self.status)
        self.publisher.publish(self.status, force=final)
        self._status_written = time.monotonic()
        if self.status["state"] == "running":
            self.notifier.status(f"{self.status['source']}: {self.status['packets']} packets, "
                                 f"{self.status['records']} records")

    def _shutdown(self) -> None:
        self.notifier.stopping()
        try:
            self._write(self.meter.flush_batches())
            self._rotate()
        finally:
            self.status["state"] = "stopped"
            self.write_status(final=True)
            self.publisher.close()
            log.info("capture daemon stopped: %d packets, %d records", self.status["packets"],
                     self.status["records"])


def run_daemon(config: Config, stop_event: threading.Event,
               reload_event: threading.Event | None = None,
               config_path: str | Path | None = None) -> int:
    """Run the capture daemon until ``stop_event`` is set; ``reload_event`` acts as SIGHUP."""
    daemon = CaptureDaemon(config, stop_event, reload_event, config_path)
    return daemon.run()


def _write_pid_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n", encoding="ascii")


def _install_signal_handlers(stop_event: threading.Event,
                             reload_event: threading.Event) -> None:
    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_event.set()

    def hang_up(_signum: int, _frame: object) -> None:
        reload_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hang_up)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load the configuration and run the daemon."""
    parser = argparse.ArgumentParser(prog="python -m worker.capture_daemon",
                                     description="Meter packets into the flow archive.")
    parser.add_argument("--config", help="configuration file (default: $WIREWATCH_CONFIG, "
                        "else built-in defaults)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"capture daemon: invalid configuration: {error}", file=sys.stderr)
        return 2

    stop_event = threading.Event()
    reload_event = threading.Event()
    _install_signal_handlers(stop_event, reload_event)
    _write_pid_file(config.capture_pid_path)
    try:
        return run_daemon(config, stop_event, reload_event, config.path)
    finally:
        config.capture_pid_path.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
