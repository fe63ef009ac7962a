"""Turn flow records and argus's ra CSV output into comparable rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa

from appliance.records import address_to_text, is_ipv4_mapped, mac_to_text

#: The ra columns compared, as named in the CSV header argus prints.
RA_COLUMNS = ["StartTime", "LastTime", "Proto", "SrcAddr", "Sport", "Dir", "DstAddr", "Dport",
              "TotPkts", "SrcPkts", "DstPkts", "TotBytes", "SrcBytes", "DstBytes", "SAppBytes",
              "DAppBytes", "State", "Flgs"]
PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 58: "ipv6-icmp"}
ETHERTYPE_NAMES = {0x0806: "arp", 0x0000: "llc", 0x0800: "ip", 0x86DD: "ipv6"}


def swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def proto_text(etype: int, proto: int) -> str:
    if etype in (0x0800, 0x86DD) and proto:
        return PROTO_NAMES.get(proto, str(proto))
    return ETHERTYPE_NAMES.get(etype, str(etype))


def address_text(etype: int, packed: bytes) -> str:
    if etype in (0x0800, 0x86DD, 0x0806) or is_ipv4_mapped(packed):
        return address_to_text(packed)
    return mac_to_text(packed[10:])


def record_rows(table: pa.Table) -> list[tuple]:
    """Return our records as tuples in RA_COLUMNS order, ports in our own convention."""
    rows = []
    for r in table.to_pylist():
        etype = r["etype"]
        rows.append((
            f"{r['stime'].timestamp():.6f}", f"{r['ltime'].timestamp():.6f}",
            proto_text(etype, r["proto"]), address_text(etype, r["saddr"]), r["sport"],
            r["dir"], address_text(etype, r["daddr"]), r["dport"], r["pkts"], r["spkts"],
            r["dpkts"], r["bytes"], r["sbytes"], r["dbytes"], r["sappbytes"], r["dappbytes"],
            r["state"], r["flgs"].rstrip(),
        ))
    return sorted(rows)


def port_value(proto: str, text: str, source: bool) -> int:
    """Convert a port as ra prints it to the value Wirewatch stores."""
    if not text:
        return 0
    if proto == "icmp":
        # ra 3.0.8 prints ICMP type/code and identifiers byte-swapped, in hex.
        return swap16(int(text, 16))
    if proto == "ipv6-icmp" and source:
        return int(text) << 8  # ra prints the ICMPv6 type alone
    return int(text, 16) if text.startswith("0x") else int(text)


def reference_rows(csv_path: Path) -> list[tuple]:
    """Return argus's records from an ra -c , CSV file, in the same form as record_rows."""
    rows = []
    with csv_path.open(newline="") as handle:
        for line in csv.DictReader(handle):
            proto = line["Proto"]
            rows.append((
                line["StartTime"], line["LastTime"], proto, line["SrcAddr"],
                port_value(proto, line["Sport"], True), line["Dir"].strip(), line["DstAddr"],
                port_value(proto, line["Dport"], False),
                *(int(line[name]) for name in RA_COLUMNS[8:16]),
                line["State"], line["Flgs"].rstrip(),
            ))
    return sorted(rows)
