"""Decoder: link layers, IPv4/IPv6, transport headers and malformed frames, one frame at a time."""

from __future__ import annotations

import struct

import pytest
from scapy.all import (
    ARP,
    ICMP,
    IP,
    LLC,
    STP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    Raw,
    fragment,
)

from appliance.decode import DecodedBatch, Encapsulation, FragmentKind, Malformed, decode_batch
from appliance.pcapio import PacketBatch
from appliance.records import pack_address

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"


def decode_one(frame: bytes, linktype: int = 1, wirelen: int | None = None) -> dict[str, int]:
    batch = PacketBatch.from_frames([frame], [1_700_000_000_000_000], linktype,
                                    None if wirelen is None else [wirelen])
    decoded = decode_batch(batch)
    return row(decoded, 0)


def row(decoded: DecodedBatch, index: int) -> dict:
    from appliance.decode.columns import FIELD_COLUMNS

    values = {name: int(decoded.fields[index, i]) for i, (name, _) in enumerate(FIELD_COLUMNS)}
    values["saddr"] = decoded.saddr[index].tobytes()
    values["daddr"] = decoded.daddr[index].tobytes()
    values["smac"] = decoded.smac[index].tobytes()
    values["dmac"] = decoded.dmac[index].tobytes()
    return values


def test_ethernet_ipv4_tcp():
    packet = (Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2", ttl=33, tos=8)
              / TCP(sport=40000, dport=80, flags="PA", seq=1000) / Raw(b"GET / HTTP/1.0\r\n"))
    fields = decode_one(bytes(packet))

    assert fields["malformed"] == Malformed.NONE
    assert fields["etype"] == 0x0800
    assert fields["proto"] == 6
    assert fields["saddr"] == pack_address("10.0.0.1")
    assert fields["daddr"] == pack_address("10.0.0.2")
    assert (fields["sport"], fields["dport"]) == (40000, 80)
    assert fields["tcp_flags"] == 0x18
    assert fields["tcp_seq"] == 1000
    assert (fields["ttl"], fields["tos"]) == (33, 8)
    assert fields["payload_len"] == 16
    assert fields["payload_caplen"] == 16
    assert fields["smac"] == bytes.fromhex("020000000001")
    assert fields["encapsulation"] == Encapsulation.ETHERNET
    assert fields["vlan"] == -1


def test_vlan_tag_and_qinq_reach_ip():
    tagged = Ether() / Dot1Q(vlan=11) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=53)
    double = (Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP(src="10.0.0.1", dst="10.0.0.2")
              / UDP(sport=5, dport=53))

    single_fields = decode_one(bytes(tagged))
    double_fields = decode_one(bytes(double))

    assert single_fields["vlan"] == 11
    assert single_fields["encapsulation"] == Encapsulation.ETHERNET | Encapsulation.VLAN
    assert single_fields["dport"] == 53
    assert double_fields["vlan"] == 100
    assert double_fields["encapsulation"] & Encapsulation.QINQ
    assert double_fields["proto"] == 17
    assert double_fields["dport"] == 53


def test_ipv6_skips_extension_headers():
    packet = (Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=7) / IPv6ExtHdrHopByHop()
              / UDP(sport=1000, dport=53) / Raw(b"abcd"))
    fields = decode_one(bytes(packet))

    assert fields["etype"] == 0x86DD
    assert fields["proto"] == 17
    assert fields["saddr"] == pack_address("2001:db8::1")
    assert fields["ttl"] == 7
    assert fields["dport"] == 53
    assert fields["payload_len"] == 4


def test_ipv6_fragment_header():
    packet = (Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=77, m=1)
              / UDP(sport=1, dport=2) / Raw(b"x" * 16))
    fields = decode_one(bytes(packet))

    assert fields["fragment"] == FragmentKind.FIRST
    assert fields["ip_id"] == 77
    assert fields["proto"] == 17


def test_ipv4_fragments():
    datagram = IP(src="10.0.0.1", dst="10.0.0.2", id=4242) / UDP(sport=1, dport=2)
    datagram = datagram / Raw(b"y" * 3000)
    frames = [bytes(Ether() / part) for part in fragment(datagram, fragsize=1400)]
    decoded = decode_batch(PacketBatch.from_frames(frames, [0] * len(frames)))

    first, later = row(decoded, 0), row(decoded, 1)
    assert first["fragment"] == FragmentKind.FIRST
    assert first["dport"] == 2
    assert later["fragment"] == FragmentKind.LATER
    assert later["ip_id"] == first["ip_id"] == 4242
    assert later["dport"] == 0
    assert later["payload_len"] == 0


def test_icmp_echo_fields():
    echo = ICMP(type=8, id=0x449B, seq=3) / Raw(b"ping")
    packet = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / echo
    fields = decode_one(bytes(packet))

    assert fields["sport"] == 8 << 8
    assert fields["dport"] == 0x449B
    assert fields["icmp_seq"] == 3
    assert fields["payload_len"] == 12  # ICMP header included, as argus counts it


def test_icmp_port_unreachable_quotes_udp_port():
    quoted = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=6001, dport=9999)
    packet = Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3) / bytes(quoted)
    fields = decode_one(bytes(packet))

    assert fields["sport"] == 0x0303
    assert fields["quoted"] == 1
    assert fields["dport"] == 9999


