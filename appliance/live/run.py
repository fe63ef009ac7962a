"""Meter a live interface into a record file or an archive until stopped (``capture -i``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from appliance.archive import ArchiveWriter, RecordWriter
from appliance.flows import FlowMeter
from appliance.live.ring import LiveSettings, RingSource

log = logging.getLogger(__name__)

#: Seconds between flushes of the record file.
FLUSH_PERIOD = 1.0


def capture_interface(settings: LiveSettings, meter: FlowMeter,
                      writer: RecordWriter | ArchiveWriter,
                      stop: threading.Event,
                      on_ready: Callable[[], None] | None = None) -> dict[str, int]:
    """Capture until ``stop`` is set, then write out every open flow; return the counters.

    ``on_ready`` is called once the ring is open and packets are being captured.
    Raises LiveCaptureError or FilterError before any packet is read.
    """
    with RingSource(settings) as ring:
        if on_ready is not None:
            on_ready()
        flushed = time.monotonic()
        while not stop.is_set():
            batch = ring.read(0.2)
            if batch is not None and len(batch):
                finished = meter.process(batch)
            else:
                finished = meter.advance(int(time.time() * 1_000_000))
            for records in finished:
                writer.write(records)
            if time.monotonic() - flushed >= FLUSH_PERIOD:
                writer.flush()
                if isinstance(writer, ArchiveWriter):
                    # Rotate on time even when a quiet link writes no records.
                    writer.maybe_rotate(time.time())
                flushed = time.monotonic()
        for batch in ring.drain():
            for records in meter.process(batch):
                writer.write(records)
        kernel = ring.statistics()
    for records in meter.flush_batches():
        writer.write(records)
    counters = dict(meter.stats) | kernel
    log.info("capture on %s stopped: %d packets, %d records, %d dropped by the kernel",
             settings.interface, counters.get("packets", 0), counters.get("records", 0),
             kernel["kernel_drops"])
    return counters
