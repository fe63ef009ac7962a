"""Copy the packets of a retired ring block into a batch buffer, in compiled code.

The kernel takes an 802.1Q tag out of the frame and reports it in the packet header;
the copy puts it back after the MAC addresses, as libpcap does, so that a live capture
decodes like the same frames read from a file.
"""

from __future__ import annotations

import numpy as np

from appliance.jit import njit
from appliance.live.layout import (
    ETH_P_8021Q,
    MAC_ADDRESSES_LEN,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    VLAN_TAG_LEN,
    BlockHeader,
    PacketHeader,
)

_NUM_PKTS = int(BlockHeader.NUM_PKTS)
_FIRST = int(BlockHeader.OFFSET_TO_FIRST_PKT)
_NEXT = int(PacketHeader.NEXT_OFFSET)
_SEC = int(PacketHeader.SEC)
_NSEC = int(PacketHeader.NSEC)
_SNAPLEN = int(PacketHeader.SNAPLEN)
_LEN = int(PacketHeader.LEN)
_STATUS = int(PacketHeader.STATUS)
_MAC = int(PacketHeader.MAC)
_TCI = int(PacketHeader.VLAN_TCI)
_TPID = int(PacketHeader.VLAN_TPID)


@njit(cache=True, inline="always")
def _u16(block: np.ndarray, at: int) -> int:
    return np.int64(block[at]) | (np.int64(block[at + 1]) << 8)


@njit(cache=True, inline="always")
def _u32(block: np.ndarray, at: int) -> int:
    return _u16(block, at) | (_u16(block, at + 2) << 16)


@njit(cache=True, inline="always")
def _copy(target: np.ndarray, at: int, source: np.ndarray, start: int, length: int) -> None:
    # A slice assignment between two arrays would allocate a temporary copy (they
    # might overlap), which needs numba's runtime; these kernels compile without it.
    for k in range(length):
        target[at + k] = source[start + k]


@njit(cache=True)
def walk_block(block: np.ndarray, buffer: np.ndarray, used: int, offset: np.ndarray,
               caplen: np.ndarray, wirelen: np.ndarray, ts_us: np.ndarray,
               start: int) -> tuple[int, int]:
    """Copy the block's packets to ``buffer[used:]`` and fill the columns from ``start``.

    Returns the new column end and the new end of the used buffer.
    """
    count = _u32(block, _NUM_PKTS)
    at = _u32(block, _FIRST)
    index = start
    for _ in range(count):
        frame = at + _u16(block, at + _MAC)
        length = _u32(block, at + _SNAPLEN)
        original = _u32(block, at + _LEN)
        status = _u32(block, at + _STATUS)
        offset[index] = used
        ts_us[index] = _u32(block, at + _SEC) * 1_000_000 + _u32(block, at + _NSEC) // 1000
        if status & TP_STATUS_VLAN_VALID and length >= MAC_ADDRESSES_LEN:
            tpid = _u16(block, at + _TPID) if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
            tci = _u32(block, at + _TCI)
            _copy(buffer, used, block, frame, MAC_ADDRESSES_LEN)
            tag = used + MAC_ADDRESSES_LEN
            buffer[tag] = (tpid >> 8) & 0xFF
            buffer[tag + 1] = tpid & 0xFF
            buffer[tag + 2] = (tci >> 8) & 0xFF
            buffer[tag + 3] = tci & 0xFF
            rest = length - MAC_ADDRESSES_LEN
            body = frame + MAC_ADDRESSES_LEN
            _copy(buffer, tag + VLAN_TAG_LEN, block, body, rest)
            length += VLAN_TAG_LEN
            original += VLAN_TAG_LEN
        else:
            _copy(buffer, used, block, frame, length)
        caplen[index] = length
        wirelen[index] = original
        used += length
        index += 1
        step = _u32(block, at + _NEXT)
        if step == 0:
            break
        at += step
    return index, used


def packet_count(block: np.ndarray) -> int:
    """Return the number of packets in a retired block."""
    return int(block[_NUM_PKTS:_NUM_PKTS + 4].view(np.uint32)[0])
