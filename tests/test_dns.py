"""radump DNS text against radump 3.0.8, and the DNS decoder on bad and cut bytes."""

from __future__ import annotations

import csv
import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.analyses import extract_dns, radump_text
from appliance.analyses.dns_wire import decode_message, split_tcp_messages
from appliance.records import conform, pack_address
from tests.oracle_records import CORPUS, REFERENCE

#: argus kept this many bytes of user data per direction when the reference was made.
CAPTURE_LENGTH = 128

#: Captures checked on every run; the big synthetic mix runs as a slow test.
CAPTURES = [
    "http-wikipedia.pcap", "dns-udp-basic.pcap", "dns-tcp-basic.pcap", "dns-edns-opts.pcap",
    "dns-badcookie-null.pcap", "dns-compression-loop.pcap", "dns-corrupt.pcap",
    "dns-dnssec.pcap", "dns-edns-ecs-mixed.pcap", "dns-https-rr.pcap", "dns-invalid-names.pcap",
    "dns-ipv6-rawip.pcap", "dns-junk-request-tc.pcap", "dns-many-vlan.pcap",
    "dns-max-compression-depth.pcap", "dns-nxdomain-soa.pcap", "dns-ptr.pcap",
    "dns-tcp-bighole.pcap", "dns-tcp-multi-nxdomain.pcap", "dns-tcp-nosyn.pcap",
    "dns-tcp-trailing-junk.pcap", "dns-vlan.pcap", "gre-sample.pcap", "pcapng-multi-if.pcapng",
    "rawip4-dns.pcap", "tls-with-dns.pcap",
]

#: Reference lines this decoder is known to print differently, by capture: none so far.
EXPECTED_DIFFERENCES: dict[str, int] = {}

USER_DATA = re.compile(r'^\s*[sd]\[(\d+)\]="(.*)"\s*$', re.DOTALL)


def port53_payloads(path: Path) -> dict[tuple, list[tuple[float, tuple[str, int], bytes]]]:
    """Collect the transport payload of every port-53 packet, per unordered 5-tuple.

    Payload length comes from the IP header, not the UDP length field, as argus does.
    """
    scapy = pytest.importorskip("scapy.all")
    from scapy.utils import PcapReader

    flows: dict[tuple, list] = {}
    for packet in PcapReader(str(path)):
        transport = packet.getlayer(scapy.UDP) or packet.getlayer(scapy.TCP)
        if transport is None or 53 not in (transport.sport, transport.dport):
            continue
        ip = transport.underlayer
        if not isinstance(ip, scapy.IP | scapy.IPv6):
            continue
        raw = bytes(ip)
        total = ip.len if isinstance(ip, scapy.IP) else 40 + ip.plen
        udp = isinstance(transport, scapy.UDP)
        start = len(raw) - len(bytes(transport)) + (8 if udp else transport.dataofs * 4)
        source, destination = (ip.src, transport.sport), (ip.dst, transport.dport)
        key = (min(source, destination), max(source, destination), "udp" if udp else "tcp")
        flows.setdefault(key, []).append((float(packet.time), source, raw[start:total]))
    return flows


def user_data(packets: list, source: tuple[str, int], first: float, last: float) -> tuple:
    """Rebuild argus's suser/duser: the first bytes of payload per direction, concatenated."""
    buffers = {True: bytearray(), False: bytearray()}
    for time, sender, payload in packets:
        if first - 1e-6 <= time <= last + 1e-6:
            buffer = buffers[sender == source]
            buffer += payload[: CAPTURE_LENGTH - len(buffer)]
    return bytes(buffers[True]), bytes(buffers[False])


