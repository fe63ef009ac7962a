"""Capture files to flow records: the packet path from reader to flow table."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from appliance.flows import CaptureSettings, FlowMeter
from appliance.pcapio import open_capture

__all__ = ["CaptureSettings", "FlowMeter", "flows_from_file"]

log = logging.getLogger(__name__)

#: Frames read and decoded at a time: large enough to amortise the calls into compiled
#: code, small enough that a batch's columns stay a few megabytes.
BATCH_SIZE = 16384


def flows_from_file(path: str | Path, settings: CaptureSettings) -> Iterator[pa.RecordBatch]:
    """Yield the flow records of a pcap or pcapng file ("-" is stdin), in the order finished.

    Raises CaptureFileError at once for a missing file or one that is neither pcap
    nor pcapng. A damaged file yields the records of every whole packet before the
    damage.
    """
    reader = open_capture(path, BATCH_SIZE)
    return _flows(reader, path, settings)


def _flows(reader, path: str | Path, settings: CaptureSettings) -> Iterator[pa.RecordBatch]:
    meter = FlowMeter(settings)
    log.info("reading capture file %s", path)
    for batch in reader:
        yield from meter.process(batch)
    yield from meter.flush()
    stats = meter.stats
    log.info(
        "capture file %s: %d packets, %d records, %d malformed",
        path, stats["packets"], stats["records"],
        sum(v for k, v in stats.items() if k.startswith("malformed_")),
    )
