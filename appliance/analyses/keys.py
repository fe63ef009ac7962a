"""Key names shared by racluster and rasort, and the address arithmetic behind them.

Addresses are 16-byte columns (IPv4 as IPv4-mapped IPv6). For grouping, masking and
ordering they are split into two unsigned 64-bit words, high and low, so that every
operation is integer arithmetic on NumPy or polars columns. Byte order of the binary
form equals numeric order of the (high, low) pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from appliance.records import EtherType

#: Ethertypes whose flows are keyed by IP addresses; every other flow is keyed by MAC.
ADDRESS_ETYPES = (int(EtherType.IPV4), int(EtherType.IPV6), int(EtherType.ARP))

#: IPv4 prefix lengths count on the IPv4 address, which sits in the last 32 bits.
IPV4_MAPPED_BITS = 96


class AnalysisKeyError(ValueError):
    """An -m key that the analysis does not know or cannot use."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"invalid key {key!r}: {message}")
        self.key = key


@dataclass(frozen=True)
class AddressKey:
    """An address key such as ``saddr`` or ``daddr/24`` (``prefix`` None: whole address)."""

    field: str
    prefix: int | None


def with_mac_sources(table: pa.Table, columns: set[str]) -> set[str]:
    """Add smac or dmac to printed ``columns`` when saddr or daddr is null in some record.

    Such records (non-IP flows) print their MAC address in the address column.
    """
    from appliance.query.fields import ADDRESS_MACS

    added = set(columns)
    for address, mac in ADDRESS_MACS.items():
        if address in columns and address in table.column_names \
                and table.column(address).null_count:
            added.add(mac)
    return added


def parse_address_key(key: str) -> AddressKey | None:
    """Parse ``saddr``, ``daddr``, ``saddr/N`` or ``daddr/N``; return None for other keys."""
    name, _, length = key.partition("/")
    if name not in ("saddr", "daddr"):
        return None
    if not length:
        return AddressKey(name, None)
    if not length.isdigit() or not 0 <= int(length) <= 128:
        raise AnalysisKeyError(key, "the prefix length must be a number from 0 to 128")
    return AddressKey(name, int(length))


def _chunks(column: pa.ChunkedArray | pa.Array,
            width: int) -> Iterator[tuple[slice, pa.Array]]:
    """Yield (rows of the whole column, chunk cast to ``width``-byte values) per non-empty chunk."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    start = 0
    for chunk in chunks:
        if len(chunk):
            yield slice(start, start + len(chunk)), chunk.cast(pa.binary(width))
            start += len(chunk)


def _valid(array: pa.Array) -> np.ndarray:
    """Return a chunk's validity as a boolean NumPy array."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def address_words(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a 16-byte address column into (high, low, valid) NumPy arrays.

    Null addresses become zero words with ``valid`` False. Each chunk is read in place,
    without joining the chunks first.
    """
    count = len(column)
    high = np.empty(count, dtype=np.uint64)
    low = np.empty(count, dtype=np.uint64)
    valid = np.empty(count, dtype=bool)
    for rows, chunk in _chunks(column, 16):
        size = rows.stop - rows.start
        words = np.frombuffer(chunk.buffers()[1], dtype=">u8", count=2 * (chunk.offset + size))
        words = words[2 * chunk.offset:].reshape(size, 2)
        high[rows] = words[:, 0]
        low[rows] = words[:, 1]
        valid[rows] = _valid(chunk)
        if chunk.null_count:
            high[rows][~valid[rows]] = 0
            low[rows][~valid[rows]] = 0
    return high, low, valid


def words_to_addresses(high: np.ndarray, low: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Join (high, low) words back into a 16-byte address array (null where not valid)."""
    words = np.empty((len(high), 2), dtype=">u8")
    words[:, 0] = high
    words[:, 1] = low
    buffer = pa.py_buffer(words)
    null_count = int((~valid).sum())
    bitmap = pa.array(valid, type=pa.bool_()).buffers()[1] if null_count else None
    return pa.Array.from_buffers(pa.binary(16), len(high), [bitmap, buffer], null_count=null_count)


