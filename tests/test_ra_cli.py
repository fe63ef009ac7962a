"""The argus-style ra/racluster/rasort/radump command lines, end to end."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
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


@pytest.mark.parametrize(("argv", "named"), [
    (["-s", "stime", "bogus"], "bogus"),
    (["-t", "2023/13"], "2023/13"),
    (["-", "hots", "1.2.3.4"], "hots"),
    (["-m", "nosuchkey"], "nosuchkey"),
])
def test_bad_input_exits_two(record_file, capsys, argv, named):
    tool = "rasort" if "-m" in argv else "ra"
    assert main(tool, ["-r", str(record_file), *argv]) == 2
    assert named in capsys.readouterr().err


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
