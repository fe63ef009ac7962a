"""Link layer: Ethernet (802.1Q, QinQ, MPLS, PPPoE, LLC), 802.11, SLL, PPP, raw IP, loopback."""

from __future__ import annotations

import numpy as np

from appliance.decode.constants import (
    EN_ETHERNET,
    EN_LLC,
    EN_MPLS,
    EN_PPP,
    EN_PPPOE,
    EN_QINQ,
    EN_SLL,
    EN_VLAN,
    EN_WLAN,
    ET_IPV4,
    ET_IPV6,
    ET_LLC,
    ET_MPLS,
    ET_MPLS_MULTICAST,
    ET_PPPOE_SESSION,
    ET_QINQ,
    ET_QINQ_OLD,
    ET_VLAN,
    LT_ETHERNET,
    LT_IEEE802_11,
    LT_IPV4,
    LT_IPV6,
    LT_LINUX_SLL,
    LT_LINUX_SLL2,
    LT_LOOP,
    LT_NULL,
    LT_PPP,
    LT_PPP_HDLC,
    LT_RADIOTAP,
    LT_RAW,
    LT_RAW_OPENBSD,
    M_NONE,
    M_TRUNCATED_LINK,
    M_UNSUPPORTED_LINKTYPE,
    M_UNSUPPORTED_NETWORK,
    PPP_IPV4,
    PPP_IPV6,
)
from appliance.jit import njit

ETHERNET_HEADER_LEN = 14
SLL_HEADER_LEN = 16
SLL2_HEADER_LEN = 20
VLAN_TAG_LEN = 4
MPLS_LABEL_LEN = 4
PPPOE_HEADER_LEN = 8  # 6-byte PPPoE session header plus the 2-byte PPP protocol
LLC_SNAP_LEN = 8
#: 802.3 frames carry a length, not an ethertype, below this value.
MIN_ETHERTYPE = 0x0600
#: BSD loopback address families that mean IPv6 (NetBSD/OpenBSD, FreeBSD, Darwin).
BSD_AF_INET = 2
BSD_AF_INET6 = (24, 28, 30)


@njit(cache=True, inline="always")
def u16(buf, pos):
    # int64, not int(): numba types int() of a uint8 as uint64, and a uint64 that meets
    # an int64 (a position, a length) turns both into float64.
    return (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])


@njit(cache=True, inline="always")
def u32(buf, pos):
    high = (np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16)
    return high | (np.int64(buf[pos + 2]) << 8) | np.int64(buf[pos + 3])


@njit(cache=True)
def ethertype_from_version(buf, pos, end):
    """Return the ethertype of a raw IP packet, from its version nibble (0 if neither)."""
    if pos >= end:
        return 0
    version = buf[pos] >> 4
    if version == 4:
        return ET_IPV4
    if version == 6:
        return ET_IPV6
    return 0


@njit(cache=True, inline="always")
def follow_ethertype(buf, pos, end, etype, encaps, vlan):
    """Walk VLAN tags, MPLS labels, PPPoE and LLC/SNAP until a network-layer ethertype.

    Returns (ethertype, position of the network header, encapsulation flags, vlan, malformed).
    """
    for _ in range(16):
        if etype == ET_VLAN or etype == ET_QINQ or etype == ET_QINQ_OLD:
            if pos + VLAN_TAG_LEN > end:
                return etype, pos, encaps, vlan, M_TRUNCATED_LINK
            if encaps & EN_VLAN:
                encaps |= EN_QINQ
            else:
                vlan = u16(buf, pos) & 0x0FFF
            encaps |= EN_VLAN
            etype = u16(buf, pos + 2)
            pos += VLAN_TAG_LEN
        elif etype == ET_MPLS or etype == ET_MPLS_MULTICAST:
            encaps |= EN_MPLS
            bottom = False
            while not bottom:
                if pos + MPLS_LABEL_LEN > end:
                    return etype, pos, encaps, vlan, M_TRUNCATED_LINK
                bottom = (buf[pos + 2] & 0x01) != 0
                pos += MPLS_LABEL_LEN
            etype = ethertype_from_version(buf, pos, end)
        elif etype == ET_PPPOE_SESSION:
            if pos + PPPOE_HEADER_LEN > end:
                return etype, pos, encaps, vlan, M_TRUNCATED_LINK
            encaps |= EN_PPPOE
            etype = ppp_to_ethertype(u16(buf, pos + 6))
            pos += PPPOE_HEADER_LEN
        elif etype < MIN_ETHERTYPE:
            # 802.3 length field: an LLC header follows, maybe with a SNAP extension.
            if pos + 3 > end:
                return etype, pos, encaps, vlan, M_TRUNCATED_LINK
            encaps |= EN_LLC
            if buf[pos] == 0xAA and buf[pos + 1] == 0xAA and pos + LLC_SNAP_LEN <= end:
                etype = u16(buf, pos + 6)
                pos += LLC_SNAP_LEN
            else:
                return ET_LLC, pos, encaps, vlan, M_NONE
        else:
            return etype, pos, encaps, vlan, M_NONE
    return etype, pos, encaps, vlan, M_TRUNCATED_LINK


