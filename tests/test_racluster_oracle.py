"""End to end through the CLI: capture a corpus file, cluster by host pair, compare with argus.

The reference is what argus 3.0.8 and racluster 3.0.8 printed for the same capture with
`argus -S 86400 -U 128 -A` and `racluster -m saddr daddr -n -u -p 6 -c ,`.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
REFERENCE = SHARED / "oracle" / "reference"

CAPTURES = [
    REPO / "demo" / "http-wikipedia.pcap",
    CORPUS / "dns-udp-basic.pcap",
    CORPUS / "dns-edns-ecs-mixed.pcap",
    CORPUS / "icmp-ping.pcap",
]


def wirewatch(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the wirewatch CLI in a subprocess, as a user would."""
    command = [sys.executable, "-m", "appliance.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def read_host_pairs(text: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Map (SrcAddr, DstAddr) to (TotPkts, TotBytes, Trans) from racluster CSV output."""
    rows = csv.DictReader(io.StringIO(text))
    pairs = {}
    for row in rows:
        key = (row["SrcAddr"], row["DstAddr"])
        pairs[key] = (int(row["TotPkts"]), int(row["TotBytes"]), int(row["Trans"]))
    return pairs


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda path: path.name)
def test_racluster_host_pairs_match_argus(capture: Path, tmp_path: Path) -> None:
    reference = REFERENCE / f"{capture.name}.racluster.csv"
    if not reference.exists():
        pytest.skip(f"argus reference output {reference} is not available")
    records = tmp_path / "flows.arrows"

    captured = wirewatch(
        "capture", "-r", str(capture), "-w", str(records), "-S", "86400", "-U", "128", "-A"
    )
    assert captured.returncode == 0, captured.stderr
    clustered = wirewatch(
        "racluster", "-r", str(records), "-m", "saddr", "daddr",
        "-n", "-u", "-p", "6", "-c", ",", "-s", "saddr", "daddr", "pkts", "bytes", "trans",
    )
    assert clustered.returncode == 0, clustered.stderr

    expected = read_host_pairs(reference.read_text())
    actual = read_host_pairs(clustered.stdout)
    assert clustered.stdout.splitlines()[0] == reference.read_text().splitlines()[0]
    assert sorted(actual) == sorted(expected)
    for pair, counters in expected.items():
        assert actual[pair] == counters, pair
