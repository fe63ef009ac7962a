"""The argus-style ra/racluster/rasort/radump command lines, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appliance.archive import RecordWriter
from appliance.cli.ra_cmd import UsageError, main, parse_switches
from appliance.records import FLOW_SCHEMA, EtherType, conform, pack_address

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CORPUS = SHARED / "corpus"
REFERENCE = SHARED / "oracle" / "reference"
REFERENCE_FIELDS = ("stime ltime dur proto saddr sport dir daddr dport pkts spkts dpkts bytes "
                    "sbytes dbytes sappbytes dappbytes state flgs").split()
#: Captures whose records cover addresses of both families, ARP, VLAN, SLL, raw IP,
#: pcapng, IPv6 ICMP and TCP states, and whose flows match argus 3.0.8 record for record.
ORACLE_CAPTURES = [
    "arp-who-has.pcap", "http-wikipedia.pcap", "icmp6-ping-snap96.pcap", "ipv6-in-ipv4.pcap",
    "dns-tcp-basic.pcap", "rawip4-dns.pcap", "tcp-syn-retransmit-vlan.pcap",
    "pcapng-multi-if.pcapng", "dns-vlan.pcap", "sll-irc-starttls.pcap",
]


def flows() -> pa.Table:
    start = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).timestamp()
    rows = []
    for index, (daddr, proto, dport, pkts) in enumerate(
            [("10.0.0.2", 6, 80, 10), ("10.0.0.3", 17, 53, 2), ("10.0.0.2", 6, 443, 7),
             ("10.0.0.3", 17, 53, 4)]):
        moment = datetime.fromtimestamp(start + 10 * index, UTC)
        rows.append({"stime": moment, "ltime": moment, "etype": int(EtherType.IPV4),
                     "proto": proto, "saddr": pack_address("10.0.0.1"), "sport": 40000 + index,
                     "daddr": pack_address(daddr), "dport": dport, "dir": "->",
                     "state": "CON", "flgs": " e", "trans": 1, "pkts": pkts, "spkts": pkts,
                     "dpkts": 0, "bytes": 100 * pkts, "sbytes": 100 * pkts, "dbytes": 0})
    schema = pa.schema([FLOW_SCHEMA.field(name) for name in rows[0]])
    return conform(pa.table({name: [row[name] for row in rows] for name in rows[0]},
                            schema=schema))


@pytest.fixture
def record_file(tmp_path) -> Path:
    path = tmp_path / "flows.arrows"
    with RecordWriter(path) as writer:
        writer.write(flows())
    return path


def test_switches_parse_lists_and_filter():
    switches = parse_switches(["-r", "a", "-nn", "-u", "-p3", "-c", ",", "-s", "stime", "-proto",
                               "+dur", "-m", "saddr", "daddr", "-t", "-1h", "-N", "5", "-L",
                               "-1", "-", "tcp", "and", "port", "80"])
    assert switches.reads == ["a"]
    assert switches.numeric == 2
    assert switches.epoch
    assert switches.precision == 3
    assert switches.delimiter == ","
    assert switches.fields == ["stime", "-proto", "+dur"]
    assert switches.keys == ["saddr", "daddr"]
    assert switches.time == "-1h"
    assert switches.top == 5
    assert switches.labels == -1
    assert switches.filter == ["tcp", "and", "port", "80"]


@pytest.mark.parametrize("argv", [["-p", "roto"], ["-N", "0"], ["-c", ",,"], ["-Q"], ["-s"]])
def test_switches_reject(argv):
    with pytest.raises(UsageError):
        parse_switches(argv)


def test_ra_prints_selection(record_file, capsys):
    status = main("ra", ["-r", str(record_file), "-n", "-c", ",", "-s", "daddr", "dport", "pkts",
                         "-", "udp"])
    out = capsys.readouterr().out
    assert status == 0
    assert out == "DstAddr,Dport,TotPkts\n10.0.0.3,53,2\n10.0.0.3,53,4\n"


def test_ra_time_range(record_file, capsys):
    status = main("ra", ["-r", str(record_file), "-L", "-1", "-c", ",", "-s", "dport",
                         "-n", "-t", "2023/11/14.22:13:30+20s"])
    assert status == 0
    assert capsys.readouterr().out == "53\n443\n"


def test_ra_no_match_exits_one(record_file, capsys):
    status = main("ra", ["-r", str(record_file), "-", "icmp"])
    assert status == 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("argv", "named", "switch"), [
    (["-s", "stime", "bogus"], "bogus", "-s"),
    (["-t", "2023/13"], "2023/13", "-t"),
    (["-", "hots", "1.2.3.4"], "hots", "filter"),
    (["-m", "nosuchkey"], "nosuchkey", "-m"),
])
def test_bad_input_exits_two(record_file, capsys, argv, named, switch):
    tool = "rasort" if "-m" in argv else "ra"
    assert main(tool, ["-r", str(record_file), *argv]) == 2
    error = capsys.readouterr().err
    assert named in error
    assert switch in error


def test_ralabel_without_source_names_switches(record_file, capsys):
    assert main("ralabel", ["-r", str(record_file)]) == 2
    assert "give --geoip DB.mmdb or -f RALABEL.CONF" in capsys.readouterr().err


def test_missing_file_exits_two(tmp_path, capsys):
    missing = tmp_path / "nothing.arrows"
    assert main("ra", ["-r", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_missing_read_switch_exits_two(capsys):
    assert main("ra", ["-n"]) == 2
    assert "-r" in capsys.readouterr().err


def run_cli(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli.main", *argv], input=stdin,
                          capture_output=True, cwd=REPO, check=False, timeout=120)


def test_racluster_pipes_into_rasort(record_file):
    clustered = run_cli("racluster", "-r", str(record_file), "-m", "daddr", "-w", "-")
    assert clustered.returncode == 0, clustered.stderr.decode()
    assert clustered.stdout[:6] != b"DstAdd"
    ordered = run_cli("rasort", "-r", "-", "-m", "pkts", "-c", ",", "-s", "daddr", "pkts",
                      "trans", stdin=clustered.stdout)
    assert ordered.returncode == 0, ordered.stderr.decode()
    assert ordered.stdout.decode() == "DstAddr,TotPkts,Trans\n10.0.0.2,17,2\n10.0.0.3,6,2\n"


def network_order_icmp_id(line: str) -> str:
    """Rewrite an ICMP echo identifier from ra 3.0.8's byte-swapped form to network order."""
    values = line.split(",")
    if values[3] == "icmp" and values[17] == "ECO":
        identifier = int(values[8], 16)
        values[8] = f"0x{(identifier & 0xFF) << 8 | identifier >> 8:04x}"
    return ",".join(values)


