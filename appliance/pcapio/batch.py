"""Packet batches: many captured frames in one buffer, described by NumPy columns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class CaptureFileError(ValueError):
    """A capture file that cannot be read at all (missing, or neither pcap nor pcapng)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class PacketBatch:
    """Captured frames: ``buffer[offset[i]:offset[i] + caplen[i]]`` is frame ``i``.

    ``wirelen`` is the frame's original length on the wire, ``ts_us`` its capture
    time in microseconds since the epoch (UTC) and ``linktype`` its LINKTYPE_* value.
    """

    buffer: np.ndarray  # uint8
    offset: np.ndarray  # int64
    caplen: np.ndarray  # int32
    wirelen: np.ndarray  # int32
    ts_us: np.ndarray  # int64
    linktype: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.offset)

    def frame(self, index: int) -> bytes:
        """Return the captured bytes of one frame."""
        start = int(self.offset[index])
        return self.buffer[start : start + int(self.caplen[index])].tobytes()

    @classmethod
    def from_frames(
        cls,
        frames: list[bytes],
        ts_us: list[int],
        linktype: int = 1,
        wirelen: list[int] | None = None,
    ) -> PacketBatch:
        """Build a batch from separate frames (tests and live capture use this)."""
        lengths = np.array([len(frame) for frame in frames], dtype=np.int32)
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames) > 1:
            offsets[1:] = np.cumsum(lengths[:-1])
        buffer = np.frombuffer(b"".join(frames), dtype=np.uint8)
        return cls(
            buffer=buffer,
            offset=offsets,
            caplen=lengths,
            wirelen=np.array(wirelen if wirelen is not None else lengths, dtype=np.int32),
            ts_us=np.array(ts_us, dtype=np.int64),
            linktype=np.full(len(frames), linktype, dtype=np.int32),
        )


@dataclass
class ReadStats:
    """What a reader has read so far, and why it stopped early if it did."""

    packets: int = 0
    bytes: int = 0
    damaged: str | None = None
    damage_offset: int | None = None
    linktypes: set[int] = field(default_factory=set)

    def record_damage(self, name: str, file_offset: int, reason: str) -> None:
        """Note where and why a file is damaged, and log it once with the packets kept."""
        self.damaged = reason
        self.damage_offset = file_offset
        log.warning(
            "capture file %s damaged at byte %d: %s; keeping the %d packets before it",
            name, file_offset, reason, self.packets,
        )
