"""Argus-style text output of flow records: fixed-width columns or delimited values.

The layout follows ra 3.0.8: each value is fitted to its column width (a value
that is too wide is cut and its last character replaced by ``*``), columns are
separated by one space, the header line keeps a trailing space and record lines
do not. ``saddr`` directly followed by ``sport`` (and ``daddr`` by ``dport``) is
printed as ``address.port`` when the delimiter is the default space. With a
delimiter (``-c``) values are not padded, except ``dir`` and ``flgs``, which
keep their fixed-width form as ra prints them.

Times print in UTC. ICMP identifiers print in network byte order (ra 3.0.8
prints them byte-swapped: id 0x449b as ``0x9b44``).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from itertools import islice
from types import ModuleType

import numpy as np
import pyarrow as pa

from appliance.query.fields import CATALOGUE, Align, field_width, split_field
from appliance.records import EtherType, address_to_text, mac_to_text

#: IP protocol names as /etc/protocols spells them; other numbers print as digits.
IP_PROTOCOL_NAMES: dict[int, str] = {
    0: "ip", 1: "icmp", 2: "igmp", 4: "ipencap", 6: "tcp", 8: "egp", 17: "udp", 41: "ipv6",
    43: "ipv6-route", 44: "ipv6-frag", 46: "rsvp", 47: "gre", 50: "esp", 51: "ah",
    58: "ipv6-icmp", 59: "ipv6-nonxt", 60: "ipv6-opts", 89: "ospf", 103: "pim", 112: "vrrp",
    132: "sctp", 136: "udplite",
}

#: Names ra prints for flows that are not IP; other ethertypes print as decimal numbers.
ETHERTYPE_NAMES: dict[int, str] = {
    EtherType.LLC: "llc", EtherType.IPV4: "ip", EtherType.IPV6: "ipv6", EtherType.ARP: "arp",
    0x8035: "rarp", 0x88CC: "lldp",
}

IP_ETHERTYPES = (EtherType.IPV4, EtherType.IPV6, EtherType.ARP)
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 136: "udp"}
ICMP = 1
ICMPV6 = 58
#: Width of the ``flgs`` value in delimited output (ra pads it to 10 characters there).
DELIMITED_FLAGS_WIDTH = 10


@dataclass(frozen=True)
class RenderOptions:
    """Output switches of the ra tools.

    numeric: ``-n`` count (0 port and protocol names, 1 numeric ports, 2 numeric
    protocols too). epoch: ``-u``. precision: ``-p`` digits after the decimal
    point. delimiter: ``-c`` (None = fixed-width columns). labels: ``-L`` (0
    header once, -1 no header, N > 0 header every N records). user_data:
    ``"ascii"`` prints user data with non-printable bytes as ``.``, ``"dns"``
    decodes it as DNS messages the way radump does. rmon: the records are
    racluster ``-M rmon`` hosts, so the header says Host, OutPkts, InPkts, OutBytes,
    InBytes for saddr, spkts, dpkts, sbytes, dbytes.
    """

    numeric: int = 0
    epoch: bool = False
    precision: int = 6
    delimiter: str | None = None
    labels: int = 0
    user_data: str = "ascii"
    rmon: bool = False


class RecordColumns:
    """The record columns as Python lists, converted once and shared by formatters."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._cache: dict[str, list] = {}
        self.rows = table.num_rows

    def __getitem__(self, name: str) -> list:
        if name not in self._cache:
            if name in self._table.column_names:
                column = self._table.column(name)
                if pa.types.is_timestamp(column.type):
                    column = column.cast(pa.int64())
                self._cache[name] = column.to_pylist()
            else:
                self._cache[name] = [None] * self.rows
        return self._cache[name]


Formatter = Callable[[RecordColumns, RenderOptions, str], list[str]]


def format_time(micros: int | None, options: RenderOptions) -> str:
    """Format a record time in microseconds as ra does: HH:MM:SS.ffffff, or epoch with ``-u``.

    The fraction is cut to ``-p`` digits, not rounded, as ra 3.0.8 prints it.
    """
    if micros is None:
        return ""
    seconds, fraction = divmod(micros, 1_000_000)
    if options.epoch:
        whole = str(seconds)
    else:
        whole = datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")
    if options.precision <= 0:
        return whole
    digits = f"{fraction:06d}"[: options.precision].ljust(options.precision, "0")
    return f"{whole}.{digits}"


