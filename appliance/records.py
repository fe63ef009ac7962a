"""The flow record schema: one Arrow schema for every record Wirewatch writes or reads.

Column names are Argus field names, so `-s`, `-m` and filter expressions use
them unchanged. Addresses share one type for every family: 16 bytes, with IPv4
(and the IPv4 addresses of ARP flows) stored as IPv4-mapped IPv6
(``::ffff:a.b.c.d``), so that byte order equals numeric order within a family.
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum

import pyarrow as pa


class EtherType(IntEnum):
    """Ethertypes that decide how a flow's addresses and ports are read."""

    #: 802.3 frame with an LLC header (length field < 0x0600); ports are SSAP/DSAP.
    LLC = 0x0000
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD
    QINQ = 0x88A8


IPV4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
ZERO_ADDRESS = b"\x00" * 16
ZERO_MAC = b"\x00" * 6

#: Timestamps are UTC with microsecond resolution, as Argus stores them.
TIMESTAMP = pa.timestamp("us", tz="UTC")
ADDRESS = pa.binary(16)
MAC = pa.binary(6)

#: Every flow record column, with its meaning. Label columns are filled by ralabel.
FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("srcid", pa.string(), "sensor (probe) id that observed the flow"),
    ("seq", pa.uint64(), "record sequence number, per sensor"),
    ("stime", TIMESTAMP, "time of the first packet in this record"),
    ("ltime", TIMESTAMP, "time of the last packet in this record"),
    ("etype", pa.uint16(), "ethertype of the flow (0 = LLC, 0x0800 IPv4, 0x86dd IPv6, ...)"),
    ("proto", pa.uint8(), "IP protocol number; 0 for non-IP flows"),
    ("appproto", pa.string(), "rtp or rtcp when argus's rules recognise it in a UDP flow "
                              "(proto then prints it), else null"),
    ("saddr", ADDRESS, "source (initiator) address; IPv4 as IPv4-mapped IPv6"),
    ("sport", pa.uint16(), "source port; ICMP: type << 8 | code; LLC: SSAP"),
    ("daddr", ADDRESS, "destination address; IPv4 as IPv4-mapped IPv6"),
    ("dport", pa.uint16(), "destination port; ICMP: identifier; LLC: DSAP"),
    ("smac", MAC, "source MAC address of the first frame"),
    ("dmac", MAC, "destination MAC address of the first frame"),
    ("vlan", pa.uint16(), "802.1Q VLAN id of the first frame, null when untagged"),
    ("dir", pa.string(), "direction indicator as Argus prints it: ->, <-, <->, <?>, ?>, who"),
    ("state", pa.string(), "flow state (CON, INT, REQ, RSP, FIN, RST, ECO, ...)"),
    ("flgs", pa.string(), "Argus flags string, 9 positional characters"),
    ("cause", pa.string(), "why the record was written: Start, Status, Stop, Close, Error"),
    ("trans", pa.uint32(), "number of records aggregated into this one"),
    ("pkts", pa.uint64(), "packets, both directions"),
    ("spkts", pa.uint64(), "packets from saddr"),
    ("dpkts", pa.uint64(), "packets from daddr"),
    ("bytes", pa.uint64(), "wire bytes, both directions"),
    ("sbytes", pa.uint64(), "wire bytes from saddr"),
    ("dbytes", pa.uint64(), "wire bytes from daddr"),
    ("sappbytes", pa.uint64(), "application (payload) bytes from saddr"),
    ("dappbytes", pa.uint64(), "application (payload) bytes from daddr"),
    ("sttl", pa.uint8(), "IP TTL / hop limit of the last packet from saddr"),
    ("dttl", pa.uint8(), "IP TTL / hop limit of the last packet from daddr"),
    ("stos", pa.uint8(), "IP TOS / traffic class of the last packet from saddr"),
    ("dtos", pa.uint8(), "IP TOS / traffic class of the last packet from daddr"),
    ("suser", pa.binary(), "first user-data bytes sent by saddr (up to the capture length)"),
    ("duser", pa.binary(), "first user-data bytes sent by daddr (up to the capture length)"),
    ("sco", pa.string(), "country code of saddr (ralabel)"),
    ("dco", pa.string(), "country code of daddr (ralabel)"),
    ("sas", pa.uint32(), "autonomous system number of saddr (ralabel)"),
    ("das", pa.uint32(), "autonomous system number of daddr (ralabel)"),
    ("label", pa.string(), "ralabel text: key=value groups joined with ':'"),
]

FLOW_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in FIELDS])
FIELD_NAMES = [name for name, _, _ in FIELDS]
FIELD_DESCRIPTIONS = {name: text for name, _, text in FIELDS}


def empty_table() -> pa.Table:
    """Return a flow table with the full schema and no rows."""
    return FLOW_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Return ``table`` with every schema column present, in schema order.

    Missing columns are added as nulls, so record files written before a column
    existed stay readable. Columns that are not in the schema are kept at the end.
    """
    if table.schema.equals(FLOW_SCHEMA):
        return table
    columns = []
    for field in FLOW_SCHEMA:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    extra = [name for name in table.column_names if name not in FLOW_SCHEMA.names]
    arrays = columns + [table.column(name) for name in extra]
    fields = list(FLOW_SCHEMA) + [table.schema.field(name) for name in extra]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def pack_address(text: str) -> bytes:
    """Convert an IPv4 or IPv6 address in text form to the 16-byte record form."""
    address = ipaddress.ip_address(text)
    if address.version == 4:
        return IPV4_MAPPED_PREFIX + address.packed
    return address.packed


def is_ipv4_mapped(packed: bytes) -> bool:
    """Tell whether a 16-byte record address holds an IPv4 address."""
    return packed[:12] == IPV4_MAPPED_PREFIX


def address_to_text(packed: bytes) -> str:
    """Convert a 16-byte record address to its usual text form (dotted quad for IPv4)."""
    if is_ipv4_mapped(packed):
        return str(ipaddress.IPv4Address(packed[12:]))
    return str(ipaddress.IPv6Address(packed))


def mac_to_text(packed: bytes) -> str:
    """Format a 6-byte MAC address as Argus does: lower-case hex, colon separated."""
    return ":".join(f"{byte:02x}" for byte in packed)
