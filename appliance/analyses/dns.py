"""radump for DNS: decode the DNS messages held in flow records' user data.

``radump_text`` prints one buffer as radump 3.0.8 does; ``extract_dns`` turns every DNS
message in a flow table into one row of ``DNS_SCHEMA``, with Zeek-like fields.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from appliance.analyses.dns_text import radump_text
from appliance.analyses.dns_wire import (
    HEADER_LENGTH,
    Message,
    class_to_text,
    decode_message,
    flags_to_text,
    opcode_to_text,
    rcode_to_text,
    split_tcp_messages,
    type_to_text,
)
from appliance.records import address_to_text, conform

__all__ = ["DNS_FIELDS", "DNS_SCHEMA", "DNS_PORTS", "extract_dns", "radump_text"]

log = logging.getLogger(__name__)

#: Ports whose flows carry DNS, as radump selects them.
DNS_PORTS = (53,)

TCP, UDP = 6, 17

#: One row per DNS message, with its type and meaning.
DNS_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("stime", pa.timestamp("us", tz="UTC"), "start time of the flow record holding the message"),
    ("saddr", pa.string(), "flow source address, as text"),
    ("sport", pa.uint16(), "flow source port"),
    ("daddr", pa.string(), "flow destination address, as text"),
    ("dport", pa.uint16(), "flow destination port"),
    ("proto", pa.uint8(), "IP protocol: 17 UDP, 6 TCP"),
    ("side", pa.string(), "who sent the message: s = saddr (suser), d = daddr (duser)"),
    ("trans_id", pa.uint16(), "DNS transaction id"),
    ("qr", pa.bool_(), "true for a response"),
    ("opcode", pa.string(), "opcode mnemonic (QUERY, NOTIFY, UPDATE ...)"),
    ("rcode", pa.string(), "response code mnemonic, EDNS extended bits included"),
    ("flags", pa.string(), "header flags set, space separated, from QR AA TC RD RA AD CD"),
    ("qname", pa.string(), "first question name, fully qualified (trailing dot)"),
    ("qtype", pa.string(), "first question type mnemonic (A, AAAA, TYPE65534 ...)"),
    ("qclass", pa.string(), "first question class mnemonic (IN, CH ...)"),
    ("answers", pa.list_(pa.string()), "RDATA of each answer record, presentation form"),
    ("ttls", pa.list_(pa.uint32()), "TTL of each answer record, seconds"),
    ("radump", pa.string(), "the line radump 3.0.8 prints for this buffer"),
    ("error", pa.string(), "where and why decoding stopped; null when complete"),
]
DNS_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in DNS_FIELDS])


def extract_dns(table: pa.Table, ports: tuple[int, ...] = DNS_PORTS) -> pa.Table:
    """Decode the DNS messages in the suser/duser buffers of UDP and TCP flows on ``ports``.

    A UDP buffer may hold several datagrams back to back: each fully decoded message
    is followed by the next. A TCP buffer is split by its length prefixes. Bad or
    truncated bytes give a row with ``error`` set instead of an exception.
    """
    table = conform(table)
    port_set = pa.array(list(ports), type=pa.uint16())
    selected = pc.and_(
        pc.is_in(table.column("proto"), value_set=pa.array([TCP, UDP], type=pa.uint8())),
        pc.or_(pc.is_in(table.column("sport"), value_set=port_set),
               pc.is_in(table.column("dport"), value_set=port_set)),
    )
    flows = table.filter(pc.fill_null(selected, False)).select(
        ["stime", "saddr", "sport", "daddr", "dport", "proto", "suser", "duser"]
    )
    rows: list[dict[str, object]] = []
    for flow in flows.to_pylist():
        for side in ("s", "d"):
            buffer = flow[f"{side}user"]
            if buffer:
                rows.extend(_message_rows(flow, side, buffer))
    log.debug("decoded %d DNS messages from %d flows", len(rows), flows.num_rows)
    return pa.Table.from_pylist(rows, schema=DNS_SCHEMA)


def _split_buffer(buffer: bytes, tcp: bool) -> list[tuple[bytes, str]]:
    """Split one direction's buffer into (message bytes, radump text) pairs."""
    if tcp:
        messages = split_tcp_messages(buffer)
        if not messages:
            return [(b"", radump_text(buffer, tcp=True))]
        # radump prints only the first message, over the whole remaining buffer.
        texts = [radump_text(buffer, tcp=True)]
        texts += [radump_text(message, tcp=False) for message in messages[1:]]
        return list(zip(messages, texts, strict=True))
    # radump prints the first message over the whole buffer; later ones get their own text.
    pieces = []
    rest = buffer
    while rest:
        message = decode_message(rest)
        more = message.error is None and len(rest) - message.consumed >= HEADER_LENGTH
        data = rest[: message.consumed] if more else rest
        pieces.append((data, radump_text(buffer if not pieces else data, tcp=False)))
        if not more:
            break
        rest = rest[message.consumed :]
    return pieces


def _message_rows(flow: dict[str, object], side: str, buffer: bytes) -> list[dict[str, object]]:
    rows = []
    for data, text in _split_buffer(buffer, flow["proto"] == TCP):
        message = decode_message(data)
        rows.append(_row(flow, side, message, text))
    return rows


def _row(flow: dict[str, object], side: str, message: Message, text: str) -> dict[str, object]:
    header = message.header
    question = message.questions[0] if message.questions else None
    answers = message.answers
    return {
        "stime": flow["stime"],
        "saddr": address_to_text(flow["saddr"]) if flow["saddr"] is not None else None,
        "sport": flow["sport"],
        "daddr": address_to_text(flow["daddr"]) if flow["daddr"] is not None else None,
        "dport": flow["dport"],
        "proto": flow["proto"],
        "side": side,
        "trans_id": header.id if header else None,
        "qr": header.qr if header else None,
        "opcode": opcode_to_text(header.opcode) if header else None,
        "rcode": rcode_to_text(message.rcode) if header else None,
        "flags": flags_to_text(header.flags) if header else None,
        "qname": question.name if question else None,
        "qtype": type_to_text(question.qtype) if question else None,
        "qclass": class_to_text(question.qclass) if question else None,
        "answers": [record.text for record in answers],
        "ttls": [record.ttl for record in answers],
        "radump": text,
        "error": message.error,
    }