def is_ipv4_mapped_words(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Tell, per row, whether the address is IPv4-mapped (``::ffff:a.b.c.d``)."""
    return (high == np.uint64(0)) & ((low >> np.uint64(32)) == np.uint64(0xFFFF))


def _mask_word(word: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Keep the top ``bits`` (0 to 64, per row) of each 64-bit word."""
    bits = bits.astype(np.uint64)
    full = bits >= np.uint64(64)
    shift = np.where(full, np.uint64(0), np.uint64(64) - bits)
    # A shift by 64 is undefined, so rows keeping no bits are zeroed separately.
    mask = np.where(full, ~np.uint64(0), (~np.uint64(0) << shift))
    mask = np.where(bits == np.uint64(0), np.uint64(0), mask)
    return word & mask


def mask_words(
    high: np.ndarray, low: np.ndarray, bits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the top ``bits`` (0 to 128, per row) of each (high, low) address."""
    bits = np.asarray(bits, dtype=np.int64)
    high_bits = np.clip(bits, 0, 64)
    low_bits = np.clip(bits - 64, 0, 64)
    return _mask_word(high, high_bits), _mask_word(low, low_bits)


def prefix_mask_bits(high: np.ndarray, low: np.ndarray, prefix: int) -> np.ndarray:
    """Return per-row 128-bit mask lengths for an address key ``/prefix``.

    IPv4 prefix lengths count on the IPv4 address, so IPv4-mapped rows keep
    ``96 + prefix`` bits (at most 128).
    """
    ipv4 = is_ipv4_mapped_words(high, low)
    return np.where(ipv4, np.minimum(prefix + IPV4_MAPPED_BITS, 128), min(prefix, 128))


def _leading_zeros(word: np.ndarray) -> np.ndarray:
    """Count leading zero bits of each unsigned 64-bit word (64 for zero)."""
    word = word.astype(np.uint64)
    count = np.zeros(len(word), dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        top_clear = (word >> np.uint64(64 - shift)) == np.uint64(0)
        count += np.where(top_clear, shift, 0)
        word = np.where(top_clear, word << np.uint64(shift), word)
    count += (word == np.uint64(0)).astype(np.int64)
    return count


def common_prefix_length(
    min_high: np.ndarray, min_low: np.ndarray, max_high: np.ndarray, max_low: np.ndarray
) -> np.ndarray:
    """Return the length in bits of the longest common prefix of two 128-bit values."""
    high_diff = min_high ^ max_high
    low_diff = min_low ^ max_low
    return np.where(
        high_diff != np.uint64(0), _leading_zeros(high_diff), 64 + _leading_zeros(low_diff)
    )


def _mac_values(raw: np.ndarray, first: int, valid: np.ndarray) -> np.ndarray:
    """Read ``len(valid)`` 6-byte MACs from ``raw`` at row ``first`` as big-endian integers."""
    padded = np.zeros((len(valid), 8), dtype=np.uint8)
    padded[:, 2:] = raw[first * 6:(first + len(valid)) * 6].reshape(-1, 6)
    value = padded.view(">u8").ravel().astype(np.uint64)
    value[~valid] = 0
    return value


def mac_words(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Convert a 6-byte MAC column to (value, valid) NumPy arrays; nulls become 0."""
    count = len(column)
    value = np.empty(count, dtype=np.uint64)
    valid = np.empty(count, dtype=bool)
    for rows, chunk in _chunks(column, 6):
        raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
        valid[rows] = _valid(chunk)
        value[rows] = _mac_values(raw, chunk.offset, valid[rows])
    return value, valid


def words_to_macs(value: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Convert 48-bit integers back to a 6-byte MAC array (null where not valid)."""
    raw = value.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 2:]
    buffer = pa.py_buffer(np.ascontiguousarray(raw))
    null_count = int((~valid).sum())
    bitmap = pa.array(valid, type=pa.bool_()).buffers()[1] if null_count else None
    return pa.Array.from_buffers(pa.binary(6), len(value), [bitmap, buffer], null_count=null_count)
