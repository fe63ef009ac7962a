"""Network layer: IPv4 (with fragments), IPv6 (with extension headers) and ARP."""

from __future__ import annotations

import numpy as np

from appliance.decode import columns as c
from appliance.decode.constants import (
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_WHOLE,
    IP_OPTION_TYPES,
    M_BAD_IP_HEADER,
    M_BAD_IP_LENGTH,
    M_NONE,
    M_TRUNCATED_ARP,
    M_TRUNCATED_IP,
    P_AH,
    P_HOPOPT,
    P_IPV6_FRAG,
    P_IPV6_OPTS,
    P_IPV6_ROUTE,
    P_MOBILITY,
    IpOption,
)
from appliance.decode.link import u16, u32
from appliance.jit import njit

IPV4_MIN_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
IPV6_FRAGMENT_HEADER_LEN = 8
ARP_IPV4_LEN = 28  # Ethernet/IPv4 ARP: 8-byte fixed part, two MACs and two IPv4 addresses
MAX_EXTENSION_HEADERS = 8


@njit(cache=True, inline="always")
def put_ipv4(buf, pos, out, row):
    """Store an IPv4 address as IPv4-mapped IPv6 (::ffff:a.b.c.d)."""
    for k in range(10):
        out[row, k] = 0
    out[row, 10] = 0xFF
    out[row, 11] = 0xFF
    for k in range(4):
        out[row, 12 + k] = buf[pos + k]


@njit(cache=True)
def put_ipv6(buf, pos, out, row):
    for k in range(16):
        out[row, k] = buf[pos + k]


IP_OPTION_END = 0
IP_OPTION_NOOP = 1
#: IPv4 option type -> IpOption flag, 0 for end and no-op, UNKNOWN for the rest.
IP_OPTION_FLAGS = np.full(256, int(IpOption.UNKNOWN), dtype=np.int64)
IP_OPTION_FLAGS[IP_OPTION_END] = 0
IP_OPTION_FLAGS[IP_OPTION_NOOP] = 0
for _type, _flag in IP_OPTION_TYPES.items():
    IP_OPTION_FLAGS[_type] = int(_flag)


@njit(cache=True)
def ipv4_options(buf, pos, end):
    """Return the IpOption flags of the options between ``pos`` and ``end``."""
    flags = 0
    while pos < end:
        kind = buf[pos]
        if kind == IP_OPTION_END:
            break
        flags |= IP_OPTION_FLAGS[kind]
        if kind == IP_OPTION_NOOP:
            pos += 1
            continue
        if pos + 1 >= end or buf[pos + 1] < 2:
            break
        pos += buf[pos + 1]
    return flags


@njit(cache=True, inline="always")
def parse_ipv4(buf, pos, end, wire_left, fields, saddr, daddr, row):
    """Decode an IPv4 header.

    Returns (transport position, captured end of the datagram, transport bytes on the
    wire, malformed).
    """
    if pos + IPV4_MIN_HEADER_LEN > end:
        return pos, pos, 0, M_TRUNCATED_IP
    header_len = (buf[pos] & 0x0F) * 4
    if buf[pos] >> 4 != 4 or header_len < IPV4_MIN_HEADER_LEN:
        return pos, pos, 0, M_BAD_IP_HEADER
    if pos + header_len > end:
        return pos, pos, 0, M_TRUNCATED_IP
    total_len = u16(buf, pos + 2)
    if total_len == 0:
        total_len = wire_left  # segmentation offload: the length was never filled in
    if total_len < header_len or total_len > wire_left:
        return pos, pos, 0, M_BAD_IP_LENGTH
    fragment = u16(buf, pos + 6)
    fields[row, c.IP_VERSION] = 4
    fields[row, c.TOS] = buf[pos + 1]
    fields[row, c.IP_ID] = u16(buf, pos + 4)
    fields[row, c.TTL] = buf[pos + 8]
    fields[row, c.PROTO] = buf[pos + 9]
    if fragment & 0x1FFF:
        fields[row, c.FRAGMENT] = FRAG_LATER
    elif fragment & 0x2000:
        fields[row, c.FRAGMENT] = FRAG_FIRST
    else:
        fields[row, c.FRAGMENT] = FRAG_WHOLE
    put_ipv4(buf, pos + 12, saddr, row)
    put_ipv4(buf, pos + 16, daddr, row)
    if header_len > IPV4_MIN_HEADER_LEN:
        fields[row, c.IP_OPTIONS] = ipv4_options(buf, pos + IPV4_MIN_HEADER_LEN, pos + header_len)
    return pos + header_len, min(end, pos + total_len), total_len - header_len, M_NONE