def format_float(value: float | None, options: RenderOptions) -> str:
    """Format a float with ``-p`` decimals, rounded from single precision as ra stores it.

    ra 3.0.8 keeps durations, rates and loads as C floats, so a 668322441.995791 s
    duration prints as 668322432.000000; rounding through float32 gives the same text.
    """
    if value is None or math.isnan(value):
        return ""
    return f"{float(np.float32(value)):.{max(options.precision, 0)}f}"


def _number(name: str) -> Formatter:
    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        return ["" if value is None else str(value) for value in columns[name]]

    return formatter


def _text(name: str) -> Formatter:
    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        return ["" if value is None else str(value) for value in columns[name]]

    return formatter


def _time(name: str) -> Formatter:
    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        return [format_time(value, options) for value in columns[name]]

    return formatter


def _duration(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
    return [
        format_float(None if start is None or last is None else (last - start) / 1e6, options)
        for start, last in zip(columns["stime"], columns["ltime"], strict=True)
    ]


def _seconds(columns: RecordColumns) -> list[float | None]:
    return [
        None if start is None or last is None else (last - start) / 1e6
        for start, last in zip(columns["stime"], columns["ltime"], strict=True)
    ]


def _rate(packets_name: str) -> Formatter:
    """Packets per second as ra computes it: (packets - 1) / duration, 0 for one packet."""

    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        texts = []
        for packets, seconds in zip(columns[packets_name], _seconds(columns), strict=True):
            rate = (packets - 1) / seconds if packets and seconds else 0.0
            texts.append(format_float(rate, options))
        return texts

    return formatter


def _direction_load(packets: int | None, octets: int | None, seconds: float | None) -> float:
    if not packets or not octets or not seconds:
        return 0.0
    return octets * 8 * (packets - 1) / packets / seconds


def _load(sides: tuple[str, ...]) -> Formatter:
    """Bits per second as ra computes it: per direction bytes*8*(pkts-1)/pkts/dur, summed."""

    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        seconds = _seconds(columns)
        texts = []
        for row in range(columns.rows):
            load = sum(
                _direction_load(columns[f"{side}pkts"][row], columns[f"{side}bytes"][row],
                                seconds[row])
                for side in sides
            )
            texts.append(format_float(load, options))
        return texts

    return formatter


def _appbytes(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
    return [
        "" if src is None and dst is None else str((src or 0) + (dst or 0))
        for src, dst in zip(columns["sappbytes"], columns["dappbytes"], strict=True)
    ]


def _is_ip_flow(etype: int | None, address: bytes | None) -> bool:
    return etype in IP_ETHERTYPES and address is not None


def protocol_name(etype: int | None, proto: int | None, address: bytes | None,
                  numeric: int = 0, appproto: str | None = None) -> str:
    """Return the ``proto`` text of a record: ``appproto`` (rtp, rtcp), IP protocol name,
    ethertype name or number."""
    if _is_ip_flow(etype, address) and etype != EtherType.ARP:
        number = proto or 0
        if numeric >= 2:
            return str(number)
        return appproto or IP_PROTOCOL_NAMES.get(number, str(number))
    number = etype or 0
    if numeric >= 2 and number != EtherType.LLC:
        return str(number)
    return ETHERTYPE_NAMES.get(number, str(number))


def _proto(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
    return [
        protocol_name(etype, proto, saddr, options.numeric, appproto)
        for etype, proto, saddr, appproto in zip(
            columns["etype"], columns["proto"], columns["saddr"], columns["appproto"],
            strict=True)
    ]


def _address(side: str) -> Formatter:
    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        texts = []
        for etype, address, mac in zip(columns["etype"], columns[f"{side}addr"],
                                       columns[f"{side}mac"], strict=True):
            if _is_ip_flow(etype, address):
                texts.append(address_to_text(address))
            elif address is not None:
                # Non-IP flows keep their MAC key in the last six bytes of the address.
                texts.append(mac_to_text(address[10:]))
            else:
                texts.append("" if mac is None else mac_to_text(mac))
        return texts

    return formatter


def _mac(name: str) -> Formatter:
    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        return ["" if mac is None else mac_to_text(mac) for mac in columns[name]]

    return formatter


# Unbounded, but contains at most one entry per port and protocol name (4 x 65,536).
@cache
def service_name(port: int, protocol: str) -> str:
    """Return the service name of a port from the system services table, or the number."""
    try:
        return socket.getservbyport(port, protocol)
    except (OSError, OverflowError):
        return str(port)


def port_text(side: str, etype: int | None, proto: int | None, address: bytes | None,
              sport: int | None, dport: int | None, numeric: int = 0) -> str:
    """Return the ``sport`` or ``dport`` text of one record, as ra prints it.

    ICMP: sport is ``0x`` + code byte + type byte (echo request ``0x0008``), dport
    the identifier (or quoted port) in network byte order. ICMPv6 prints type and
    code in decimal with ``-n``. ARP and IP protocols without ports print nothing.
    """
    value = sport if side == "s" else dport
    if value is None:
        return ""
    if not _is_ip_flow(etype, address):
        return "" if etype == EtherType.ARP else str(value)
    if etype == EtherType.ARP:
        return ""
    if proto in (ICMP, ICMPV6):
        return _icmp_port_text(side, proto, sport or 0, value, numeric)
    protocol = PORT_PROTOCOLS.get(proto or 0)
    if protocol is None:
        return ""
    return str(value) if numeric >= 1 else service_name(value, protocol)


def _icmp_port_text(side: str, proto: int, sport: int, value: int, numeric: int) -> str:
    icmp_type, code = sport >> 8, sport & 0xFF
    if proto == ICMPV6 and numeric >= 1:
        return str(icmp_type) if side == "s" else str(value)
    if side == "s":
        return f"0x{code:02x}{icmp_type:02x}"
    return f"0x{value:04x}"


def _port(side: str) -> Formatter:
    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        return [
            port_text(side, etype, proto, saddr, sport, dport, options.numeric)
            for etype, proto, saddr, sport, dport in zip(
                columns["etype"], columns["proto"], columns["saddr"], columns["sport"],
                columns["dport"], strict=True)
        ]

    return formatter


def _per_direction(name: str, packets_name: str) -> Formatter:
    """A per-direction header value (TTL, TOS), blank when that direction sent nothing."""

    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        return [
            "" if value is None or not packets else str(value)
            for value, packets in zip(columns[name], columns[packets_name], strict=True)
        ]

    return formatter


def _srcid(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
    return [value or "0.0.0.0" for value in columns["srcid"]]


def ascii_text(data: bytes) -> str:
    """Show bytes as ra's ``Ascii`` user-data encoding does: non-printables become ``.``."""
    return "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in data)


def _user_data(name: str) -> Formatter:
    prefix = name[0]

    def formatter(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
        limit = split_field(item)[1] or CATALOGUE[name].width
        tcp = [proto == 6 for proto in columns["proto"]]
        texts = []
        for data, is_tcp in zip(columns[name], tcp, strict=True):
            if data is None:
                texts.append("")
            elif options.user_data == "dns":
                texts.append(_dns_user_text(prefix, data, is_tcp, limit, options))
            elif not data:
                texts.append("")  # as ra does. radump's DNS text prints d[0]="" instead.
            else:
                shown = data[:limit]
                texts.append(f"{prefix}[{len(shown)}]={ascii_text(shown)}")
        return texts

    return formatter


def _dns_user_text(prefix: str, data: bytes, tcp: bool, width: int,
                   options: RenderOptions) -> str:
    """Format user data decoded as DNS: ``s[N]="text"``, N = decoded length, cut to fit."""
    from appliance.analyses.dns import radump_text

    decoded = radump_text(data, tcp) if data else ""
    head = f"{prefix}[{len(decoded)}]=".rjust(7)
    room = max(width - len(head) - 2, 0)
    text = f'{head}"{decoded[:room]}"'
    return text.ljust(width) if options.delimiter is not None else text


def _flags(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
    texts = []
    for value in columns["flgs"]:
        text = (value or "").rstrip()
        if options.delimiter is not None:
            text = text.ljust(DELIMITED_FLAGS_WIDTH)
        texts.append(text)
    return texts


def _direction(columns: RecordColumns, options: RenderOptions, item: str) -> list[str]:
    texts = []
    for value in columns["dir"]:
        text = (value or "").strip()
        texts.append(text.rjust(5) if options.delimiter is not None else text)
    return texts


FORMATTERS: dict[str, Formatter] = {
    "stime": _time("stime"),
    "ltime": _time("ltime"),
    "dur": _duration,
    "trans": _number("trans"),
    "srcid": _srcid,
    "seq": _number("seq"),
    "cause": _text("cause"),
    "proto": _proto,
    "saddr": _address("s"),
    "daddr": _address("d"),
    "sport": _port("s"),
    "dport": _port("d"),
    "smac": _mac("smac"),
    "dmac": _mac("dmac"),
    "vlan": _number("vlan"),
    "dir": _direction,
    "state": _text("state"),
    "flgs": _flags,
    "appbytes": _appbytes,
    "rate": _rate("pkts"),
    "srate": _rate("spkts"),
    "drate": _rate("dpkts"),
    "load": _load(("s", "d")),
    "sload": _load(("s",)),
    "dload": _load(("d",)),
    "sttl": _per_direction("sttl", "spkts"),
    "dttl": _per_direction("dttl", "dpkts"),
    "stos": _per_direction("stos", "spkts"),
    "dtos": _per_direction("dtos", "dpkts"),
    "suser": _user_data("suser"),
    "duser": _user_data("duser"),
    "sas": _number("sas"),
    "das": _number("das"),
    **{name: _number(name) for name in (
        "pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "sappbytes", "dappbytes")},
    **{name: _text(name) for name in ("sco", "dco", "label")},
}

_UNFORMATTED = set(CATALOGUE) - set(FORMATTERS)
if _UNFORMATTED:
    raise RuntimeError(f"catalogue fields without a formatter: {sorted(_UNFORMATTED)}")


def fit(text: str, width: int, align: Align) -> str:
    """Pad ``text`` to ``width``; cut a longer text and mark the cut with a final ``*``."""
    if len(text) > width:
        return text[: width - 1] + "*" if width > 0 else ""
    if align is Align.LEFT:
        return text.ljust(width)
    if align is Align.CENTER:
        left = (width - len(text)) // 2
        return (" " * left + text).ljust(width)
    return text.rjust(width)


def column_texts(table: pa.Table, fields: list[str], options: RenderOptions) -> list[list[str]]:
    """Return the unpadded text of every printed field, one list per field."""
    texts: list[list[str]] = [[] for _ in fields]
    for columns in _render_fast().column_batches(table, fields, options):
        for collected, column in zip(texts, columns, strict=True):
            collected.extend(column.to_pylist())
    return texts


def column_texts_by_row(table: pa.Table, fields: list[str],
                        options: RenderOptions) -> list[list[str]]:
    """Return what ``column_texts`` returns, formatting every value with the row-wise code."""
    columns = RecordColumns(table)
    texts = []
    for item in fields:
        name, _ = split_field(item)
        texts.append(FORMATTERS[name](columns, options, item))
    return texts


def to_rows(table: pa.Table, fields: list[str], options: RenderOptions) -> list[dict[str, str]]:
    """Return one dict per record mapping each printed field name to its text."""
    names = [split_field(item)[0] for item in fields]
    texts = column_texts(table, fields, options)
    return [dict(zip(names, values, strict=True)) for values in zip(*texts, strict=True)]


#: Header labels of racluster -M rmon output, where each record is one host.
RMON_LABELS = {"saddr": "Host", "spkts": "OutPkts", "dpkts": "InPkts", "sbytes": "OutBytes",
               "dbytes": "InBytes"}


def field_label(name: str, options: RenderOptions) -> str:
    """Return the header label of a field, as ra prints it with these options."""
    if options.rmon and name in RMON_LABELS:
        return RMON_LABELS[name]
    return CATALOGUE[name].label


def header_line(fields: list[str], options: RenderOptions) -> str:
    """Return the label line: padded labels with a trailing space, or labels joined by ``-c``."""
    labels = [field_label(split_field(item)[0], options) for item in fields]
    if options.delimiter is not None:
        return options.delimiter.join(labels)
    parts = []
    for item, label in zip(fields, labels, strict=True):
        spec = CATALOGUE[split_field(item)[0]]
        parts.append(fit(label, field_width(item, options.precision), spec.label_align) + " ")
    return "".join(parts)


def _glued(fields: list[str], index: int) -> bool:
    """Tell whether field ``index`` is a port printed right after its address."""
    if index == 0:
        return False
    pair = (split_field(fields[index - 1])[0], split_field(fields[index])[0])
    return pair in (("saddr", "sport"), ("daddr", "dport"))


def _fixed_line(fields: list[str], row: list[str], options: RenderOptions) -> str:
    parts = []
    for index, (item, text) in enumerate(zip(fields, row, strict=True)):
        spec = CATALOGUE[split_field(item)[0]]
        width = field_width(item, options.precision)
        if spec.name == "flgs":
            cell = text[:width].ljust(width)
        else:
            cell = fit(text, width, spec.align)
        if index:
            parts.append("." if _glued(fields, index) and text else " ")
        parts.append(cell)
    return "".join(parts).rstrip()


def _render_fast() -> ModuleType:
    # The column-at-once formatters fall back on this module's row-wise ones, so
    # they import this module and cannot be imported at its top.
    from appliance.query import render_fast

    return render_fast


def _header_rows(options: RenderOptions) -> int | None:
    """Return how many records go between headers (0: header once, None: no header)."""
    if options.labels < 0:
        return None
    return options.labels


def render_lines(table: pa.Table, fields: list[str], options: RenderOptions) -> Iterator[str]:
    """Yield ra's text output for ``table``: the header (per ``-L``) and one line per record.

    Nothing at all is yielded for a table without records, as ra prints no header then.
    """
    if table.num_rows == 0:
        return
    header = header_line(fields, options)
    every = _header_rows(options)
    if every == 0:
        yield header
    row = 0
    for lines in _render_fast().line_batches(table, fields, options):
        texts = lines.to_pylist()
        if not every:
            yield from texts
            continue
        first = -row % every
        yield from texts[:first]
        for offset in range(first, len(texts), every):
            yield header
            yield from texts[offset: offset + every]
        row += len(texts)


def render_text(table: pa.Table, fields: list[str], options: RenderOptions) -> Iterator[bytes]:
    """Yield the output of ``render_lines`` as UTF-8 blocks of newline-terminated lines.

    Without headers between records (``-L`` not set above 0), each block is the bytes
    of one batch of formatted lines, taken from the Arrow string array. No Python
    string is made per line, which is what makes printing a million records fast.
    """
    if table.num_rows == 0:
        return
    every = _header_rows(options)
    if every:
        lines = render_lines(table, fields, options)
        while block := list(islice(lines, _BLOCK_LINES)):
            yield ("\n".join(block) + "\n").encode()
        return
    if every == 0:
        yield (header_line(fields, options) + "\n").encode()
    yield from _render_fast().text_blocks(table, fields, options)


_BLOCK_LINES = 65_536


def render_lines_by_row(table: pa.Table, fields: list[str],
                        options: RenderOptions) -> Iterator[str]:
    """Yield what ``render_lines`` yields, formatting every value and line with row-wise code."""
    if table.num_rows == 0:
        return
    texts = column_texts_by_row(table, fields, options)
    header = header_line(fields, options)
    for row in range(table.num_rows):
        if options.labels == 0 and row == 0 or options.labels > 0 and row % options.labels == 0:
            yield header
        values = [column[row] for column in texts]
        if options.delimiter is not None:
            yield options.delimiter.join(values)
        else:
            yield _fixed_line(fields, values, options)
