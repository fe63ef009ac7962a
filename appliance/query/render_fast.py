"""Column-at-once text output of flow records, with the row-wise formatters as fallback.

Records are formatted in batches of ``BATCH_ROWS``: each printed field becomes
one Arrow string array built with pyarrow.compute and NumPy, and the lines are
joined from those arrays. The common cases are vectorized: times, counters,
state and flag strings, IPv4 addresses, protocol names and the ports of IP
flows. Every other value (IPv6 and non-IP addresses, durations, rates, loads,
user data, clock times outside the years 1-9999) is formatted by the row-wise
formatter of ``appliance.query.render`` for just those rows, so both paths
print the same bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.query import render
from appliance.query.fields import CATALOGUE, FIELD_SOURCES, Align, field_width, split_field
from appliance.records import FLOW_SCHEMA, IPV4_MAPPED_PREFIX, EtherType

#: Records formatted per batch. The batch size bounds the memory of the intermediate arrays.
BATCH_ROWS = 65_536

#: The characters Python's ``str.strip`` removes (those for which ``str.isspace`` is true).
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(chr(code) for code in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)

_OCTETS = pa.array([str(value) for value in range(256)], pa.string())
_HEX_BYTES = pa.array([f"{value:02x}" for value in range(256)], pa.string())
_PROTOCOL_NAMES = pa.array(
    [render.IP_PROTOCOL_NAMES.get(value, str(value)) for value in range(256)], pa.string())
_PORT_PROTOCOL_NUMBERS = np.array(sorted(render.PORT_PROTOCOLS), dtype=np.int64)
#: Seconds since the epoch of 0001-01-01 and 9999-12-31 23:59:59, the range of ``datetime``.
_FIRST_SECOND = -62_135_596_800
_LAST_SECOND = 253_402_300_799

#: A formatted column: the texts, and a mask of rows the row-wise formatter must redo.
Formatted = tuple[pa.Array, np.ndarray | None]
FastFormatter = Callable[["_Batch", render.RenderOptions, str], Formatted]


class _Batch:
    """One slice of the record table, with columns converted once and shared by formatters."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.rows = table.num_rows
        self._arrays: dict[str, pa.Array] = {}
        self._numbers: dict[str, np.ndarray] = {}

    def array(self, name: str) -> pa.Array:
        """Return the column as one Arrow array (nulls when the table lacks the column)."""
        if name not in self._arrays:
            if name in self.table.column_names:
                column = self.table.column(name)
                array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
                if pa.types.is_dictionary(array.type):
                    array = array.dictionary_decode()
            else:
                array = pa.nulls(self.rows, FLOW_SCHEMA.field(name).type)
            if pa.types.is_timestamp(array.type):
                array = array.cast(pa.int64())
            self._arrays[name] = array
        return self._arrays[name]

    def has_record_types(self, names: frozenset[str]) -> bool:
        """Tell whether these columns have the record schema's types (dictionaries decoded)."""
        for name in names:
            if name not in self.table.column_names:
                continue
            column_type = self.table.schema.field(name).type
            if pa.types.is_dictionary(column_type):
                column_type = column_type.value_type
            if column_type != FLOW_SCHEMA.field(name).type:
                return False
        return True

    def numbers(self, name: str) -> np.ndarray:
        """Return an integer column as int64 NumPy values, nulls read as 0."""
        if name not in self._numbers:
            array = self.array(name)
            if array.null_count:
                array = pc.fill_null(array, 0)
            self._numbers[name] = array.to_numpy(zero_copy_only=False).astype(np.int64)
        return self._numbers[name]

    def valid(self, name: str) -> np.ndarray:
        """Return a mask of the rows where the column is not null."""
        array = self.array(name)
        if array.null_count == 0:
            return np.ones(self.rows, dtype=bool)
        return pc.is_valid(array).to_numpy(zero_copy_only=False)

    def address_bytes(self, name: str) -> np.ndarray:
        """Return a 16-byte address column as a (rows, 16) uint8 matrix, with zeros in null rows."""
        array = self.array(name)
        data = array.buffers()[1]
        if data is None:
            return np.zeros((self.rows, 16), dtype=np.uint8)
        width = array.type.byte_width
        raw = np.frombuffer(data, dtype=np.uint8, count=(array.offset + self.rows) * width)
        return raw[array.offset * width:].reshape(self.rows, width)

    def is_ip_flow(self, address: str) -> np.ndarray:
        """Tell per row whether the record is an IP or ARP flow with this address present."""
        ethertypes = np.array([int(value) for value in render.IP_ETHERTYPES])
        return np.isin(self.numbers("etype"), ethertypes) & self.valid(address)


