"""Column-at-once text output compared with the row-wise formatters on generated records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from appliance.query import render_fast
from appliance.query.fields import CATALOGUE, DEFAULT_FIELDS
from appliance.query.render import (
    RenderOptions,
    column_texts,
    column_texts_by_row,
    render_lines,
    render_lines_by_row,
    render_text,
    to_rows,
)
from appliance.records import FLOW_SCHEMA, EtherType, conform, pack_address

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALL_FIELDS = list(CATALOGUE)
#: Widths that force cuts (``*`` marker), flags cut without marker, and wide columns.
NARROW_FIELDS = ["stime:9", "flgs:3", "proto:2", "saddr:7", "sport:2", "dir:2", "daddr:20",
                 "dport:3", "pkts:3", "bytes:4", "state:2", "label:4", "srcid:5", "smac:8"]
ODD_TEXTS = [None, "", "CON", " e  \t", "\u3000x\u3000", "RST\x1c", "ünïcødé-label-text",
             "a\u2009", "  ", "who"]
OPTION_SETS = [
    RenderOptions(),
    RenderOptions(numeric=1),
    RenderOptions(numeric=2, precision=0),
    RenderOptions(numeric=1, precision=3, epoch=True),
    RenderOptions(numeric=1, precision=8),
    RenderOptions(numeric=1, epoch=True, precision=6, delimiter=","),
    RenderOptions(numeric=0, precision=6, delimiter="\t", labels=5),
    RenderOptions(numeric=1, labels=-1),
    RenderOptions(numeric=2, labels=3),
]


def _maybe(rng: random.Random, value: object, null_rate: float = 0.05) -> object:
    return None if rng.random() < null_rate else value


def _address(rng: random.Random, kind: str) -> bytes:
    if kind == "ipv6":
        return rng.randbytes(16)
    if kind == "mac":
        return bytes(10) + rng.randbytes(6)
    return pack_address(".".join(str(rng.choice([0, 1, 9, 10, 99, 100, 255, rng.randrange(256)]))
                                 for _ in range(4)))


def _time(rng: random.Random) -> datetime:
    micros = rng.choice([0, 999_999, 1_000_000, rng.randrange(-10**15, 10**16)])
    return EPOCH + timedelta(microseconds=micros)


def _counter(rng: random.Random) -> int:
    return rng.choice([0, 1, 7, 99_999_999, 10**12, 2**64 - 1, rng.randrange(2**40)])


def generated_record(rng: random.Random) -> dict:
    """Return one record of a random kind: IPv4, IPv6, ICMP, ARP, LLC or other non-IP."""
    kind = rng.choice(["ipv4", "ipv4", "ipv4", "ipv6", "icmp", "icmpv6", "arp", "llc", "lldp",
                       "unknown"])
    etype = {"ipv6": EtherType.IPV6, "icmpv6": EtherType.IPV6, "arp": EtherType.ARP,
             "llc": EtherType.LLC, "lldp": 0x88CC, "unknown": 0x9000}.get(kind, EtherType.IPV4)
    proto = {"icmp": 1, "icmpv6": 58}.get(kind, rng.choice([6, 17, 132, 136, 47, 0, 250]))
    if kind in ("arp", "llc", "lldp", "unknown"):
        proto = 0
    address_kind = {"ipv6": "ipv6", "icmpv6": "ipv6", "llc": "mac", "lldp": "mac",
                    "unknown": "mac"}.get(kind, "ipv4")
    return {
        "srcid": _maybe(rng, rng.choice(["", "sensor-1", "192.168.1.1"]), 0.3),
        "seq": _maybe(rng, rng.randrange(2**64)),
        "stime": _maybe(rng, _time(rng)),
        "ltime": _maybe(rng, _time(rng)),
        "etype": _maybe(rng, int(etype), 0.02),
        "proto": _maybe(rng, proto, 0.02),
        "saddr": _maybe(rng, _address(rng, address_kind), 0.04),
        "sport": _maybe(rng, rng.choice([0, 22, 53, 80, 443, 2049, 65535, rng.randrange(65536)])),
        "daddr": _maybe(rng, _address(rng, address_kind), 0.04),
        "dport": _maybe(rng, rng.choice([0, 25, 123, 0x449B, rng.randrange(65536)])),
        "smac": _maybe(rng, rng.randbytes(6)),
        "dmac": _maybe(rng, rng.randbytes(6)),
        "vlan": _maybe(rng, rng.randrange(4096), 0.5),
        "dir": _maybe(rng, rng.choice(["->", "<-", "<->", " <?> ", "?>", "who", "\u3000<->"])),
        "state": _maybe(rng, rng.choice(ODD_TEXTS)),
        "flgs": _maybe(rng, rng.choice([" e       ", " e d     ", "", " e  \u2003 ", "*eEdDsSM&"])),
        "cause": _maybe(rng, rng.choice(["Start", "Status", "Close"])),
        "trans": _maybe(rng, rng.choice([1, 2**32 - 1])),
        **{name: _maybe(rng, _counter(rng)) for name in (
            "pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "sappbytes", "dappbytes")},
        **{name: _maybe(rng, rng.randrange(256)) for name in ("sttl", "dttl", "stos", "dtos")},
        "suser": _maybe(rng, rng.randbytes(rng.randrange(40)), 0.5),
        "duser": _maybe(rng, rng.randbytes(rng.randrange(40)), 0.5),
        "sco": _maybe(rng, "DE", 0.5),
        "dco": _maybe(rng, "US", 0.5),
        "sas": _maybe(rng, rng.randrange(2**32), 0.5),
        "das": _maybe(rng, rng.randrange(2**32), 0.5),
        "label": _maybe(rng, rng.choice(ODD_TEXTS), 0.3),
    }


def generated_table(seed: int, rows: int) -> pa.Table:
    rng = random.Random(seed)
    records = [generated_record(rng) for _ in range(rows)]
    return conform(pa.Table.from_pylist(records, schema=FLOW_SCHEMA))


@pytest.fixture(scope="module")
def records() -> pa.Table:
    return generated_table(seed=20240427, rows=1500)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Format 7 records per batch, so batches, headers and fallbacks cross batch borders."""
    monkeypatch.setattr(render_fast, "BATCH_ROWS", 7)


