"""Capture file readers: pcap byte orders and resolutions, pcapng interfaces, damage."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from appliance.pcapio import CaptureFileError, open_capture, read_packets

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason="capture corpus (../shared/corpus) not present"
)

FRAME_A = bytes(range(60))
FRAME_B = bytes(range(100, 174))


def write_pcap(path: Path, order: str, nanosecond: bool, records: list[tuple[int, int, bytes, int]],
               linktype: int = 1) -> None:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    data = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for seconds, fraction, frame, wirelen in records:
        data += struct.pack(order + "IIII", seconds, fraction, len(frame), wirelen) + frame
    path.write_bytes(data)


def all_frames(path: Path) -> list[tuple[bytes, int, int, int]]:
    frames = []
    for batch in read_packets(path, batch_size=2):
        for i in range(len(batch)):
            frames.append((batch.frame(i), int(batch.wirelen[i]), int(batch.ts_us[i]),
                           int(batch.linktype[i])))
    return frames


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, order, nanosecond):
    fraction = 123456789 if nanosecond else 123456
    path = tmp_path / "x.pcap"
    records = [(1700000000, fraction, FRAME_A, 60), (1700000001, 0, FRAME_B, 1514),
               (1700000002, 5, FRAME_A, 60)]
    write_pcap(path, order, nanosecond, records, linktype=101)

    frames = all_frames(path)

    assert [f[0] for f in frames] == [FRAME_A, FRAME_B, FRAME_A]
    assert [f[1] for f in frames] == [60, 1514, 60]
    assert frames[0][2] == 1700000000_123456
    assert frames[2][2] == 1700000002_000000 + (0 if nanosecond else 5)
    assert {f[3] for f in frames} == {101}


def test_pcap_records_across_read_chunks(tmp_path, monkeypatch):
    from appliance.pcapio import classic

    # Chunks of 100 bytes: most records start in one chunk and end in the next.
    monkeypatch.setattr(classic, "CHUNK_BYTES", 100)
    path = tmp_path / "x.pcap"
    frames = [FRAME_A, FRAME_B] * 20
    write_pcap(path, "<", False, [(1, n, frame, len(frame)) for n, frame in enumerate(frames)])

    batches = list(read_packets(path, batch_size=3))
    read = [batch.frame(i) for batch in batches for i in range(len(batch))]

    assert read == frames
    assert [int(batch.ts_us[i]) % 1_000_000 for batch in batches for i in range(len(batch))] \
        == list(range(len(frames)))
    assert not any(batch.buffer.flags.writeable for batch in batches)


def test_pcap_truncated_record_keeps_whole_packets(tmp_path, caplog):
    path = tmp_path / "cut.pcap"
    write_pcap(path, "<", False, [(1, 0, FRAME_A, 60), (2, 0, FRAME_B, 74)])
    path.write_bytes(path.read_bytes()[:-10])

    with caplog.at_level(logging.WARNING):
        reader = open_capture(path)
        frames = [b for b in reader]

    assert sum(len(b) for b in frames) == 1
    assert reader.stats.packets == 1
    assert "ends inside a packet record" in reader.stats.damaged
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert str(path) in caplog.text


def test_pcap_absurd_length_stops_reading(tmp_path):
    path = tmp_path / "huge.pcap"
    write_pcap(path, ">", False, [(1, 0, FRAME_A, 60)])
    absurd = struct.pack(">IIII", 2, 0, 0x7FFFFFFF, 0x7FFFFFFF)
    path.write_bytes(path.read_bytes() + absurd + FRAME_B)

    reader = open_capture(path)
    count = sum(len(b) for b in reader)

    assert count == 1
    assert "impossible packet length" in reader.stats.damaged
    assert reader.stats.damage_offset == 24 + 16 + len(FRAME_A)


def test_missing_file_raises_capture_file_error(tmp_path):
    missing = tmp_path / "nope.pcap"
    with pytest.raises(CaptureFileError, match="file not found") as error:
        read_packets(missing)
    assert str(missing) in str(error.value)


def test_other_file_raises_capture_file_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a capture")
    with pytest.raises(CaptureFileError, match="not a pcap or pcapng file"):
        read_packets(path)


def pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def interface_block(linktype: int, tsresol: int | None) -> bytes:
    body = struct.pack("<HHI", linktype, 0, 65535)
    if tsresol is not None:
        body += struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    return pcapng_block(1, body)


def enhanced_block(interface: int, units: int, frame: bytes, wirelen: int) -> bytes:
    body = struct.pack("<IIIII", interface, units >> 32, units & 0xFFFFFFFF, len(frame), wirelen)
    return pcapng_block(6, body + frame)


def test_pcapng_interfaces_link_types_and_resolutions(tmp_path):
    section = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    data = (
        section
        + interface_block(1, None)  # microseconds by default
        + interface_block(101, 9)  # nanoseconds
        + pcapng_block(0x00000BAD, b"custom block to skip")
        + enhanced_block(0, 1_700_000_000_250_000, FRAME_A, 60)
        + enhanced_block(1, 1_700_000_001_000_000_500, FRAME_B, 90)
        + pcapng_block(3, struct.pack("<I", len(FRAME_A)) + FRAME_A)  # simple packet block
    )
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)

    frames = all_frames(path)

    assert [f[0] for f in frames] == [FRAME_A, FRAME_B, FRAME_A]
    assert [f[3] for f in frames] == [1, 101, 1]
    assert [f[1] for f in frames] == [60, 90, 60]
    assert frames[0][2] == 1_700_000_000_250_000
    assert frames[1][2] == 1_700_000_001_000_000


def test_pcapng_truncated_block_keeps_packets(tmp_path):
    section = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    data = section + interface_block(1, None) + enhanced_block(0, 5, FRAME_A, 60)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data + enhanced_block(0, 6, FRAME_B, 74)[:-8])

    reader = open_capture(path)
    count = sum(len(b) for b in reader)

    assert count == 1
    assert "ends inside a block" in reader.stats.damaged


@needs_corpus
@pytest.mark.parametrize(
    ("name", "packets", "linktypes"),
    [("pcapng-multi-if.pcapng", 6, {1}), ("dns-ipv6-rawip.pcap", 91, {101}),
     ("sll-irc-starttls.pcap", 20, {113}), ("big-modbus.pcap", 13622, {1}),
     ("corrupt-cut-short.pcap", 2696, {1}), ("corrupt-huge-record.pcap", 6, {1}),
     ("corrupt-fuzz.pcap", 1, {1})],
)
def test_corpus_packet_counts(name, packets, linktypes):
    reader = open_capture(CORPUS / name)
    count = sum(len(b) for b in reader)
    assert count == packets
    assert reader.stats.linktypes == linktypes


@needs_corpus
def test_pcap_written_by_scapy_reads_back(tmp_path):
    from scapy.all import IP, UDP, Ether, wrpcap

    packets = [Ether() / IP(dst="192.0.2.1") / UDP(dport=53) / (b"x" * n) for n in (1, 20, 300)]
    for i, packet in enumerate(packets):
        packet.time = 1700000000 + i
    path = tmp_path / "scapy.pcap"
    wrpcap(str(path), packets)

    frames = all_frames(path)

    assert [f[0] for f in frames] == [bytes(p) for p in packets]
    assert [f[2] for f in frames] == [1700000000_000000 + i * 1_000_000 for i in range(3)]


def test_flow_record_file_is_named(tmp_path: Path) -> None:
    records = tmp_path / "flows.arrows"
    records.write_bytes(b"\xff\xff\xff\xff" + b"\x00" * 60)
    with pytest.raises(CaptureFileError, match="is a file of flow records") as error:
        read_packets(records)
    assert "wirewatch ra -r" in str(error.value)