def reference_cases(capture: str) -> list[tuple[str, bool, bytes, str]]:
    """Pair each radump reference cell with the user-data buffer it was printed from."""
    dump = REFERENCE / f"{capture}.radump.tsv"
    if not (CORPUS / capture).exists() or not dump.exists():
        pytest.skip(f"corpus capture or reference for {capture} is not available")
    flows = port53_payloads(CORPUS / capture)
    with (REFERENCE / f"{capture}.ra.csv").open(newline="") as handle:
        last_times = {
            (row["StartTime"], row["SrcAddr"], row["Sport"], row["DstAddr"], row["Dport"]):
            float(row["LastTime"]) for row in csv.DictReader(handle)
        }
    cases = []
    with dump.open(newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        next(rows, None)
        for row in rows:
            stime, saddr, sport, daddr, dport, proto, suser, duser = row
            source, destination = (saddr, int(sport)), (daddr, int(dport))
            packets = flows.get((min(source, destination), max(source, destination), proto), [])
            last = last_times.get(tuple(row[:5]), float(stime))
            sbuffer, dbuffer = user_data(packets, source, float(stime), last)
            for cell, buffer in ((suser, sbuffer), (duser, dbuffer)):
                cases.append((cell, proto == "tcp", buffer, f"{saddr}.{sport}>{daddr}.{dport}"))
    return cases


def differences(capture: str) -> list[str]:
    found = []
    for cell, tcp, buffer, flow in reference_cases(capture):
        match = USER_DATA.match(cell)
        assert match, cell
        length, shown = int(match.group(1)), match.group(2)
        text = radump_text(buffer, tcp)
        # The reference column is 128 characters wide, so long texts are cut there,
        # while the number in brackets is the full length.
        if len(text) != length or not text.startswith(shown):
            found.append(f"{flow}: expected {shown!r} ({length}), got {text!r}")
    return found


@pytest.mark.parametrize("capture", CAPTURES)
def test_radump_text_matches_reference(capture: str) -> None:
    found = differences(capture)
    assert len(found) == EXPECTED_DIFFERENCES.get(capture, 0), "\n".join(found[:10])


@pytest.mark.slow
def test_radump_text_matches_big_mix() -> None:
    found = differences("big-synthetic-mix.pcap")
    assert found == []


def query(name: str = "www.example.com", qtype: int = 1, ident: int = 4660,
          flags: int = 0x0100, additional: bytes = b"", arcount: int = 0) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
    header = struct.pack("!6H", ident, flags, 1, 0, 0, arcount)
    return header + labels + struct.pack("!HH", qtype, 1) + additional


def response(answers: list[tuple[int, bytes]], rcode: int = 0, ttl: int = 300,
             additional: bytes = b"", arcount: int = 0) -> bytes:
    question = query()[12:]
    header = struct.pack("!6H", 4660, 0x8180 | rcode, 1, len(answers), 0, arcount)
    records = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
        for rtype, rdata in answers
    )
    return header + question + records + additional


OPT_RECORD = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


def test_query_text() -> None:
    assert radump_text(query(), tcp=False) == "4660+ [_] A? www.example.com. (33)"


def test_query_with_edns_text() -> None:
    message = query(additional=OPT_RECORD, arcount=1)
    assert radump_text(message, tcp=False) == "4660+  [1au] A? www.example.com. (44)"


def test_response_texts() -> None:
    address = response([(1, bytes([93, 184, 216, 34]))])
    assert radump_text(address, tcp=False) == "4660 1/0/0 A 93.184.216.34 (49)"
    text = response([(16, b"\x05hello")])
    assert radump_text(text, tcp=False).startswith('4660 1/0/0 TXT "hello"')
    ipv6 = response([(28, bytes(16))])
    assert radump_text(ipv6, tcp=False) == "4660 1/0/0 AAAA (61)"
    nxdomain = response([], rcode=3)
    assert radump_text(nxdomain, tcp=False) == "4660 NXDomain 0/0/0 (33)"


def test_tcp_prefix_is_skipped() -> None:
    message = query()
    framed = struct.pack("!H", len(message)) + message
    assert radump_text(framed, tcp=True) == radump_text(message, tcp=False)


def test_empty_buffer_prints_nothing() -> None:
    assert radump_text(b"", tcp=False) == ""
    assert radump_text(b"\x12", tcp=False) == "[|domain]"


def test_cut_query_ends_in_domain_marker() -> None:
    message = query(additional=OPT_RECORD, arcount=1)
    assert radump_text(message[:20], tcp=False) == "4660+  [1au][|domain]"


def test_self_pointer_owner_still_prints() -> None:
    header = struct.pack("!6H", 5, 0x8180, 0, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([1, 2, 3, 4])
    message = header + record
    assert radump_text(message, tcp=False) == f"5 [0q] 1/0/0 A 1.2.3.4 ({len(message)})"


def test_compression_loop_is_reported() -> None:
    header = struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0)
    message = header + b"\x01a\xc0\x0c" + struct.pack("!HH", 1, 1)
    text = radump_text(message, tcp=False)
    # radump detects a loop only after visiting more bytes than the message holds,
    # so the looping label is printed several times first.
    assert text.startswith("7+ [_] A? a.a.")
    assert text.endswith(".<LOOP>[|domain]")
    assert len(text) < 2 * len(message) + 40
    decoded = decode_message(message)
    assert decoded.questions == []
    assert "points forward or loops" in decoded.error


def test_forward_pointer_is_rejected() -> None:
    header = struct.pack("!6H", 8, 0x0100, 1, 0, 0, 0)
    message = header + b"\xc0\x20" + struct.pack("!HH", 1, 1) + bytes(20)
    decoded = decode_message(message)
    assert decoded.error is not None
    assert "points forward or loops" in decoded.error


