"""Tunnels argus 3.0.8 looks into: GRE (RFC 2784/2890, and PPTP's enhanced GRE) carrying IP.

The flow of a tunnelled packet is the inner packet's flow. Its bytes stay the
whole frame's, and flgs column 2 shows the GRE letter beside the outer link's.
"""

from __future__ import annotations

from appliance.decode.constants import ET_IPV4, ET_IPV6
from appliance.decode.link import ppp_to_ethertype, u16
from appliance.jit import njit

GRE_HEADER_LEN = 4
GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_ACK = 0x0080  #: enhanced GRE (version 1) acknowledgment number present
GRE_VERSION_MASK = 0x0007
GRE_OPTIONAL_LEN = 4
PPP_ETHERTYPE = 0x880B
PPP_ADDRESS_CONTROL = 0xFF03


@njit(cache=True)
def parse_gre(buf, pos, cap_end):
    """Decode a GRE header; return (inner ethertype or 0 when not IP, inner position)."""
    if pos + GRE_HEADER_LEN > cap_end:
        return 0, pos
    flags = u16(buf, pos)
    protocol = u16(buf, pos + 2)
    version = flags & GRE_VERSION_MASK
    length = GRE_HEADER_LEN
    if version == 0:
        if flags & GRE_ROUTING:
            return 0, pos
        for bit in (GRE_CHECKSUM, GRE_KEY, GRE_SEQUENCE):
            if flags & bit:
                length += GRE_OPTIONAL_LEN
    elif version == 1 and protocol == PPP_ETHERTYPE:
        length += GRE_OPTIONAL_LEN  # payload length and call id
        for bit in (GRE_SEQUENCE, GRE_ACK):
            if flags & bit:
                length += GRE_OPTIONAL_LEN
    else:
        return 0, pos
    inner = pos + length
    if protocol == PPP_ETHERTYPE:
        if inner + 2 <= cap_end and u16(buf, inner) == PPP_ADDRESS_CONTROL:
            inner += 2
        if inner + 2 > cap_end:
            return 0, pos
        protocol = ppp_to_ethertype(u16(buf, inner))
        inner += 2
    if protocol != ET_IPV4 and protocol != ET_IPV6:
        return 0, pos
    return protocol, inner