def capture_records(capture: str, target: Path) -> None:
    from appliance.capture import CaptureSettings, flows_from_file

    settings = CaptureSettings(user_data_len=128, appbytes=True, status_interval=86400)
    with RecordWriter(target) as writer:
        for batch in flows_from_file(CORPUS / capture, settings):
            writer.write(batch)


@pytest.mark.skipif(not CORPUS.is_dir() or not REFERENCE.is_dir(),
                    reason="../shared/corpus and ../shared/oracle/reference are absent")
@pytest.mark.parametrize("capture", ORACLE_CAPTURES)
def test_ra_matches_argus(tmp_path, capsys, capture):
    """Capture to records, then ra -n -u -p 6 -c , prints what argus 3.0.8 and ra printed."""
    records = tmp_path / "flows.arrows"
    capture_records(capture, records)
    status = main("ra", ["-r", str(records), "-n", "-u", "-p", "6", "-c", ",", "-s",
                         *REFERENCE_FIELDS])
    expected = (REFERENCE / f"{capture}.ra.csv").read_text().splitlines()
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0] == expected[0]
    assert sorted(lines[1:]) == sorted(network_order_icmp_id(line) for line in expected[1:])


@pytest.mark.skipif(not CORPUS.is_dir() or not REFERENCE.is_dir(),
                    reason="../shared/corpus and ../shared/oracle/reference are absent")
