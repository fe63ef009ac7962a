"""Flow records of real captures against what argus 3.0.8 wrote for them.

Settings as in the reference run: -S 86400 (one record per flow), -U 128, -A.
Every compared column must match, except the differences listed in
EXPECTED_DIFFERENCES, which are checked to be exactly as listed.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from appliance.capture import CaptureSettings, flows_from_file
from appliance.records import FLOW_SCHEMA
from tests.oracle_compare import RA_COLUMNS, record_rows, reference_rows

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
CORPUS = SHARED / "corpus"
REFERENCE = SHARED / "oracle" / "reference"

pytestmark = pytest.mark.skipif(
    not REFERENCE.is_dir() or not CORPUS.is_dir(),
    reason="the capture corpus and argus reference outputs (../shared) are not present",
)

SETTINGS = CaptureSettings(status_interval=86400, user_data_len=128, appbytes=True)

CAPTURES = [
    "http-wikipedia.pcap", "dns-udp-basic.pcap", "tls-with-dns.pcap", "dns-tcp-basic.pcap",
    "icmp-ping.pcap", "arp-who-has.pcap", "dns-vlan.pcap", "dns-edns-opts.pcap",
    "dns-junk-request-tc.pcap", "dns-badcookie-null.pcap", "sll-irc-starttls.pcap",
    "pcapng-multi-if.pcapng", "icmp6-ping-snap96.pcap", "dns-edns-ecs-mixed.pcap",
    "tcp-syn-retransmit-vlan.pcap", "dns-ipv6-rawip.pcap", "rawip4-dns.pcap",
    "corrupt-huge-record.pcap", "dns-tcp-nosyn.pcap", "dns-tcp-trailing-junk.pcap",
    "tcp-snaplen68.pcap", "corrupt-fuzz.pcap", "pcapng-vlan-pcp.pcapng", "big-modbus.pcap",
    "corrupt-cut-short.pcap", "dns-compression-loop.pcap", "dns-corrupt.pcap", "dns-dnssec.pcap",
    "dns-https-rr.pcap", "dns-invalid-names.pcap", "dns-many-vlan.pcap",
    "dns-max-compression-depth.pcap", "dns-nxdomain-soa.pcap", "dns-ptr.pcap",
    "dns-tcp-bighole.pcap", "dns-tcp-multi-nxdomain.pcap", "ipv6-in-ipv4.pcap",
    "tcp-backwards-time.pcap", "tcp-timestamps-snaptrunc.pcap", "big-synthetic-mix.pcap",
    "gre-sample.pcap", "vlan-qinq.pcap", "ip4-trunc.pcap", "radiotap-arp.pcap", "dns-mdns.pcap",
]

# (capture, StartTime, Sport as stored) -> {column: (argus value, Wirewatch value)}.
EXPECTED_DIFFERENCES: dict[tuple[str, str, int], dict[str, tuple]] = {}

# Captures with many differences of a few kinds: capture -> {(column, argus, ours): records}.
EXPECTED_DIFFERENCE_COUNTS: dict[str, dict[tuple, int]] = {}

# Records keyed differently: capture -> (flows only argus reports, flows only Wirewatch
# reports), each flow as (StartTime, Proto, SrcAddr, Sport, DstAddr, Dport).
EXPECTED_OTHER_FLOWS: dict[str, tuple[list[tuple], list[tuple]]] = {
    # argus keys 802.1ad (QinQ) frames by MAC and ethertype; Wirewatch decodes the ARP.
    "vlan-qinq.pcap": (
        [
            ("1575842394.599412", "34984", "00:20:d2:5a:fb:3f", 0, "ff:ff:ff:ff:ff:ff", 0),
            ("1575842394.599680", "34984", "00:20:d2:5a:fb:3f", 0, "00:80:ea:81:88:63", 0),
        ],
        [("1575842394.599412", "arp", "172.21.79.97", 0, "172.21.79.100", 0)],
    ),
    # argus counts a truncated IPv4 packet as an Ethernet flow; Wirewatch counts it as
    # malformed (truncated_ip) and makes no record of it.
    "ip4-trunc.pcap": (
        [("1334160095.895421", "ip", "00:10:db:88:d2:ef", 0, "c8:bc:c8:96:d2:a0", 0)], [],
    ),
}


def meter_table(capture: str) -> pa.Table:
    batches = list(flows_from_file(CORPUS / capture, SETTINGS))
    return pa.Table.from_batches(batches, schema=FLOW_SCHEMA)


def by_flow(rows: list[tuple]) -> dict[tuple, tuple]:
    """Index rows by (StartTime, Proto, SrcAddr, Sport, DstAddr, Dport)."""
    index = {}
    for row in rows:
        key = (row[0], row[2], row[3], row[4], row[6], row[7])
        assert key not in index, f"two records share the flow and start time {key}"
        index[key] = row
    return index


@pytest.mark.parametrize("capture", CAPTURES)
def test_records_match_argus(capture):
    ours = by_flow(record_rows(meter_table(capture)))
    reference = by_flow(reference_rows(REFERENCE / f"{capture}.ra.csv"))

    argus_only, ours_only = EXPECTED_OTHER_FLOWS.get(capture, ([], []))
    assert sorted(set(reference) - set(ours)) == sorted(argus_only)
    assert sorted(set(ours) - set(reference)) == sorted(ours_only)
    counts: Counter[tuple] = Counter()
    for key in set(reference) & set(ours):
        expected, got = reference[key], ours[key]
        differences = {
            column: (expected[i], got[i])
            for i, column in enumerate(RA_COLUMNS) if expected[i] != got[i]
        }
        if capture in EXPECTED_DIFFERENCE_COUNTS:
            counts.update((column, *values) for column, values in differences.items())
            continue
        known = EXPECTED_DIFFERENCES.get((capture, key[0], key[3]), {})
        assert differences == known, f"record {key}"
    assert counts == Counter(EXPECTED_DIFFERENCE_COUNTS.get(capture, {}))


def test_expected_differences_name_compared_captures():
    captures = {capture for capture, _, _ in EXPECTED_DIFFERENCES}
    captures |= set(EXPECTED_DIFFERENCE_COUNTS) | set(EXPECTED_OTHER_FLOWS)
    assert captures <= set(CAPTURES)


def racluster_reference(capture: str) -> dict[tuple[str, str], tuple[int, int]]:
    with (REFERENCE / f"{capture}.racluster.csv").open(newline="") as handle:
        return {
            (row["SrcAddr"], row["DstAddr"]): (int(row["TotPkts"]), int(row["TotBytes"]))
            for row in csv.DictReader(handle)
        }


@pytest.mark.parametrize(
    "capture", ["http-wikipedia.pcap", "dns-udp-basic.pcap", "tls-with-dns.pcap"]
)
def test_host_pair_totals_match_racluster(capture):
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in record_rows(meter_table(capture)):
        pair = totals[(row[3], row[6])]
        pair[0] += row[8]
        pair[1] += row[11]

    assert {pair: tuple(value) for pair, value in totals.items()} == racluster_reference(capture)


def test_status_interval_splits_long_flows():
    settings = CaptureSettings(status_interval=5, user_data_len=0, appbytes=True)
    table = meter_table_with("tls-with-dns.pcap", settings)
    pkts = table.column("pkts").to_pylist()
    durations = [
        (end - start).total_seconds()
        for start, end in zip(table.column("stime").to_pylist(), table.column("ltime").to_pylist(),
                              strict=True)
    ]

    assert table.num_rows > len(reference_rows(REFERENCE / "tls-with-dns.pcap.ra.csv"))
    assert sum(pkts) == 3138
    assert "Status" in table.column("cause").to_pylist()
    # A record is reported at the first tick at least one interval after its start.
    assert max(durations) < 2 * 5


def meter_table_with(capture: str, settings: CaptureSettings) -> pa.Table:
    return pa.Table.from_batches(list(flows_from_file(CORPUS / capture, settings)))
