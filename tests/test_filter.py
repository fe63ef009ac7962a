"""The filter language: primitives, precedence, qualifier inheritance and syntax errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from appliance.query.expr import col
from appliance.query.filter import FilterSyntaxError, parse_filter
from appliance.records import FLOW_SCHEMA, EtherType, conform, pack_address

IPV4, IPV6, ARP = int(EtherType.IPV4), int(EtherType.IPV6), int(EtherType.ARP)


def flow(name, etype, proto, saddr, sport, daddr, dport, spkts, dpkts, **extra):
    start = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    row = {"label": name, "etype": etype, "proto": proto,
           "saddr": pack_address(saddr) if saddr else None, "sport": sport,
           "daddr": pack_address(daddr) if daddr else None, "dport": dport,
           "spkts": spkts, "dpkts": dpkts, "pkts": spkts + dpkts,
           "sbytes": 100 * spkts, "dbytes": 100 * dpkts, "bytes": 100 * (spkts + dpkts),
           "stime": start, "ltime": start, "trans": 1}
    row.update(extra)
    return row


ROWS = [
    flow("web", IPV4, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 5, 4, sttl=64, dttl=128),
    flow("alt", IPV4, 6, "10.0.0.1", 40001, "10.0.0.2", 81, 2, 0, sttl=64),
    flow("dns", IPV4, 17, "10.0.0.1", 33333, "8.8.8.8", 53, 1, 1, sco="US", dco="US"),
    flow("dns6", IPV6, 17, "2001:db8::1", 5353, "2001:db8::2", 53, 1, 0),
    flow("ping", IPV4, 1, "10.0.0.2", 0x0800, "10.0.0.1", 7, 1, 1),
    flow("arp", ARP, 0, "10.0.0.1", 0, "10.0.0.2", 0, 1, 1),
    flow("lldp", 0x88CC, 0, None, 0, None, 0, 1, 0, smac=bytes.fromhex("001122334455")),
    flow("big", IPV4, 17, "192.168.1.9", 9999, "10.1.2.3", 8888, 30, 0),
]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    names = list(ROWS[0]) + ["sttl", "dttl", "sco", "dco", "smac"]
    columns = {name: [row.get(name) for row in ROWS] for name in dict.fromkeys(names)}
    schema = pa.schema([FLOW_SCHEMA.field(name) for name in columns])
    return conform(pa.table(columns, schema=schema))


def selected(table: pa.Table, expression: str) -> list[str]:
    mask = parse_filter(expression).mask(table)
    return table.filter(mask).column("label").to_pylist()


@pytest.mark.parametrize(("expression", "expected"), [
    ("", [row["label"] for row in ROWS]),
    ("tcp", ["web", "alt"]),
    ("udp", ["dns", "dns6", "big"]),
    ("icmp", ["ping"]),
    ("arp", ["arp"]),
    ("ip", ["web", "alt", "dns", "dns6", "ping", "big"]),
    ("ipv6", ["dns6"]),
    ("ipv4 and udp", ["dns", "big"]),
    ("proto 17", ["dns", "dns6", "big"]),
    ("ip proto udp", ["dns", "dns6", "big"]),
    ("host 10.0.0.2", ["web", "alt", "ping", "arp"]),
    ("src host 10.0.0.2", ["ping"]),
    ("dst host 8.8.8.8", ["dns"]),
    ("net 10.0.0.0/24", ["web", "alt", "dns", "ping", "arp"]),
    ("dst net 10.0.0.0 mask 255.0.0.0", ["web", "alt", "ping", "arp", "big"]),
    ("net 2001:db8::/32", ["dns6"]),
    ("port 53", ["dns", "dns6"]),
    ("port domain", ["dns", "dns6"]),
    ("port 80 or 81", ["web", "alt"]),
    ("tcp dst port 80 or 81", ["web", "alt"]),
    ("udp port 80", []),
    ("port 50-90", ["web", "alt", "dns", "dns6"]),
    ("src port 5353", ["dns6"]),
    ("host 10.0.0.1 and 10.0.0.2", ["web", "alt", "ping", "arp"]),
    ("not tcp", ["dns", "dns6", "ping", "arp", "lldp", "big"]),
    ("! tcp and ! udp", ["ping", "arp", "lldp"]),
    ("tcp or udp and port 53", ["dns", "dns6"]),
    ("tcp or (udp and port 53)", ["web", "alt", "dns", "dns6"]),
    ("udp && port 53 || tcp", ["web", "alt", "dns", "dns6"]),
    ("pkts gt 8", ["web", "big"]),
    ("pkts 2", ["alt", "dns", "ping", "arp"]),
    ("src pkts gte 5", ["web", "big"]),
    ("dst pkts eq 0", ["alt", "dns6", "lldp", "big"]),
    ("bytes lt 200", ["dns6", "lldp"]),
    ("ttl 128", ["web"]),
    ("dst co US", ["dns"]),
    ("ether src 00:11:22:33:44:55", ["lldp"]),
    ("trans 1 and not ip", ["arp", "lldp"]),
])
def test_selects(table, expression, expected):
    assert selected(table, expression) == expected


def test_and_or_group_left_to_right(table):
    # a or b and c is (a or b) and c in Argus, unlike C.
    assert selected(table, "arp or tcp and port 80") == ["web"]


@pytest.mark.parametrize(("expression", "token"), [
    ("hots 10.0.0.1", "hots"),
    ("host 10.0.0", "10.0.0"),
    ("port 70000", "70000"),
    ("port nosuchservice", "nosuchservice"),
    ("tcp and", ""),
    ("(tcp or udp", ""),
    ("tcp )", ")"),
    ("pkts gt many", "many"),
    ("net 10.0.0.0/33", "10.0.0.0/33"),
    ("src tcp", "tcp"),
])
def test_syntax_errors_point_at_token(expression, token):
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(expression)
    assert caught.value.token == token
    if token:
        assert expression[caught.value.position:].startswith(token)
    assert repr(expression) in str(caught.value)


FLAG_ROWS = [
    flow("open", IPV4, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 3, 2, state="CON", dir="->",
         flgs="         "),
    flow("asked", IPV4, 6, "10.0.0.1", 40001, "10.0.0.2", 80, 2, 0, state="REQ", dir="->",
         flgs="   s     "),
    flow("refused", IPV4, 6, "10.0.0.1", 40002, "10.0.0.2", 81, 1, 1, state="RST", dir="->",
         flgs="         "),
    flow("closed", IPV4, 6, "10.0.0.1", 40003, "10.0.0.2", 80, 6, 5, state="FIN", dir="->",
         flgs="   d     "),
    flow("middle", IPV4, 6, "10.0.0.3", 40004, "10.0.0.2", 80, 4, 4, state="CON", dir="<?>",
         flgs=" e    F  "),
    flow("ping", IPV4, 1, "10.0.0.1", 0x0800, "10.0.0.2", 7, 1, 1, state="ECO", dir="<->"),
    flow("unreach", IPV4, 1, "10.0.0.2", 0x0303, "10.0.0.1", 53, 1, 0, state="URP", dir="->"),
    flow("ttl", IPV4, 1, "10.0.0.9", 0x0B00, "10.0.0.1", 0, 1, 0, state="TXD", dir="->"),
    flow("ping6", IPV6, 58, "2001:db8::1", 0x8000, "2001:db8::2", 1, 1, 1, state="ECO",
         dir="<->"),
    flow("mdns", IPV4, 17, "10.0.0.7", 5353, "224.0.0.251", 5353, 2, 0, state="INT", dir="->"),
    flow("bcast", IPV4, 17, "10.0.0.7", 68, "255.255.255.255", 67, 1, 0, state="INT",
         dir="->"),
    flow("who", ARP, 0, "10.0.0.1", 0, "10.0.0.2", 0, 1, 0, state="INT", dir="who",
         dmac=b"\xff" * 6),
]


@pytest.fixture(scope="module")
def flag_table() -> pa.Table:
    names = dict.fromkeys(name for row in FLAG_ROWS for name in row)
    columns = {name: [row.get(name) for row in FLAG_ROWS] for name in names}
    schema = pa.schema([FLOW_SCHEMA.field(name) for name in columns])
    return conform(pa.table(columns, schema=schema))


@pytest.mark.parametrize(("expression", "expected"), [
    ("syn", ["open", "asked", "refused", "closed"]),
    ("synack", ["open", "closed"]),
    ("fin", ["closed"]),
    ("finack", ["closed"]),
    ("rst", ["refused"]),
    ("reset or fin", ["refused", "closed"]),
    ("est", ["open", "closed", "middle"]),
    ("con and tcp", ["open", "refused", "closed", "middle"]),
    ("retrans", ["asked", "closed"]),
    ("frag", ["middle"]),
    ("tcp and not syn", ["middle"]),
    ("echo", ["ping", "ping6"]),
    ("unreach", ["unreach"]),
    ("timexed", ["ttl"]),
    ("redirect", []),
    ("icmp and not echo", ["unreach", "ttl"]),
    ("multicast", ["mdns"]),
    ("broadcast", ["bcast", "who"]),
    ("src broadcast", []),
    ("src or dst host 10.0.0.3", ["middle"]),
    ("src or dst host 10.0.0.2", ["open", "asked", "refused", "closed", "middle", "ping",
                                  "unreach", "who"]),
    ("src and dst net 10.0.0.0/24", ["open", "asked", "refused", "closed", "middle", "ping",
                                     "unreach", "ttl", "who"]),
    ("src or dst pkts gt 5", ["closed"]),
    ("src and dst pkts gt 3", ["closed", "middle"]),
])
def test_state_flag_and_icmp_keywords(flag_table, expression, expected):
    assert selected(flag_table, expression) == expected


@pytest.mark.parametrize(("expression", "token"), [
    ("src syn", "syn"),
    ("src or src host 10.0.0.1", "src"),
    ("dst echo", "echo"),
])
def test_keywords_without_direction_reject_one(expression, token):
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(expression)
    assert caught.value.token == token


def test_syntax_error_pointer_marks_the_token():
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("tcp and prot 80")
    assert caught.value.pointer() == "  tcp and prot 80\n          ^^^^"


@pytest.mark.parametrize("values", [[6, 17, 1, 6], [6, None, 17, 58]])
def test_is_in_matches_arrow_is_in(values: list[int | None]) -> None:
    """A few choices compare one by one when the column has no nulls; the result is is_in's."""
    table = pa.table({"proto": pa.array(values, pa.uint8())})
    for choices in ([6], [6, 17], [6, 17, 58], [6, 17, 58, 1]):
        expected = pc.is_in(table.column("proto"), value_set=pa.array(choices, pa.uint8()))

        selected = col("proto").is_in(choices).evaluate(table)

        assert pa.chunked_array(selected).to_pylist() == expected.to_pylist()
