"""The classic pcap format: microsecond or nanosecond timestamps, either byte order."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from appliance.jit import njit
from appliance.pcapio.batch import PacketBatch, ReadStats

#: File magic as stored on disk -> (byte order for struct, nanosecond timestamps).
CLASSIC_MAGICS: dict[bytes, tuple[str, bool]] = {
    bytes.fromhex("d4c3b2a1"): ("<", False),
    bytes.fromhex("a1b2c3d4"): (">", False),
    bytes.fromhex("4d3cb2a1"): ("<", True),
    bytes.fromhex("a1b23c4d"): (">", True),
}

FILE_HEADER = struct.Struct("HHiIII")  # major, minor version, thiszone, sigfigs, snaplen, network
RECORD_HEADER_LEN = 16
#: libpcap rejects records above this length unless the file's snaplen is larger.
DEFAULT_MAX_CAPLEN = 262144
#: No real link layer needs more than this, whatever the file header claims.
HARD_MAX_CAPLEN = 16 * 1024 * 1024
#: Largest original (wire) length accepted; wire lengths are stored as int32.
MAX_WIRE_LEN = 0x7FFFFFFF
CHUNK_BYTES = 8 * 1024 * 1024

# Scan results.
SCAN_FULL = 0  # the output arrays are full
SCAN_NEED_MORE = 1  # the next record does not fit in the buffer yet
SCAN_BAD_LENGTH = 2  # a record header claims an impossible length


@njit(cache=True)
def _read_u32(buf, pos, big_endian):
    if big_endian:
        return (
            (np.int64(buf[pos]) << 24)
            | (np.int64(buf[pos + 1]) << 16)
            | (np.int64(buf[pos + 2]) << 8)
            | np.int64(buf[pos + 3])
        )
    return (
        (np.int64(buf[pos + 3]) << 24)
        | (np.int64(buf[pos + 2]) << 16)
        | (np.int64(buf[pos + 1]) << 8)
        | np.int64(buf[pos])
    )


@njit(cache=True)
def scan_records(buf, pos, big_endian, nanosecond, max_caplen, offset, caplen, wirelen, ts_us):
    """Fill the record columns from ``buf`` starting at ``pos``.

    Returns (records found, position after the last whole record, scan result).
    """
    count = 0
    size = len(buf)
    limit = len(offset)
    while count < limit:
        if pos + RECORD_HEADER_LEN > size:
            return count, pos, SCAN_NEED_MORE
        seconds = _read_u32(buf, pos, big_endian)
        fraction = _read_u32(buf, pos + 4, big_endian)
        included = _read_u32(buf, pos + 8, big_endian)
        original = _read_u32(buf, pos + 12, big_endian)
        if included > max_caplen or original > MAX_WIRE_LEN:
            return count, pos, SCAN_BAD_LENGTH
        if pos + RECORD_HEADER_LEN + included > size:
            return count, pos, SCAN_NEED_MORE
        if nanosecond:
            fraction = fraction // 1000
        offset[count] = pos + RECORD_HEADER_LEN
        caplen[count] = included
        wirelen[count] = max(original, included)
        ts_us[count] = seconds * 1000000 + fraction
        count += 1
        pos += RECORD_HEADER_LEN + included
    return count, pos, SCAN_FULL


class ClassicReader:
    """Iterate over the packets of a classic pcap file in batches."""

    def __init__(self, stream: BinaryIO, name: str, magic: bytes, batch_size: int) -> None:
        self.stream = stream
        self.name = name
        self.batch_size = batch_size
        self.stats = ReadStats()
        byte_order, self.nanosecond = CLASSIC_MAGICS[magic]
        self.big_endian = byte_order == ">"
        header = stream.read(FILE_HEADER.size)
        if len(header) < FILE_HEADER.size:
            self._damage(4 + len(header), "file header cut short")
            self.linktype = 0
            self.max_caplen = 0
            return
        _, _, _, _, snaplen, network = struct.unpack(byte_order + FILE_HEADER.format, header)
        # The upper bits of the link-type field carry FCS information.
        self.linktype = network & 0x0FFFFFFF
        self.max_caplen = min(max(snaplen, DEFAULT_MAX_CAPLEN), HARD_MAX_CAPLEN)
        self.stats.linktypes.add(self.linktype)

    def _damage(self, file_offset: int, reason: str) -> None:
        self.stats.record_damage(self.name, file_offset, reason)

    def __iter__(self) -> Iterator[PacketBatch]:
        try:
            if self.stats.damaged is None:
                yield from self._batches()
        finally:
            self.stream.close()

    def _batches(self) -> Iterator[PacketBatch]:
        pending = np.empty(0, dtype=np.uint8)
        file_offset = 4 + FILE_HEADER.size  # file offset of pending[0]
        while True:
            buffer = self._read_chunk(pending)
            if len(buffer) == len(pending):
                if len(pending):
                    reason = f"file ends inside a packet record ({len(pending)} bytes left)"
                    self._damage(file_offset, reason)
                return
            pos = 0
            while True:
                batch, pos, result = self._scan(buffer, pos)
                if len(batch):
                    yield batch
                if result == SCAN_FULL:
                    continue
                if result == SCAN_BAD_LENGTH:
                    reason = "record header claims an impossible packet length"
                    self._damage(file_offset + pos, reason)
                    return
                break
            pending = buffer[pos:]
            file_offset += pos

    def _read_chunk(self, pending: np.ndarray) -> np.ndarray:
        """Return ``pending`` followed by up to CHUNK_BYTES read from the file.

        Each chunk is a new array: the batches cut from the previous one may still be
        in use. The file is read straight into it, with no copy of the whole chunk.
        """
        buffer = np.empty(len(pending) + CHUNK_BYTES, dtype=np.uint8)
        buffer[:len(pending)] = pending
        view = memoryview(buffer)
        filled = len(pending)
        while filled < len(buffer):
            count = self.stream.readinto(view[filled:])
            if not count:
                break
            filled += count
        chunk = buffer[:filled]
        # Read-only, as the buffers of the pcapng reader (bytes) are: the compiled
        # kernels then take one array type, and nothing writes to a captured frame.
        chunk.flags.writeable = False
        return chunk

    def _scan(self, buffer: np.ndarray, pos: int) -> tuple[PacketBatch, int, int]:
        size = self.batch_size
        offset = np.empty(size, dtype=np.int64)
        caplen = np.empty(size, dtype=np.int32)
        wirelen = np.empty(size, dtype=np.int32)
        ts_us = np.empty(size, dtype=np.int64)
        count, pos, result = scan_records(
            buffer, pos, self.big_endian, self.nanosecond, self.max_caplen,
            offset, caplen, wirelen, ts_us,
        )
        batch = PacketBatch(
            buffer=buffer,
            offset=offset[:count],
            caplen=caplen[:count],
            wirelen=wirelen[:count],
            ts_us=ts_us[:count],
            linktype=np.full(count, self.linktype, dtype=np.int32),
        )
        self.stats.packets += count
        self.stats.bytes += int(wirelen[:count].sum())
        return batch, pos, result
