"""Transport layer: TCP, UDP, ICMP and ICMPv6 headers, and the headers ICMP errors quote."""

from __future__ import annotations

import numpy as np

from appliance.decode import columns as c
from appliance.decode.constants import (
    ET_IPV4,
    ET_IPV6,
    FRAG_LATER,
    M_NONE,
    M_TRUNCATED_TRANSPORT,
    P_ICMP,
    P_TCP,
    P_UDP,
)
from appliance.decode.link import u16, u32
from appliance.decode.network import IPV4_MIN_HEADER_LEN, parse_ipv4, parse_ipv6
from appliance.jit import njit

TCP_MIN_HEADER_LEN = 20
TCP_FLAGS_END = 14  # the flags byte is byte 13
TCP_OPTION_END = 0
TCP_OPTION_NOP = 1
TCP_OPTION_WINDOW_SCALE = 3
TCP_SYN_FLAG = 0x02
UDP_HEADER_LEN = 8
ICMP_HEADER_LEN = 8

# ICMP (v4) types whose identifier and sequence number pair a request with its reply.
ICMP_ECHO_REPLY = 0
ICMP_UNREACHABLE = 3
ICMP_SOURCE_QUENCH = 4
ICMP_REDIRECT = 5
ICMP_ECHO = 8
ICMP_ROUTER_ADVERT = 9
ICMP_ROUTER_SOLICIT = 10
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12
ICMP_TIMESTAMP = 13
ICMP_TIMESTAMP_REPLY = 14
ICMP_INFO_REQUEST = 15
ICMP_INFO_REPLY = 16
ICMP_MASK_REQUEST = 17
ICMP_MASK_REPLY = 18
ICMP_UNREACHABLE_PROTOCOL = 2  # code
ICMP_UNREACHABLE_PORT = 3  # code

ICMPV6_UNREACHABLE = 1
ICMPV6_PARAMETER_PROBLEM = 4
ICMPV6_ECHO = 128
ICMPV6_ECHO_REPLY = 129
# ICMPv6 queries that argus 3.0.8 pairs with their replies, as it pairs echoes.
ICMPV6_MLD_QUERY = 130
ICMPV6_MLD_REPORT = 131
ICMPV6_MLD_DONE = 132
ICMPV6_ROUTER_SOLICIT = 133
ICMPV6_ROUTER_ADVERT = 134
ICMPV6_NEIGHBOR_SOLICIT = 135
ICMPV6_NEIGHBOR_ADVERT = 136


@njit(cache=True)
def icmp_request_type(icmp_type, version):
    """Return the request type an ICMP reply answers, or -1 for types that are not queries."""
    if version == 4:
        if icmp_type in (ICMP_ECHO, ICMP_TIMESTAMP, ICMP_INFO_REQUEST, ICMP_MASK_REQUEST):
            return icmp_type
        if icmp_type == ICMP_ECHO_REPLY:
            return ICMP_ECHO
        if icmp_type in (ICMP_TIMESTAMP_REPLY, ICMP_INFO_REPLY, ICMP_MASK_REPLY):
            return icmp_type - 1
        return -1
    if icmp_type == ICMPV6_ECHO or icmp_type == ICMPV6_ECHO_REPLY:
        return ICMPV6_ECHO
    if ICMPV6_MLD_QUERY <= icmp_type <= ICMPV6_MLD_DONE:
        return ICMPV6_MLD_QUERY
    if icmp_type == ICMPV6_ROUTER_SOLICIT or icmp_type == ICMPV6_ROUTER_ADVERT:
        return ICMPV6_ROUTER_SOLICIT
    if icmp_type == ICMPV6_NEIGHBOR_SOLICIT or icmp_type == ICMPV6_NEIGHBOR_ADVERT:
        return ICMPV6_NEIGHBOR_SOLICIT
    return -1


@njit(cache=True)
def is_icmp_error(icmp_type, version):
    if version == 4:
        return icmp_type in (
            ICMP_UNREACHABLE, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED,
            ICMP_PARAMETER_PROBLEM,
        )
    return ICMPV6_UNREACHABLE <= icmp_type <= ICMPV6_PARAMETER_PROBLEM


@njit(cache=True)
def is_icmp_info(icmp_type):
    """Tell whether an ICMP (v4) type is a query, reply or router message, not an error."""
    return icmp_type in (
        ICMP_ECHO_REPLY, ICMP_ECHO, ICMP_ROUTER_ADVERT, ICMP_ROUTER_SOLICIT, ICMP_TIMESTAMP,
        ICMP_TIMESTAMP_REPLY, ICMP_INFO_REQUEST, ICMP_INFO_REPLY, ICMP_MASK_REQUEST,
        ICMP_MASK_REPLY,
    )


