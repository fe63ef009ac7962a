"""Bounded fuzzing of the capture readers, the decoder and the flow table.

Damaged or random input must never crash or hang the packet path: a file that
is neither pcap nor pcapng raises CaptureFileError, anything else yields the
records of the packets before the damage, with malformed frames counted.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.capture import CaptureSettings
from appliance.flows import FlowMeter
from appliance.pcapio import CaptureFileError, open_capture

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
SEEDS = ["dns-udp-basic.pcap", "icmp-ping.pcap", "pcapng-multi-if.pcapng", "dns-vlan.pcap",
         "sll-irc-starttls.pcap", "dns-ip-fragments.pcap"]
LINKTYPES = [0, 1, 9, 12, 50, 101, 108, 113, 127, 228, 229, 276, 0xFFFF]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
METER_SETTINGS = CaptureSettings(status_interval=1, user_data_len=64, appbytes=True)


def run_packet_path(data: bytes) -> dict[str, int] | None:
    """Read, decode and meter ``data`` as a capture file; return the meter's stats."""
    with tempfile.NamedTemporaryFile(suffix=".pcap") as handle:
        handle.write(data)
        handle.flush()
        try:
            reader = open_capture(handle.name, batch_size=7)
        except CaptureFileError:
            return None
        meter = FlowMeter(METER_SETTINGS)
        records = 0
        for batch in reader:
            assert (batch.caplen >= 0).all()
            records += sum(b.num_rows for b in meter.process(batch))
        records += sum(b.num_rows for b in meter.flush())
    stats = meter.stats
    malformed = sum(v for k, v in stats.items() if k.startswith("malformed_"))
    assert malformed <= stats["packets"]
    assert records == stats["records"]
    assert records <= stats["packets"] - malformed or stats["packets"] == 0
    assert stats["flows_active"] == 0
    return stats


def pcap_file(linktype: int, frames: list[tuple[bytes, int]]) -> bytes:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for second, (frame, extra) in enumerate(frames):
        data += struct.pack("<IIII", 1_600_000_000 + second, 0, len(frame), len(frame) + extra)
        data += frame
    return data


@FUZZ
@given(
    linktype=st.sampled_from(LINKTYPES),
    frames=st.lists(
        st.tuples(st.binary(max_size=120), st.one_of(st.integers(0, 3000),
                                                     st.integers(0, 2**32 - 200))),
        max_size=20,
    ),
)
def test_random_frames_never_crash(linktype, frames):
    stats = run_packet_path(pcap_file(linktype, frames))
    assert stats is not None
    whole = 0
    for frame, extra in frames:  # a wire length beyond 2**31 - 1 is damage: reading stops
        if len(frame) + extra > 0x7FFFFFFF:
            break
        whole += 1
    assert stats["packets"] == whole


@pytest.mark.skipif(not CORPUS.is_dir(), reason="capture corpus (../shared/corpus) not present")
@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                   min_size=1, max_size=40),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_damaged_corpus_files_never_crash(seed, edits, cut):
    data = bytearray((CORPUS / seed).read_bytes()[:20000])
    for position, value in edits:
        data[int(position * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    run_packet_path(bytes(data))


def test_header_only_file_gives_no_packets():
    stats = run_packet_path(pcap_file(1, []))
    assert stats is not None and stats["packets"] == 0


def test_absurd_record_length_stops_reading():
    good = pcap_file(1, [(bytes(60), 0)])
    absurd = struct.pack("<IIII", 1_600_000_001, 0, 0x7FFFFFFF, 0x7FFFFFFF) + bytes(16)
    stats = run_packet_path(good + absurd)
    assert stats is not None and stats["packets"] == 1
