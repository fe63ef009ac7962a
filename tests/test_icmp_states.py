"""State mnemonics of ICMP and ICMPv6 flows, against what argus 3.0.8 printed.

Every expected state below is what argus 3.0.8.2 printed for the same scapy-built
packets (`argus -X -r FILE -w OUT`, then `ra -s stime saddr sport state`). argus names an
ICMPv4 flow by its type, and a destination-unreachable flow by its code. It names ICMPv6
errors (unreachable, time exceeded, parameter problem) by type and code. Types it has no
name for print UNK, and ICMPv4 types 1, 2 and 7 print nothing.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from appliance.flows import CaptureSettings, FlowMeter
from appliance.pcapio import PacketBatch
from appliance.records import FLOW_SCHEMA

SETTINGS = CaptureSettings(status_interval=86400, user_data_len=0, appbytes=True)
MACS = {"src": "00:00:00:00:00:01", "dst": "00:00:00:00:00:02"}
HOST_A, HOST_B = "10.0.0.1", "10.0.0.2"
HOST6_A, HOST6_B = "2001:db8::1", "2001:db8::2"
#: ICMPv4 types whose message quotes an IP header (errors).
ICMP_ERRORS = {3, 4, 5, 11, 12}


def icmp4(src: str, dst: str, icmp_type: int, code: int) -> bytes:
    """An ICMPv4 message; errors quote a UDP datagram the receiver sent."""
    if icmp_type in ICMP_ERRORS:
        body = bytes(IP(src=dst, dst="192.0.2.9") / UDP(sport=1234, dport=9999))
    else:
        body = b"abcd"
    return bytes(Ether(**MACS) / IP(src=src, dst=dst)
                 / ICMP(type=icmp_type, code=code, id=7, seq=1) / Raw(body))


def icmp6(src: str, dst: str, icmp_type: int, code: int) -> bytes:
    """An ICMPv6 message with identifier 7 and sequence 1; errors quote a UDP datagram."""
    header = bytes([icmp_type, code, 0, 0]) + b"\x00\x07\x00\x01"
    if icmp_type < 128:
        body = bytes(IPv6(src=dst, dst="2001:db8::9") / UDP(sport=1234, dport=9999))
    else:
        body = b"abcd"
    return bytes(Ether(**MACS) / IPv6(src=src, dst=dst, nh=58) / Raw(header + body))


def records(frames: list[bytes]) -> list[dict]:
    """Meter the frames one millisecond apart and return the records by start time."""
    batch = PacketBatch.from_frames(
        frames, [1_700_000_000_000_000 + i * 1000 for i in range(len(frames))],
        wirelen=[len(frame) for frame in frames],
    )
    meter = FlowMeter(SETTINGS)
    rows = pa.Table.from_batches(meter.process(batch) + meter.flush(), schema=FLOW_SCHEMA)
    return sorted(rows.to_pylist(), key=lambda row: row["stime"])


def states(frames: list[bytes]) -> list[str]:
    """Meter the frames, one millisecond apart; return the records' states by start time."""
    return [row["state"] for row in records(frames)]


