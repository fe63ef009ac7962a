"""ralabel: GeoIP country codes, address labels, port labels, database metadata."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from appliance.analyses import CountryLabeler, LabelError, database_info, label_records
from appliance.records import address_to_text, pack_address
from tests.oracle_records import REFERENCE, REPO, read_reference_flows
from tests.test_cluster import flow, make_table

COUNTRY_TABLE = REPO / "demo" / "geoip" / "countries.tsv"


def load_builder():
    """Import scripts/build_geoip_db.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("build_geoip_db",
                                                  REPO / "scripts" / "build_geoip_db.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def geoip_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    builder = load_builder()
    out = tmp_path_factory.mktemp("geoip") / "countries.mmdb"
    return builder.build_database(builder.read_country_table(COUNTRY_TABLE), out)


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("208.80.152.3", "US"),
        ("141.142.2.2", "US"),
        ("138.201.208.22", "DE"),
        ("93.158.134.119", "RU"),
        ("2a01:4f8:1:2::3", "DE"),
        ("10.0.0.1", "ZZ"),
        ("224.0.0.251", "ZZ"),
        ("2001:db8::1", None),
    ],
)
def test_country_lookup(geoip_db: Path, address: str, country: str | None) -> None:
    with CountryLabeler(geoip_db) as labeler:
        assert labeler.country(pack_address(address)) == country


def test_wikipedia_capture_labels(geoip_db: Path) -> None:
    records = read_reference_flows(REFERENCE / "http-wikipedia.pcap.ra.csv")
    labelled = label_records(records, geoip=geoip_db)
    countries = {}
    for row in labelled.to_pylist():
        if row["daddr"] is not None:
            countries[address_to_text(row["daddr"])] = row["dco"]
        if row["saddr"] is None:
            assert row["sco"] is None
    assert countries["208.80.152.3"] == "US"
    assert countries["141.142.2.2"] == "US"
    assert countries["224.0.0.251"] == "ZZ"
    assert countries["ff02::fb"] is None


def test_address_labels_less_specific_first(tmp_path: Path) -> None:
    labels = tmp_path / "addresses.txt"
    labels.write_text("# lab\n10.0.0.0/8 LabNet\n10.0.0.2 WebServer\n10.0.0.0-10.0.0.3 Rack1\n")
    records = make_table(flow("10.0.0.1", "10.0.0.2"), flow("192.168.0.1", "8.8.8.8"))
    labelled = label_records(records, address_file=labels).column("label").to_pylist()
    assert labelled[0] == "saddr=LabNet,Rack1:daddr=LabNet,Rack1,WebServer"
    assert labelled[1] is None


def test_port_labels_use_service_names() -> None:
    records = make_table(flow("10.0.0.1", "10.0.0.2", sport=40000, dport=53),
                         flow("10.0.0.1", "10.0.0.2", proto=6, sport=80, dport=443))
    labelled = label_records(records, port_labels=True).column("label").to_pylist()
    assert labelled[0] == "dport=domain"
    assert labelled[1] == "sport=http:dport=https"


def test_labels_append_to_existing(tmp_path: Path) -> None:
    labels = tmp_path / "addresses.txt"
    labels.write_text("10.0.0.2 WebServer\n")
    records = make_table(flow("10.0.0.1", "10.0.0.2", label="flow=dns"))
    labelled = label_records(records, address_file=labels).column("label").to_pylist()
    assert labelled == ["flow=dns:daddr=WebServer"]


def test_database_info(geoip_db: Path) -> None:
    info = database_info(geoip_db)
    assert info["database_type"] == "GeoLite2-Country"
    assert info["description"] == {"en": "Wirewatch demo country table"}
    assert info["ip_version"] == 6
    assert info["build_epoch"] > 1_600_000_000


def test_missing_database_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="not found"):
        label_records(make_table(flow("10.0.0.1", "10.0.0.2")), geoip=tmp_path / "none.mmdb")


def test_invalid_database_is_reported(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mmdb"
    bogus.write_bytes(b"not a database")
    with pytest.raises(LabelError, match="not a MaxMind database"):
        CountryLabeler(bogus)


def test_bad_address_line_is_reported(tmp_path: Path) -> None:
    labels = tmp_path / "addresses.txt"
    labels.write_text("10.0.0.0/8 LabNet\n10.0.0.300 Broken\n")
    with pytest.raises(LabelError, match="line 2"):
        label_records(make_table(flow("10.0.0.1", "10.0.0.2")), address_file=labels)


def test_country_table_rejects_bad_code(tmp_path: Path) -> None:
    builder = load_builder()
    table = tmp_path / "countries.tsv"
    table.write_text("network\tiso_code\tholder\tsource\n10.0.0.0/8\tusa\tlab\tnone\n")
    with pytest.raises(builder.CountryTableError, match="usa"):
        builder.read_country_table(table)