@njit(cache=True)
def skip_extension_headers(buf, pos, end, next_header, fields, row):
    """Walk IPv6 extension headers; return (protocol, transport position, malformed)."""
    for _ in range(MAX_EXTENSION_HEADERS):
        if next_header == P_IPV6_FRAG:
            if pos + IPV6_FRAGMENT_HEADER_LEN > end:
                return next_header, pos, M_TRUNCATED_IP
            offset = u16(buf, pos + 2)
            fields[row, c.IP_ID] = u32(buf, pos + 4)
            if offset >> 3:
                fields[row, c.FRAGMENT] = FRAG_LATER
            elif offset & 1:
                fields[row, c.FRAGMENT] = FRAG_FIRST
            next_header = np.int64(buf[pos])
            pos += IPV6_FRAGMENT_HEADER_LEN
        elif next_header in (P_HOPOPT, P_IPV6_ROUTE, P_IPV6_OPTS, P_MOBILITY, P_AH):
            if pos + 2 > end:
                return next_header, pos, M_TRUNCATED_IP
            if next_header == P_AH:
                length = (np.int64(buf[pos + 1]) + 2) * 4
            else:
                length = (np.int64(buf[pos + 1]) + 1) * 8
            next_header = np.int64(buf[pos])
            pos += length
        else:
            return next_header, pos, M_NONE
    return next_header, pos, M_BAD_IP_HEADER


@njit(cache=True)
def parse_ipv6(buf, pos, end, wire_left, fields, saddr, daddr, row):
    """Decode an IPv6 header and its extension headers; returns as parse_ipv4."""
    if pos + IPV6_HEADER_LEN > end:
        return pos, pos, 0, M_TRUNCATED_IP
    if buf[pos] >> 4 != 6:
        return pos, pos, 0, M_BAD_IP_HEADER
    total_len = IPV6_HEADER_LEN + u16(buf, pos + 4)
    if total_len == IPV6_HEADER_LEN:
        total_len = wire_left  # jumbogram or offload: take the frame's length
    if total_len > wire_left:
        return pos, pos, 0, M_BAD_IP_LENGTH
    fields[row, c.IP_VERSION] = 6
    fields[row, c.TOS] = ((buf[pos] & 0x0F) << 4) | (buf[pos + 1] >> 4)
    fields[row, c.TTL] = buf[pos + 7]
    fields[row, c.FRAGMENT] = FRAG_WHOLE
    put_ipv6(buf, pos + 8, saddr, row)
    put_ipv6(buf, pos + 24, daddr, row)
    datagram_end = min(end, pos + total_len)
    proto, transport, malformed = skip_extension_headers(
        buf, pos + IPV6_HEADER_LEN, datagram_end, np.int64(buf[pos + 6]), fields, row
    )
    fields[row, c.PROTO] = proto
    return transport, datagram_end, max(0, pos + total_len - transport), malformed


@njit(cache=True)
def parse_arp(buf, pos, end, fields, saddr, daddr, row):
    """Decode an Ethernet/IPv4 ARP packet: sender and target protocol addresses, operation."""
    if pos + ARP_IPV4_LEN > end:
        return M_TRUNCATED_ARP
    fields[row, c.ARP_OP] = u16(buf, pos + 6)
    if buf[pos + 4] == 6 and buf[pos + 5] == 4:
        put_ipv4(buf, pos + 14, saddr, row)
        put_ipv4(buf, pos + 24, daddr, row)
    return M_NONE
