"""The compiled decode loop: one pass over a batch, header fields into columns."""

from __future__ import annotations

from appliance.decode import columns as c
from appliance.decode.constants import (
    EN_GRE,
    EN_LLC,
    EN_WLAN,
    ET_ARP,
    ET_IPV4,
    ET_IPV6,
    ET_LLC,
    FRAG_LATER,
    FRAG_WHOLE,
    LT_LINUX_SLL,
    LT_LINUX_SLL2,
    LT_LOOP,
    LT_NULL,
    LT_RADIOTAP,
    M_NONE,
    M_UNSUPPORTED_NETWORK,
    P_GRE,
    P_ICMP,
    P_ICMPV6,
    P_IGMP,
    P_TCP,
    P_UDP,
)
from appliance.decode.link import parse_link, radiotap_len
from appliance.decode.network import ARP_IPV4_LEN, parse_arp, parse_ipv4, parse_ipv6, put_ipv4
from appliance.decode.transport import parse_icmp, parse_tcp, parse_udp
from appliance.decode.tunnel import parse_gre
from appliance.jit import njit

#: Link types whose header was made up by the capturing host, not seen on the wire.
PSEUDO_HEADER_LINKTYPES = (LT_NULL, LT_LOOP, LT_LINUX_SLL, LT_LINUX_SLL2)
#: The group address of an IGMP message: bytes 4 to 8.
IGMP_GROUP = 4
IGMP_GROUP_END = 8
#: ethertypes above this are PPP protocols the link layer could not map.
MAX_ETHERTYPE = 0xFFFF
#: Entries of the ``counts`` array that ``decode_frames`` fills.
COUNT_MALFORMED = 0
COUNT_FRAGMENTS = 1
COUNT_QUOTED = 2
COUNTS = 3


@njit(cache=True, inline="always")
def decode_ip(buf, pos, end, wire_left, etype, fields, saddr, daddr, quoted_fields,
              quoted_saddr, quoted_daddr, row):
    if etype == ET_IPV4:
        transport, cap_end, wire_len, malformed = parse_ipv4(
            buf, pos, end, wire_left, fields, saddr, daddr, row
        )
        version = 4
    else:
        transport, cap_end, wire_len, malformed = parse_ipv6(
            buf, pos, end, wire_left, fields, saddr, daddr, row
        )
        version = 6
    if malformed != M_NONE:
        return malformed
    proto = fields[row, c.PROTO]
    if fields[row, c.FRAGMENT] == FRAG_LATER:
        # argus 3.0.8 counts no application bytes for fragments after the first.
        fields[row, c.PAYLOAD_OFFSET] = transport
        return M_NONE
    if proto == P_TCP:
        return parse_tcp(buf, transport, cap_end, wire_len, fields, row)
    if proto == P_UDP:
        return parse_udp(buf, transport, cap_end, wire_len, fields, row)
    if proto == P_ICMP or proto == P_ICMPV6:
        return parse_icmp(buf, transport, cap_end, end, wire_len, version, fields,
                          quoted_fields, quoted_saddr, quoted_daddr, row)
    if proto == P_IGMP and version == 4 and transport + IGMP_GROUP_END <= cap_end:
        # argus 3.0.8 keys IGMP by the message's group field, in place of daddr.
        put_ipv4(buf, transport + IGMP_GROUP, daddr, row)
    fields[row, c.PAYLOAD_OFFSET] = transport
    fields[row, c.PAYLOAD_CAPLEN] = max(0, cap_end - transport)
    fields[row, c.PAYLOAD_LEN] = wire_len
    return M_NONE


@njit(cache=True)
def decode_gre(buf, end, fields, saddr, daddr, quoted_fields, quoted_saddr, quoted_daddr, row):
    """Decode the IP packet inside a GRE packet in place of the outer one, if there is one."""
    if fields[row, c.FRAGMENT] != FRAG_WHOLE:
        return M_NONE
    start = fields[row, c.PAYLOAD_OFFSET]
    inner_etype, inner = parse_gre(buf, start, end)
    if inner_etype == 0:
        return M_NONE
    fields[row, c.ETYPE] = inner_etype
    fields[row, c.ENCAPSULATION] |= EN_GRE
    fields[row, c.IP_OPTIONS] = 0
    wire_left = fields[row, c.PAYLOAD_LEN] - (inner - start)
    return decode_ip(buf, inner, end, wire_left, inner_etype, fields, saddr, daddr,
                     quoted_fields, quoted_saddr, quoted_daddr, row)