def _fixed_strings(chars: np.ndarray) -> pa.Array:
    """Return one string per row of an ASCII character matrix."""
    rows, width = chars.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


#: The two digits of 0 to 99 as characters, both in one 16-bit word per number.
_DIGIT_PAIRS = np.array([[ord("0") + number // 10, ord("0") + number % 10]
                         for number in range(100)], dtype=np.uint8).view(np.uint16).ravel()


def _digit_chars(values: np.ndarray, count: int) -> np.ndarray:
    """Return the last ``count`` decimal digits of each value, zero-padded, as characters.

    Digits are looked up two at a time, from the right, as 16-bit words: a time of day
    and its microseconds take a third of the time of dividing out each digit.
    """
    pairs = (count + 1) // 2
    words = np.empty((len(values), pairs), dtype=np.uint16)
    rest = np.asarray(values) % 10 ** (2 * pairs)
    if pairs <= 4:
        rest = rest.astype(np.int32)  # 32-bit division is faster than 64-bit
    for column in range(pairs - 1, -1, -1):
        rest, pair = np.divmod(rest, 100)
        words[:, column] = _DIGIT_PAIRS[pair]
    return words.view(np.uint8)[:, 2 * pairs - count:]


def _blank_nulls(texts: pa.Array) -> pa.Array:
    return pc.fill_null(texts, "") if texts.null_count else texts


def _number_texts(batch: _Batch, name: str) -> pa.Array:
    return _blank_nulls(pc.cast(batch.array(name), pa.string()))


def _join(*parts: pa.Array | str, separator: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, separator)


def _time(name: str) -> FastFormatter:
    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        micros = batch.numbers(name)
        seconds, fraction = np.divmod(micros, 1_000_000)
        if options.epoch:
            whole = pc.cast(pa.array(seconds), pa.string())
            slow = None
            texts = whole
            if options.precision > 0:
                texts = _join(whole, _fixed_strings(_fraction_chars(fraction, options)),
                              separator=".")
        else:
            # HH:MM:SS and the fraction, laid out in one character matrix.
            digits = options.precision
            chars = np.full((batch.rows, 8 + (digits + 1 if digits else 0)), ord(":"),
                            dtype=np.uint8)
            day = seconds % 86_400
            chars[:, 0:2] = _digit_chars(day // 3600, 2)
            chars[:, 3:5] = _digit_chars(day // 60 % 60, 2)
            chars[:, 6:8] = _digit_chars(day % 60, 2)
            if digits:
                chars[:, 8] = ord(".")
                chars[:, 9:] = _fraction_chars(fraction, options)
            texts = _fixed_strings(chars)
            # datetime rejects seconds outside the years 1-9999, so the row-wise formatter
            # redoes those rows and raises its usual error.
            slow = (seconds < _FIRST_SECOND) | (seconds > _LAST_SECOND)
        valid = batch.valid(name)
        if not valid.all():
            texts = pc.if_else(pa.array(valid), texts, "")
        return texts, slow if slow is not None and slow.any() else None

    return formatter


def _fraction_chars(fraction: np.ndarray, options: render.RenderOptions) -> np.ndarray:
    """Return the first ``-p`` digits of the microseconds, zeros after the sixth."""
    digits = _digit_chars(fraction, 6)[:, : options.precision]
    if options.precision > 6:
        zeros = np.full((len(fraction), options.precision - 6), ord("0"), dtype=np.uint8)
        digits = np.hstack([digits, zeros])
    return digits


def _number(name: str) -> FastFormatter:
    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        return _number_texts(batch, name), None

    return formatter


def _text(name: str) -> FastFormatter:
    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        return _blank_nulls(batch.array(name)), None

    return formatter


def _srcid(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
    texts = _blank_nulls(batch.array("srcid"))
    return pc.if_else(pc.equal(texts, ""), "0.0.0.0", texts), None


def _flags(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
    texts = pc.utf8_rtrim(_blank_nulls(batch.array("flgs")), characters=PYTHON_WHITESPACE)
    if options.delimiter is not None:
        texts = pc.utf8_rpad(texts, width=render.DELIMITED_FLAGS_WIDTH)
    return texts, None


def _direction(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
    texts = pc.utf8_trim(_blank_nulls(batch.array("dir")), characters=PYTHON_WHITESPACE)
    if options.delimiter is not None:
        texts = pc.utf8_lpad(texts, width=5)
    return texts, None


def _per_direction(name: str, packets_name: str) -> FastFormatter:
    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        printed = batch.valid(name) & (batch.numbers(packets_name) != 0)
        texts = pc.if_else(pa.array(printed), _number_texts(batch, name), "")
        return texts, None

    return formatter


def _appbytes(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
    source, destination = batch.array("sappbytes"), batch.array("dappbytes")
    try:
        total = pc.add_checked(pc.fill_null(source, 0), pc.fill_null(destination, 0))
    except pa.ArrowInvalid:
        # A sum beyond 64 bits: the row-wise formatter adds Python integers.
        return pa.nulls(batch.rows, pa.string()), np.ones(batch.rows, dtype=bool)
    printed = batch.valid("sappbytes") | batch.valid("dappbytes")
    return pc.if_else(pa.array(printed), pc.cast(total, pa.string()), ""), None


def _mac_texts(columns: np.ndarray) -> pa.Array:
    octets = [pc.take(_HEX_BYTES, pa.array(columns[:, index])) for index in range(6)]
    return _join(*octets, separator=":")


def _mac(name: str) -> FastFormatter:
    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        texts = _mac_texts(batch.address_bytes(name))
        return pc.if_else(pa.array(batch.valid(name)), texts, ""), None

    return formatter


def _address(side: str) -> FastFormatter:
    """Format IPv4 flow addresses as dotted quads. IPv6 and non-IP addresses go row-wise."""
    name = f"{side}addr"
    prefix = np.frombuffer(IPV4_MAPPED_PREFIX, dtype=np.uint8)

    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        raw = batch.address_bytes(name)
        fast = batch.is_ip_flow(name) & (raw[:, :12] == prefix).all(axis=1)
        octets = [pc.take(_OCTETS, pa.array(raw[:, index])) for index in range(12, 16)]
        return _join(*octets, separator="."), ~fast

    return formatter


def _proto(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
    """Format the protocols of IPv4 and IPv6 flows. ARP and non-IP flows go row-wise."""
    ethertypes = batch.numbers("etype")
    is_ip = (ethertypes == EtherType.IPV4) | (ethertypes == EtherType.IPV6)
    fast = is_ip & batch.valid("saddr")
    numbers = batch.numbers("proto")
    if options.numeric >= 2:
        texts = pc.cast(pa.array(numbers), pa.string())
    else:
        texts = pc.take(_PROTOCOL_NAMES, pa.array(numbers))
        appproto = batch.array("appproto")
        if appproto.null_count < len(appproto):
            texts = pc.coalesce(appproto, texts)
    return texts, ~fast


def _icmp_texts(side: str, protocols: np.ndarray, sports: np.ndarray, values: np.ndarray,
                numeric: int) -> pa.Array:
    """Return ICMP port texts: type and code (sport) or identifier (dport) in network order."""
    if side == "s":
        texts = _join("0x", pc.take(_HEX_BYTES, pa.array(sports & 0xFF)),
                      pc.take(_HEX_BYTES, pa.array(sports >> 8)))
        decimal = pc.cast(pa.array(sports >> 8), pa.string())
    else:
        texts = _join("0x", pc.take(_HEX_BYTES, pa.array(values >> 8)),
                      pc.take(_HEX_BYTES, pa.array(values & 0xFF)))
        decimal = pc.cast(pa.array(values), pa.string())
    if numeric >= 1:
        texts = pc.if_else(pa.array(protocols == render.ICMPV6), decimal, texts)
    return texts


def _service_texts(protocols: np.ndarray, ports: np.ndarray) -> pa.Array:
    """Return service names, looking each distinct protocol and port up once."""
    keys = protocols * 65_536 + ports
    distinct, inverse = np.unique(keys, return_inverse=True)
    names = [render.service_name(int(key) & 0xFFFF, render.PORT_PROTOCOLS[int(key) >> 16])
             for key in distinct]
    return pc.take(pa.array(names, pa.string()), pa.array(inverse.reshape(-1)))


def _port(side: str) -> FastFormatter:
    """Format the ports of every record, following ``render.port_text`` case by case."""
    name = f"{side}port"

    def formatter(batch: _Batch, options: render.RenderOptions, item: str) -> Formatted:
        values = batch.numbers(name)
        protocols = batch.numbers("proto")
        is_arp = batch.numbers("etype") == EtherType.ARP
        is_ip = batch.is_ip_flow("saddr") & ~is_arp
        is_icmp = is_ip & ((protocols == render.ICMP) | (protocols == render.ICMPV6))
        has_ports = is_ip & np.isin(protocols, _PORT_PROTOCOL_NUMBERS)
        # Non-IP flows print the raw number (LLC SAPs). ARP and portless protocols print nothing.
        blank = ~batch.valid(name) | is_arp | (is_ip & ~is_icmp & ~has_ports)
        texts = pc.if_else(pa.array(blank), "", pc.cast(pa.array(values), pa.string()))
        icmp = is_icmp & ~blank
        if icmp.any():
            icmp_texts = _icmp_texts(side, protocols[icmp], batch.numbers("sport")[icmp],
                                     values[icmp], options.numeric)
            texts = pc.replace_with_mask(texts, pa.array(icmp), icmp_texts)
        named = has_ports & ~blank
        if options.numeric == 0 and named.any():
            names = _service_texts(protocols[named], values[named])
            texts = pc.replace_with_mask(texts, pa.array(named), names)
        return texts, None

    return formatter


FAST_FORMATTERS: dict[str, FastFormatter] = {
    "stime": _time("stime"),
    "ltime": _time("ltime"),
    "srcid": _srcid,
    "proto": _proto,
    "saddr": _address("s"),
    "daddr": _address("d"),
    "sport": _port("s"),
    "dport": _port("d"),
    "smac": _mac("smac"),
    "dmac": _mac("dmac"),
    "dir": _direction,
    "flgs": _flags,
    "appbytes": _appbytes,
    "sttl": _per_direction("sttl", "spkts"),
    "dttl": _per_direction("dttl", "dpkts"),
    "stos": _per_direction("stos", "spkts"),
    "dtos": _per_direction("dtos", "dpkts"),
    **{name: _number(name) for name in (
        "trans", "seq", "vlan", "sas", "das", "pkts", "spkts", "dpkts", "bytes", "sbytes",
        "dbytes", "sappbytes", "dappbytes")},
    **{name: _text(name) for name in ("cause", "state", "sco", "dco", "label")},
}


def _row_wise(batch: _Batch, rows: np.ndarray | None, options: render.RenderOptions,
              item: str) -> pa.Array:
    """Format ``rows`` of the batch (all rows when None) with the row-wise formatter."""
    table = batch.table if rows is None else batch.table.take(pa.array(rows))
    texts = render.FORMATTERS[split_field(item)[0]](render.RecordColumns(table), options, item)
    return pa.array(texts, pa.string())


def format_column(batch: _Batch, item: str, options: render.RenderOptions) -> pa.Array:
    """Return the unpadded text of one printed field for every record of the batch."""
    name = split_field(item)[0]
    fast = FAST_FORMATTERS.get(name)
    if fast is None or not batch.has_record_types(FIELD_SOURCES.get(name, frozenset({name}))):
        return _row_wise(batch, None, options, item)
    texts, slow = fast(batch, options, item)
    if slow is not None and slow.any():
        redone = _row_wise(batch, np.flatnonzero(slow), options, item)
        texts = pc.replace_with_mask(texts, pa.array(slow), redone)
    return texts


@dataclass(frozen=True)
class _Cell:
    """Fixed-width layout of one printed field, worked out once per output."""

    width: int
    align: Align
    #: Cut without a ``*`` marker and pad on the right (``flgs``).
    plain_cut: bool
    #: A port right after its address: joined by ``.`` when the port text is not empty.
    glued: bool


def _cells(fields: list[str], options: render.RenderOptions) -> list[_Cell]:
    names = [split_field(item)[0] for item in fields]
    cells = []
    for index, (item, name) in enumerate(zip(fields, names, strict=True)):
        glued = index > 0 and (names[index - 1], name) in (("saddr", "sport"), ("daddr", "dport"))
        cells.append(_Cell(field_width(item, options.precision), CATALOGUE[name].align,
                           name == "flgs", glued))
    return cells


def _fit(texts: pa.Array, cell: _Cell) -> pa.Array:
    """Pad texts to the cell width; cut a longer text and mark the cut with a final ``*``."""
    if cell.plain_cut:
        return pc.utf8_rpad(pc.utf8_slice_codeunits(texts, 0, cell.width), width=cell.width)
    if cell.align is Align.CENTER:
        fitted = [render.fit(text, cell.width, cell.align) for text in texts.to_pylist()]
        return pa.array(fitted, pa.string())
    if cell.align is Align.LEFT:
        padded = pc.utf8_rpad(texts, width=cell.width)
    else:
        padded = pc.utf8_lpad(texts, width=cell.width)
    # A text of at most ``width`` bytes has at most ``width`` characters: the common
    # case needs no count of characters.
    if len(texts) == 0:
        return padded
    if pa.types.is_string(texts.type):
        _, offsets = _string_parts(texts)
        if int(np.diff(offsets).max()) <= cell.width:
            return padded
    too_wide = pc.greater(pc.utf8_length(texts), cell.width)
    if not pc.any(too_wide).as_py():
        return padded
    cut = pc.utf8_replace_slice(texts, start=cell.width - 1, stop=1 << 62, replacement="*")
    return pc.if_else(too_wide, cut, padded)


def _fixed_lines(columns: list[pa.Array], cells: list[_Cell]) -> pa.Array:
    parts: list[pa.Array | str] = []
    for index, (texts, cell) in enumerate(zip(columns, cells, strict=True)):
        if cell.glued:
            parts.append(pc.if_else(pc.greater(pc.utf8_length(texts), 0), ".", " "))
        elif index:
            parts.append(" ")
        parts.append(_fit(texts, cell))
    return pc.utf8_rtrim(_join(*parts), characters=PYTHON_WHITESPACE)


def _string_parts(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return the bytes and row offsets of a string array."""
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32, count=len(texts) + 1,
                            offset=texts.offset * 4)
    raw = texts.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, np.uint8)
    return data, offsets


def newline_terminated(lines: pa.Array) -> bytes:
    """Return the lines of a string array (no nulls), each followed by a newline."""
    joined = pc.binary_join_element_wise(lines, "", "\n")
    data, offsets = _string_parts(joined)
    return data[offsets[0]:offsets[-1]].tobytes()


def text_blocks(table: pa.Table, fields: list[str],
                options: render.RenderOptions) -> Iterator[bytes]:
    """Yield the record lines (no header) as UTF-8 bytes, one block per batch of records.

    ``TEXT_THREADS`` batches are formatted at once: most of the work is in Arrow and
    NumPy functions, which release the GIL. Blocks come out in record order.
    """
    cells = _cells(fields, options)
    # Batches of equal size keep the last round of threads from being one small batch.
    # 200,000 records print as four batches of 50,000, not three of 65,536 and one of
    # 3,000.
    rounds = -(-table.num_rows // (BATCH_ROWS * TEXT_THREADS))
    rows = max(1, -(-table.num_rows // (rounds * TEXT_THREADS))) if rounds else BATCH_ROWS
    with ThreadPoolExecutor(max_workers=TEXT_THREADS) as pool:
        pending: deque[Future[bytes]] = deque()
        for start in range(0, table.num_rows, rows):
            pending.append(pool.submit(_text_block, table.slice(start, rows), fields,
                                       options, cells))
            if len(pending) > TEXT_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


#: Batches of records formatted at the same time by ``text_blocks``.
TEXT_THREADS = 2


def _text_block(table: pa.Table, fields: list[str], options: render.RenderOptions,
                cells: list[_Cell]) -> bytes:
    batch = _Batch(table)
    columns = [format_column(batch, item, options) for item in fields]
    return newline_terminated(_lines(columns, cells, options))


def _lines(columns: list[pa.Array], cells: list[_Cell],
           options: render.RenderOptions) -> pa.Array:
    if options.delimiter is not None:
        return _join(*columns, separator=options.delimiter)
    return _fixed_lines(columns, cells)


def column_batches(table: pa.Table, fields: list[str],
                   options: render.RenderOptions) -> Iterator[list[pa.Array]]:
    """Yield the unpadded texts of every printed field, batch by batch."""
    for start in range(0, table.num_rows, BATCH_ROWS):
        batch = _Batch(table.slice(start, BATCH_ROWS))
        yield [format_column(batch, item, options) for item in fields]


def line_batches(table: pa.Table, fields: list[str],
                 options: render.RenderOptions) -> Iterator[pa.Array]:
    """Yield the record lines (no header) as string arrays, one per batch of records."""
    cells = _cells(fields, options)
    for columns in column_batches(table, fields, options):
        yield _lines(columns, cells, options)
