"""Capture file readers: pcap and pcapng files to batches of raw frames."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from appliance.pcapio.batch import CaptureFileError, PacketBatch, ReadStats
from appliance.pcapio.classic import CLASSIC_MAGICS, ClassicReader
from appliance.pcapio.pcapng import SECTION_HEADER_MAGIC, PcapngReader

__all__ = [
    "CaptureFileError",
    "CaptureReader",
    "PacketBatch",
    "ReadStats",
    "open_capture",
    "read_packets",
]

log = logging.getLogger(__name__)

CaptureReader = ClassicReader | PcapngReader


def _open_stream(path: str | Path) -> tuple[BinaryIO, str]:
    if str(path) == "-":
        return sys.stdin.buffer, "<stdin>"
    try:
        return open(path, "rb"), str(path)  # noqa: SIM115 - the reader owns the file
    except FileNotFoundError:
        reason = "file not found; give the path of a pcap or pcapng file"
        raise CaptureFileError(path, reason) from None
    except IsADirectoryError:
        reason = "is a directory; give the path of a pcap or pcapng file"
        raise CaptureFileError(path, reason) from None
    except PermissionError:
        reason = "permission denied; make the file readable"
        raise CaptureFileError(path, reason) from None


#: Arrow IPC streams, as 'wirewatch capture -w' writes them, start with a continuation marker.
ARROW_STREAM_START = b"\xff\xff\xff\xff"


def open_capture(path: str | Path, batch_size: int = 65536) -> CaptureReader:
    """Open a pcap or pcapng file ("-" is stdin) and check its file header.

    Raises CaptureFileError when the file is missing or is neither pcap nor pcapng.
    """
    stream, name = _open_stream(path)
    magic = stream.read(4)
    if magic in CLASSIC_MAGICS:
        return ClassicReader(stream, name, magic, batch_size)
    if magic == SECTION_HEADER_MAGIC:
        return PcapngReader(stream, name, magic, batch_size)
    if stream is not sys.stdin.buffer:
        stream.close()
    if magic == ARROW_STREAM_START:
        raise CaptureFileError(path, "is a file of flow records, not a packet capture; "
                               f"read it with 'wirewatch ra -r {path}'")
    found = magic.hex() if magic else "an empty file"
    raise CaptureFileError(
        path, f"not a pcap or pcapng file (starts with {found}); give a capture written by "
        "tcpdump, tshark or dumpcap, or convert other formats with editcap"
    )


def read_packets(path: str | Path, batch_size: int = 65536) -> Iterator[PacketBatch]:
    """Return an iterator over the packet batches of a capture file ("-" is stdin).

    The file header is checked at once, so a bad path raises CaptureFileError here
    and not at the first ``next()``. A damaged file ends the iteration after the
    last whole packet, with one warning in the log.
    """
    return iter(open_capture(path, batch_size))
