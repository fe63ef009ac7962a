"""ralabel: country codes from a MaxMind database, address labels and port names.

* Country codes go to sco/dco. The database is any MaxMind-format (.mmdb) file whose
  records hold ``country.iso_code``, such as GeoLite2-Country. IPv4 addresses that the
  database does not cover get ``ZZ``; IPv6 addresses it does not cover, and flows
  without IP addresses, stay null (ralabel 3.0.8 does the same).
* An address label file has lines ``CIDR-or-address[-last-address] label``; ``#``
  starts a comment. Every entry that contains an address contributes its label,
  less specific first, joined with ``,`` (``10.0.0.0/8 LabNet`` and ``10.0.0.2
  WebServer`` label 10.0.0.2 as ``LabNet,WebServer``).
* Port labels are IANA service names for TCP and UDP ports, read through the
  system's services database (``/etc/services``).

The label column gets ``key=value`` groups joined with ``:`` in the order
``saddr``, ``daddr``, ``sport``, ``dport``, appended to any label already present.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from pathlib import Path

import maxminddb
import pyarrow as pa
import pyarrow.compute as pc

from appliance.records import conform, is_ipv4_mapped

log = logging.getLogger(__name__)

#: Country code for IPv4 addresses that the database does not cover.
UNKNOWN_COUNTRY = "ZZ"

PORT_PROTOCOLS = {6: "tcp", 17: "udp"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class LabelError(ValueError):
    """A label source (GeoIP database or address file) that cannot be used."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _unpack(packed: bytes) -> IPAddress:
    """Convert a 16-byte record address to an IPv4 or IPv6 address object."""
    if is_ipv4_mapped(packed):
        return ipaddress.IPv4Address(packed[12:])
    return ipaddress.IPv6Address(packed)


class CountryLabeler:
    """Country lookups in a MaxMind-format database; usable as a context manager."""

    def __init__(self, mmdb_path: str | Path) -> None:
        path = Path(mmdb_path)
        if not path.is_file():
            raise LabelError(path, "GeoIP database not found; set the geoip path to an .mmdb file")
        try:
            self._reader = maxminddb.open_database(str(path))
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as error:
            raise LabelError(path, f"not a MaxMind database ({error})") from error
        self.path = path
        log.info("opened GeoIP database %s (%s)", path, self._reader.metadata().database_type)

    def country(self, packed: bytes | None) -> str | None:
        """Return the ISO country code of a 16-byte record address.

        Uncovered IPv4 addresses give ``ZZ``; uncovered IPv6 addresses and null give None.
        """
        if packed is None:
            return None
        address = _unpack(packed)
        try:
            record = self._reader.get(address)
        except ValueError:
            # An IPv6 address looked up in an IPv4-only database.
            record = None
        code = None
        if isinstance(record, dict):
            code = (record.get("country") or record.get("registered_country") or {}).get(
                "iso_code"
            )
        if code is None and address.version == 4:
            return UNKNOWN_COUNTRY
        return code

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> CountryLabeler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def database_info(mmdb_path: str | Path) -> dict[str, object]:
    """Return a MaxMind database's build epoch, type, description and IP version."""
    with CountryLabeler(mmdb_path) as labeler:
        metadata = labeler._reader.metadata()
        return {
            "path": str(labeler.path),
            "build_epoch": int(metadata.build_epoch),
            "database_type": metadata.database_type,
            "description": dict(metadata.description),
            "ip_version": int(metadata.ip_version),
        }