def test_radump_matches_argus(tmp_path, capsys):
    """radump decodes DNS user data as radump 3.0.8 printed it."""
    pytest.importorskip("appliance.analyses.dns")
    capture = "http-wikipedia.pcap"
    records = tmp_path / "flows.arrows"
    capture_records(capture, records)
    status = main("radump", ["-r", str(records), "-n", "-u", "-p", "6", "-c", "\t", "-s",
                             "stime", "saddr", "sport", "daddr", "dport", "proto",
                             "suser:128", "duser:128", "-", "port", "53"])
    expected = (REFERENCE / f"{capture}.radump.tsv").read_text().splitlines()
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0] == expected[0]
    assert sorted(lines[1:]) == sorted(expected[1:])


@pytest.mark.parametrize(("window", "ports"), [
    ("2", ["80", "53"]),
    ("2-3", ["53", "443"]),
    ("3+5", ["443", "53"]),
    ("o4", ["80", "53", "443", "53"]),
])
def test_record_ranges_select_output_rows(record_file, capsys, window, ports):
    status = main("ra", ["-r", str(record_file), "-n", "-L", "-1", "-s", "dport", "-N", window])
    assert status == 0
    assert capsys.readouterr().out.split() == ports


def test_input_record_range_counts_before_the_filter(record_file, capsys):
    # The first two input records hold one UDP flow; -N 2 after the filter would give two.
    status = main("ra", ["-r", str(record_file), "-n", "-L", "-1", "-s", "dport", "-N", "i2",
                         "-", "udp"])
    assert status == 0
    assert capsys.readouterr().out.split() == ["53"]


@pytest.mark.parametrize("window", ["0", "3-2", "1+0", "x5", "5-", "-3"])
def test_bad_record_range_exits_two(record_file, capsys, window):
    assert main("ra", ["-r", str(record_file), "-N", window]) == 2
    assert repr(window) in capsys.readouterr().err


def test_filter_error_points_at_the_token(record_file, capsys):
    assert main("ra", ["-r", str(record_file), "-", "tcp", "and", "prot", "80"]) == 2
    err = capsys.readouterr().err
    assert "'prot'" in err
    assert "  tcp and prot 80\n          ^^^^" in err


def test_relative_time_resolves_against_wirewatch_now(record_file, capsys, monkeypatch):
    # Records at 22:13:20, :30, :40 and :50; "now" is 22:13:45, so -1m starts at 22:13:00
    # and ends now, and -10s starts at 22:13:36.
    monkeypatch.setenv("WIREWATCH_NOW", str(datetime(2023, 11, 14, 22, 13, 45,
                                                     tzinfo=UTC).timestamp()))
    assert main("ra", ["-r", str(record_file), "-n", "-L", "-1", "-s", "dport",
                       "-t", "-1m"]) == 0
    assert capsys.readouterr().out.split() == ["80", "53", "443"]
    assert main("ra", ["-r", str(record_file), "-n", "-L", "-1", "-s", "dport",
                       "-t", "-10s"]) == 0
    assert capsys.readouterr().out.split() == ["443"]
    monkeypatch.setenv("WIREWATCH_NOW", "yesterday")
    assert main("ra", ["-r", str(record_file), "-t", "-1m"]) == 2
    assert "WIREWATCH_NOW" in capsys.readouterr().err


def test_json_output_prints_one_object_per_row(record_file, capsys):
    status = main("ra", ["-r", str(record_file), "-n", "-M", "json", "-s", "daddr", "dport",
                         "pkts", "-", "udp"])
    assert status == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"daddr": "10.0.0.3", "dport": 53, "pkts": 2},
                    {"daddr": "10.0.0.3", "dport": 53, "pkts": 4}]


