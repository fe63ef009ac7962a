"""Capture files to flow records: the packet path from reader to flow table."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from appliance.flows import CaptureSettings, FlowMeter
from appliance.pcapio import PacketBatch, open_capture

__all__ = ["CaptureSettings", "FlowMeter", "flows_from_file", "warm_up"]

log = logging.getLogger(__name__)

#: Frames read and decoded at a time: large enough to amortise the calls into compiled
#: code, small enough that a batch's columns stay a few megabytes.
BATCH_SIZE = 16384


#: One Ethernet/IPv4/UDP frame (10.0.0.1:40000 to 10.0.0.2:53, 4 payload bytes).
WARM_UP_FRAME = bytes.fromhex(
    "020000000002" "020000000001" "0800"
    "4500002000004000401100000a0000010a000002"
    "9c4000350000cafe" "77617277"
)


def warm_up(settings: CaptureSettings) -> None:
    """Run one synthetic packet through a throwaway flow meter.

    Without a current prebuilt kernel module (see ``appliance.jit``), numba compiles the
    packet path on first use, which can take tens of seconds on a small host when its
    cache is empty. A live capture calls this before it opens the ring, so that the
    first real packets are not held up by the compiler.
    """
    started = time.monotonic()
    meter = FlowMeter(settings)
    batch = PacketBatch.from_frames([WARM_UP_FRAME], [1_000_000], linktype=1)
    meter.process(batch)
    meter.advance(1_000_000 + int(settings.status_interval * 2_000_000))
    meter.flush()
    log.info("packet path ready after %.1f s", time.monotonic() - started)


def flows_from_file(path: str | Path, settings: CaptureSettings) -> Iterator[pa.RecordBatch]:
    """Yield the flow records of a pcap or pcapng file ("-" is stdin), in the order finished.

    Raises CaptureFileError at once for a missing file or one that is neither pcap
    nor pcapng. A damaged file yields the records of every whole packet before the
    damage.
    """
    reader = open_capture(path, BATCH_SIZE)
    return _flows(reader, path, settings)


def _flows(reader, path: str | Path, settings: CaptureSettings) -> Iterator[pa.RecordBatch]:
    meter = FlowMeter(settings, hold_records=True)
    log.info("reading capture file %s", path)
    for batch in reader:
        yield from meter.process(batch)
    yield from meter.flush_batches()
    stats = meter.stats
    log.info(
        "capture file %s: %d packets, %d records, %d malformed",
        path, stats["packets"], stats["records"],
        sum(v for k, v in stats.items() if k.startswith("malformed_")),
    )
