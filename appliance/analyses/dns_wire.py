"""DNS wire format (RFC 1035, 6891): protocol constants and a defensive message decoder.

The decoder reads captured user data, which is often cut short (argus keeps only the
first bytes of each direction) and sometimes hostile. It never raises on bad bytes:
it returns what it could decode and says in ``Message.error`` where and why it stopped.
Each compression pointer must jump to an offset before every byte of the name read
so far, which rules out both forward pointers and pointer loops.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field

HEADER_LENGTH = 12
MAX_NAME_LENGTH = 255
POINTER_MASK = 0xC0


class Opcode(enum.IntEnum):
    """DNS opcodes (header bits 11-14)."""

    QUERY = 0  #: standard query
    IQUERY = 1  #: inverse query (obsolete)
    STATUS = 2  #: server status request
    NOTIFY = 4  #: zone change notification (RFC 1996)
    UPDATE = 5  #: dynamic update (RFC 2136)
    DSO = 6  #: DNS stateful operations (RFC 8490)


class Rcode(enum.IntEnum):
    """DNS response codes; values above 15 need the EDNS extended-rcode bits."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    YXDOMAIN = 6
    YXRRSET = 7
    NXRRSET = 8
    NOTAUTH = 9
    NOTZONE = 10
    DSOTYPENI = 11
    BADVERS = 16
    BADKEY = 17
    BADTIME = 18
    BADMODE = 19
    BADNAME = 20
    BADALG = 21
    BADTRUNC = 22
    BADCOOKIE = 23


class Flag(enum.IntFlag):
    """DNS header flags, as bits of the 16-bit flags word."""

    QR = 0x8000  #: message is a response
    AA = 0x0400  #: authoritative answer
    TC = 0x0200  #: truncated
    RD = 0x0100  #: recursion desired
    RA = 0x0080  #: recursion available
    AD = 0x0020  #: authentic data (DNSSEC)
    CD = 0x0010  #: checking disabled (DNSSEC)


#: Flags in the order Zeek and dig print them.
FLAG_ORDER = [Flag.QR, Flag.AA, Flag.TC, Flag.RD, Flag.RA, Flag.AD, Flag.CD]


class RdataType(enum.IntEnum):
    """Resource record types (IANA DNS parameters registry)."""

    A = 1
    NS = 2
    MD = 3
    MF = 4
    CNAME = 5
    SOA = 6
    MB = 7
    MG = 8
    MR = 9
    NULL = 10
    WKS = 11
    PTR = 12
    HINFO = 13
    MINFO = 14
    MX = 15
    TXT = 16
    RP = 17
    AFSDB = 18
    X25 = 19
    ISDN = 20
    RT = 21
    NSAP = 22
    NSAP_PTR = 23
    SIG = 24
    KEY = 25
    PX = 26
    GPOS = 27
    AAAA = 28
    LOC = 29
    NXT = 30
    EID = 31
    NIMLOC = 32
    SRV = 33
    ATMA = 34
    NAPTR = 35
    KX = 36
    CERT = 37
    A6 = 38
    DNAME = 39
    OPT = 41
    APL = 42
    DS = 43
    SSHFP = 44
    IPSECKEY = 45
    RRSIG = 46
    NSEC = 47
    DNSKEY = 48
    DHCID = 49
    NSEC3 = 50
    NSEC3PARAM = 51
    TLSA = 52
    SMIMEA = 53
    HIP = 55
    CDS = 59
    CDNSKEY = 60
    OPENPGPKEY = 61
    CSYNC = 62
    ZONEMD = 63
    SVCB = 64
    HTTPS = 65
    SPF = 99
    UINFO = 100
    UID = 101
    GID = 102
    UNSPEC = 103
    NID = 104
    TKEY = 249
    TSIG = 250
    IXFR = 251
    AXFR = 252
    MAILB = 253
    MAILA = 254
    ANY = 255
    URI = 256
    CAA = 257


class RdataClass(enum.IntEnum):
    """Resource record classes."""

    IN = 1
    CH = 3
    HS = 4
    NONE = 254
    ANY = 255


def type_to_text(value: int) -> str:
    """Return a type's mnemonic, or ``TYPEn`` (RFC 3597) for an unknown type."""
    try:
        return RdataType(value).name.replace("_", "-")
    except ValueError:
        return f"TYPE{value}"