@njit(cache=True)
def ppp_to_ethertype(protocol):
    if protocol == PPP_IPV4:
        return ET_IPV4
    if protocol == PPP_IPV6:
        return ET_IPV6
    return 0x10000 + protocol  # not an ethertype: the caller reports it as unsupported


@njit(cache=True, inline="always")
def copy_mac(buf, pos, out, row):
    for k in range(6):
        out[row, k] = buf[pos + k]


@njit(cache=True, inline="always")
def parse_ethernet(buf, pos, end, smac, dmac, row):
    if pos + ETHERNET_HEADER_LEN > end:
        return 0, pos, EN_ETHERNET, -1, M_TRUNCATED_LINK
    copy_mac(buf, pos, dmac, row)
    copy_mac(buf, pos + 6, smac, row)
    etype = u16(buf, pos + 12)
    return follow_ethertype(buf, pos + ETHERNET_HEADER_LEN, end, etype, EN_ETHERNET, -1)


@njit(cache=True)
def parse_sll(buf, pos, end, smac, row, version):
    """Linux cooked capture v1 (protocol at byte 14) or v2 (protocol at byte 0)."""
    header_len = SLL_HEADER_LEN if version == 1 else SLL2_HEADER_LEN
    if pos + header_len > end:
        return 0, pos, EN_SLL, -1, M_TRUNCATED_LINK
    if version == 1:
        address_len, address_pos, protocol = u16(buf, pos + 4), pos + 6, u16(buf, pos + 14)
    else:
        address_len, address_pos, protocol = np.int64(buf[pos + 11]), pos + 12, u16(buf, pos)
    if address_len == 6:
        copy_mac(buf, address_pos, smac, row)
    # argus 3.0.8 marks cooked captures as Ethernet plus SLL, so flgs shows '*'.
    return follow_ethertype(buf, pos + header_len, end, protocol, EN_ETHERNET | EN_SLL, -1)


@njit(cache=True)
def parse_ppp(buf, pos, end):
    if pos + 2 <= end and buf[pos] == 0xFF and buf[pos + 1] == 0x03:
        pos += 2  # HDLC address and control bytes
    if pos + 2 > end:
        return 0, pos, EN_PPP, -1, M_TRUNCATED_LINK
    return ppp_to_ethertype(u16(buf, pos)), pos + 2, EN_PPP, -1, M_NONE


@njit(cache=True)
def parse_loopback(buf, pos, end, network_order):
    if pos + 4 > end:
        return 0, pos, 0, -1, M_TRUNCATED_LINK
    if network_order:
        family = u32(buf, pos)
    else:
        family = np.int64(buf[pos])
        if family == 0:  # written big-endian by the capturing host
            family = np.int64(buf[pos + 3])
    if family == BSD_AF_INET:
        return ET_IPV4, pos + 4, 0, -1, M_NONE
    for value in BSD_AF_INET6:
        if family == value:
            return ET_IPV6, pos + 4, 0, -1, M_NONE
    return ethertype_from_version(buf, pos + 4, end), pos + 4, 0, -1, M_NONE


WLAN_HEADER_LEN = 24
WLAN_ADDRESS4_LEN = 6
WLAN_QOS_LEN = 2
WLAN_HT_CONTROL_LEN = 4
WLAN_TYPE_DATA = 2
WLAN_TO_DS = 0x01
WLAN_FROM_DS = 0x02
WLAN_PROTECTED = 0x40
WLAN_ORDER = 0x80
WLAN_SUBTYPE_QOS = 0x08
WLAN_SUBTYPE_NO_DATA = 0x04
RADIOTAP_MIN_LEN = 8