def test_decoder_reads_full_response() -> None:
    message = response([(5, b"\x03web\xc0\x10"), (1, bytes([10, 0, 0, 1]))], ttl=60,
                       additional=OPT_RECORD, arcount=1)
    decoded = decode_message(message)
    assert decoded.error is None
    assert decoded.questions[0].name == "www.example.com."
    assert [record.text for record in decoded.answers] == ["web.example.com.", "10.0.0.1"]
    assert [record.ttl for record in decoded.answers] == [60, 60]
    assert decoded.additional[0].rtype == 41


def test_extended_rcode_from_opt() -> None:
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 1 << 24, 0)
    decoded = decode_message(response([], rcode=7, additional=opt, arcount=1))
    assert decoded.rcode == 23


def test_every_truncation_point_is_handled() -> None:
    message = response([(5, b"\x03web\xc0\x10"), (1, bytes([10, 0, 0, 1]))],
                       additional=OPT_RECORD, arcount=1)
    for end in range(1, len(message)):
        piece = message[:end]
        text = radump_text(piece, tcp=False)
        decoded = decode_message(piece)
        assert text.endswith("[|domain]") or text.endswith(f"({end})"), (end, text)
        assert decoded.error is not None, end


def test_wrong_counts_stop_cleanly() -> None:
    message = bytearray(query())
    message[4:6] = struct.pack("!H", 40)
    decoded = decode_message(bytes(message))
    assert len(decoded.questions) == 1
    assert "question 2 of 40" in decoded.error
    assert radump_text(bytes(message), tcp=False).endswith("[|domain]")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(data: bytes, tcp: bool) -> None:
    text = radump_text(data, tcp)
    assert isinstance(text, str)
    decode_message(data)
    split_tcp_messages(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=12, max_value=60), st.binary(min_size=1, max_size=8))
def test_mutated_message_never_raises(position: int, patch: bytes) -> None:
    message = bytearray(response([(5, b"\x03web\xc0\x10"), (1, bytes(4))],
                                 additional=OPT_RECORD, arcount=1))
    message[position:position + len(patch)] = patch
    radump_text(bytes(message), tcp=False)
    decode_message(bytes(message))


def flow_table(rows: list[dict[str, object]]) -> pa.Table:
    base = {"stime": datetime.fromtimestamp(0, tz=UTC), "sport": 40000, "dport": 53}
    records = [{**base, **row} for row in rows]
    fields = ["stime", "saddr", "sport", "daddr", "dport", "proto", "suser", "duser"]
    from appliance.records import FLOW_SCHEMA

    schema = pa.schema([FLOW_SCHEMA.field(name) for name in fields])
    return conform(pa.Table.from_pylist(records, schema=schema))


def test_extract_dns_rows() -> None:
    answer = response([(1, bytes([93, 184, 216, 34]))], ttl=120)
    tcp_query = query(name="a.example")
    second = query(name="b.example", ident=9)
    tcp_stream = b"".join(struct.pack("!H", len(m)) + m for m in (tcp_query, second))
    table = flow_table([
        {"saddr": pack_address("10.0.0.1"), "daddr": pack_address("10.0.0.53"), "proto": 17,
         "suser": query(), "duser": answer},
        {"saddr": pack_address("2001:db8::1"), "daddr": pack_address("2001:db8::53"),
         "proto": 6, "suser": tcp_stream, "duser": None},
        {"saddr": pack_address("10.0.0.1"), "daddr": pack_address("10.0.0.2"), "proto": 17,
         "dport": 123, "suser": query(), "duser": None},
    ])
    rows = extract_dns(table).to_pylist()
    assert len(rows) == 4
    request, reply, first_tcp, second_tcp = rows
    assert request["side"] == "s"
    assert request["qname"] == "www.example.com."
    assert request["qtype"] == "A"
    assert request["qclass"] == "IN"
    assert request["flags"] == "RD"
    assert request["qr"] is False
    assert reply["rcode"] == "NOERROR"
    assert reply["flags"] == "QR RD RA"
    assert reply["answers"] == ["93.184.216.34"]
    assert reply["ttls"] == [120]
    assert reply["radump"] == "4660 1/0/0 A 93.184.216.34 (49)"
    assert first_tcp["saddr"] == "2001:db8::1"
    assert first_tcp["qname"] == "a.example."
    assert second_tcp["trans_id"] == 9
    assert second_tcp["qname"] == "b.example."


def test_extract_dns_marks_cut_messages() -> None:
    answer = response([(1, bytes([1, 2, 3, 4]))])
    table = flow_table([{"saddr": pack_address("10.0.0.1"), "daddr": pack_address("10.0.0.53"),
                         "proto": 17, "suser": answer[:30], "duser": b"\x01"}])
    rows = extract_dns(table).to_pylist()
    assert len(rows) == 2
    assert rows[0]["error"].startswith("truncated")
    assert rows[1]["trans_id"] is None
    assert rows[1]["radump"] == "[|domain]"
