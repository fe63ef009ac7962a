"""Crafted RTP and RTCP flows for tests/test_rtp.py, one UDP flow per case.

Each case is a list of packets (direction, UDP payload, seconds since the previous
packet): direction 0 goes from 10.0.0.1 to 10.0.0.2, 1 back. Case number i uses
source port 40000 + 2i and destination port 5004, unless PORTS gives another.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

START = 1_700_000_000.0
GAP = 0.02
#: A gap longer than the 5-second status interval of the split cases.
PAUSE = 10.0

Packet = tuple[int, bytes, float]


def rtp(seq: int, ssrc: int, payload_type: int = 0, media: int = 160, csrc: int = 0,
        extension: bytes = b"", version: int = 2) -> bytes:
    """An RTP header (RFC 3550) and ``media`` zero bytes; ``extension`` sets the X bit."""
    first = (version << 6) | (0x10 if extension else 0) | csrc
    header = struct.pack("!BBHII", first, payload_type, seq & 0xFFFF, 0, ssrc)
    return header + b"\x00" * (4 * csrc) + extension + b"\x00" * media


def rtcp(packet_type: int, ssrc: int = 7, words: int = 6) -> bytes:
    """One RTCP packet of ``words`` + 1 32-bit words."""
    return struct.pack("!BBHI", 0x80, packet_type, words, ssrc) + b"\x00" * (4 * words - 4)


def stream(count: int, ssrc: int = 1, first: int = 100, direction: int = 0,
           **header: int) -> list[Packet]:
    """``count`` RTP packets with consecutive sequence numbers."""
    return [(direction, rtp(first + i, ssrc, **header), GAP) for i in range(count)]


def paused(packets: list[Packet]) -> list[Packet]:
    """The same packets, the first one sent after a pause."""
    direction, payload, _ = packets[0]
    return [(direction, payload, PAUSE), *packets[1:]]


NOT_RTP = b"\x00" * 40
#: LLMNR query as in big-synthetic-mix: version bits 2, sequence 0, SSRC 0.
LLMNR = bytes.fromhex("bb4c0000000100000000000007557365722d50430000ff0001")
#: An extension whose length field, read little-endian, equals the payload length.
EXTENSION_FITS = b"\x00\x00\x2c\x00" + b"\x00" * 8

CASES: dict[str, list[Packet]] = {
    "four from source": stream(4),
    "five from source": stream(5),
    "four and one back": stream(4) + stream(1, ssrc=9, direction=1),
    "one and five back": stream(1) + stream(5, ssrc=9, direction=1),
    "three each way": stream(3) + stream(3, ssrc=9, direction=1),
    "first RTP then other payloads": stream(1) + [(0, NOT_RTP, GAP)] * 4,
    "first not RTP": [(0, NOT_RTP, GAP)] + stream(5),
    "first empty": [(0, b"", GAP)] + stream(5),
    "SSRC changes": stream(2) + stream(5, ssrc=2, first=102),
    "SSRC zero later": stream(2) + [(0, rtp(102, 0), GAP)] + stream(3, first=103),
    "sequence zero, SSRC zero": [(0, rtp(0, 0), GAP)] * 5,
    "LLMNR repeated": [(0, LLMNR, GAP)] * 20,
    "RTCP sender reports": [(0, rtcp(200), GAP)] * 2,
    "RTCP receiver report": [(0, rtcp(201, words=7), GAP)] * 2,
    "RTCP header alone": [(0, rtcp(201, words=1), GAP)] * 2,
    "RTCP description only": [(0, rtcp(202, words=2), GAP)] * 5,
    "extension that does not fit": stream(2) + [(0, rtp(102, 1, extension=b"\x00" * 4), GAP)]
    + stream(3, first=103),
    "extension that fits": [(0, rtp(100, 1, media=32), GAP)]
    + [(0, rtp(101 + i, 1, media=20, extension=EXTENSION_FITS), GAP) for i in range(5)],
    "header shorter than 12 bytes": [(0, b"\x80" * 11, GAP)] * 5,
    "port below 1024": stream(6),
    "AFS port": stream(6),
    "small media": stream(8, media=20),
    "CSRC list": stream(8, media=20, csrc=3),
    "CSRC list as long as the payload": [(0, rtp(100, 1, media=4), GAP)]
    + [(0, rtp(101 + i, 1, media=0, csrc=15)[:40], GAP) for i in range(5)],
    "sequence gap": stream(3) + stream(3, first=110),
    "late packet": stream(3) + [(0, rtp(105, 1), GAP), (0, rtp(104, 1), GAP),
                                (0, rtp(106, 1), GAP)],
    "gap back": stream(1) + stream(3, ssrc=7, direction=1)
    + stream(3, ssrc=7, first=120, direction=1),
    "sequence wraps": [(0, rtp(65533 + i, 1), GAP) for i in range(6)],
    "silence back": stream(6) + stream(6, ssrc=7, direction=1, media=161),
    "silence both ways": stream(6, media=161) + stream(6, ssrc=7, direction=1, media=161),
    "silence from source": stream(6, media=161),
    "G.723 silence back": stream(1) + stream(6, ssrc=7, direction=1, payload_type=4,
                                             media=4),
    "dynamic type, odd size": stream(1) + stream(6, ssrc=7, direction=1, payload_type=96,
                                                 media=161),
}

PORTS = {"port below 1024": 1023, "AFS port": 7005}

#: Flows whose records differ at a 5-second status interval.
SPLIT_CASES: dict[str, list[Packet]] = {
    "RTP in the second record only": [(0, NOT_RTP, GAP)] * 2 + paused(stream(6)),
    "five, then three": stream(5) + paused(stream(3, first=105)),
    "one, then eleven": stream(1) + paused(stream(11, first=101)),
    "reply opens the second record": stream(6) + paused(stream(6, ssrc=9, direction=1)),
    "new SSRC in the second record": stream(6) + paused(stream(6, ssrc=5, first=106)),
    "RTCP then RTP": [(0, rtcp(200), GAP)] * 2 + paused(stream(6)),
    "gap, then none": stream(3) + stream(3, first=110) + paused(stream(6, first=113)),
    "silence back, then none": stream(1) + stream(6, ssrc=7, direction=1, media=161)
    + paused(stream(6, ssrc=7, first=106, direction=1)),
}


def frames(cases: dict[str, list[Packet]], ipv6: bool = False) -> list[Ether]:
    """The frames of every case, one case after another, a second apart."""
    result = []
    when = START
    client, server_host = ("fd00::1", "fd00::2") if ipv6 else ("10.0.0.1", "10.0.0.2")
    for number, (name, packets) in enumerate(cases.items()):
        port = 40000 + 2 * number
        server = PORTS.get(name, 5004)
        for direction, payload, gap in packets:
            when += gap
            hosts = (client, server_host) if direction == 0 else (server_host, client)
            ports = (port, server) if direction == 0 else (server, port)
            network = IPv6(src=hosts[0], dst=hosts[1]) if ipv6 else IP(src=hosts[0],
                                                                          dst=hosts[1])
            frame = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / network
                     / UDP(sport=ports[0], dport=ports[1]) / Raw(payload))
            frame.time = when
            result.append(frame)
        when += 1
    return result


def case_of(sport: int, dport: int, cases: dict[str, list[Packet]]) -> str:
    """Return the name of the case a record's ports belong to."""
    port = sport if 40000 <= sport < 40000 + 2 * len(cases) else dport
    return list(cases)[(port - 40000) // 2]
