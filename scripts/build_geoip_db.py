"""Build a GeoLite2-Country-compatible .mmdb file from a country table (TSV).

Usage: python scripts/build_geoip_db.py TABLE OUT.mmdb

TABLE has the columns network, iso_code, holder, source (tab separated, one header
line, ``#`` comment lines). Each network becomes a record ``{"country": {"iso_code":
CODE}}``, which is what maxminddb readers return for GeoLite2-Country.
"""

from __future__ import annotations

import csv
import ipaddress
import sys
from pathlib import Path

DATABASE_TYPE = "GeoLite2-Country"


class CountryTableError(ValueError):
    """A country table row that cannot be used."""


def read_country_table(path: str | Path) -> list[tuple[str, str]]:
    """Read (network, iso_code) pairs; raise ``CountryTableError`` naming a bad row."""
    rows = []
    with Path(path).open(newline="") as handle:
        lines = (line for line in handle if line.strip() and not line.startswith("#"))
        for number, row in enumerate(csv.DictReader(lines, delimiter="\t"), start=1):
            network, code = (row.get("network") or "").strip(), (row.get("iso_code") or "").strip()
            try:
                ipaddress.ip_network(network)
            except ValueError as error:
                reason = f"{path}: row {number}: invalid network {network!r} ({error})"
                raise CountryTableError(reason) from error
            if len(code) != 2 or not code.isalpha() or not code.isupper():
                raise CountryTableError(f"{path}: row {number}: invalid ISO 3166 code {code!r}")
            rows.append((network, code))
    return rows


def build_database(rows: list[tuple[str, str]], out_path: str | Path,
                   description: str = "Wirewatch demo country table") -> Path:
    """Write an IPv6 (IPv4-compatible) MaxMind database mapping each network to its country."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type=DATABASE_TYPE, languages=["en"],
                        description={"en": description}, ipv4_compatible=True)
    for network, code in rows:
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code}})
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(out_path))
    return out_path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: build_geoip_db.py TABLE OUT.mmdb", file=sys.stderr)
        return 2
    try:
        rows = read_country_table(argv[0])
    except (OSError, CountryTableError) as error:
        print(f"build_geoip_db: {error}", file=sys.stderr)
        return 2
    path = build_database(rows, argv[1])
    print(f"wrote {len(rows)} networks to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