# (type, code, state argus printed for one message of that type sent on its own)
ICMPV4_STATES = [
    (1, 0, ""), (2, 0, ""), (4, 0, "SRC"), (4, 1, "SRC"), (5, 0, "RED"), (5, 3, "RED"),
    (6, 0, "AHA"), (7, 0, ""), (8, 0, "ECO"), (8, 3, "ECO"), (9, 0, "RTA"), (9, 16, "RTA"),
    (10, 0, "RTS"), (11, 0, "TXD"), (11, 1, "TXD"), (12, 0, "PAR"), (12, 2, "PAR"),
    (13, 0, "TST"), (15, 0, "IRQ"), (17, 0, "MAS"), (19, 0, "SEC"), (20, 0, "ROB"),
    (29, 0, "ROB"), (30, 0, "TRC"), (31, 0, "DCE"), (32, 0, "MHR"), (33, 0, "WAY"),
    (34, 0, "IAH"), (35, 0, "MRQ"), (36, 0, "MRP"), (37, 0, "DNQ"), (38, 0, "DNP"),
    (39, 0, "SKP"), (40, 0, "PHO"), (41, 0, "NRS"), (42, 0, "NRA"), (43, 0, "NNS"),
    (44, 0, "NNA"), (45, 0, "PTB"), (46, 0, "UNK"), (128, 0, "UNK"), (255, 0, "UNK"),
]
# Destination unreachable (type 3): code -> state argus printed.
UNREACHABLE_STATES = {
    0: "URN", 1: "URH", 2: "URO", 3: "URP", 4: "URF", 5: "URS", 6: "URNU", 7: "URHU",
    8: "URISO", 9: "URNPRO", 10: "URHPRO", 11: "URNTOS", 12: "URHTOS", 13: "URFIL",
    14: "URPRE", 15: "URCUT", 16: "UR", 20: "UR", 255: "UR",
}
ICMPV6_STATES = [
    (1, 0, "URNR"), (1, 1, "URAD"), (1, 2, "URBS"), (1, 3, "URAR"), (1, 4, "URP"),
    (1, 5, "URSF"), (1, 6, "URRR"), (1, 7, "URES"), (1, 8, "UNK"), (1, 255, "UNK"),
    (2, 0, "PTB"), (2, 5, "PTB"), (3, 0, "TXT"), (3, 1, "TXR"), (3, 2, "UNK"), (4, 0, "PPH"),
    (4, 1, "PPNH"), (4, 2, "PPO"), (4, 3, "UNK"), (0, 0, "UNK"), (5, 0, "UNK"),
    (128, 0, "ECO"), (128, 3, "ECO"), (129, 0, "ECO"), (130, 0, "MRQ"), (131, 0, "MRQ"),
    (132, 0, "MRQ"), (133, 0, "NRS"), (133, 1, "NRS"), (134, 0, "NRS"), (135, 0, "NNS"),
    (136, 0, "NNS"), (137, 0, "RED"), (137, 1, "RED"), (138, 0, "UNK"), (143, 0, "MHR"),
    (143, 1, "MHR"), (200, 0, "UNK"), (255, 0, "UNK"),
]


@pytest.mark.parametrize(("icmp_type", "code", "expected"), ICMPV4_STATES)
def test_icmpv4_type_state(icmp_type, code, expected):
    assert states([icmp4(HOST_A, HOST_B, icmp_type, code)]) == [expected]


@pytest.mark.parametrize(("code", "expected"), UNREACHABLE_STATES.items())
def test_icmpv4_unreachable_code_state(code, expected):
    assert states([icmp4(HOST_A, HOST_B, 3, code)]) == [expected]


@pytest.mark.parametrize(("icmp_type", "code", "expected"), ICMPV6_STATES)
def test_icmpv6_type_state(icmp_type, code, expected):
    assert states([icmp6(HOST6_A, HOST6_B, icmp_type, code)]) == [expected]


# (query type, reply type, state argus printed for the one record of the exchange)
ICMPV4_EXCHANGES = [(8, 0, "ECO"), (13, 14, "TST"), (15, 16, "IRQ"), (17, 18, "MAS")]


@pytest.mark.parametrize(("query", "reply", "expected"), ICMPV4_EXCHANGES)
@pytest.mark.parametrize("reply_first", [False, True])
def test_icmpv4_exchange_named_by_query(query, reply, expected, reply_first):
    frames = [icmp4(HOST_A, HOST_B, query, 0), icmp4(HOST_B, HOST_A, reply, 0)]
    assert states(frames[::-1] if reply_first else frames) == [expected]


@pytest.mark.parametrize("reply_first", [False, True])
def test_icmpv6_echo_exchange_is_one_record(reply_first):
    frames = [icmp6(HOST6_A, HOST6_B, 128, 0), icmp6(HOST6_B, HOST6_A, 129, 0)]
    assert states(frames[::-1] if reply_first else frames) == ["ECO"]


@pytest.mark.parametrize(("query", "reply", "expected"),
                         [(9, 10, ["RTA", "RTS"]), (35, 36, ["MRQ", "MRP"]),
                          (37, 38, ["DNQ", "DNP"])])
def test_icmpv4_messages_argus_does_not_pair(query, reply, expected):
    frames = [icmp4(HOST_A, HOST_B, query, 0), icmp4(HOST_B, HOST_A, reply, 0)]
    assert states(frames) == expected


# Known differences, each with argus's state and ours. argus keys these messages
# differently from Wirewatch, and the state follows the key (see "Flow records" in
# docs/argus-differences.md).
# - An echo reply seen without its request: argus keys it as type 0 and prints ECR;
#   Wirewatch keys it under the echo request, as it does when the request was seen.
# - A timestamp, information or address mask reply seen alone: argus prints type 12
#   (parameter problem) as sport and PAR; Wirewatch keys it under its request.
# - An echo reply with a nonzero code: argus prints SRC; Wirewatch keys it as an echo.
ICMPV4_LONE_REPLY_DIFFERENCES = [
    # (type, code, argus state, Wirewatch state)
    (0, 0, "ECR", "ECO"), (14, 0, "PAR", "TST"), (16, 0, "PAR", "IRQ"),
    (18, 0, "PAR", "MAS"), (0, 5, "SRC", "ECO"),
]