class AddressLabels:
    """Labels for address prefixes, looked up by longest and shorter matches alike."""

    def __init__(self, entries: Iterable[tuple[IPNetwork, str]]) -> None:
        # One table per (version, prefix length), so a lookup costs one probe per length.
        self._tables: dict[tuple[int, int], dict[IPNetwork, list[str]]] = {}
        for network, label in entries:
            key = (network.version, network.prefixlen)
            self._tables.setdefault(key, {}).setdefault(network, []).append(label)
        self._lengths = sorted(self._tables)

    @classmethod
    def from_file(cls, path: str | Path) -> AddressLabels:
        """Read an address label file; raise ``LabelError`` naming the first bad line."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            reason = f"cannot read the address label file ({error.strerror})"
            raise LabelError(path, reason) from error
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            content = line.split("#", 1)[0].strip()
            if not content:
                continue
            parts = content.split(None, 1)
            if len(parts) != 2:
                reason = f"line {number}: expected 'address-or-CIDR label', got {line!r}"
                raise LabelError(path, reason)
            try:
                networks = _parse_networks(parts[0])
            except ValueError as error:
                reason = f"line {number}: invalid address {parts[0]!r} ({error})"
                raise LabelError(path, reason) from error
            entries += [(network, parts[1].strip()) for network in networks]
        return cls(entries)

    def labels(self, address: IPAddress) -> list[str]:
        """Return the labels of every entry containing ``address``, less specific first."""
        found: list[str] = []
        for version, length in self._lengths:
            if version != address.version:
                continue
            network = ipaddress.ip_network(f"{address}/{length}", strict=False)
            found += self._tables[(version, length)].get(network, [])
        return found


def _parse_networks(text: str) -> list[IPNetwork]:
    """Parse ``CIDR``, a single address or ``first-last`` into networks."""
    if "-" in text:
        first, last = (ipaddress.ip_address(part) for part in text.split("-", 1))
        return list(ipaddress.summarize_address_range(first, last))
    return [ipaddress.ip_network(text, strict=False)]


def service_name(port: int, proto: int) -> str | None:
    """Return the IANA service name of a TCP or UDP port, or None when it has none."""
    protocol = PORT_PROTOCOLS.get(proto)
    if protocol is None or port is None:
        return None
    try:
        return socket.getservbyport(port, protocol)
    except (OSError, OverflowError):
        return None


def _lookup_unique(column: pa.ChunkedArray, lookup) -> pa.Array:
    """Apply ``lookup`` once per distinct value of ``column`` and spread the results."""
    distinct = pc.unique(column)
    results = pa.array([lookup(value) for value in distinct.to_pylist()], type=pa.string())
    return pc.take(results, pc.index_in(column, value_set=distinct))


def label_records(
    table: pa.Table,
    geoip: str | Path | None = None,
    address_file: str | Path | None = None,
    port_labels: bool = False,
) -> pa.Table:
    """Fill sco/dco from the GeoIP database and add address and port labels.

    Raises ``LabelError`` when the database or the address file cannot be used.
    """
    table = conform(table)
    if geoip is not None:
        with CountryLabeler(geoip) as labeler:
            for field, target in (("saddr", "sco"), ("daddr", "dco")):
                codes = _lookup_unique(table.column(field), labeler.country)
                table = table.set_column(table.schema.get_field_index(target), target, codes)

    groups: list[pa.Array] = []
    if address_file is not None:
        labels = AddressLabels.from_file(address_file)

        def address_group(key: str):
            def lookup(packed: bytes | None) -> str | None:
                found = labels.labels(_unpack(packed)) if packed is not None else []
                return f"{key}={','.join(found)}" if found else None
            return lookup

        for field in ("saddr", "daddr"):
            groups.append(_lookup_unique(table.column(field), address_group(field)))
    if port_labels:
        for field in ("sport", "dport"):
            groups.append(_port_group(table, field))
    if groups:
        table = _append_label_groups(table, groups)
    log.debug("labelled %d records", table.num_rows)
    return table


def _port_group(table: pa.Table, field: str) -> pa.Array:
    """Build ``sport=name`` / ``dport=name`` groups for TCP and UDP records."""
    # One integer per (port, proto) pair, so each distinct pair is looked up once.
    ports = pc.multiply(table.column(field).cast(pa.int32()), 256)
    pairs = pc.add(ports, table.column("proto").cast(pa.int32()))

    def lookup(pair: int | None) -> str | None:
        name = service_name(pair >> 8, pair & 0xFF) if pair is not None else None
        return f"{field}={name}" if name else None

    return _lookup_unique(pairs, lookup)


def _append_label_groups(table: pa.Table, groups: list[pa.Array]) -> pa.Table:
    """Join label groups with ``:`` (skipping nulls) after the existing label text."""
    rows = zip(table.column("label").to_pylist(), *(group.to_pylist() for group in groups),
               strict=True)
    joined = []
    for existing, *parts in rows:
        present = [part for part in (existing, *parts) if part]
        joined.append(":".join(present) if present else None)
    index = table.schema.get_field_index("label")
    return table.set_column(index, "label", pa.array(joined, type=pa.string()))