@njit(cache=True, inline="always")
def set_payload(fields, row, start, cap_end, wire_len):
    fields[row, c.PAYLOAD_OFFSET] = start
    fields[row, c.PAYLOAD_CAPLEN] = max(0, cap_end - start)
    fields[row, c.PAYLOAD_LEN] = max(0, wire_len)


@njit(cache=True)
def window_scale(buf, pos, header_len, cap_end):
    """Return the shift count of a TCP header's window-scale option, or -1 without one."""
    end = min(pos + header_len, cap_end)
    k = pos + TCP_MIN_HEADER_LEN
    while k < end:
        kind = buf[k]
        if kind == TCP_OPTION_END:
            return -1
        if kind == TCP_OPTION_NOP:
            k += 1
            continue
        if k + 1 >= end or buf[k + 1] < 2:
            return -1
        if kind == TCP_OPTION_WINDOW_SCALE:
            return buf[k + 2] if k + 2 < end else -1
        k += buf[k + 1]
    return -1


@njit(cache=True, inline="always")
def parse_tcp(buf, pos, cap_end, wire_len, fields, row):
    if pos + 4 > cap_end:
        return M_TRUNCATED_TRANSPORT
    fields[row, c.SPORT] = u16(buf, pos)
    fields[row, c.DPORT] = u16(buf, pos + 2)
    # Not a literal: the inlined code would type header_len by its first value.
    header_len = np.int64(TCP_MIN_HEADER_LEN)
    fields[row, c.TCP_WINDOW] = -1
    fields[row, c.TCP_WSCALE] = -1
    if pos + TCP_FLAGS_END <= cap_end:
        fields[row, c.TCP_SEQ] = u32(buf, pos + 4)
        fields[row, c.TCP_ACK] = u32(buf, pos + 8)
        header_len = (buf[pos + 12] >> 4) * 4
        fields[row, c.TCP_FLAGS] = buf[pos + 13]
    if pos + TCP_MIN_HEADER_LEN <= cap_end:
        fields[row, c.TCP_WINDOW] = u16(buf, pos + 14)
        # The window-scale option is valid only in SYN segments (RFC 7323).
        if header_len > TCP_MIN_HEADER_LEN and buf[pos + 13] & TCP_SYN_FLAG:
            fields[row, c.TCP_WSCALE] = window_scale(buf, pos, header_len, cap_end)
    # An invalid data offset (below 20) still sets the payload length, as in argus 3.0.8.
    set_payload(fields, row, pos + max(header_len, TCP_MIN_HEADER_LEN), cap_end,
                wire_len - header_len)
    return M_NONE


@njit(cache=True, inline="always")
def parse_udp(buf, pos, cap_end, wire_len, fields, row):
    if pos + 4 > cap_end:
        return M_TRUNCATED_TRANSPORT
    fields[row, c.SPORT] = u16(buf, pos)
    fields[row, c.DPORT] = u16(buf, pos + 2)
    set_payload(fields, row, pos + UDP_HEADER_LEN, cap_end, wire_len - UDP_HEADER_LEN)
    return M_NONE


@njit(cache=True)
def parse_quoted(buf, pos, cap_end, version, quoted_fields, quoted_saddr, quoted_daddr, row):
    """Decode the IP header (and ports) an ICMP error quotes; return 1 when it decoded.

    The quoted datagram is usually cut short, so its IP length is not checked.
    """
    unchecked = 1 << 30
    quoted_fields[row, :] = 0
    quoted_saddr[row, :] = 0
    quoted_daddr[row, :] = 0
    if version == 4:
        transport, end, _, malformed = parse_ipv4(
            buf, pos, cap_end, unchecked, quoted_fields, quoted_saddr, quoted_daddr, row
        )
        quoted_fields[row, c.ETYPE] = ET_IPV4
    else:
        transport, end, _, malformed = parse_ipv6(
            buf, pos, cap_end, unchecked, quoted_fields, quoted_saddr, quoted_daddr, row
        )
        quoted_fields[row, c.ETYPE] = ET_IPV6
    if malformed != M_NONE:
        return 0
    proto = quoted_fields[row, c.PROTO]
    if quoted_fields[row, c.FRAGMENT] == FRAG_LATER:
        return 1
    if proto == P_TCP or proto == P_UDP:
        if transport + 4 <= end:
            quoted_fields[row, c.SPORT] = u16(buf, transport)
            quoted_fields[row, c.DPORT] = u16(buf, transport + 2)
        if proto == P_UDP:  # the DNS header, part of a DNS flow's key
            quoted_fields[row, c.PAYLOAD_OFFSET] = transport + UDP_HEADER_LEN
            quoted_fields[row, c.PAYLOAD_CAPLEN] = max(0, end - transport - UDP_HEADER_LEN)
    elif transport + ICMP_HEADER_LEN <= end:  # a quoted ICMP query
        quoted_fields[row, c.SPORT] = u16(buf, transport)
        quoted_fields[row, c.DPORT] = u16(buf, transport + 4)
        quoted_fields[row, c.ICMP_SEQ] = u16(buf, transport + 6)
    return 1