@pytest.mark.parametrize(("icmp_type", "code", "argus", "ours"),
                         ICMPV4_LONE_REPLY_DIFFERENCES)
def test_icmpv4_lone_reply_state_differs_from_argus(icmp_type, code, argus, ours):
    assert argus != ours
    assert states([icmp4(HOST_A, HOST_B, icmp_type, code)]) == [ours]


@pytest.mark.parametrize(("query", "reply", "state"),
                         [(130, 131, "MRQ"), (130, 132, "MRQ"), (133, 134, "NRS"),
                          (135, 136, "NNS")])
@pytest.mark.parametrize("reply_first", [False, True])
def test_icmpv6_query_and_reply_are_one_record(query, reply, state, reply_first):
    # argus keys an MLD, router or neighbour reply under its query, as it keys an echo
    # reply, and prints one record of both messages with the query's state.
    frames = [icmp6(HOST6_A, HOST6_B, query, 0), icmp6(HOST6_B, HOST6_A, reply, 0)]
    assert states(frames[::-1] if reply_first else frames) == [state]


def error4(icmp_type: int, code: int, quoted_dst: str, quoted_proto: int = 17) -> bytes:
    """An ICMPv4 error from HOST_A to HOST_B quoting a datagram HOST_B sent to quoted_dst."""
    quoted = IP(src=HOST_B, dst=quoted_dst, proto=quoted_proto) / Raw(b"\x13\x88\x00\x35" * 2)
    return bytes(Ether(**MACS) / IP(src=HOST_A, dst=HOST_B)
                 / ICMP(type=icmp_type, code=code, gw="192.0.2.1") / Raw(bytes(quoted)))


# (type, code, quoted destination, quoted protocol, state, dport) as argus 3.0.8.2
# printed them. ra prints every ICMP dport byte-swapped, so its 0xac10 is 0x10ac here,
# and its 0x0600 for TCP is 6.
ICMPV4_ERROR_DPORTS = [
    (5, 1, "172.16.5.9", 17, "RED", 0x10AC),
    (5, 0, "192.168.7.10", 17, "RED", 0xA8C0),
    (5, 2, "10.20.30.40", 17, "RED", 0),
    (5, 3, "172.16.5.9", 17, "RED", 0),
    (3, 2, "172.16.5.9", 6, "URO", 6),
    (3, 2, "10.9.8.7", 50, "URO", 50),
    (3, 0, "172.16.5.9", 17, "URN", 0x10AC),
    (3, 1, "172.16.5.9", 17, "URH", 0x10AC),
    (3, 3, "172.16.5.9", 17, "URP", 0x35),
    (3, 4, "172.16.5.9", 17, "URF", 0),
    (11, 0, "172.16.5.9", 17, "TXD", 0),
    (12, 0, "172.16.5.9", 17, "PAR", 0),
]


@pytest.mark.parametrize(("icmp_type", "code", "quoted_dst", "quoted_proto", "state", "dport"),
                         ICMPV4_ERROR_DPORTS)
def test_icmpv4_error_dport_as_argus(icmp_type, code, quoted_dst, quoted_proto, state, dport):
    [record] = records([error4(icmp_type, code, quoted_dst, quoted_proto)])
    assert (record["state"], record["dport"]) == (state, dport)


def test_protocol_unreachables_split_by_protocol():
    frames = [error4(3, 2, "10.0.0.1", 99), error4(3, 2, "10.0.0.1", 17)]
    assert [record["dport"] for record in records(frames)] == [99, 17]


@pytest.mark.parametrize(("icmp_type", "code", "state"),
                         [(1, 4, "URP"), (1, 1, "URAD"), (3, 0, "TXT"), (3, 1, "TXR"),
                          (2, 0, "PTB"), (4, 2, "PPO")])
def test_icmpv6_error_dport_is_its_code(icmp_type, code, state):
    [record] = records([icmp6(HOST6_A, HOST6_B, icmp_type, code)])
    assert (record["state"], record["sport"] >> 8, record["dport"]) == (state, icmp_type, code)
