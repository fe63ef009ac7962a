"""Flows of captures argus 3.0.8 cannot read, checked against tshark's IP conversations.

argus 3.0.8 writes no record for link types 228 (raw IPv4) and 276 (Linux SLL2),
for PPP, nor for raw IP in this fragment capture. For these, the packets and
bytes of Wirewatch's records, summed per address pair, must equal tshark's
``-z conv,ip`` totals. Wirewatch counts cooked (SLL2) frames from the network
header, as argus does elsewhere, so the 20-byte SLL2 header is taken off
tshark's byte count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from appliance.capture import CaptureSettings, flows_from_file
from appliance.records import FLOW_SCHEMA, address_to_text

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"

pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason="capture corpus (../shared/corpus) not present"),
    pytest.mark.skipif(shutil.which("tshark") is None,
                       reason="tshark is not installed (apt-get install tshark)"),
]

#: capture -> bytes of link-layer pseudo header per packet that Wirewatch does not count.
CAPTURES = {
    "dns-cname-rawip4.pcap": 0,
    "dns-sll2.pcap": 20,
    "dns-ip-fragments.pcap": 0,
    "dns-ppp.pcap": 0,
}
CONVERSATION = re.compile(
    r"^(\S+)\s+<->\s+(\S+)\s+\d+\s+\S+ (?:bytes|kB|MB)\s+\d+\s+\S+ (?:bytes|kB|MB)"
    r"\s+(\d+)\s+([\d,]+) (bytes|kB|MB)"
)


def tshark_conversations(capture: Path) -> dict[frozenset, tuple[int, int | None]]:
    """Return {address pair: (frames, bytes or None when tshark rounded them)}."""
    output = subprocess.run(
        ["tshark", "-n", "-r", str(capture), "-q", "-z", "conv,ip"],
        capture_output=True, text=True, check=True,
    ).stdout
    pairs = {}
    for line in output.splitlines():
        match = CONVERSATION.match(line.strip())
        if match:
            first, second, frames, size, unit = match.groups()
            exact = int(size.replace(",", "")) if unit == "bytes" else None
            pairs[frozenset((first, second))] = (int(frames), exact)
    return pairs


def wirewatch_conversations(capture: Path) -> dict[frozenset, tuple[int, int]]:
    settings = CaptureSettings(status_interval=86400, user_data_len=0, appbytes=True)
    table = pa.Table.from_batches(list(flows_from_file(capture, settings)), schema=FLOW_SCHEMA)
    totals: dict[frozenset, list[int]] = defaultdict(lambda: [0, 0])
    for row in table.select(["saddr", "daddr", "pkts", "bytes"]).to_pylist():
        pair = frozenset((address_to_text(row["saddr"]), address_to_text(row["daddr"])))
        totals[pair][0] += row["pkts"]
        totals[pair][1] += row["bytes"]
    return {pair: (value[0], value[1]) for pair, value in totals.items()}


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_ip_pair_totals_match_tshark(capture):
    expected = tshark_conversations(CORPUS / capture)
    got = wirewatch_conversations(CORPUS / capture)

    assert set(got) == set(expected)
    for pair, (frames, size) in expected.items():
        assert got[pair][0] == frames, pair
        if size is not None:
            assert got[pair][1] == size - CAPTURES[capture] * frames, pair


def test_fragment_capture_has_flows():
    # tshark rounds this capture's byte totals to kB, so count the flows as well.
    totals = wirewatch_conversations(CORPUS / "dns-ip-fragments.pcap")
    assert sum(frames for frames, _ in totals.values()) == 495