@pytest.mark.parametrize("options", OPTION_SETS, ids=repr)
@pytest.mark.parametrize("fields", [DEFAULT_FIELDS, ALL_FIELDS, NARROW_FIELDS],
                         ids=["default", "all", "narrow"])
def test_lines_match_row_wise(records, fields, options):
    fast = list(render_lines(records, fields, options))
    slow = list(render_lines_by_row(records, fields, options))
    assert len(fast) == len(slow)
    for fast_line, slow_line in zip(fast, slow, strict=True):
        assert fast_line == slow_line


@pytest.mark.parametrize("options", OPTION_SETS[:6], ids=repr)
def test_column_texts_match_row_wise(records, options):
    assert column_texts(records, ALL_FIELDS, options) == \
        column_texts_by_row(records, ALL_FIELDS, options)


@pytest.mark.parametrize("labels", [0, -1, 1, 3, 7, 10, 1000])
def test_small_batches_keep_headers(records, small_batches, labels):
    options = RenderOptions(numeric=1, labels=labels)
    table = records.slice(0, 40)
    assert list(render_lines(table, DEFAULT_FIELDS, options)) == \
        list(render_lines_by_row(table, DEFAULT_FIELDS, options))


def test_small_batches_match_row_wise(records, small_batches):
    options = RenderOptions(numeric=0)
    assert list(render_lines(records, ALL_FIELDS, options)) == \
        list(render_lines_by_row(records, ALL_FIELDS, options))


def test_chunked_dictionary_columns(records):
    """Results of sorts and merges arrive chunked, with dictionary-encoded strings."""
    encoded = records.set_column(
        records.schema.get_field_index("state"), "state",
        pc.dictionary_encode(records.column("state")))
    encoded = encoded.set_column(
        encoded.schema.get_field_index("flgs"), "flgs",
        pc.dictionary_encode(encoded.column("flgs")))
    chunked = pa.concat_tables([encoded.slice(0, 500), encoded.slice(500)])
    assert chunked.column("state").num_chunks == 2
    options = RenderOptions(numeric=1)
    assert list(render_lines(chunked, DEFAULT_FIELDS, options)) == \
        list(render_lines_by_row(records, DEFAULT_FIELDS, options))


def test_other_column_types_fall_back():
    """A counter stored as float64 prints as Python prints it, through the row-wise code."""
    floats = pa.table({"pkts": pa.array([1.0, None, 2.5, 1e20], pa.float64())})
    options = RenderOptions(numeric=1)
    lines = list(render_lines(floats, ["pkts"], options))
    assert lines == list(render_lines_by_row(floats, ["pkts"], options))
    assert any(line.endswith(".0") for line in lines)


def test_missing_columns_print_blank():
    table = pa.table({"pkts": pa.array([1, None, 3], pa.uint64())})
    options = RenderOptions(numeric=1, delimiter=",")
    assert list(render_lines(table, ["pkts", "bytes", "state"], options)) == \
        list(render_lines_by_row(table, ["pkts", "bytes", "state"], options))


