"""racluster's derived columns against argus's own racluster, run side by side.

The stored reference output of racluster contains only addresses and counters. So these
tests run argus 3.0.8 and its racluster on a few corpus captures and compare the
columns that the merge rules derive. These are dir (members certain of their direction
win over uncertain ones, and a TCP flow seen both ways stays ``->``), addresses under
masked keys (cut to the mask, except for ARP and non-IP flows), and proto of host pairs
that mix IPv4 and IPv6 records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import CORPUS, REPO

ORACLE_CONF = CORPUS / ".." / "oracle" / "argus.conf"
WIREWATCH = REPO / ".venv" / "bin" / "wirewatch"
#: Captures whose host pairs merge records of different dir, state and protocol.
CAPTURES = ["http-wikipedia.pcap", "big-synthetic-mix.pcap", "tls-with-dns.pcap",
            "dns-udp-basic.pcap"]
ENV = dict(os.environ, TZ="UTC", LC_ALL="C")

pytestmark = pytest.mark.skipif(
    shutil.which("argus") is None or shutil.which("racluster") is None
    or not CORPUS.is_dir(),
    reason="argus and racluster (Debian: apt-get install argus-server argus-client) and "
           "the corpus next to the repository are needed")


def _records(capture: Path, directory: Path) -> tuple[Path, Path]:
    argus_file = directory / "flows.argus"
    subprocess.run(["argus", "-X", "-F", str(ORACLE_CONF), "-r", str(capture), "-w",
                    str(argus_file)], check=True, env=ENV, capture_output=True)
    records = directory / "flows.arrows"
    subprocess.run([str(WIREWATCH), "capture", "-r", str(capture), "-w", str(records),
                    "-S", "86400", "-U", "128", "-A"], check=True, capture_output=True)
    return argus_file, records


def _lines(command: list[str]) -> list[str]:
    done = subprocess.run(command, check=True, env=ENV, capture_output=True, text=True)
    return sorted(done.stdout.splitlines())


@pytest.mark.parametrize("capture", CAPTURES)
def test_host_pair_dir_matches_argus(capture: str, tmp_path: Path) -> None:
    argus_file, records = _records(CORPUS / capture, tmp_path)
    switches = ["-n", "-m", "saddr", "daddr", "-s", "saddr", "daddr", "dir"]
    theirs = _lines(["racluster", "-X", "-r", str(argus_file), *switches])
    ours = _lines([str(WIREWATCH), "racluster", "-r", str(records), *switches])
    assert ours == theirs


@pytest.mark.parametrize("keys", [["saddr/16"], ["saddr/24", "daddr/24"]])
def test_masked_keys_match_argus(keys: list[str], tmp_path: Path) -> None:
    argus_file, records = _records(CORPUS / "http-wikipedia.pcap", tmp_path)
    printed = [key.partition("/")[0] for key in keys]
    switches = ["-n", "-m", *keys, "-s", *printed, "pkts", "trans"]
    theirs = _lines(["racluster", "-X", "-r", str(argus_file), *switches])
    ours = _lines([str(WIREWATCH), "racluster", "-r", str(records), *switches])
    assert ours == theirs


def test_mixed_ip_versions_stay_ip_flows(tmp_path: Path) -> None:
    argus_file, records = _records(CORPUS / "http-wikipedia.pcap", tmp_path)
    switches = ["-n", "-m", "dport", "-s", "proto", "saddr", "daddr", "dport", "pkts", "-",
                "udp", "and", "port", "5355"]
    theirs = _lines(["racluster", "-X", "-r", str(argus_file), *switches])
    ours = _lines([str(WIREWATCH), "racluster", "-r", str(records), *switches])
    assert ours == theirs
    assert any(line.split()[:3] == ["udp", "::", "::.5355"] for line in ours)
