"""Capture from a Linux interface through an AF_PACKET socket with a TPACKET_V3 ring.

The kernel fills fixed-size blocks of the ring with packets and hands a block over when
it is full or when the block timeout passes, so a quiet link still delivers its packets
within that timeout. Each read copies the blocks that are ready into one buffer, walks
their packet headers in compiled code and returns the blocks to the kernel at once; the
result is a PacketBatch like those read from capture files.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.live.bpf import CompiledFilter, FilterError, compile_filter
from appliance.live.layout import (
    ETH_P_ALL,
    LINKTYPE_OF_ARPHRD,
    PACKET_FANOUT_FLAG_DEFRAG,
    PACKET_MR_PROMISC,
    PACKET_MREQ_FORMAT,
    SO_ATTACH_FILTER,
    SOL_PACKET,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TPACKET_REQ3_FORMAT,
    TPACKET_STATS_V3_FORMAT,
    TPACKET_V3,
    VLAN_TAG_LEN,
    BlockHeader,
    FanoutMode,
    SocketOption,
)
from appliance.live.walk import packet_count, walk_block
from appliance.pcapio.batch import PacketBatch

log = logging.getLogger(__name__)

#: Nominal frame size the ring request must name; TPACKET_V3 packs packets tightly anyway.
FRAME_SIZE = 2048
#: Most ring blocks copied into one batch.
BLOCKS_PER_BATCH = 16
#: Seconds drain() waits at most for the kernel to hand over the last blocks.
DRAIN_TIMEOUT = 5.0
#: Minimum ring bytes one packet takes (its 48-byte header, aligned to 16, and a frame).
MIN_PACKET_SPACE = 64


class LiveCaptureError(OSError):
    """An interface cannot be captured from (missing, no permission, ring refused)."""

    def __init__(self, interface: str, reason: str) -> None:
        super().__init__(f"interface {interface}: {reason}")
        self.interface = interface
        self.reason = reason


@dataclass(frozen=True)
class LiveSettings:
    """How to capture from one interface.

    snaplen: bytes kept of each packet (the kernel truncates the rest).
    filter: tcpdump filter expression run in the kernel; "" keeps every packet.
    fanout_group: PACKET_FANOUT group id shared by the processes capturing one
        interface together (flows are spread by hash); 0 = no fanout.
    block_size, block_count: the ring's geometry; block_timeout_ms: how long the kernel
        waits before handing over a block that is not full.
    """

    interface: str
    snaplen: int = 65535
    filter: str = ""
    promisc: bool = True
    fanout_group: int = 0
    block_size: int = 1 << 20
    block_count: int = 64
    block_timeout_ms: int = 100


class RingSource:
    """A TPACKET_V3 ring on one interface; ``read()`` returns the next PacketBatch."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self.interface = settings.interface
        self.linktype = interface_linktype(settings.interface)
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.kernel_freezes = 0
        #: Packets returned by read() so far.
        self.packets_read = 0
        self._filter_program: ctypes.Array | None = None
        self._block = 0
        self._compiled = compile_filter(settings.filter, settings.snaplen, self.linktype)
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._open()
        except OSError as error:
            self.close()
            if isinstance(error, LiveCaptureError):
                raise
            raise LiveCaptureError(self.interface, error.strerror or str(error)) from error

    def _open(self) -> None:
        settings = self.settings
        sock = self._socket
        sock.setsockopt(SOL_PACKET, SocketOption.VERSION, TPACKET_V3)
        # Filter before binding, so no unfiltered packet enters the ring.
        self._attach(self._compiled)
        frames = settings.block_size * settings.block_count // FRAME_SIZE
        request = struct.pack(TPACKET_REQ3_FORMAT, settings.block_size, settings.block_count,
                              FRAME_SIZE, frames, settings.block_timeout_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, SocketOption.RX_RING, request)
        self._map = mmap.mmap(sock.fileno(), settings.block_size * settings.block_count,
                              mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._ring = np.frombuffer(self._map, dtype=np.uint8)
        try:
            sock.bind((self.interface, ETH_P_ALL))
        except OSError as error:
            raise LiveCaptureError(self.interface, f"cannot bind ({error.strerror}); check "
                                   "the interface name with 'ip link'") from error
        if settings.promisc:
            index = socket.if_nametoindex(self.interface)
            membership = struct.pack(PACKET_MREQ_FORMAT, index, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, SocketOption.ADD_MEMBERSHIP, membership)
        if settings.fanout_group:
            mode = FanoutMode.HASH | PACKET_FANOUT_FLAG_DEFRAG
            sock.setsockopt(SOL_PACKET, SocketOption.FANOUT,
                            settings.fanout_group | (mode << 16))
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        log.info("capturing on %s: snaplen %d, filter %r, promisc %s, fanout group %d, "
                 "ring %d x %d bytes", self.interface, settings.snaplen, settings.filter,
                 settings.promisc, settings.fanout_group, settings.block_count,
                 settings.block_size)

    def _attach(self, compiled: CompiledFilter) -> None:
        program = ctypes.create_string_buffer(compiled.instructions, len(compiled.instructions))
        fprog = struct.pack("HL", compiled.length, ctypes.addressof(program))
        self._socket.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self._filter_program = program

    def set_filter(self, expression: str, snaplen: int) -> None:
        """Replace the kernel filter and snap length on the open socket, losing no packet.

        Raises FilterError for an expression libpcap rejects; the old filter then stays.
        """
        compiled = compile_filter(expression, snaplen, self.linktype)
        self._attach(compiled)
        self._compiled = compiled
        log.info("interface %s: filter now %r, snaplen %d", self.interface, expression, snaplen)

    @property
    def filter(self) -> str:
        return self._compiled.expression

    @property
    def snaplen(self) -> int:
        return self._compiled.snaplen

    def fileno(self) -> int:
        return self._socket.fileno()

    def read(self, timeout: float) -> PacketBatch | None:
        """Return the packets of the blocks ready now, waiting up to ``timeout`` seconds.

        Returns None when no block became ready in that time.
        """
        if not self._ready(self._block):
            self._poll.poll(int(timeout * 1000))
            if not self._ready(self._block):
                return None
        size = self.settings.block_size
        capacity = BLOCKS_PER_BATCH * (size // MIN_PACKET_SPACE)
        buffer = np.empty(size * BLOCKS_PER_BATCH + capacity * VLAN_TAG_LEN, dtype=np.uint8)
        offset = np.empty(capacity, dtype=np.int64)
        caplen = np.empty(capacity, dtype=np.int32)
        wirelen = np.empty(capacity, dtype=np.int32)
        ts_us = np.empty(capacity, dtype=np.int64)
        count = used = 0
        for _ in range(BLOCKS_PER_BATCH):
            if not self._ready(self._block):
                break
            start = self._block * size
            block = self._ring[start:start + size]
            if packet_count(block):
                count, used = walk_block(block, buffer, used, offset, caplen, wirelen, ts_us,
                                         count)
            self._release(self._block)
            self._block = (self._block + 1) % self.settings.block_count
        self.packets_read += count
        return PacketBatch(buffer=buffer[:used], offset=offset[:count].copy(),
                           caplen=caplen[:count].copy(), wirelen=wirelen[:count].copy(),
                           ts_us=ts_us[:count].copy(),
                           linktype=np.full(count, self.linktype, dtype=np.int32))

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> list[PacketBatch]:
        """Return every packet still in the ring, waiting for partly filled blocks to retire.

        Called before stopping, so that packets the kernel took in are not lost. Waits
        until the packets read match the kernel's count, or ``timeout`` seconds (at least
        three block timeouts) have passed.
        """
        batches = []
        wait = self.settings.block_timeout_ms / 1000
        deadline = time.monotonic() + max(timeout, 3 * wait)
        while True:
            self.statistics()
            if self.packets_read >= self.kernel_packets - self.kernel_drops:
                break
            if time.monotonic() > deadline:
                log.warning("interface %s: %d packets still in the ring at stop", self.interface,
                            self.kernel_packets - self.kernel_drops - self.packets_read)
                break
            batch = self.read(wait)
            if batch is not None:
                batches.append(batch)
        return batches

    def _status_word(self, block: int) -> np.ndarray:
        start = block * self.settings.block_size + BlockHeader.BLOCK_STATUS
        return self._ring[start:start + 4].view(np.uint32)

    def _ready(self, block: int) -> bool:
        return bool(self._status_word(block)[0] & TP_STATUS_USER)

    def _release(self, block: int) -> None:
        self._status_word(block)[0] = TP_STATUS_KERNEL

    def statistics(self) -> dict[str, int]:
        """Return the kernel's counters since the socket opened (packets, drops, freezes)."""
        raw = self._socket.getsockopt(SOL_PACKET, SocketOption.STATISTICS,
                                      struct.calcsize(TPACKET_STATS_V3_FORMAT))
        packets, drops, freezes = struct.unpack(TPACKET_STATS_V3_FORMAT, raw)
        # The kernel resets its counters on each read; tp_packets includes the drops.
        self.kernel_packets += packets
        self.kernel_drops += drops
        self.kernel_freezes += freezes
        return {"kernel_packets": self.kernel_packets, "kernel_drops": self.kernel_drops,
                "kernel_freezes": self.kernel_freezes}

    def close(self) -> None:
        """Unmap the ring and close the socket (promiscuous mode ends with it)."""
        self._ring = None
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:
                # A view of the ring is still referenced (an exception's traceback holds
                # one); the mapping is released with the last view.
                log.warning("interface %s: ring still in use at close", self.interface)
            self._map = None
        self._socket.close()

    def __enter__(self) -> RingSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def interface_linktype(interface: str) -> int:
    """Return the LINKTYPE of frames captured on ``interface``; raise LiveCaptureError."""
    path = Path("/sys/class/net") / interface / "type"
    try:
        arphrd = int(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise LiveCaptureError(interface, "no such network interface; list them with "
                               "'ip link'") from error
    if arphrd not in LINKTYPE_OF_ARPHRD:
        raise LiveCaptureError(interface, f"interface type {arphrd} is not supported; "
                               "capture from an Ethernet, loopback or tun interface")
    return LINKTYPE_OF_ARPHRD[arphrd]


__all__ = ["FilterError", "LiveCaptureError", "LiveSettings", "RingSource"]