def class_to_text(value: int) -> str:
    """Return a class mnemonic, or ``CLASSn`` (RFC 3597) for an unknown class."""
    try:
        return RdataClass(value).name
    except ValueError:
        return f"CLASS{value}"


def rcode_to_text(value: int) -> str:
    """Return an rcode mnemonic, or the number as text when it is unassigned."""
    try:
        return Rcode(value).name
    except ValueError:
        return str(value)


def opcode_to_text(value: int) -> str:
    """Return an opcode mnemonic, or the number as text when it is unassigned."""
    try:
        return Opcode(value).name
    except ValueError:
        return str(value)


def flags_to_text(flags: int) -> str:
    """Return the set header flags as space-separated mnemonics (``QR RD RA``)."""
    return " ".join(flag.name for flag in FLAG_ORDER if flags & flag)


class Truncated(Exception):
    """Internal: the message ends before the structure being read."""


class Malformed(Exception):
    """Internal: the bytes cannot be a valid DNS structure."""


@dataclass
class Header:
    """The fixed 12-byte DNS header."""

    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def qr(self) -> bool:
        return bool(self.flags & Flag.QR)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


@dataclass
class Question:
    """One entry of the question section."""

    name: str
    qtype: int
    qclass: int


@dataclass
class ResourceRecord:
    """One resource record; ``text`` is its RDATA in presentation form."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    text: str


@dataclass
class Message:
    """A decoded DNS message; ``error`` is None when every counted record was read."""

    header: Header | None
    questions: list[Question] = field(default_factory=list)
    answers: list[ResourceRecord] = field(default_factory=list)
    authority: list[ResourceRecord] = field(default_factory=list)
    additional: list[ResourceRecord] = field(default_factory=list)
    length: int = 0
    #: Bytes read up to the end of the last decoded record.
    consumed: int = 0
    error: str | None = None

    @property
    def rcode(self) -> int | None:
        """The full rcode, with the EDNS extended bits when an OPT record was read."""
        if self.header is None:
            return None
        for record in self.additional:
            if record.rtype == RdataType.OPT:
                return ((record.ttl >> 24) << 4) | self.header.rcode
        return self.header.rcode


class _Reader:
    """Bounds-checked reads from one message."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def need(self, offset: int, size: int) -> None:
        if offset + size > len(self.data):
            raise Truncated(offset)

    def u8(self, offset: int) -> int:
        self.need(offset, 1)
        return self.data[offset]

    def u16(self, offset: int) -> int:
        self.need(offset, 2)
        return struct.unpack_from("!H", self.data, offset)[0]

    def u32(self, offset: int) -> int:
        self.need(offset, 4)
        return struct.unpack_from("!I", self.data, offset)[0]

    def name(self, offset: int) -> tuple[str, int]:
        """Read a possibly compressed name; return (text, offset after it in place)."""
        labels: list[str] = []
        wire_length = 1
        end: int | None = None
        position = lowest = offset
        while True:
            length = self.u8(position)
            if length & POINTER_MASK == POINTER_MASK:
                target = ((length & 0x3F) << 8) | self.u8(position + 1)
                if end is None:
                    end = position + 2
                # Each jump must land before every byte of the name read so far, so
                # offsets strictly decrease and neither loops nor forward jumps occur.
                if target >= lowest:
                    raise Malformed(
                        f"compression pointer at offset {position} to {target} "
                        "points forward or loops"
                    )
                position = lowest = target
                continue
            if length & POINTER_MASK:
                raise Malformed(f"unsupported label type 0x{length:02x} at offset {position}")
            if length == 0:
                break
            self.need(position + 1, length)
            wire_length += length + 1
            if wire_length > MAX_NAME_LENGTH:
                raise Malformed(f"name at offset {offset} is longer than {MAX_NAME_LENGTH} bytes")
            labels.append(_label_text(self.data[position + 1 : position + 1 + length]))
            position += length + 1
        if end is None:
            end = position + 1
        return ".".join(labels) + ".", end


