"""The pcapng format: section headers, interfaces with their own link types and clocks."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO

import numpy as np

from appliance.pcapio.batch import PacketBatch, ReadStats

SECTION_HEADER_MAGIC = bytes.fromhex("0a0d0d0a")
BYTE_ORDER_MAGIC = 0x1A2B3C4D
CHUNK_BYTES = 8 * 1024 * 1024
#: Larger blocks than this are treated as damage, not as data to buffer.
MAX_BLOCK_LEN = 64 * 1024 * 1024
#: Largest original (wire) length accepted; wire lengths are stored as int32.
MAX_WIRE_LEN = 0x7FFFFFFF
#: Latest timestamp accepted: the end of year 9999 UTC, in microseconds.
MAX_TIMESTAMP_US = 253_402_300_799_999_999


class BlockType(IntEnum):
    """pcapng block types this reader understands; others are skipped."""

    INTERFACE_DESCRIPTION = 0x00000001
    OBSOLETE_PACKET = 0x00000002
    SIMPLE_PACKET = 0x00000003
    ENHANCED_PACKET = 0x00000006
    SECTION_HEADER = 0x0A0D0D0A


class OptionCode(IntEnum):
    """Interface description block options that change how timestamps are read."""

    END = 0
    IF_TSRESOL = 9
    IF_TSOFFSET = 14


@dataclass
class Interface:
    """One interface description block: link type, snap length and clock."""

    linktype: int
    snaplen: int
    units_per_second: int = 1_000_000
    offset_seconds: int = 0

    def to_microseconds(self, units: int) -> int:
        """Convert a raw timestamp of this interface to microseconds since the epoch."""
        micros = units * 1_000_000 // self.units_per_second
        return micros + self.offset_seconds * 1_000_000


def _units_per_second(tsresol: int) -> int:
    exponent = tsresol & 0x7F
    return 2**exponent if tsresol & 0x80 else 10**exponent


def _parse_interface(body: bytes, order: str) -> Interface:
    linktype, _, snaplen = struct.unpack_from(order + "HHI", body, 0)
    interface = Interface(linktype=linktype, snaplen=snaplen)
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if code == OptionCode.END:
            break
        if code == OptionCode.IF_TSRESOL and length >= 1:
            interface.units_per_second = _units_per_second(value[0])
        elif code == OptionCode.IF_TSOFFSET and length >= 8:
            interface.offset_seconds = struct.unpack(order + "q", value[:8])[0]
        pos += 4 + ((length + 3) & ~3)
    return interface


class _Columns:
    """Growing column lists for one batch."""

    def __init__(self) -> None:
        self.offset: list[int] = []
        self.caplen: list[int] = []
        self.wirelen: list[int] = []
        self.ts_us: list[int] = []
        self.linktype: list[int] = []

    def add(self, offset: int, caplen: int, wirelen: int, ts_us: int, linktype: int) -> None:
        self.offset.append(offset)
        self.caplen.append(caplen)
        self.wirelen.append(max(wirelen, caplen))
        self.ts_us.append(ts_us)
        self.linktype.append(linktype)

    def to_batch(self, buffer: np.ndarray) -> PacketBatch:
        return PacketBatch(
            buffer=buffer,
            offset=np.array(self.offset, dtype=np.int64),
            caplen=np.array(self.caplen, dtype=np.int32),
            wirelen=np.array(self.wirelen, dtype=np.int32),
            ts_us=np.array(self.ts_us, dtype=np.int64),
            linktype=np.array(self.linktype, dtype=np.int32),
        )


class PcapngReader:
    """Iterate over the packets of a pcapng file in batches, across sections and interfaces."""

    def __init__(self, stream: BinaryIO, name: str, magic: bytes, batch_size: int) -> None:
        self.stream = stream
        self.name = name
        self.batch_size = batch_size
        self.stats = ReadStats()
        self.order = "<"
        self.interfaces: list[Interface] = []
        self.last_ts_us = 0
        self._initial = magic

    def _damage(self, file_offset: int, reason: str) -> None:
        self.stats.record_damage(self.name, file_offset, reason)

    def __iter__(self) -> Iterator[PacketBatch]:
        try:
            yield from self._batches()
        finally:
            self.stream.close()

    def _batches(self) -> Iterator[PacketBatch]:
        pending = self._initial
        file_offset = 0
        while True:
            data = self.stream.read(CHUNK_BYTES)
            chunk = pending + data if pending else data
            if not data:
                if chunk:
                    self._damage(file_offset, f"file ends inside a block ({len(chunk)} bytes left)")
                return
            buffer = np.frombuffer(chunk, dtype=np.uint8)
            pos = 0
            while True:
                columns, pos, error = self._scan(chunk, pos)
                if columns.offset:
                    yield columns.to_batch(buffer)
                if error:
                    self._damage(file_offset + pos, error)
                    return
                if len(columns.offset) < self.batch_size:
                    break
            pending = chunk[pos:]
            file_offset += pos

    def _block_header(self, chunk: bytes, pos: int) -> tuple[int, int] | None:
        block_type = struct.unpack_from(self.order + "I", chunk, pos)[0]
        if block_type == BlockType.SECTION_HEADER:
            # The byte order of a new section is only known from its own magic.
            if pos + 12 > len(chunk):
                return None
            magic = chunk[pos + 8 : pos + 12]
            self.order = "<" if struct.unpack("<I", magic)[0] == BYTE_ORDER_MAGIC else ">"
        return block_type, struct.unpack_from(self.order + "I", chunk, pos + 4)[0]

    def _scan(self, chunk: bytes, pos: int) -> tuple[_Columns, int, str | None]:
        """Read whole blocks from ``pos``; return the packets, the next position and any damage."""
        columns = _Columns()
        while len(columns.offset) < self.batch_size and pos + 12 <= len(chunk):
            header = self._block_header(chunk, pos)
            if header is None:
                break
            block_type, length = header
            if length < 12 or length % 4 or length > MAX_BLOCK_LEN:
                return columns, pos, f"block header claims an impossible length {length}"
            if pos + length > len(chunk):
                break
            body = chunk[pos + 8 : pos + length - 4]
            error = self._read_block(block_type, body, pos + 8, columns)
            if error:
                return columns, pos, error
            pos += length
        return columns, pos, None

    def _read_block(
        self, block_type: int, body: bytes, body_offset: int, columns: _Columns
    ) -> str | None:
        if block_type == BlockType.SECTION_HEADER:
            self.interfaces = []
        elif block_type == BlockType.INTERFACE_DESCRIPTION:
            interface = _parse_interface(body, self.order)
            self.interfaces.append(interface)
            self.stats.linktypes.add(interface.linktype)
        elif block_type == BlockType.ENHANCED_PACKET:
            return self._read_enhanced(body, body_offset, columns, "IIIII")
        elif block_type == BlockType.OBSOLETE_PACKET:
            return self._read_enhanced(body, body_offset, columns, "HHIIII")
        elif block_type == BlockType.SIMPLE_PACKET:
            return self._read_simple(body, body_offset, columns)
        return None

    def _read_enhanced(
        self, body: bytes, body_offset: int, columns: _Columns, layout: str
    ) -> str | None:
        fields = struct.unpack_from(self.order + layout, body, 0)
        if len(fields) == 6:  # obsolete packet block: interface id, drops, ...
            fields = (fields[0],) + fields[2:]
        interface_id, ts_high, ts_low, caplen, wirelen = fields
        header_len = struct.calcsize(layout)
        if interface_id >= len(self.interfaces):
            return f"packet block names interface {interface_id}, which was never described"
        if header_len + caplen > len(body):
            return f"packet block claims {caplen} captured bytes but holds {len(body) - header_len}"
        if wirelen > MAX_WIRE_LEN:
            return f"packet block claims an impossible original length {wirelen}"
        interface = self.interfaces[interface_id]
        ts_us = interface.to_microseconds((ts_high << 32) | ts_low)
        if not 0 <= ts_us <= MAX_TIMESTAMP_US:
            return f"packet block timestamp {ts_us} us is out of range"
        self.last_ts_us = ts_us
        columns.add(body_offset + header_len, caplen, wirelen, ts_us, interface.linktype)
        self._count(wirelen, caplen)
        return None

    def _read_simple(self, body: bytes, body_offset: int, columns: _Columns) -> str | None:
        if not self.interfaces:
            return "simple packet block before any interface description"
        interface = self.interfaces[0]
        wirelen = struct.unpack_from(self.order + "I", body, 0)[0]
        caplen = min(wirelen, len(body) - 4)
        if interface.snaplen:
            caplen = min(caplen, interface.snaplen)
        # Simple packet blocks carry no timestamp: reuse the last one seen.
        columns.add(body_offset + 4, caplen, wirelen, self.last_ts_us, interface.linktype)
        self._count(wirelen, caplen)
        return None

    def _count(self, wirelen: int, caplen: int) -> None:
        self.stats.packets += 1
        self.stats.bytes += max(wirelen, caplen)
