"""RTP and RTCP recognition in UDP flows, against what argus 3.0.8 printed.

Each expected record below is what argus 3.0.8.2 printed for the flows of
tests/rtp_cases.py (`argus -X -F argus.conf -r FILE -w OUT`, then `ra -s proto spkts
dpkts sappbytes dappbytes flgs`). When argus and ra are installed, a test runs them again
on the same packets and checks that they still print these records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from scapy.utils import wrpcap

from appliance.analyses.cluster import cluster_records
from appliance.archive import RecordWriter
from appliance.capture import CaptureSettings, flows_from_file
from appliance.cli.ra_cmd import main
from appliance.records import FLOW_SCHEMA
from tests.rtp_cases import CASES, SPLIT_CASES, case_of, frames

ARGUS_CONF = Path(__file__).resolve().parents[1] / ".." / "shared" / "oracle" / "argus.conf"
INTERVAL_SETTING = "ARGUS_FLOW_STATUS_INTERVAL=86400"

# (case, proto, spkts, dpkts, sappbytes, dappbytes, flgs columns 4 and 5) of every record
# argus printed at -S 86400, in time order.
ARGUS_RECORDS = [
    ("four from source", "udp", 4, 0, 652, 0, "  "),
    ("five from source", "rtp", 5, 0, 812, 0, "  "),
    ("four and one back", "udp", 4, 1, 652, 172, "  "),
    ("one and five back", "rtp", 1, 5, 172, 812, "  "),
    ("three each way", "udp", 3, 3, 492, 492, "  "),
    ("first RTP then other payloads", "rtp", 5, 0, 332, 0, "  "),
    ("first not RTP", "udp", 6, 0, 900, 0, "  "),
    ("first empty", "udp", 6, 0, 860, 0, "  "),
    ("SSRC changes", "udp", 7, 0, 1192, 0, "  "),
    ("SSRC zero later", "udp", 6, 0, 1020, 0, "  "),
    ("sequence zero, SSRC zero", "rtp", 5, 0, 860, 0, "  "),
    ("LLMNR repeated", "rtp", 20, 0, 500, 0, "  "),
    ("RTCP sender reports", "rtcp", 2, 0, 56, 0, "  "),
    ("RTCP receiver report", "rtcp", 2, 0, 64, 0, "  "),
    ("RTCP header alone", "udp", 2, 0, 16, 0, "  "),
    ("RTCP description only", "udp", 5, 0, 60, 0, "  "),
    ("extension that does not fit", "udp", 6, 0, 1024, 0, "  "),
    ("extension that fits", "rtp", 6, 0, 9400, 0, "  "),
    ("header shorter than 12 bytes", "udp", 5, 0, 55, 0, "  "),
    ("port below 1024", "udp", 6, 0, 1032, 0, "  "),
    ("AFS port", "udp", 6, 0, 1032, 0, "  "),
    ("small media", "rtp", 8, 0, 172, 0, "  "),
    ("CSRC list", "rtp", 8, 0, 184, 0, "  "),
    ("CSRC list as long as the payload", "rtp", 6, 0, 216, 0, "  "),
    ("sequence gap", "rtp", 6, 0, 972, 0, "s "),
    ("late packet", "rtp", 6, 0, 972, 0, "s "),
    ("gap back", "rtp", 1, 6, 172, 972, "d "),
    ("sequence wraps", "rtp", 6, 0, 984, 0, "  "),
    ("silence back", "rtp", 6, 6, 972, 978, " d"),
    ("silence both ways", "rtp", 6, 6, 978, 978, " d"),
    ("silence from source", "rtp", 6, 0, 978, 0, "  "),
    ("G.723 silence back", "rtp", 1, 6, 172, 36, " d"),
    ("dynamic type, odd size", "rtp", 1, 6, 172, 978, "  "),
]

# The same at -S 5, where a pause splits each flow into two records.
ARGUS_SPLIT_RECORDS = [
    ("RTP in the second record only", "udp", 2, 0, 80, 0, "  "),
    ("RTP in the second record only", "udp", 6, 0, 1032, 0, "  "),
    ("five, then three", "rtp", 5, 0, 812, 0, "  "),
    ("five, then three", "udp", 3, 0, 480, 0, "  "),
    ("one, then eleven", "udp", 1, 0, 172, 0, "  "),
    ("one, then eleven", "rtp", 11, 0, 1760, 0, "  "),
    ("reply opens the second record", "rtp", 6, 0, 972, 0, "  "),
    ("reply opens the second record", "rtp", 0, 6, 0, 972, "  "),
    ("new SSRC in the second record", "rtp", 6, 0, 972, 0, "  "),
    ("new SSRC in the second record", "udp", 6, 0, 1032, 0, "  "),
    ("RTCP then RTP", "rtcp", 2, 0, 56, 0, "  "),
    ("RTCP then RTP", "rtcp", 6, 0, 1032, 0, "  "),
    ("gap, then none", "rtp", 6, 0, 972, 0, "s "),
    ("gap, then none", "rtp", 6, 0, 960, 0, "  "),
    ("silence back, then none", "rtp", 1, 6, 172, 978, " d"),
    ("silence back, then none", "rtp", 0, 6, 0, 960, "  "),
]

# Deliberate differences (docs/argus-differences.md). argus prints source-only silence
# as nothing and silence both ways as "d"; Wirewatch prints "s" and "*", as the manual
# describes. argus subtracts an extension length read as bytes, beyond the payload;
# Wirewatch counts the extension in 32-bit words and stops at the payload's end.
OUR_RECORDS = {
    "silence both ways": ("silence both ways", "rtp", 6, 6, 978, 978, " *"),
    "silence from source": ("silence from source", "rtp", 6, 0, 978, 0, " s"),
    "extension that fits": ("extension that fits", "rtp", 6, 0, 44, 0, " s"),
}


needs_argus = pytest.mark.skipif(
    shutil.which("argus") is None or shutil.which("ra") is None or not ARGUS_CONF.is_file(),
    reason="argus and ra (argus-server, argus-client 3.0.8) or ../shared/oracle/argus.conf "
           "are not installed")


def capture_file(cases: dict, tmp_path: Path, ipv6: bool = False) -> Path:
    path = tmp_path / "rtp.pcap"
    wrpcap(str(path), frames(cases, ipv6))
    return path


def our_table(cases: dict, interval: int, tmp_path: Path, ipv6: bool = False) -> pa.Table:
    settings = CaptureSettings(status_interval=interval, user_data_len=128, appbytes=True)
    batches = list(flows_from_file(capture_file(cases, tmp_path, ipv6), settings))
    return pa.Table.from_batches(batches, schema=FLOW_SCHEMA)


def our_records(cases: dict, interval: int, tmp_path: Path, ipv6: bool = False) -> list[tuple]:
    table = our_table(cases, interval, tmp_path, ipv6)
    rows = sorted(table.to_pylist(), key=lambda row: row["stime"])
    return [(case_of(row["sport"], row["dport"], cases), row["appproto"] or "udp",
             row["spkts"], row["dpkts"], row["sappbytes"], row["dappbytes"], row["flgs"][3:5])
            for row in rows]


def argus_records(cases: dict, interval: int, tmp_path: Path,
                  ipv6: bool = False) -> list[tuple]:
    """Run argus and ra on the cases; return their records as in ARGUS_RECORDS."""
    conf = tmp_path / "argus.conf"
    conf.write_text(ARGUS_CONF.read_text().replace(
        INTERVAL_SETTING, f"ARGUS_FLOW_STATUS_INTERVAL={interval}"))
    output = tmp_path / "rtp.argus"
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    subprocess.run(["argus", "-X", "-F", str(conf), "-r", str(capture_file(cases, tmp_path, ipv6)),
                    "-w", str(output)], check=True, env=env, capture_output=True)
    printed = subprocess.run(
        ["ra", "-X", "-r", str(output), "-n", "-u", "-c", ",", "-s", "sport", "dport", "proto",
         "spkts", "dpkts", "sappbytes", "dappbytes", "flgs", "-", "udp"],
        check=True, env=env, capture_output=True, text=True).stdout.splitlines()[1:]
    records = []
    for line in printed:
        sport, dport, proto, spkts, dpkts, sappbytes, dappbytes, flgs = line.split(",")
        records.append((case_of(int(sport), int(dport), cases), proto, int(spkts), int(dpkts),
                        int(sappbytes), int(dappbytes), flgs[3:5]))
    return records


def test_records_follow_argus(tmp_path):
    expected = [OUR_RECORDS.get(record[0], record) for record in ARGUS_RECORDS]
    assert our_records(CASES, 86400, tmp_path) == expected


def test_split_records_follow_argus(tmp_path):
    assert our_records(SPLIT_CASES, 5, tmp_path) == ARGUS_SPLIT_RECORDS


@needs_argus
@pytest.mark.parametrize(("cases", "interval", "expected"),
                         [(CASES, 86400, ARGUS_RECORDS), (SPLIT_CASES, 5, ARGUS_SPLIT_RECORDS)],
                         ids=["one record", "split"])
def test_argus_prints_the_recorded_records(cases, interval, expected, tmp_path):
    assert argus_records(cases, interval, tmp_path) == expected


@needs_argus
def test_argus_prints_ipv6_records(tmp_path):
    printed = argus_records(CASES, 86400, tmp_path, ipv6=True)
    swapped = {"RTCP sender reports", "RTCP receiver report"}
    printed = [(case, proto, dpkts, spkts, dappbytes, sappbytes, flgs) if case in swapped
               else (case, proto, spkts, dpkts, sappbytes, dappbytes, flgs)
               for case, proto, spkts, dpkts, sappbytes, dappbytes, flgs in printed]
    assert printed == ipv6_records(ARGUS_RECORDS)


def ipv6_records(records: list[tuple]) -> list[tuple]:
    """What argus printed for the same cases over IPv6: RTP flows as udp, without flgs.

    It printed the two RTCP flows as rtcp too, but with their addresses and directions
    exchanged (a deliberate difference, not expected here).
    """
    return [(case, "udp" if proto == "rtp" else proto, *counts, "  ")
            for case, proto, *counts, _ in records]


def test_ipv6_records_follow_argus(tmp_path):
    expected = [OUR_RECORDS.get(record[0], record) for record in ARGUS_RECORDS]
    assert our_records(CASES, 86400, tmp_path, ipv6=True) == ipv6_records(expected)


@pytest.fixture
def record_file(tmp_path) -> Path:
    path = tmp_path / "rtp.arrows"
    with RecordWriter(path) as writer:
        writer.write(our_table(CASES, 86400, tmp_path))
    return path


def printed(tool: str, argv: list[str], capsys) -> list[str]:
    assert main(tool, argv) == 0
    return capsys.readouterr().out.splitlines()


def test_proto_prints_rtp_and_rtcp(record_file, capsys):
    lines = printed("ra", ["-r", str(record_file), "-n", "-c", ",", "-s", "sport", "proto"],
                    capsys)
    protocols = {case_of(int(sport), 5004, CASES): proto
                 for sport, proto in (line.split(",") for line in lines[1:])}
    assert protocols == {record[0]: record[1] for record in ARGUS_RECORDS}


def test_numeric_proto_stays_udp(record_file, capsys):
    lines = printed("ra", ["-r", str(record_file), "-nn", "-c", ",", "-s", "proto"], capsys)
    assert set(lines[1:]) == {"17"}


@pytest.mark.parametrize(("expression", "protocol"), [
    ("rtp", "rtp"), ("rtcp", "rtcp"), ("udp and not rtp and not rtcp", "udp")])
def test_filter_selects_by_protocol(record_file, capsys, expression, protocol):
    lines = printed("ra", ["-r", str(record_file), "-n", "-c", ",", "-s", "sport", "-",
                           *expression.split()], capsys)
    chosen = {case_of(int(line), 5004, CASES) for line in lines[1:]}
    assert chosen == {record[0] for record in ARGUS_RECORDS if record[1] == protocol}


def test_racluster_keeps_the_first_records_protocol(tmp_path):
    # argus's racluster printed udp for "one, then eleven" and rtp for "five, then three".
    clustered = cluster_records(our_table(SPLIT_CASES, 5, tmp_path))
    protocols = {case_of(row["sport"], row["dport"], SPLIT_CASES): row["appproto"]
                 for row in clustered.to_pylist()}
    assert protocols["one, then eleven"] is None
    assert protocols["five, then three"] == "rtp"
    assert protocols["RTCP then RTP"] == "rtcp"
