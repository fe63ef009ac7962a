"""Protocol numbers, encapsulation flags and malformed-packet kinds used by the decoder.

The compiled decoder reads the plain ``int`` copies at the bottom of this module,
because numba folds module-level integers into the machine code as constants.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class LinkType(IntEnum):
    """LINKTYPE_* values (tcpdump.org link-layer header types) that the decoder reads."""

    NULL = 0  #: BSD loopback: 4-byte address family in the writer's byte order
    ETHERNET = 1
    PPP = 9
    RAW_OPENBSD = 12  #: raw IP, the value OpenBSD uses for LINKTYPE_RAW
    PPP_HDLC = 50
    RAW = 101  #: raw IPv4 or IPv6, told apart by the version nibble
    LOOP = 108  #: OpenBSD loopback: address family in network byte order
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    IEEE802_11 = 105  #: 802.11 frames without a radio header
    IEEE802_11_RADIOTAP = 127  #: 802.11 frames after a radiotap header
    LINUX_SLL2 = 276


class EtherType(IntEnum):
    """Ethertypes the link layer decoder follows."""

    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100  #: 802.1Q tag
    IPV6 = 0x86DD
    MPLS = 0x8847
    MPLS_MULTICAST = 0x8848
    PPPOE_SESSION = 0x8864
    QINQ = 0x88A8  #: 802.1ad service tag
    QINQ_OLD = 0x9100  #: pre-standard double tag


class PppProtocol(IntEnum):
    """PPP protocol field values for IP."""

    IPV4 = 0x0021
    IPV6 = 0x0057


class IpProto(IntEnum):
    """IP protocol numbers (and IPv6 next-header values) the decoder reads."""

    HOPOPT = 0
    ICMP = 1
    IGMP = 2
    TCP = 6
    UDP = 17
    IPV6_ROUTE = 43
    IPV6_FRAG = 44
    GRE = 47
    ESP = 50
    AH = 51
    ICMPV6 = 58
    IPV6_NONXT = 59
    IPV6_OPTS = 60
    MOBILITY = 135


class Encapsulation(IntFlag):
    """Encapsulations seen below the network layer of a frame."""

    ETHERNET = 0x01
    VLAN = 0x02
    LLC = 0x04
    SLL = 0x08
    PPP = 0x10
    MPLS = 0x20
    PPPOE = 0x40
    QINQ = 0x80  #: more than one VLAN tag
    WLAN = 0x100  #: 802.11
    GRE = 0x200  #: generic routing encapsulation


#: The letter each encapsulation gets in column 2 of the Argus flgs string.
ENCAPSULATION_LETTERS = {
    Encapsulation.ETHERNET: "e",
    Encapsulation.VLAN: "v",
    Encapsulation.LLC: "l",
    Encapsulation.SLL: "S",
    Encapsulation.PPP: "p",
    Encapsulation.MPLS: "m",
    Encapsulation.PPPOE: "p",
    Encapsulation.QINQ: "v",
    Encapsulation.WLAN: "w",
    Encapsulation.GRE: "G",
}


class IpOption(IntFlag):
    """IPv4 options seen in a datagram (flgs column 8)."""

    ROUTER_ALERT = 0x01
    STRICT_ROUTE = 0x02
    LOOSE_ROUTE = 0x04
    TIMESTAMP = 0x08
    SECURITY = 0x10
    RECORD_ROUTE = 0x20
    UNKNOWN = 0x40


#: IPv4 option type byte -> IpOption; types not listed (except end and no-op) are UNKNOWN.
IP_OPTION_TYPES = {
    0x94: IpOption.ROUTER_ALERT,
    0x89: IpOption.STRICT_ROUTE,
    0x83: IpOption.LOOSE_ROUTE,
    0x44: IpOption.TIMESTAMP,
    0x82: IpOption.SECURITY,
    0x85: IpOption.SECURITY,
    0x07: IpOption.RECORD_ROUTE,
}
#: flgs column 8 letter of each option; several options print 'O'.
IP_OPTION_LETTERS = {
    IpOption.ROUTER_ALERT: "A",
    IpOption.STRICT_ROUTE: "S",
    IpOption.LOOSE_ROUTE: "L",
    IpOption.TIMESTAMP: "T",
    IpOption.SECURITY: "+",
    IpOption.RECORD_ROUTE: "R",
    IpOption.UNKNOWN: "U",
}


class Malformed(IntEnum):
    """Reason a frame did not decode into a flow. Such frames are counted and skipped."""

    NONE = 0
    UNSUPPORTED_LINKTYPE = 1
    TRUNCATED_LINK = 2
    TRUNCATED_IP = 3
    BAD_IP_HEADER = 4
    BAD_IP_LENGTH = 5
    TRUNCATED_TRANSPORT = 6
    TRUNCATED_ARP = 7
    UNSUPPORTED_NETWORK = 8


class FragmentKind(IntEnum):
    """Position of a packet in a fragmented IP datagram."""

    WHOLE = 0
    FIRST = 1  #: offset 0, more fragments follow: carries the transport header
    LATER = 2  #: non-zero offset: no transport header, folded into the first one's flow


class Role(IntEnum):
    """Side of the flow key that sent a packet."""

    FORWARD = 0  #: the sender is key side A
    REVERSE = 1  #: the sender is key side B


# Plain integer copies for the compiled code.
LT_NULL = int(LinkType.NULL)
LT_ETHERNET = int(LinkType.ETHERNET)
LT_PPP = int(LinkType.PPP)
LT_RAW_OPENBSD = int(LinkType.RAW_OPENBSD)
LT_PPP_HDLC = int(LinkType.PPP_HDLC)
LT_RAW = int(LinkType.RAW)
LT_LOOP = int(LinkType.LOOP)
LT_LINUX_SLL = int(LinkType.LINUX_SLL)
LT_IPV4 = int(LinkType.IPV4)
LT_IPV6 = int(LinkType.IPV6)
LT_LINUX_SLL2 = int(LinkType.LINUX_SLL2)
LT_IEEE802_11 = int(LinkType.IEEE802_11)
LT_RADIOTAP = int(LinkType.IEEE802_11_RADIOTAP)

ET_IPV4 = int(EtherType.IPV4)
ET_ARP = int(EtherType.ARP)
ET_VLAN = int(EtherType.VLAN)
ET_IPV6 = int(EtherType.IPV6)
ET_MPLS = int(EtherType.MPLS)
ET_MPLS_MULTICAST = int(EtherType.MPLS_MULTICAST)
ET_PPPOE_SESSION = int(EtherType.PPPOE_SESSION)
ET_QINQ = int(EtherType.QINQ)
ET_QINQ_OLD = int(EtherType.QINQ_OLD)
#: Ethertype recorded for 802.3 frames with an LLC header.
ET_LLC = 0

PPP_IPV4 = int(PppProtocol.IPV4)
PPP_IPV6 = int(PppProtocol.IPV6)

P_ICMP = int(IpProto.ICMP)
P_TCP = int(IpProto.TCP)
P_UDP = int(IpProto.UDP)
P_HOPOPT = int(IpProto.HOPOPT)
P_IPV6_ROUTE = int(IpProto.IPV6_ROUTE)
P_IPV6_FRAG = int(IpProto.IPV6_FRAG)
P_AH = int(IpProto.AH)
P_ICMPV6 = int(IpProto.ICMPV6)
P_IPV6_OPTS = int(IpProto.IPV6_OPTS)
P_MOBILITY = int(IpProto.MOBILITY)
P_IGMP = int(IpProto.IGMP)
P_GRE = int(IpProto.GRE)

EN_ETHERNET = int(Encapsulation.ETHERNET)
EN_VLAN = int(Encapsulation.VLAN)
EN_LLC = int(Encapsulation.LLC)
EN_SLL = int(Encapsulation.SLL)
EN_PPP = int(Encapsulation.PPP)
EN_MPLS = int(Encapsulation.MPLS)
EN_PPPOE = int(Encapsulation.PPPOE)
EN_QINQ = int(Encapsulation.QINQ)
EN_WLAN = int(Encapsulation.WLAN)
EN_GRE = int(Encapsulation.GRE)

M_NONE = int(Malformed.NONE)
M_UNSUPPORTED_LINKTYPE = int(Malformed.UNSUPPORTED_LINKTYPE)
M_TRUNCATED_LINK = int(Malformed.TRUNCATED_LINK)
M_TRUNCATED_IP = int(Malformed.TRUNCATED_IP)
M_BAD_IP_HEADER = int(Malformed.BAD_IP_HEADER)
M_BAD_IP_LENGTH = int(Malformed.BAD_IP_LENGTH)
M_TRUNCATED_TRANSPORT = int(Malformed.TRUNCATED_TRANSPORT)
M_TRUNCATED_ARP = int(Malformed.TRUNCATED_ARP)
M_UNSUPPORTED_NETWORK = int(Malformed.UNSUPPORTED_NETWORK)

FRAG_WHOLE = int(FragmentKind.WHOLE)
FRAG_FIRST = int(FragmentKind.FIRST)
FRAG_LATER = int(FragmentKind.LATER)
