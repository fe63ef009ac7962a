"""flgs columns 4-6 of TCP flows built with scapy.

Each expected string is what argus 3.0.8.2 (argus -X, ra -s flgs) printed for the
same packets: a client 10.0.0.1:40000 and a server 10.0.0.2:80 after a handshake.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from scapy.all import IP, TCP, Ether, Raw, wrpcap

from appliance.capture import CaptureSettings, flows_from_file

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
SETTINGS = CaptureSettings(status_interval=86400, user_data_len=0, appbytes=True)


def segment(t, src, flags, seq, ack, data=b"", window=8192, ip_id=1):
    sport, dport = (40000, 80) if src == CLIENT else (80, 40000)
    dst = SERVER if src == CLIENT else CLIENT
    packet = Ether() / IP(src=src, dst=dst, id=ip_id) / TCP(
        sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window)
    if data:
        packet = packet / Raw(data)
    packet.time = t
    return packet


def handshake(client_flags="S", server_flags="SA"):
    return [
        segment(1.0, CLIENT, client_flags, 1000, 0, ip_id=100),
        segment(1.01, SERVER, server_flags, 5000, 1001, ip_id=200),
        segment(1.02, CLIENT, "A", 1001, 5001, ip_id=101),
    ]


def server_data(t, seq, ip_id, size=100, window=8192):
    return segment(t, SERVER, "A", seq, 1001, b"a" * size, window=window, ip_id=ip_id)


def client_ack(t, ack, window=8192, flags="A"):
    return segment(t, CLIENT, flags, 1001, ack, window=window, ip_id=102)


CASES = {
    "server resends unacknowledged data": (
        handshake() + [server_data(2.0, 5001, 201), server_data(2.5, 5001, 202),
                       client_ack(2.6, 5101)],
        " e d",
    ),
    "server resends acknowledged data": (
        handshake() + [server_data(2.0, 5001, 201), client_ack(2.1, 5101),
                       server_data(2.5, 5001, 202)],
        " e d",
    ),
    "client sends its SYN twice": (
        [segment(1.0, CLIENT, "S", 1000, 0, ip_id=1), segment(2.0, CLIENT, "S", 1000, 0, ip_id=2)],
        " e s",
    ),
    "repeated SYN with ECN bits is no retransmission": (
        [segment(1.0, CLIENT, "SEC", 1000, 0, ip_id=1),
         segment(2.0, CLIENT, "SEC", 1000, 0, ip_id=2)],
        " e",
    ),
    "server sends its SYN-ACK twice": (
        handshake()[:2] + [segment(1.015, SERVER, "SA", 5000, 1001, ip_id=201)] + handshake()[2:],
        " e d",
    ),
    "server skips 100 bytes": (
        handshake() + [server_data(2.0, 5001, 201), server_data(2.01, 5201, 203),
                       client_ack(2.03, 5301)],
        " e g",
    ),
    "gap yields to a retransmission": (
        handshake() + [server_data(2.0, 5001, 201), server_data(2.01, 5201, 203),
                       segment(2.02, CLIENT, "A", 1001, 5101, b"x" * 10, ip_id=102),
                       segment(2.5, CLIENT, "A", 1001, 5101, b"x" * 10, ip_id=103),
                       segment(2.6, SERVER, "A", 5301, 1011, ip_id=204)],
        " e s",
    ),
    "out of order by sequence number": (
        handshake() + [server_data(2.0, 5001, 201), server_data(2.01, 5201, 202),
                       server_data(2.02, 5101, 203), client_ack(2.03, 5301)],
        " e r",
    ),
    "out of order by IP identification": (
        handshake() + [server_data(2.0, 5001, 20000), server_data(2.01, 5101, 19981),
                       client_ack(2.03, 5201)],
        " e r",
    ),
    "IP identification 20 lower is not reordering": (
        handshake() + [server_data(2.0, 5001, 20000), server_data(2.01, 5101, 19980),
                       client_ack(2.03, 5201)],
        " e",
    ),
    "client closes its window": (
        handshake() + [server_data(2.0, 5001, 201), client_ack(2.03, 5101, window=0)],
        " e  S",
    ),
    "both close their windows": (
        handshake() + [server_data(2.0, 5001, 201, window=0), client_ack(2.03, 5101, window=0)],
        " e  @",
    ),
    "ECN negotiated, both echo congestion": (
        handshake("SEC", "SAE") + [
            segment(2.0, SERVER, "AE", 5001, 1001, b"a" * 100, ip_id=201),
            client_ack(2.03, 5101, flags="AE")],
        " e   E",
    ),
    "ECN negotiated, SYN-ACK echo only": (
        handshake("SEC", "SAE") + [server_data(2.0, 5001, 201), client_ack(2.03, 5101)],
        " e   t",
    ),
    "client offered ECN, client echoes": (
        handshake("SEC", "SA") + [server_data(2.0, 5001, 201), client_ack(2.03, 5101, flags="AE")],
        " e   x",
    ),
    "ECE without ECN negotiation": (
        handshake() + [segment(2.0, SERVER, "AE", 5001, 1001, b"a" * 100, ip_id=201),
                       client_ack(2.03, 5101, flags="AE")],
        " e",
    ),
}


def record_flgs(tmp_path, packets) -> list[str]:
    path = tmp_path / "case.pcap"
    wrpcap(str(path), packets)
    table = pa.Table.from_batches(list(flows_from_file(path, SETTINGS)))
    return [flgs.rstrip() for flgs in table.column("flgs").to_pylist()]


@pytest.mark.parametrize("case", list(CASES))
def test_tcp_flgs_match_argus(tmp_path, case):
    packets, expected = CASES[case]

    assert record_flgs(tmp_path, packets) == [expected]


def test_retransmission_only_in_its_status_record(tmp_path):
    packets = handshake() + [server_data(2.0, 5001, 201), server_data(2.5, 5001, 202)]
    packets += [client_ack(4.0 + i, 5101) for i in range(4)]
    path = tmp_path / "split.pcap"
    wrpcap(str(path), packets)
    settings = CaptureSettings(status_interval=1, user_data_len=0, appbytes=True)
    table = pa.Table.from_batches(list(flows_from_file(path, settings)))
    flgs = [value.rstrip() for value in table.column("flgs").to_pylist()]

    assert flgs[0] == " e"
    assert flgs[1] == " e d"
    assert set(flgs[2:]) == {" e"}
