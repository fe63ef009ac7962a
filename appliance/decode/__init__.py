"""Packet decoding: a batch of raw frames to columns of header fields, in compiled code."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.decode import columns
from appliance.decode.constants import (
    Encapsulation,
    FragmentKind,
    LinkType,
    Malformed,
)
from appliance.decode.kernel import (
    COUNT_FRAGMENTS,
    COUNT_MALFORMED,
    COUNT_QUOTED,
    COUNTS,
    decode_frames,
)
from appliance.pcapio import PacketBatch

__all__ = [
    "DecodeWorkspace", "DecodedBatch", "Encapsulation", "FragmentKind", "LinkType", "Malformed",
    "decode_batch",
]


@dataclass
class DecodedBatch:
    """Header fields of every frame of a batch, row ``i`` for frame ``i``.

    ``fields`` has one int64 column per entry of ``columns.FIELD_COLUMNS``; read a
    column with ``decoded.column("sport")``. Addresses are 16 bytes (IPv4 mapped),
    MACs 6 bytes. ``quoted_*`` describe the packet an ICMP error quotes.
    """

    batch: PacketBatch
    fields: np.ndarray
    saddr: np.ndarray
    daddr: np.ndarray
    smac: np.ndarray
    dmac: np.ndarray
    quoted_fields: np.ndarray
    quoted_saddr: np.ndarray
    quoted_daddr: np.ndarray
    #: Frames that did not decode, fragments among the others, and ICMP errors whose
    #: quoted packet decoded (``fields`` column "quoted").
    counts: np.ndarray = field(default_factory=lambda: np.zeros(COUNTS, dtype=np.int64))

    @property
    def malformed(self) -> int:
        return int(self.counts[COUNT_MALFORMED])

    @property
    def fragments(self) -> int:
        return int(self.counts[COUNT_FRAGMENTS])

    @property
    def quoted(self) -> int:
        return int(self.counts[COUNT_QUOTED])

    def __len__(self) -> int:
        return len(self.fields)

    def column(self, name: str) -> np.ndarray:
        """Return one decoded header field for every frame."""
        return self.fields[:, columns.COLUMN_INDEX[name]]

    def malformed_counts(self) -> dict[str, int]:
        """Count the frames that did not decode, by Malformed kind name (lower case)."""
        if not self.malformed:
            return {}
        codes = self.column("malformed")
        values, counts = np.unique(codes[codes != Malformed.NONE], return_counts=True)
        return {Malformed(int(v)).name.lower(): int(n) for v, n in zip(values, counts, strict=True)}


class DecodeWorkspace:
    """Output arrays reused from batch to batch, so decoding allocates nothing per batch."""

    def __init__(self) -> None:
        self.rows = 0
        self._arrays: tuple[np.ndarray, ...] = ()

    def arrays(self, count: int) -> tuple[np.ndarray, ...]:
        """Return output arrays for ``count`` frames (the decoder zeroes each row it uses)."""
        if count > self.rows:
            self.rows = count
            self._arrays = _allocate(count)
        return tuple(array[:count] for array in self._arrays)


def _allocate(count: int) -> tuple[np.ndarray, ...]:
    return (
        np.zeros((count, columns.COLUMN_COUNT), dtype=np.int64),
        np.zeros((count, 16), dtype=np.uint8),
        np.zeros((count, 16), dtype=np.uint8),
        np.zeros((count, 6), dtype=np.uint8),
        np.zeros((count, 6), dtype=np.uint8),
        np.zeros((count, columns.COLUMN_COUNT), dtype=np.int64),
        np.zeros((count, 16), dtype=np.uint8),
        np.zeros((count, 16), dtype=np.uint8),
    )


def decode_batch(batch: PacketBatch, workspace: DecodeWorkspace | None = None) -> DecodedBatch:
    """Decode the link, network and transport headers of every frame in ``batch``.

    With a ``workspace`` the result's arrays are views into it, valid until the
    workspace decodes the next batch.
    """
    count = len(batch)
    arrays = workspace.arrays(count) if workspace is not None else _allocate(count)
    decoded = DecodedBatch(batch, *arrays)
    decode_frames(
        batch.buffer, batch.offset, batch.caplen, batch.wirelen, batch.linktype,
        decoded.fields, decoded.saddr, decoded.daddr, decoded.smac, decoded.dmac,
        decoded.quoted_fields, decoded.quoted_saddr, decoded.quoted_daddr, decoded.counts,
    )
    return decoded