def _label_text(label: bytes) -> str:
    """Format a label as presentation text: non-printables and specials as \\DDD or \\c."""
    out = []
    for byte in label:
        character = chr(byte)
        if character in '."\\()@;$':
            out.append("\\" + character)
        elif 0x21 <= byte <= 0x7E:
            out.append(character)
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def _character_strings(data: bytes) -> list[str]:
    """Split TXT-style RDATA into its length-prefixed strings."""
    strings = []
    position = 0
    while position < len(data):
        length = data[position]
        chunk = data[position + 1 : position + 1 + length]
        strings.append('"' + chunk.decode("ascii", "backslashreplace").replace('"', '\\"') + '"')
        position += 1 + length
    return strings


def _rdata_text(reader: _Reader, rtype: int, start: int, length: int) -> str:
    """Format RDATA in presentation form; unknown types use RFC 3597 ``\\# len hex``."""
    data = reader.data[start : start + length]
    if rtype == RdataType.A and length == 4:
        return str(ipaddress.IPv4Address(data))
    if rtype == RdataType.AAAA and length == 16:
        return str(ipaddress.IPv6Address(data))
    if rtype in (RdataType.CNAME, RdataType.NS, RdataType.PTR, RdataType.DNAME):
        return reader.name(start)[0]
    if rtype == RdataType.MX:
        return f"{reader.u16(start)} {reader.name(start + 2)[0]}"
    if rtype in (RdataType.TXT, RdataType.SPF):
        return " ".join(_character_strings(data))
    if rtype == RdataType.SRV:
        priority, weight, port = (reader.u16(start + step) for step in (0, 2, 4))
        return f"{priority} {weight} {port} {reader.name(start + 6)[0]}"
    if rtype == RdataType.SOA:
        mname, position = reader.name(start)
        rname, position = reader.name(position)
        numbers = " ".join(str(reader.u32(position + 4 * index)) for index in range(5))
        return f"{mname} {rname} {numbers}"
    return f"\\# {length} {data.hex()}" if length else "\\# 0"


def _read_question(reader: _Reader, offset: int) -> tuple[Question, int]:
    name, offset = reader.name(offset)
    return Question(name, reader.u16(offset), reader.u16(offset + 2)), offset + 4


def _read_record(reader: _Reader, offset: int) -> tuple[ResourceRecord, int]:
    name, offset = reader.name(offset)
    rtype, rclass = reader.u16(offset), reader.u16(offset + 2)
    ttl, length = reader.u32(offset + 4), reader.u16(offset + 8)
    start = offset + 10
    reader.need(start, length)
    try:
        text = _rdata_text(reader, rtype, start, length)
    except Malformed:
        text = f"\\# {length} {reader.data[start:start + length].hex()}"
    return ResourceRecord(name, rtype, rclass, ttl, text), start + length


def decode_message(data: bytes) -> Message:
    """Decode one DNS message (without a TCP length prefix), as far as the bytes allow."""
    reader = _Reader(bytes(data))
    message = Message(header=None, length=len(data))
    if len(data) < HEADER_LENGTH:
        message.error = f"message of {len(data)} bytes is shorter than the 12-byte header"
        return message
    message.header = Header(*struct.unpack_from("!6H", data, 0))
    offset = message.consumed = HEADER_LENGTH
    sections = [
        ("question", message.header.qdcount, message.questions, _read_question),
        ("answer", message.header.ancount, message.answers, _read_record),
        ("authority", message.header.nscount, message.authority, _read_record),
        ("additional", message.header.arcount, message.additional, _read_record),
    ]
    for section, count, entries, read in sections:
        for index in range(count):
            try:
                entry, offset = read(reader, offset)
            except Truncated as stop:
                where = f"{section} {index + 1} of {count}"
                message.error = f"truncated at byte {stop.args[0]} in {where}"
                return message
            except Malformed as bad:
                message.error = f"malformed {section} {index + 1} of {count}: {bad.args[0]}"
                return message
            entries.append(entry)
            message.consumed = offset
    return message


def split_tcp_messages(data: bytes) -> list[bytes]:
    """Split a TCP byte stream into DNS messages by their two-byte length prefixes.

    The last message may be cut short; it is returned as far as the stream holds it.
    """
    messages = []
    position = 0
    while position + 2 <= len(data):
        length = struct.unpack_from("!H", data, position)[0]
        messages.append(data[position + 2 : position + 2 + length])
        position += 2 + length
    return messages
