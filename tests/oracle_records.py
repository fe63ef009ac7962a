"""Flow tables built from the ra CSV output of argus 3.0.8, for analysis tests.

The reference ra.csv files hold the columns stime ltime dur proto saddr sport dir daddr
dport pkts spkts dpkts bytes sbytes dbytes sappbytes dappbytes state flgs. Rows of
non-IP flows carry MAC addresses in the address columns; they become smac/dmac here
with null saddr/daddr, as the packet path stores them.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from appliance.records import FLOW_SCHEMA, EtherType, conform, pack_address

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CORPUS = SHARED / "corpus"
REFERENCE = SHARED / "oracle" / "reference"

#: Protocol names as ra prints them with -n, and their IP protocol numbers.
IP_PROTOCOLS = {"ip": 0, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6": 41,
                "gre": 47, "ipv6-icmp": 58}

#: Non-IP protocol names as ra prints them, and their ethertypes.
ETHER_PROTOCOLS = {"arp": EtherType.ARP, "llc": EtherType.LLC}

COUNTER_COLUMNS = {
    "TotPkts": "pkts", "SrcPkts": "spkts", "DstPkts": "dpkts", "TotBytes": "bytes",
    "SrcBytes": "sbytes", "DstBytes": "dbytes", "SAppBytes": "sappbytes",
    "DAppBytes": "dappbytes",
}


def parse_port(text: str) -> int:
    """Parse a port as ra prints it: decimal, ICMP hex (0x0008) or blank."""
    text = text.strip()
    if not text:
        return 0
    return int(text, 16) if text.startswith("0x") else int(text)


def parse_mac(text: str) -> bytes:
    """Parse a colon-separated MAC address."""
    return bytes(int(part, 16) for part in text.split(":"))


def is_mac(text: str) -> bool:
    """Tell whether an address printed by ra is a MAC address (six hex pairs)."""
    parts = text.split(":")
    return len(parts) == 6 and all(len(part) == 2 for part in parts) and "." not in text


def parse_time(text: str) -> datetime:
    """Parse epoch seconds with a fraction, as ra prints them with -u."""
    return datetime.fromtimestamp(float(text), tz=UTC)


def flow_row(row: dict[str, str]) -> dict[str, object]:
    """Convert one ra.csv row to a flow record dictionary."""
    proto_text = row["Proto"]
    source, destination = row["SrcAddr"], row["DstAddr"]
    record: dict[str, object] = {
        "srcid": "", "stime": parse_time(row["StartTime"]), "ltime": parse_time(row["LastTime"]),
        "sport": parse_port(row["Sport"]), "dport": parse_port(row["Dport"]),
        "dir": row["Dir"].strip(), "state": row["State"], "flgs": row["Flgs"], "trans": 1,
    }
    for label, name in COUNTER_COLUMNS.items():
        record[name] = int(row[label])

    mac_keyed = is_mac(source)
    if proto_text in ETHER_PROTOCOLS:
        record["etype"], record["proto"] = int(ETHER_PROTOCOLS[proto_text]), 0
    elif proto_text.isdigit():
        record["etype"], record["proto"] = int(proto_text), 0
    else:
        record["proto"] = IP_PROTOCOLS[proto_text]
        ipv6 = not mac_keyed and ":" in source
        record["etype"] = int(EtherType.IPV6 if ipv6 else EtherType.IPV4)
    if mac_keyed:
        record["smac"], record["dmac"] = parse_mac(source), parse_mac(destination)
    else:
        record["saddr"], record["daddr"] = pack_address(source), pack_address(destination)
    return record


def read_reference_flows(path: Path) -> pa.Table:
    """Read a reference ra.csv into a FLOW_SCHEMA table (one row per record)."""
    with path.open(newline="") as handle:
        rows = [flow_row(row) for row in csv.DictReader(handle)]
    columns = {field.name: [row.get(field.name) for row in rows] for field in FLOW_SCHEMA}
    return conform(pa.table(columns, schema=FLOW_SCHEMA))


def reference_captures(suffix: str) -> list[str]:
    """Name every capture whose ra.csv and ``suffix`` reference both have data rows."""
    names = []
    for flows in sorted(REFERENCE.glob("*.ra.csv")):
        capture = flows.name.removesuffix(".ra.csv")
        other = REFERENCE / f"{capture}.{suffix}"
        if other.exists() and len(flows.read_text().splitlines()) > 1:
            names.append(capture)
    return names
