"""Linux AF_PACKET constants and the TPACKET_V3 ring's header layouts (linux/if_packet.h)."""

from __future__ import annotations

from enum import IntEnum


class SocketOption(IntEnum):
    """SOL_PACKET socket options."""

    ADD_MEMBERSHIP = 1
    RX_RING = 5
    STATISTICS = 6
    VERSION = 10
    FANOUT = 18


class FanoutMode(IntEnum):
    """PACKET_FANOUT modes: how the kernel spreads packets over a group's sockets."""

    HASH = 0  #: by flow hash, so both directions of a flow reach the same socket
    LB = 1
    CPU = 2


SOL_PACKET = 263
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
#: The kernel took the packet's 802.1Q tag out of the frame into tp_vlan_tci.
TP_STATUS_VLAN_VALID = 0x10
#: tp_vlan_tpid holds the tag's TPID (else it is 0x8100).
TP_STATUS_VLAN_TPID_VALID = 0x20
ETH_P_8021Q = 0x8100
#: Bytes of the two MAC addresses, after which a VLAN tag goes.
MAC_ADDRESSES_LEN = 12
VLAN_TAG_LEN = 4

#: ARPHRD_* interface types (/sys/class/net/IFACE/type) and the LINKTYPE of their frames.
LINKTYPE_OF_ARPHRD = {
    1: 1,  # ARPHRD_ETHER: Ethernet
    772: 1,  # ARPHRD_LOOPBACK: Ethernet header with zero addresses
    65534: 101,  # ARPHRD_NONE (tun, wireguard): raw IP
}

# struct tpacket_req3: seven u32 (block size, block count, frame size, frame count,
# block retire timeout in ms, private area size, feature request word).
TPACKET_REQ3_FORMAT = "7I"
# struct tpacket_stats_v3: packets, drops, freeze queue count (the kernel resets on read).
TPACKET_STATS_V3_FORMAT = "3I"
# struct packet_mreq: ifindex, type, address length, address.
PACKET_MREQ_FORMAT = "iHH8s"


class BlockHeader(IntEnum):
    """Byte offsets in struct tpacket_block_desc (version 1 header)."""

    BLOCK_STATUS = 8  # u32
    NUM_PKTS = 12  # u32
    OFFSET_TO_FIRST_PKT = 16  # u32
    BLK_LEN = 20  # u32


class PacketHeader(IntEnum):
    """Byte offsets in struct tpacket3_hdr."""

    NEXT_OFFSET = 0  # u32
    SEC = 4  # u32
    NSEC = 8  # u32
    SNAPLEN = 12  # u32
    LEN = 16  # u32
    STATUS = 20  # u32
    MAC = 24  # u16
    VLAN_TCI = 32  # u32
    VLAN_TPID = 36  # u16
