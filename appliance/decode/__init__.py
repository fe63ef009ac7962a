"""Packet decoding: a batch of raw frames to columns of header fields, in compiled code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.decode.compiled_cache import invalidate_stale_cache

invalidate_stale_cache()

from appliance.decode import columns  # noqa: E402 - after the cache check
from appliance.decode.constants import (  # noqa: E402
    Encapsulation,
    FragmentKind,
    LinkType,
    Malformed,
)
from appliance.decode.kernel import decode_frames  # noqa: E402
from appliance.pcapio import PacketBatch  # noqa: E402

__all__ = ["DecodedBatch", "Encapsulation", "FragmentKind", "LinkType", "Malformed", "decode_batch"]


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

    def __len__(self) -> int:
        return len(self.fields)

    def column(self, name: str) -> np.ndarray:
        """Return one decoded header field for every frame."""
        return self.fields[:, columns.COLUMN_INDEX[name]]

    def malformed_counts(self) -> dict[str, int]:
        """Count the frames that did not decode, by Malformed kind name (lower case)."""
        codes = self.column("malformed")
        values, counts = np.unique(codes[codes != Malformed.NONE], return_counts=True)
        return {Malformed(int(v)).name.lower(): int(n) for v, n in zip(values, counts, strict=True)}


def decode_batch(batch: PacketBatch) -> DecodedBatch:
    """Decode the link, network and transport headers of every frame in ``batch``."""
    count = len(batch)
    decoded = DecodedBatch(
        batch=batch,
        fields=np.zeros((count, columns.COLUMN_COUNT), dtype=np.int64),
        saddr=np.zeros((count, 16), dtype=np.uint8),
        daddr=np.zeros((count, 16), dtype=np.uint8),
        smac=np.zeros((count, 6), dtype=np.uint8),
        dmac=np.zeros((count, 6), dtype=np.uint8),
        quoted_fields=np.zeros((count, columns.COLUMN_COUNT), dtype=np.int64),
        quoted_saddr=np.zeros((count, 16), dtype=np.uint8),
        quoted_daddr=np.zeros((count, 16), dtype=np.uint8),
    )
    decode_frames(
        batch.buffer, batch.offset, batch.caplen, batch.wirelen, batch.linktype,
        decoded.fields, decoded.saddr, decoded.daddr, decoded.smac, decoded.dmac,
        decoded.quoted_fields, decoded.quoted_saddr, decoded.quoted_daddr,
    )
    return decoded
