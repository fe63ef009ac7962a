"""Field lists (-s) and Argus text output, checked against what ra 3.0.8 printed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from appliance.query.fields import DEFAULT_FIELDS, UnknownFieldError, parse_field_list
from appliance.query.render import RenderOptions, render_lines, to_rows
from appliance.records import FLOW_SCHEMA, EtherType, conform, pack_address
from tests.oracle_records import REFERENCE, read_reference_flows

REFERENCE_FIELDS = ("stime ltime dur proto saddr sport dir daddr dport pkts spkts dpkts bytes "
                    "sbytes dbytes sappbytes dappbytes state flgs").split()
CSV_OPTIONS = RenderOptions(numeric=1, epoch=True, precision=6, delimiter=",")


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def record(**values: object) -> dict:
    base = {"stime": moment(1461764814.520906), "ltime": moment(1461764814.526359),
            "etype": int(EtherType.IPV4), "proto": 6, "saddr": pack_address("10.0.0.2"),
            "sport": 40000, "daddr": pack_address("10.0.0.1"), "dport": 80, "dir": "->",
            "state": "CON", "flgs": " e", "trans": 1, "pkts": 2, "spkts": 1, "dpkts": 1,
            "bytes": 102, "sbytes": 42, "dbytes": 60, "sappbytes": 14, "dappbytes": 32,
            "seq": 1}
    base.update(values)
    return base


def table_of(*records: dict) -> pa.Table:
    names = list(records[0])
    schema = pa.schema([FLOW_SCHEMA.field(name) for name in names])
    return conform(pa.table({name: [r[name] for r in records] for name in names},
                            schema=schema))


# ra 3.0.8 output for arp-who-has.pcap.argus, run as
# ra -X -r arp-who-has.pcap.argus -s <ALL_FIELDS> with TZ=UTC.
ALL_FIELDS = ("stime ltime dur proto saddr sport dir daddr dport pkts spkts dpkts bytes sbytes "
              "dbytes sappbytes dappbytes state flgs trans sttl dttl stos dtos smac dmac srcid "
              "seq").split()
ARP_HEADER = (
    "         StartTime           LastTime        Dur  Proto            SrcAddr  Sport   Dir"
    "            DstAddr  Dport  TotPkts  SrcPkts  DstPkts   TotBytes     SrcBytes     DstBytes"
    "    SAppBytes    DAppBytes State      Flgs  Trans sTtl dTtl  sTos  dTos             SrcMac"
    "             DstMac              SrcId     Seq      ")
ARP_LINE = (
    "   13:46:54.520906    13:46:54.526359   0.005453    arp           10.0.0.2          who"
    "           10.0.0.1               2        1        1        102           42           60"
    "           14           32   CON  e             1                                       "
    "                                 0.0.0.0            1")


def arp_record() -> pa.Table:
    return table_of(record(etype=int(EtherType.ARP), proto=0, sport=0, dport=0, dir="who",
                           flgs=" e       "))


def test_fixed_width_matches_ra():
    lines = list(render_lines(arp_record(), parse_field_list(ALL_FIELDS), RenderOptions()))
    assert lines == [ARP_HEADER, ARP_LINE]


def test_default_fields_glue_address_and_port():
    # ra -X -n -r http-wikipedia.pcap.argus -N 2, second record.
    table = table_of(record(
        stime=moment(1300475167.097012), ltime=moment(1300475167.097012),
        etype=int(EtherType.IPV6), proto=17, saddr=pack_address("fe80::217:f2ff:fed7:cf65"),
        sport=5353, daddr=pack_address("ff02::fb"), dport=5353, state="INT",
        pkts=1, bytes=213))
    lines = list(render_lines(table, DEFAULT_FIELDS, RenderOptions(numeric=1)))
    assert lines[0] == ("         StartTime      Flgs  Proto            SrcAddr  Sport   Dir"
                        "            DstAddr  Dport  TotPkts   TotBytes State ")
    assert lines[1] == ("   19:06:07.097012  e           udp fe80::217:f2ff:fe*.5353      ->"
                        "           ff02::fb.5353          1        213   INT")


def test_port_names_without_numeric():
    table = table_of(record(proto=17, sport=5353, dport=5353))
    rows = to_rows(table, ["sport", "dport"], RenderOptions())
    assert rows == [{"sport": "mdns", "dport": "mdns"}]
    numeric = to_rows(table, ["sport", "proto"], RenderOptions(numeric=2))
    assert numeric == [{"sport": "5353", "proto": "17"}]


def test_icmp_ports_network_byte_order():
    table = table_of(record(proto=1, sport=0x0800, dport=0x449B))
    rows = to_rows(table, ["proto", "sport", "dport"], RenderOptions(numeric=1))
    assert rows == [{"proto": "icmp", "sport": "0x0008", "dport": "0x449b"}]


def test_icmpv6_ports():
    table = table_of(record(etype=int(EtherType.IPV6), proto=58, sport=128 << 8, dport=0,
                            saddr=pack_address("2001:db8::1"), daddr=pack_address("2001:db8::2")))
    assert to_rows(table, ["proto", "sport", "dport"], RenderOptions(numeric=1)) == [
        {"proto": "ipv6-icmp", "sport": "128", "dport": "0"}]
    assert to_rows(table, ["sport", "dport"], RenderOptions()) == [
        {"sport": "0x0080", "dport": "0x0000"}]


def test_non_ip_flow_prints_macs():
    table = table_of(record(etype=0x88A8, proto=0, saddr=None, daddr=None, sport=0, dport=0,
                            smac=bytes.fromhex("0020d25afb3f"), dmac=b"\xff" * 6))
    rows = to_rows(table, ["proto", "saddr", "sport", "daddr"], CSV_OPTIONS)
    assert rows == [{"proto": "34984", "saddr": "00:20:d2:5a:fb:3f", "sport": "0",
                     "daddr": "ff:ff:ff:ff:ff:ff"}]


def test_precision_and_epoch():
    table = table_of(record(stime=moment(1300475167.096535), ltime=moment(1300475173.102714)))
    lines = list(render_lines(table, ["stime", "dur"], RenderOptions(epoch=True, precision=2)))
    assert lines == ["     StartTime        Dur ", " 1300475167.09       6.01"]
    lines = list(render_lines(table, ["stime", "dur"], RenderOptions(epoch=True, precision=0)))
    assert lines == ["   StartTime        Dur ", "  1300475167          6"]


def test_rate_and_load():
    # ra 3.0.8: 7 packets (4 + 3) over 0.119905 s, 797 + 438 bytes.
    table = table_of(record(stime=moment(1300475168.0), ltime=moment(1300475168.119905),
                            pkts=7, spkts=4, dpkts=3, bytes=1235, sbytes=797, dbytes=438))
    row = to_rows(table, ["rate", "srate", "drate", "load"], CSV_OPTIONS)[0]
    assert abs(
        float(row["rate"]) - 50.039612) < 1e-5
    # ra divides per-direction values by that direction's own duration, which records
    # do not keep, so they agree only approximately.
    assert abs(float(row["srate"]) - 25.019806) < 0.01
    assert abs(float(row["drate"]) - 16.679871) < 0.01
    assert abs(float(row["load"]) - 59380.34) < 30


def test_user_data_ascii():
    table = table_of(record(suser=b"\x00\x01GET / HTTP/1.1\r\nHost", duser=None))
    rows = to_rows(table, ["suser", "duser"], RenderOptions())
    assert rows == [{"suser": "s[16]=..GET / HTTP/1.1", "duser": ""}]
    lines = list(render_lines(table, ["suser:4", "duser:40"], RenderOptions()))
    assert lines == ["  srcUdata                       dstUdata                      ",
                     "s[4]=..GE"]
    widths = [len(next(render_lines(table, [f"suser:{width}"], RenderOptions())))
              for width in (1, 4, 9, 10, 16, 128)]
    assert widths == [12, 13, 18, 19, 26, 138]


def test_labels_switch():
    table = table_of(record(), record(seq=2), record(seq=3))
    assert len(list(render_lines(table, ["saddr"], RenderOptions(labels=-1)))) == 3
    assert len(list(render_lines(table, ["saddr"], RenderOptions(labels=1)))) == 6
    assert len(list(render_lines(table, ["saddr"], RenderOptions(labels=2)))) == 5


def test_no_rows_prints_nothing():
    empty = arp_record().slice(0, 0)
    assert list(render_lines(empty, DEFAULT_FIELDS, RenderOptions())) == []


def test_field_list_editing():
    assert parse_field_list(["stime:10", "+dur"]) == ["stime:10", "dur"]
    assert parse_field_list(["+2dur"])[:4] == ["stime", "flgs", "dur", "proto"]
    assert "proto" not in parse_field_list(["+dur -proto"])
    assert parse_field_list(["-state"]) == DEFAULT_FIELDS[:-1]
    assert parse_field_list(["suser:128"]) == ["suser:128"]


@pytest.mark.parametrize("words", [["stime", "bogus"], ["+nosuch"], ["suser:0"], ["stime:x"]])
def test_field_list_rejects(words):
    with pytest.raises(UnknownFieldError) as caught:
        parse_field_list(words)
    assert caught.value.name in " ".join(words)


def reference_files() -> list:
    if not REFERENCE.is_dir():
        return []
    return [path for path in sorted(REFERENCE.glob("*.ra.csv"))
            if len(path.read_text().splitlines()) > 1]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/oracle/reference is absent")
@pytest.mark.parametrize("path", reference_files(), ids=lambda path: path.name)
def test_csv_reproduces_reference(path):
    """Records read back from ra's CSV print exactly as ra printed them."""
    expected = path.read_text().splitlines()
    table = read_reference_flows(path)
    # Records keep an ICMP type and code as type << 8 | code. ra prints an ICMP sport
    # as 0x + code + type and an ICMPv6 type in decimal (with -n); read them back so.
    sports = table.column("sport").to_pylist()
    protos = table.column("proto").to_pylist()
    for row, (sport, proto) in enumerate(zip(sports, protos, strict=True)):
        if proto == 1:
            sports[row] = (sport & 0xFF) << 8 | sport >> 8
        elif proto == 58:
            sports[row] = sport << 8
    table = table.set_column(table.column_names.index("sport"), "sport",
                             pa.array(sports, pa.uint16()))
    lines = list(render_lines(table, REFERENCE_FIELDS, CSV_OPTIONS))
    assert lines == expected


def test_reference_header_parses_as_csv():
    table = arp_record()
    header = next(render_lines(table, REFERENCE_FIELDS, CSV_OPTIONS))
    assert next(csv.reader(io.StringIO(header)))[:3] == ["StartTime", "LastTime", "Dur"]
