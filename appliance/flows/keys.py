"""Bidirectional flow keys: both directions of a conversation map to one key.

A key is 48 bytes: ethertype (2), IP protocol (1), a zero byte, side A address
(16), side B address (16), side A port (2), side B port (2), extra (4) and four
zero bytes. The role column says whether a packet's sender is side A or side B.
Which side is A:
- TCP, UDP and other IP: the smaller (address, port); the flow table later picks
  the initiator. UDP on port 53 with a captured DNS header sets extra to
  DNS_TAGGED and the transaction id; the flow table keys a DNS flow by the id of
  its first answered transaction, and by DNS_PENDING until an answer arrives.
- ICMP queries (echo, timestamp, information, mask): the requester; the key holds
  the request type, the identifier and (IPv4 only) the sequence number, so every
  echo exchange is its own flow as in argus 3.0.8, which also keys all ICMPv6
  echoes between two hosts as one flow.
- Other ICMP (errors, MLD, neighbour discovery): the sender; key holds type and code.
- ARP: the requester, so a reply joins its request's flow.
- Other non-IP frames: the smaller MAC address; the key holds the ethertype. 802.3/LLC
  frames always count as sent by side A, as argus 3.0.8 counts them.
"""

from __future__ import annotations

from appliance.decode import columns as c
from appliance.decode.constants import (
    ET_ARP,
    ET_IPV4,
    ET_IPV6,
    ET_LLC,
    FRAG_LATER,
    P_ICMP,
    P_ICMPV6,
    P_UDP,
)
from appliance.decode.transport import ICMP_UNREACHABLE, icmp_request_type
from appliance.jit import njit

KEY_LEN = 48
ADDRESS_A = 4
ADDRESS_B = 20
PORT_A = 36
PORT_B = 38
EXTRA = 40
#: MACs sit at the end of the 16-byte address slot.
MAC_IN_ADDRESS = 10


@njit(cache=True, inline="always")
def put_u16(keys, row, pos, value):
    keys[row, pos] = (value >> 8) & 0xFF
    keys[row, pos + 1] = value & 0xFF


@njit(cache=True, inline="always")
def put_u32(keys, row, pos, value):
    for k in range(4):
        keys[row, pos + k] = (value >> (24 - 8 * k)) & 0xFF


@njit(cache=True, inline="always")
def compare_sides(first, second, row, first_port, second_port):
    """Return -1, 0 or 1 as (first address, first port) sorts before, with or after second."""
    for k in range(first.shape[1]):
        if first[row, k] != second[row, k]:
            return -1 if first[row, k] < second[row, k] else 1
    if first_port != second_port:
        return -1 if first_port < second_port else 1
    return 0


@njit(cache=True, inline="always")
def put_sides(keys, row, a_addr, b_addr, width, a_port, b_port):
    offset = 16 - width
    for k in range(width):
        keys[row, ADDRESS_A + offset + k] = a_addr[row, k]
        keys[row, ADDRESS_B + offset + k] = b_addr[row, k]
    put_u16(keys, row, PORT_A, a_port)
    put_u16(keys, row, PORT_B, b_port)


@njit(cache=True)
def key_icmp(fields, saddr, daddr, keys, row):
    """Key an ICMP/ICMPv6 packet; return the sender's role (0 = side A)."""
    version = fields[row, c.IP_VERSION]
    sport = fields[row, c.SPORT]
    icmp_type = sport >> 8
    request = icmp_request_type(icmp_type, version)
    if request < 0:
        put_sides(keys, row, saddr, daddr, 16, sport, fields[row, c.DPORT])
        extra = fields[row, c.ICMP_SEQ]
        if version == 4 and icmp_type == ICMP_UNREACHABLE:
            extra = 0
        put_u32(keys, row, EXTRA, extra)
        return 0
    port_a = (request << 8) | (sport & 0xFF)
    ident = fields[row, c.DPORT] if version == 4 else 0
    sequence = fields[row, c.ICMP_SEQ] if version == 4 else 0
    put_u32(keys, row, EXTRA, sequence)
    if request == icmp_type:
        put_sides(keys, row, saddr, daddr, 16, port_a, ident)
        return 0
    put_sides(keys, row, daddr, saddr, 16, port_a, ident)
    return 1


#: UDP flows on this port are keyed by their DNS transaction id too.
DNS_PORT = 53
#: Values of the first extra byte of a DNS key: the id follows, or no answer came yet.
DNS_TAGGED = 1
DNS_PENDING = 2


@njit(cache=True, inline="always")
def key_ip(fields, saddr, daddr, buffer, keys, row):
    sport = fields[row, c.SPORT]
    dport = fields[row, c.DPORT]
    is_dns = fields[row, c.PROTO] == P_UDP and (sport == DNS_PORT or dport == DNS_PORT)
    if is_dns and fields[row, c.PAYLOAD_CAPLEN] >= 2:
        offset = fields[row, c.PAYLOAD_OFFSET]
        keys[row, EXTRA] = DNS_TAGGED
        keys[row, EXTRA + 2] = buffer[offset]
        keys[row, EXTRA + 3] = buffer[offset + 1]
    if compare_sides(saddr, daddr, row, sport, dport) <= 0:
        put_sides(keys, row, saddr, daddr, 16, sport, dport)
        return 0
    put_sides(keys, row, daddr, saddr, 16, dport, sport)
    return 1


@njit(cache=True)
def key_arp(fields, saddr, daddr, keys, row):
    if fields[row, c.ARP_OP] == 2:  # a reply: its target is the requester
        put_sides(keys, row, daddr, saddr, 16, 0, 0)
        return 1
    put_sides(keys, row, saddr, daddr, 16, 0, 0)
    return 0


@njit(cache=True)
def key_mac(fields, smac, dmac, keys, row):
    sport = fields[row, c.SPORT]
    dport = fields[row, c.DPORT]
    # argus 3.0.8 counts every 802.3/LLC frame as sent by the lower MAC address.
    llc = fields[row, c.ETYPE] == ET_LLC
    if compare_sides(smac, dmac, row, sport, dport) <= 0:
        put_sides(keys, row, smac, dmac, 6, sport, dport)
        return 0
    put_sides(keys, row, dmac, smac, 6, dport, sport)
    return 0 if llc else 1


@njit(cache=True)
def build_keys(fields, saddr, daddr, smac, dmac, buffer, keys, role):
    """Fill ``keys`` (n x 48 bytes) and ``role`` for every decoded frame."""
    for row in range(len(fields)):
        for k in range(keys.shape[1]):
            keys[row, k] = 0
        etype = fields[row, c.ETYPE]
        proto = fields[row, c.PROTO]
        put_u16(keys, row, 0, etype)
        keys[row, 2] = proto
        if etype == ET_IPV4 or etype == ET_IPV6:
            is_icmp = proto == P_ICMP or proto == P_ICMPV6
            if is_icmp and fields[row, c.FRAGMENT] != FRAG_LATER:
                role[row] = key_icmp(fields, saddr, daddr, keys, row)
            else:
                role[row] = key_ip(fields, saddr, daddr, buffer, keys, row)
        elif etype == ET_ARP:
            role[row] = key_arp(fields, saddr, daddr, keys, row)
        else:
            role[row] = key_mac(fields, smac, dmac, keys, row)