def test_write_csv_ndjson_and_parquet(record_file, tmp_path, capsys):
    base = ["-r", str(record_file), "-n", "-s", "daddr", "pkts", "-m", "daddr"]
    for name in ("out.csv", "out.ndjson", "out.parquet"):
        assert main("racluster", [*base, "-w", str(tmp_path / name)]) == 0
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "DstAddr,TotPkts", "10.0.0.2,17", "10.0.0.3,6"]
    lines = (tmp_path / "out.ndjson").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"daddr": "10.0.0.2", "pkts": 17},
                                                    {"daddr": "10.0.0.3", "pkts": 6}]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema == FLOW_SCHEMA
    assert table.column("pkts").to_pylist() == [17, 6]
    assert table.column("trans").to_pylist() == [2, 2]
    assert capsys.readouterr().out == ""


def test_rmon_counts_hosts_both_ways_with_rmon_labels(record_file, capsys):
    status = main("racluster", ["-r", str(record_file), "-n", "-M", "rmon", "-m", "saddr",
                                "-c", ",", "-s", "saddr", "spkts", "dpkts", "trans"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Host,OutPkts,InPkts,Trans"
    # 10.0.0.1 sent 23 packets in four records; each destination appears as a host that
    # received them (its "out" is the records' dpkts, 0).
    assert sorted(lines[1:]) == ["10.0.0.1,23,0,4", "10.0.0.2,0,17,2", "10.0.0.3,0,6,2"]


def test_norep_reports_zero_trans(record_file, capsys):
    status = main("racluster", ["-r", str(record_file), "-n", "-M", "norep", "-m", "daddr",
                                "-c", ",", "-s", "daddr", "pkts", "trans"])
    assert status == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["10.0.0.2,17,0", "10.0.0.3,6,0"]


@pytest.mark.parametrize(("tool", "mode"), [("ra", "rmon"), ("rasort", "norep"),
                                            ("racluster", "bogus")])
def test_mode_outside_racluster_or_unknown_exits_two(record_file, capsys, tool, mode):
    assert main(tool, ["-r", str(record_file), "-M", mode]) == 2
    assert mode in capsys.readouterr().err


def test_rasort_direction_override_and_top(record_file, capsys):
    status = main("rasort", ["-r", str(record_file), "-n", "-L", "-1", "-m", "pkts:asc",
                             "-s", "pkts", "-N", "3"])
    assert status == 0
    assert capsys.readouterr().out.split() == ["2", "4", "7"]
    status = main("rasort", ["-r", str(record_file), "-n", "-L", "-1", "-m", "daddr",
                             "dport:desc", "-s", "daddr", "dport"])
    assert status == 0
    assert capsys.readouterr().out.split() == ["10.0.0.2.443", "10.0.0.2.80", "10.0.0.3.53",
                                               "10.0.0.3.53"]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_radump_json_prints_dns_fields(tmp_path, capsys):
    records = tmp_path / "flows.arrows"
    capture_records("dns-udp-basic.pcap", records)
    status = main("radump", ["-r", str(records), "-M", "json", "-N", "2"])
    assert status == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) >= 2
    query, response = rows[0], rows[1]
    assert (query["side"], query["qr"], response["side"], response["qr"]) == ("s", False,
                                                                              "d", True)
    assert query["trans_id"] == response["trans_id"] == 59311
    assert (query["qname"], query["qtype"], query["qclass"]) == ("google.com.", "A", "IN")
    assert response["rcode"] == "NOERROR"
    assert response["answers"] == ["216.58.218.206"]
    assert len(response["ttls"]) == 1
    assert "RD" in query["flags"].split()
    assert query["radump"] == "59311+ [_] A? google.com. (28)"