@njit(cache=True)
def radiotap_len(buf, pos, end):
    """Return the length of the radiotap header at ``pos`` (little-endian), or -1."""
    if pos + RADIOTAP_MIN_LEN > end:
        return -1
    length = np.int64(buf[pos + 2]) | (np.int64(buf[pos + 3]) << 8)
    return length if length >= RADIOTAP_MIN_LEN else -1


@njit(cache=True)
def parse_wlan(buf, pos, end, smac, dmac, row):
    """Decode an 802.11 data frame and its LLC/SNAP header.

    Other frames (management, control, no-data, encrypted) carry no flow and are
    reported as an unsupported network layer.
    """
    if pos + WLAN_HEADER_LEN > end:
        return 0, pos, EN_WLAN, -1, M_TRUNCATED_LINK
    control, flags = buf[pos], buf[pos + 1]
    subtype = control >> 4
    if ((control >> 2) & 0x03) != WLAN_TYPE_DATA or subtype & WLAN_SUBTYPE_NO_DATA:
        return 0, pos, EN_WLAN, -1, M_UNSUPPORTED_NETWORK
    if flags & WLAN_PROTECTED:
        return 0, pos, EN_WLAN, -1, M_UNSUPPORTED_NETWORK
    header_len = WLAN_HEADER_LEN
    ds = flags & (WLAN_TO_DS | WLAN_FROM_DS)
    if ds == WLAN_TO_DS | WLAN_FROM_DS:
        header_len += WLAN_ADDRESS4_LEN
    if subtype & WLAN_SUBTYPE_QOS:
        header_len += WLAN_QOS_LEN
        if flags & WLAN_ORDER:
            header_len += WLAN_HT_CONTROL_LEN
    if pos + header_len > end:
        return 0, pos, EN_WLAN, -1, M_TRUNCATED_LINK
    # Addresses 1-4 by the distribution-system bits: (destination, source).
    destination, source = pos + 4, pos + 10
    if ds == WLAN_TO_DS:
        destination = pos + 16
    elif ds == WLAN_FROM_DS:
        source = pos + 16
    elif ds == WLAN_TO_DS | WLAN_FROM_DS:
        destination, source = pos + 16, pos + 24
    copy_mac(buf, destination, dmac, row)
    copy_mac(buf, source, smac, row)
    # The body starts with an LLC header, as after an 802.3 length field.
    return follow_ethertype(buf, pos + header_len, end, 0, EN_WLAN, -1)


@njit(cache=True, inline="always")
def parse_link(buf, pos, end, linktype, smac, dmac, row):
    """Decode the link layer of one frame.

    Returns (ethertype, position of the network header, encapsulation flags, vlan, malformed).
    """
    if linktype == LT_ETHERNET:
        return parse_ethernet(buf, pos, end, smac, dmac, row)
    if linktype == LT_RAW or linktype == LT_RAW_OPENBSD:
        return ethertype_from_version(buf, pos, end), pos, 0, -1, M_NONE
    if linktype == LT_IPV4:
        return ET_IPV4, pos, 0, -1, M_NONE
    if linktype == LT_IPV6:
        return ET_IPV6, pos, 0, -1, M_NONE
    if linktype == LT_LINUX_SLL:
        return parse_sll(buf, pos, end, smac, row, 1)
    if linktype == LT_LINUX_SLL2:
        return parse_sll(buf, pos, end, smac, row, 2)
    if linktype == LT_NULL:
        return parse_loopback(buf, pos, end, False)
    if linktype == LT_LOOP:
        return parse_loopback(buf, pos, end, True)
    if linktype == LT_PPP or linktype == LT_PPP_HDLC:
        return parse_ppp(buf, pos, end)
    if linktype == LT_RADIOTAP:
        length = radiotap_len(buf, pos, end)
        if length < 0:
            return 0, pos, EN_WLAN, -1, M_TRUNCATED_LINK
        return parse_wlan(buf, pos + length, end, smac, dmac, row)
    if linktype == LT_IEEE802_11:
        return parse_wlan(buf, pos, end, smac, dmac, row)
    return 0, pos, 0, -1, M_UNSUPPORTED_LINKTYPE