@njit(cache=True)
def error_dport(icmp_type, code, version, quoted_fields, quoted_daddr, row):
    """Return the dport argus 3.0.8 gives an ICMP error, from the code or the quoted packet.

    - ICMPv6 errors: the code.
    - Port unreachable: the quoted destination port.
    - Net and host unreachable, and redirects for a net or a host: the first two bytes
      of the quoted destination address, read little-endian as argus stores them
      (0x10ac for 172.16.5.9; ra 3.0.8 prints every ICMP dport byte-swapped, 0xac10).
    - Protocol unreachable: the quoted IP protocol.
    """
    if version != 4:
        return code
    if icmp_type == ICMP_UNREACHABLE and code == ICMP_UNREACHABLE_PORT:
        return quoted_fields[row, c.DPORT]
    if icmp_type == ICMP_UNREACHABLE and code == ICMP_UNREACHABLE_PROTOCOL:
        return quoted_fields[row, c.PROTO]
    if (icmp_type == ICMP_UNREACHABLE or icmp_type == ICMP_REDIRECT) and code <= 1:
        return (np.int64(quoted_daddr[row, 13]) << 8) | np.int64(quoted_daddr[row, 12])
    return 0


@njit(cache=True)
def set_icmp_payload(buf, pos, cap_end, snap_end, wire_len, fields, row):
    """Set the payload of an ICMP (v4) message as argus 3.0.8 counts it.

    The payload is the ICMP message, header included, except for types that are
    not queries, replies or router messages (errors and unknown types). For those
    argus decodes the quoted IPv4 header again, counts its total length minus
    its header length (at least 0) as application bytes and takes user data from
    the quoted transport header on. It does so only when the ICMP header and 20
    quoted bytes are captured, counting bytes past the IP length (an Ethernet
    trailer) too, and it checks neither the quoted version nor the header length.

    NOTE: argus 3.0.8 counts no packet, bytes or record for an error whose quoted header
    has a fragment offset. Here such an error counts like any other.
    """
    quote = pos + ICMP_HEADER_LEN
    if is_icmp_info(buf[pos]) or quote + IPV4_MIN_HEADER_LEN > snap_end:
        set_payload(fields, row, pos, cap_end, wire_len)
        return
    header_len = (buf[quote] & 0x0F) * 4
    quoted_len = u16(buf, quote + 2) - header_len
    start = quote + header_len
    fields[row, c.PAYLOAD_OFFSET] = start
    fields[row, c.PAYLOAD_CAPLEN] = max(0, min(quoted_len, snap_end - start))
    fields[row, c.PAYLOAD_LEN] = max(0, quoted_len)


@njit(cache=True)
def parse_icmp(buf, pos, cap_end, snap_end, wire_len, version, fields, quoted_fields,
               quoted_saddr, quoted_daddr, row):
    """Decode an ICMP or ICMPv6 header and set its payload as argus counts it.

    ``cap_end`` is the captured end of the IP datagram, ``snap_end`` that of the frame.
    The payload of ICMPv6 messages is the whole message, header included.
    """
    if pos + 2 > cap_end:
        return M_TRUNCATED_TRANSPORT
    icmp_type = np.int64(buf[pos])
    fields[row, c.SPORT] = (icmp_type << 8) | np.int64(buf[pos + 1])
    if icmp_request_type(icmp_type, version) >= 0 and pos + ICMP_HEADER_LEN <= cap_end:
        fields[row, c.DPORT] = u16(buf, pos + 4)
        fields[row, c.ICMP_SEQ] = u16(buf, pos + 6)
    elif is_icmp_error(icmp_type, version):
        fields[row, c.QUOTED] = parse_quoted(
            buf, pos + ICMP_HEADER_LEN, cap_end, version, quoted_fields, quoted_saddr,
            quoted_daddr, row,
        )
        if fields[row, c.QUOTED]:
            fields[row, c.DPORT] = error_dport(
                icmp_type, np.int64(buf[pos + 1]), version, quoted_fields, quoted_daddr, row
            )
    if version == 4 and fields[row, c.PROTO] == P_ICMP:
        set_icmp_payload(buf, pos, cap_end, snap_end, wire_len, fields, row)
    else:
        set_payload(fields, row, pos, cap_end, wire_len)
    return M_NONE