def test_time_beyond_year_9999_raises_like_row_wise():
    late = pa.array([253_402_300_800 * 1_000_000], pa.timestamp("us", tz="UTC"))
    table = pa.table({"stime": late})
    with pytest.raises(ValueError):
        list(render_lines_by_row(table, ["stime"], RenderOptions()))
    with pytest.raises(ValueError):
        list(render_lines(table, ["stime"], RenderOptions()))


def test_epoch_time_beyond_year_9999():
    late = pa.array([253_402_300_800 * 1_000_000 + 5], pa.timestamp("us", tz="UTC"))
    table = pa.table({"stime": late})
    options = RenderOptions(epoch=True, delimiter=",")
    assert list(render_lines(table, ["stime"], options)) == \
        ["StartTime", "253402300800.000005"]


def test_overwide_counter_gets_cut_marker():
    table = pa.table({"bytes": pa.array([2**64 - 1, 12345], pa.uint64())})
    lines = list(render_lines(table, ["bytes"], RenderOptions(labels=-1)))
    assert lines == ["184467440*", "     12345"]


def test_flags_cut_without_marker():
    table = pa.table({"flgs": pa.array(["*eEdDsSM&x"], pa.string()),
                      "pkts": pa.array([1], pa.uint64())})
    lines = list(render_lines(table, ["flgs", "pkts"], RenderOptions(labels=-1)))
    assert lines == ["*eEdDsSM&        1"]


def test_ipv4_port_glued_with_dot():
    table = conform(pa.Table.from_pylist([{
        "etype": int(EtherType.IPV4), "proto": 6, "saddr": pack_address("10.1.2.3"),
        "sport": 443, "daddr": pack_address("192.168.100.200"), "dport": 8080,
    }], schema=FLOW_SCHEMA))
    fields = ["saddr", "sport", "daddr", "dport"]
    lines = list(render_lines(table, fields, RenderOptions(numeric=1, labels=-1)))
    assert lines == ["          10.1.2.3.443       192.168.100.200.8080"]


def test_python_whitespace_set_is_complete():
    spaces = "".join(chr(code) for code in range(0x110000) if chr(code).isspace())
    assert sorted(render_fast.PYTHON_WHITESPACE) == sorted(spaces)


def test_to_rows_match_row_wise(records):
    options = RenderOptions(numeric=1, epoch=True, delimiter=",")
    names = [name for name in ALL_FIELDS]
    texts = column_texts_by_row(records, ALL_FIELDS, options)
    expected = [dict(zip(names, values, strict=True)) for values in zip(*texts, strict=True)]
    assert to_rows(records, ALL_FIELDS, options) == expected


@pytest.mark.parametrize("labels", [10, 0, -1])
@pytest.mark.parametrize("delimiter", [None, ","])
def test_render_text_blocks_join_lines(records, labels, delimiter):
    """Text blocks are the lines of render_lines, each newline-terminated, in UTF-8."""
    options = RenderOptions(numeric=1, labels=labels, delimiter=delimiter)
    text = b"".join(render_text(records, DEFAULT_FIELDS, options)).decode()
    assert text == "".join(line + "\n" for line in render_lines(records, DEFAULT_FIELDS, options))


def test_render_text_blocks_of_a_sliced_table(records):
    """A table slice starts inside the string buffers; the blocks hold only its rows."""
    part = records.slice(3, 5)
    text = b"".join(render_text(part, DEFAULT_FIELDS, RenderOptions(labels=-1))).decode()
    assert text.splitlines() == list(render_lines(part, DEFAULT_FIELDS, RenderOptions(labels=-1)))


def test_empty_table_prints_nothing():
    empty = FLOW_SCHEMA.empty_table()
    assert list(render_lines(empty, DEFAULT_FIELDS, RenderOptions())) == []
    assert list(render_text(empty, DEFAULT_FIELDS, RenderOptions())) == []


def test_ipv4_flows_need_no_row_wise_formatting():
    """IPv4 TCP, UDP and ICMP flows print every default field without the row-wise fallback."""
    rng = random.Random(7)
    rows = []
    for proto in (1, 6, 17):
        record = generated_record(rng)
        record.update(etype=int(EtherType.IPV4), proto=proto, saddr=pack_address("10.0.0.1"),
                      daddr=pack_address("10.0.0.2"), stime=EPOCH, dir="->")
        rows.append(record)
    batch = render_fast._Batch(conform(pa.Table.from_pylist(rows, schema=FLOW_SCHEMA)))
    for options in (RenderOptions(), RenderOptions(numeric=2, epoch=True, delimiter=",")):
        for name in DEFAULT_FIELDS:
            texts, slow = render_fast.FAST_FORMATTERS[name](batch, options, name)
            assert len(texts) == 3
            assert slow is None or not slow.any(), name
