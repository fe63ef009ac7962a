"""Layout of the decoded-packet table: one int64 column per header field."""

from __future__ import annotations

#: (column name, meaning). The position in this list is the column index.
FIELD_COLUMNS: list[tuple[str, str]] = [
    ("etype", "ethertype of the network layer; 0 for 802.3/LLC frames"),
    ("proto", "IP protocol number (after IPv6 extension headers); 0 for non-IP"),
    ("sport", "TCP/UDP source port; ICMP type << 8 | code; LLC SSAP"),
    ("dport", "TCP/UDP destination port; ICMP echo identifier; LLC DSAP"),
    ("icmp_seq", "ICMP echo sequence number"),
    ("tcp_flags", "TCP flags byte (FIN 0x01 ... CWR 0x80)"),
    ("ttl", "IPv4 TTL or IPv6 hop limit"),
    ("tos", "IPv4 TOS or IPv6 traffic class"),
    ("payload_offset", "buffer offset of the transport payload (ICMP: of the ICMP header, "
                       "or for ICMPv4 errors of the quoted transport header)"),
    ("payload_caplen", "payload bytes present in the capture"),
    ("payload_len", "payload bytes on the wire, from the IP length fields"),
    ("vlan", "outermost 802.1Q VLAN id, -1 when untagged"),
    ("encapsulation", "Encapsulation flags"),
    ("fragment", "FragmentKind of the IP datagram"),
    ("ip_id", "IPv4 identification or IPv6 fragment identification"),
    ("tcp_seq", "TCP sequence number"),
    ("malformed", "Malformed kind; 0 for a frame that decoded"),
    ("ip_version", "4, 6, or 0 for non-IP"),
    ("arp_op", "ARP operation (1 request, 2 reply)"),
    ("quoted", "1 when an ICMP error quotes an IP header whose flow key was decoded"),
    ("bytes", "bytes counted for the flow: the wire length without a cooked or loopback header"),
    ("ip_options", "IpOption flags of the IPv4 options present"),
    ("tcp_ack", "TCP acknowledgment number"),
    ("tcp_window", "TCP window field (unscaled); -1 when the 20-byte TCP header is not captured"),
    ("tcp_wscale", "shift count of the TCP window-scale option; -1 when absent"),
]

COLUMN_INDEX = {name: index for index, (name, _) in enumerate(FIELD_COLUMNS)}
COLUMN_COUNT = len(FIELD_COLUMNS)

ETYPE = COLUMN_INDEX["etype"]
PROTO = COLUMN_INDEX["proto"]
SPORT = COLUMN_INDEX["sport"]
DPORT = COLUMN_INDEX["dport"]
ICMP_SEQ = COLUMN_INDEX["icmp_seq"]
TCP_FLAGS = COLUMN_INDEX["tcp_flags"]
TTL = COLUMN_INDEX["ttl"]
TOS = COLUMN_INDEX["tos"]
PAYLOAD_OFFSET = COLUMN_INDEX["payload_offset"]
PAYLOAD_CAPLEN = COLUMN_INDEX["payload_caplen"]
PAYLOAD_LEN = COLUMN_INDEX["payload_len"]
VLAN = COLUMN_INDEX["vlan"]
ENCAPSULATION = COLUMN_INDEX["encapsulation"]
FRAGMENT = COLUMN_INDEX["fragment"]
IP_ID = COLUMN_INDEX["ip_id"]
TCP_SEQ = COLUMN_INDEX["tcp_seq"]
MALFORMED = COLUMN_INDEX["malformed"]
IP_VERSION = COLUMN_INDEX["ip_version"]
ARP_OP = COLUMN_INDEX["arp_op"]
QUOTED = COLUMN_INDEX["quoted"]
BYTES = COLUMN_INDEX["bytes"]
IP_OPTIONS = COLUMN_INDEX["ip_options"]
TCP_ACK = COLUMN_INDEX["tcp_ack"]
TCP_WINDOW = COLUMN_INDEX["tcp_window"]
TCP_WSCALE = COLUMN_INDEX["tcp_wscale"]