@njit(cache=True, inline="always")
def decode_frame(buf, start, caplen, wirelen, linktype, fields, saddr, daddr, smac, dmac,
                 quoted_fields, quoted_saddr, quoted_daddr, row):
    end = start + caplen
    etype, pos, encaps, vlan, malformed = parse_link(buf, start, end, linktype, smac, dmac, row)
    fields[row, c.ETYPE] = etype
    fields[row, c.ENCAPSULATION] = encaps
    fields[row, c.VLAN] = vlan
    fields[row, c.BYTES] = wirelen
    if linktype in PSEUDO_HEADER_LINKTYPES:
        # argus 3.0.8 counts cooked and loopback frames from the network header on.
        fields[row, c.BYTES] = wirelen - (pos - start)
    elif linktype == LT_RADIOTAP:
        # ... and 802.11 frames from the 802.11 header on, without the radio header.
        fields[row, c.BYTES] = wirelen - max(0, radiotap_len(buf, start, end))
    if malformed != M_NONE:
        return malformed
    if etype > MAX_ETHERTYPE or (etype == ET_LLC and not encaps & EN_LLC):
        return M_UNSUPPORTED_NETWORK
    wire_left = wirelen - (pos - start)
    if etype == ET_IPV4 or etype == ET_IPV6:
        malformed = decode_ip(buf, pos, end, wire_left, etype, fields, saddr, daddr,
                              quoted_fields, quoted_saddr, quoted_daddr, row)
        if malformed == M_NONE and fields[row, c.PROTO] == P_GRE:
            return decode_gre(buf, end, fields, saddr, daddr, quoted_fields, quoted_saddr,
                              quoted_daddr, row)
        return malformed
    # Non-IP frames: argus counts ARP's length minus the ARP body, others whole, as app bytes.
    fields[row, c.PAYLOAD_OFFSET] = pos
    fields[row, c.PAYLOAD_CAPLEN] = end - pos
    if etype == ET_ARP:
        fields[row, c.PAYLOAD_LEN] = max(0, wirelen - ARP_IPV4_LEN)
        if encaps & EN_WLAN:  # argus 3.0.8 counts a whole 802.11 ARP frame
            fields[row, c.PAYLOAD_LEN] = fields[row, c.BYTES]
        return parse_arp(buf, pos, end, fields, saddr, daddr, row)
    fields[row, c.PAYLOAD_LEN] = wirelen
    if etype == ET_LLC:  # 802.3 with LLC: ports are the service access points
        fields[row, c.SPORT] = buf[pos + 1]
        fields[row, c.DPORT] = buf[pos]
    return M_NONE


@njit(cache=True, inline="always")
def clear_row(fields, saddr, daddr, smac, dmac, row):
    """Zero one frame's output row (the quoted-packet arrays are zeroed by parse_quoted)."""
    for k in range(fields.shape[1]):
        fields[row, k] = 0
    for k in range(saddr.shape[1]):
        saddr[row, k] = 0
        daddr[row, k] = 0
    for k in range(smac.shape[1]):
        smac[row, k] = 0
        dmac[row, k] = 0


@njit(cache=True)
def decode_frames(buf, offset, caplen, wirelen, linktype, fields, saddr, daddr, smac, dmac,
                  quoted_fields, quoted_saddr, quoted_daddr, counts):
    """Decode every frame of a batch into the preallocated output arrays.

    Each frame's row is zeroed first, so the arrays may hold an earlier batch. ``counts``
    receives the frames that are malformed, IP fragments (not malformed) and ICMP
    errors with a decoded quoted packet, so the caller can skip the rarer work.
    """
    malformed_rows = 0
    fragment_rows = 0
    quoted_rows = 0
    for row in range(len(offset)):
        clear_row(fields, saddr, daddr, smac, dmac, row)
        malformed = decode_frame(
            buf, offset[row], caplen[row], wirelen[row], linktype[row], fields, saddr, daddr,
            smac, dmac, quoted_fields, quoted_saddr, quoted_daddr, row,
        )
        fields[row, c.MALFORMED] = malformed
        if malformed != M_NONE:
            malformed_rows += 1
        elif fields[row, c.FRAGMENT] != FRAG_WHOLE:
            fragment_rows += 1
        if fields[row, c.QUOTED]:
            quoted_rows += 1
    counts[COUNT_MALFORMED] = malformed_rows
    counts[COUNT_FRAGMENTS] = fragment_rows
    counts[COUNT_QUOTED] = quoted_rows
