"""Application bytes and user data of ICMP messages, against what argus 3.0.8 counted.

The expected values were printed by argus 3.0.8.2 for the same packets
(`argus -X -r FILE -w OUT` with -U 128 and -A, then `ra -s sappbytes suser:80`).
An ICMPv4 error counts the quoted datagram's IP payload length, not the ICMP message.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from appliance.flows import CaptureSettings, FlowMeter
from appliance.pcapio import PacketBatch
from appliance.records import FLOW_SCHEMA

SETTINGS = CaptureSettings(status_interval=86400, user_data_len=128, appbytes=True)
CLIENT, ROUTER, TARGET = "10.1.0.1", "10.1.0.2", "192.0.2.9"
MACS = {"src": "00:00:00:00:00:01", "dst": "00:00:00:00:00:02"}


def records(frames: list[bytes], caplen: int | None = None) -> list[dict]:
    """Meter the frames, one second apart, each cut to ``caplen`` captured bytes if given."""
    captured = [frame[:caplen] if caplen else frame for frame in frames]
    batch = PacketBatch.from_frames(
        captured, [1_700_000_000_000_000 + i * 1_000_000 for i in range(len(frames))],
        wirelen=[len(frame) for frame in frames],
    )
    meter = FlowMeter(SETTINGS)
    batches = meter.process(batch) + meter.flush()
    return pa.Table.from_batches(batches, schema=FLOW_SCHEMA).to_pylist()


def icmp_error(icmp: ICMP, quoted: bytes) -> bytes:
    return bytes(Ether(**MACS) / IP(src=ROUTER, dst=CLIENT) / icmp / Raw(quoted))


def udp_datagram(data_len: int, dport: int = 33434) -> bytes:
    """An IPv4 UDP datagram of 28 + ``data_len`` bytes from the client."""
    return bytes(IP(src=CLIENT, dst=TARGET) / UDP(sport=5000, dport=dport) / Raw(b"u" * data_len))


def with_total_length(datagram: bytes, total_len: int) -> bytes:
    header = bytearray(datagram)
    header[2:4] = total_len.to_bytes(2, "big")
    return bytes(header)


ECHO_DATAGRAM = bytes(IP(src=CLIENT, dst=TARGET) / ICMP(type=8, id=9, seq=3) / Raw(b"y" * 56))
TCP_DATAGRAM = bytes(IP(src=CLIENT, dst=TARGET) / TCP(sport=5000, dport=80) / Raw(b"t" * 20))
OPTIONS_DATAGRAM = bytes(
    IP(src=CLIENT, dst=TARGET, options=b"\x01\x01\x01\x00") / UDP(sport=1, dport=2) / Raw(b"o" * 68)
)
FIRST_FRAGMENT = bytes(
    IP(src=CLIENT, dst=TARGET, flags="MF") / UDP(sport=1, dport=2) / Raw(b"f" * 40)
)

# (case, frames, captured bytes per frame or None, argus SAppBytes, argus suser length)
ICMPV4_CASES = [
    # argus: 64 application bytes, the quoted echo request's IP payload (84 - 20).
    ("host unreachable quoting echo",
     [icmp_error(ICMP(type=3, code=1), ECHO_DATAGRAM[:28])], None, 64, 8),
    # argus: 41 = 61 - 20, and user data is the whole quoted UDP datagram.
    ("port unreachable quoting whole UDP",
     [icmp_error(ICMP(type=3, code=3), udp_datagram(33))], None, 41, 41),
    # argus: 40 = 60 - 20, and user data starts at the quoted TCP header (8 bytes quoted).
    ("port unreachable quoting TCP",
     [icmp_error(ICMP(type=3, code=3), TCP_DATAGRAM[:28])], None, 40, 8),
    # argus: 80 = 100 - 20.
    ("time exceeded quoting UDP",
     [icmp_error(ICMP(type=11, code=0), udp_datagram(72)[:28])], None, 80, 8),
    # argus: 0 when the quoted total length (10) is below the header length.
    ("quoted length below header",
     [icmp_error(ICMP(type=3, code=3), with_total_length(udp_datagram(0), 10)[:28])],
     None, 0, 0),
    # argus: 0 when the quoted total length equals the header length.
    ("quoted length equals header",
     [icmp_error(ICMP(type=3, code=3), with_total_length(udp_datagram(0), 20)[:28])],
     None, 0, 0),
    # argus: 76 = 100 - 24, the quoted header carrying 4 bytes of options.
    ("quoted header with options",
     [icmp_error(ICMP(type=3, code=3), OPTIONS_DATAGRAM[:32])], None, 76, 8),
    # argus: 20, the ICMP message, when fewer than 20 quoted bytes are captured.
    ("quote shorter than IP header",
     [icmp_error(ICMP(type=3, code=3), udp_datagram(50)[:12])], None, 20, 20),
    # argus: 58 = 78 - 20, reading the rest of the quoted header from an Ethernet
    # trailer past the IP length. User data is the 12 trailer bytes after it.
    ("quote completed by trailer",
     [icmp_error(ICMP(type=3, code=3), udp_datagram(50)[:12]) + bytes(range(1, 21))],
     None, 58, 12),
    # argus: 86, the ICMP message on the wire, when the capture keeps 20 ICMP bytes.
    ("capture cut inside quote",
     [icmp_error(ICMP(type=3, code=3), udp_datagram(50))], 14 + 20 + 20, 86, 20),
    # argus: 58 = 78 - 20 once the capture keeps the ICMP header and 20 quoted bytes.
    ("capture cut after quoted header",
     [icmp_error(ICMP(type=3, code=3), udp_datagram(50))], 14 + 20 + 28, 58, 0),
    # argus: 38 = 58 - 20 for source quench, redirect, parameter problem and the
    # unassigned types 6 and 42 alike.
    ("source quench", [icmp_error(ICMP(type=4), udp_datagram(30)[:28])], None, 38, 8),
    ("redirect", [icmp_error(ICMP(type=5, code=1), udp_datagram(30)[:28])], None, 38, 8),
    ("parameter problem", [icmp_error(ICMP(type=12), udp_datagram(30)[:28])], None, 38, 8),
    ("unassigned type 6", [icmp_error(ICMP(type=6), udp_datagram(30)[:28])], None, 38, 8),
    ("unassigned type 42", [icmp_error(ICMP(type=42), udp_datagram(30)[:28])], None, 38, 8),
    # argus: 36, the message, for router advertisement and solicitation (not errors).
    ("router advertisement", [icmp_error(ICMP(type=9), udp_datagram(30)[:28])], None, 36, 36),
    ("router solicitation", [icmp_error(ICMP(type=10), udp_datagram(30)[:28])], None, 36, 36),
    # argus: 48 and 40, the messages, for timestamp and address mask requests.
    ("timestamp request", [icmp_error(ICMP(type=13), udp_datagram(30)[:28])], None, 48, 48),
    ("mask request", [icmp_error(ICMP(type=17), udp_datagram(30)[:28])], None, 40, 40),
    # argus: 48 = 68 - 20 when the quoted datagram is a first fragment.
    ("quoting first fragment",
     [icmp_error(ICMP(type=3, code=3), FIRST_FRAGMENT[:28])], None, 48, 8),
    # argus: 41 = 61 - 20 for an error carried in GRE.
    ("port unreachable inside GRE",
     [bytes(Ether(**MACS) / IP(src="172.16.0.1", dst="172.16.0.2") / GRE()
            / IP(src=ROUTER, dst=CLIENT) / ICMP(type=3, code=3) / Raw(udp_datagram(33)))],
     None, 41, 41),
    # argus: 56, the whole inner datagram, because it does not decode IP-in-IP.
    ("port unreachable inside IP-in-IP",
     [bytes(Ether(**MACS) / IP(src="172.16.1.1", dst="172.16.1.2")
            / IP(src=ROUTER, dst=CLIENT) / ICMP(type=3, code=3) / Raw(udp_datagram(60)[:28]))],
     None, 56, 56),
]


@pytest.mark.parametrize(
    ("frames", "caplen", "appbytes", "user_len"),
    [case[1:] for case in ICMPV4_CASES],
    ids=[case[0] for case in ICMPV4_CASES],
)
def test_icmp_error_app_bytes(frames, caplen, appbytes, user_len):
    (record,) = records(frames, caplen)
    assert record["sappbytes"] == appbytes
    assert len(record["suser"] or b"") == user_len


def test_icmp_echo_counts_message():
    # argus: 64 application bytes each way (8-byte header + 56 data bytes).
    request = Ether(**MACS) / IP(src=CLIENT, dst=TARGET) / ICMP(type=8, id=7, seq=1)
    reply = Ether(**MACS) / IP(src=TARGET, dst=CLIENT) / ICMP(type=0, id=7, seq=1)
    (record,) = records([bytes(request / Raw(b"x" * 56)), bytes(reply / Raw(b"x" * 56))])
    assert record["sappbytes"] == 64
    assert record["dappbytes"] == 64
    assert record["pkts"] == 2


def test_icmp_error_user_data_is_quoted_transport():
    # argus: user data of a port unreachable starts at the quoted UDP header.
    quoted = udp_datagram(33, dport=53)
    (record,) = records([icmp_error(ICMP(type=3, code=3), quoted)])
    assert record["suser"] == quoted[20:]


ICMPV6_ERRORS = [
    ("destination unreachable", ICMPv6DestUnreach(code=4)),
    ("packet too big", ICMPv6PacketTooBig(mtu=1280)),
    ("time exceeded", ICMPv6TimeExceeded()),
    ("parameter problem", ICMPv6ParamProblem()),
]


@pytest.mark.parametrize("icmp", [case[1] for case in ICMPV6_ERRORS],
                         ids=[case[0] for case in ICMPV6_ERRORS])
def test_icmpv6_error_counts_message(icmp):
    # argus: 68, the whole ICMPv6 message (8-byte header + 60 quoted bytes), for every
    # ICMPv6 error: argus does not look into the quoted IPv6 datagram for app bytes.
    quoted = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2)
                   / Raw(b"v" * 100))
    frame = Ether(**MACS) / IPv6(src="2001:db8::2", dst="2001:db8::1") / icmp / Raw(quoted[:60])
    (record,) = records([bytes(frame)])
    assert record["sappbytes"] == 68
    assert len(record["suser"]) == 68


def test_icmpv6_echo_counts_message():
    # argus: 40 (8-byte header + 32 data bytes).
    echo = ICMPv6EchoRequest(id=1, seq=1, data=b"e" * 32)
    (record,) = records([bytes(Ether(**MACS) / IPv6(src="2001:db8::1", dst="2001:db8::2") / echo)])
    assert record["sappbytes"] == 40


def test_error_quoting_later_fragment_is_counted():
    # A deliberate difference (docs/argus-differences.md): argus 3.0.8 writes no record
    # at all for this packet. It takes the quoted header's fragment offset (100) for
    # the packet's own and drops it, so the error is lost from every count. Wirewatch
    # counts it as any other error that quotes a UDP datagram.
    quoted = bytes(IP(src=CLIENT, dst=TARGET, frag=100, proto=17) / Raw(b"f" * 40))
    [record] = records([icmp_error(ICMP(type=3, code=3), quoted[:28])])
    assert (record["pkts"], record["state"], record["sappbytes"]) == (1, "URP", 40)