def test_icmpv6_echo():
    packet = Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=9, seq=1)
    fields = decode_one(bytes(packet))

    assert fields["proto"] == 58
    assert fields["sport"] == 128 << 8
    assert fields["dport"] == 9


def test_arp_addresses_and_app_bytes():
    packet = Ether(src=SRC_MAC) / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2")
    fields = decode_one(bytes(packet))

    assert fields["etype"] == 0x0806
    assert fields["arp_op"] == 1
    assert fields["saddr"] == pack_address("10.0.0.1")
    assert fields["daddr"] == pack_address("10.0.0.2")
    assert fields["payload_len"] == 42 - 28  # argus 3.0.8: frame length minus the ARP body


def test_llc_frame_uses_service_access_points():
    packet = Dot3(src=SRC_MAC, dst="01:80:c2:00:00:00") / LLC(dsap=0x42, ssap=0x42, ctrl=3) / STP()
    fields = decode_one(bytes(packet))

    assert fields["etype"] == 0
    assert (fields["sport"], fields["dport"]) == (0x42, 0x42)
    assert fields["encapsulation"] == Encapsulation.ETHERNET | Encapsulation.LLC
    assert fields["payload_len"] == len(bytes(packet))


@pytest.mark.parametrize("linktype", [101, 12, 228])
def test_raw_ipv4_link_types(linktype):
    packet = IP(src="192.168.1.100", dst="9.9.9.9") / UDP(sport=12345, dport=53) / Raw(b"q")
    fields = decode_one(bytes(packet), linktype)

    assert fields["malformed"] == Malformed.NONE
    assert fields["dport"] == 53
    assert fields["bytes"] == len(bytes(packet))


def test_raw_ipv6_link_type():
    packet = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=53)
    fields = decode_one(bytes(packet), 229)

    assert fields["etype"] == 0x86DD
    assert fields["dport"] == 53


def test_linux_sll_and_sll2():
    ip = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=6667))
    sll = struct.pack(">HHH8sH", 0, 1, 6, bytes.fromhex("020000000001") + b"\0\0", 0x0800) + ip
    address = bytes.fromhex("020000000001") + b"\0\0"
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, address) + ip

    v1 = decode_one(sll, 113)
    v2 = decode_one(sll2, 276)

    for fields in (v1, v2):
        assert fields["dport"] == 6667
        assert fields["smac"] == bytes.fromhex("020000000001")
        assert fields["bytes"] == len(ip)  # the cooked header is not counted


@pytest.mark.parametrize("header", [struct.pack("<I", 2), struct.pack(">I", 2)])
def test_bsd_loopback_either_byte_order(header):
    ip = bytes(IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=54954, dport=53))
    fields = decode_one(header + ip, 0)

    assert fields["malformed"] == Malformed.NONE
    assert fields["dport"] == 53
    assert fields["bytes"] == len(ip)


def test_truncated_ip_header_is_malformed():
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP())[:14 + 12]
    assert decode_one(frame)["malformed"] == Malformed.TRUNCATED_IP


def test_ip_length_beyond_frame_is_malformed():
    packet = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", len=400) / UDP()
    assert decode_one(bytes(packet))["malformed"] == Malformed.BAD_IP_LENGTH


def test_unknown_link_type_is_malformed():
    assert decode_one(b"\0" * 40, 285)["malformed"] == Malformed.UNSUPPORTED_LINKTYPE


def test_snaplen_cut_keeps_wire_payload_length():
    packet = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=25) / Raw(b"z" * 500)
    frame = bytes(packet)
    fields = decode_one(frame[:68], wirelen=len(frame))

    assert fields["malformed"] == Malformed.NONE
    assert fields["payload_len"] == 500
    assert fields["payload_caplen"] == 68 - 54


def test_malformed_counts_by_kind():
    good = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    batch = PacketBatch.from_frames([good, good[:20], good[:20]], [0, 1, 2])
    assert decode_batch(batch).malformed_counts() == {"truncated_ip": 2}


def test_batch_counts_malformed_fragments_and_quoting_errors():
    good = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    datagram = IP(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=1, dport=2) / Raw(b"y" * 3000)
    fragments = [bytes(Ether() / part) for part in fragment(datagram, fragsize=1400)]
    quoted = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=6001, dport=9999)
    error = bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3)
                  / bytes(quoted))
    frames = [good, good[:20], *fragments, error]
    decoded = decode_batch(PacketBatch.from_frames(frames, list(range(len(frames)))))

    assert (decoded.malformed, decoded.fragments, decoded.quoted) == (1, len(fragments), 1)
    assert decoded.malformed_counts() == {"truncated_ip": 1}


def test_reused_workspace_matches_fresh_arrays():
    from appliance.decode import DecodeWorkspace

    tagged = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / Dot1Q(vlan=7)
                   / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1, dport=2))
    plain = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=3, dport=4))
    workspace = DecodeWorkspace()
    decode_batch(PacketBatch.from_frames([tagged] * 3, [0, 1, 2]), workspace)
    batch = PacketBatch.from_frames([plain, plain[:20]], [0, 1])

    reused = decode_batch(batch, workspace)
    fresh = decode_batch(batch)
    for index in range(2):
        assert row(reused, index) == row(fresh, index)
    assert row(reused, 0)["vlan"] == -1
    assert row(reused, 1)["saddr"] == bytes(16)
