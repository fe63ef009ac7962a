"""radump's one-line DNS text, reproduced byte for byte from what radump 3.0.8 prints.

radump 3.0.8 prints DNS user data with a copy of tcpdump's DNS printer at verbosity 0:

* query: ``ID[opcode][+ if RD][% if CD]`` then the oddities in brackets (``[b2&3=0x..]``
  for unusual flag bits, ``[Na]``, ``[Nq]``, ``[Nn]``, ``[Nau]``), or ``[_]`` when there
  are none, then `` QTYPE[ CLASS]? qname.`` per question;
* response: ``ID[opcode][ RCODE][* if AA][- unless RA][| if TC][$ if AD]``, `` [Nq]``
  when qdcount is not 1, `` an/ns/ar`` and the type and RDATA of each answer;
* `` (length)`` at the end, where length is the number of bytes handed to the printer
  (the captured bytes, without the TCP length prefix), or ``[|domain]`` where the
  bytes run out or a name cannot be followed.

The quirks of that printer are kept because the output is compared with argus's:
RDATA is printed only for A, NS, CNAME, PTR, DNAME, MX, TXT, SRV, OPT and UNSPECA
(AAAA addresses are not printed: that build had no IPv6 support), type names come from
its older table (``Type65`` for HTTPS), and compression loops are detected by counting
the bytes visited (``<LOOP>``).
"""

from __future__ import annotations

from appliance.analyses.dns_wire import HEADER_LENGTH, Opcode, RdataType

#: Types that radump prints by name; others print as ``Type<n>``.
RADUMP_TYPE_NAMES = {
    int(member): member.name
    for member in RdataType
    if member.value <= int(RdataType.DNAME) or member in (
        RdataType.OPT, RdataType.UINFO, RdataType.UID, RdataType.GID, RdataType.UNSPEC,
        RdataType.TKEY, RdataType.TSIG, RdataType.IXFR, RdataType.AXFR, RdataType.MAILB,
        RdataType.MAILA, RdataType.ANY)
    if member not in (RdataType.KX, RdataType.CERT)
}
#: Type 104 was UNSPECA ("unspecified ASCII") in the printer's table; it is NID today.
UNSPECA = 104
RADUMP_TYPE_NAMES[UNSPECA] = "UNSPECA"

RADUMP_CLASS_NAMES = {1: "IN", 3: "CHAOS", 4: "HS", 255: "ANY"}
CLASS_IN = 1

OPCODE_SUFFIXES = [
    "", " inv_q", " stat", " op3", " notify", " update", " op6", " op7", " op8", " updataA",
    " updateD", " updateDA", " updateM", " updateMA", " zoneInit", " zoneRef",
]
RCODE_SUFFIXES = [
    "", " FormErr", " ServFail", " NXDomain", " NotImp", " Refused", " YXDomain", " YXRRSet",
    " NXRRSet", " NotAuth", " NotZone", " Resp11", " Resp12", " Resp13", " Resp14",
    " NoChange",
]

#: Header bits the printer reports as ``[b2&3=0x..]`` in a query when any is set.
UNUSUAL_QUERY_BITS = 0x6CF

POINTER = 0xC0
EXTENDED_LABEL = 0x40
BIT_LABEL = 0x01

TRUNCATED = "[|domain]"


class _Stop(Exception):
    """The printer gave up: the text so far ends in ``[|domain]``."""


def radump_text(buffer: bytes, tcp: bool) -> str:
    """Return radump 3.0.8's text for a DNS user-data buffer (empty for no bytes).

    With ``tcp`` set, the buffer starts with the two-byte TCP length prefix, which is skipped.
    """
    if not buffer:
        return ""
    data = bytes(buffer[2:]) if tcp else bytes(buffer)
    printer = _Printer(data)
    try:
        printer.message()
    except _Stop:
        printer.out.append(TRUNCATED)
    return "".join(printer.out)


def _type_name(value: int) -> str:
    return RADUMP_TYPE_NAMES.get(value, f"Type{value}")


def _class_name(value: int) -> str:
    return RADUMP_CLASS_NAMES.get(value, f"(Class {value})")


class _Printer:
    """A cursor over one message; methods mirror the structure of radump's printer.

    Methods that return ``None`` signal that the printer gave up on that structure,
    as the original does; the caller then ends the text with ``[|domain]``.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)
        self.out: list[str] = []

    def has(self, offset: int, size: int) -> bool:
        return 0 <= offset and offset + size <= self.end

    def u16(self, offset: int) -> int:
        return (self.data[offset] << 8) | self.data[offset + 1]

    def print_bytes(self, offset: int, count: int) -> bool:
        """Print ``count`` bytes as tcpdump does (M- for 8-bit, ^ for controls).

        Return False when the data ends first.
        """
        while count > 0 and offset < self.end:
            count -= 1
            byte = self.data[offset]
            offset += 1
            if byte > 0x7F:
                byte &= 0x7F
                self.out.append("M-")
            if not 0x20 <= byte <= 0x7E:
                byte ^= 0x40
                self.out.append("^")
            self.out.append(chr(byte))
        return count == 0

    def skip_name(self, offset: int) -> int | None:
        if not self.has(offset, 1):
            return None
        length = self.data[offset]
        offset += 1
        while length:
            if length & POINTER == POINTER:
                return offset + 1
            if length & POINTER == EXTENDED_LABEL:
                if length & ~POINTER != BIT_LABEL or not self.has(offset, 1):
                    return None
                bits = self.data[offset] or 256
                offset += 1 + (bits + 7) // 8
            else:
                offset += length
            if not self.has(offset, 1):
                return None
            length = self.data[offset]
            offset += 1
        return offset

    def label_length(self, offset: int) -> int | None:
        if not self.has(offset, 1):
            return None
        length = self.data[offset]
        if length & POINTER != EXTENDED_LABEL:
            return length
        kind = length & ~POINTER
        if kind != BIT_LABEL:
            self.out.append(f"<ELT {kind}>")
            return None
        if not self.has(offset + 1, 1):
            return None
        bits = self.data[offset + 1] or 256
        return (bits + 7) // 8 + 1

    def bit_label(self, offset: int) -> int | None:
        """Print an RFC 2673 bit-string label the way the original printer does."""
        if not self.has(offset, 1):
            return None
        bits = self.data[offset] or 256
        limit = offset + 1 + (bits + 3) // 4
        self.out.append("\\[x")
        position, remaining = offset + 1, bits
        while position < limit and remaining > 7:
            if not self.has(position, 1):
                self.out.append(f".../{bits}]")
                return None
            self.out.append(f"{self.data[position]:02x}")
            remaining -= 8
            position += 1
        if remaining > 0:
            if not self.has(position, 1):
                self.out.append(f".../{bits}]")
                return None
            # The original reads a signed char, so bytes >= 0x80 are sign-extended.
            byte = self.data[position]
            signed = byte - 256 if byte > 0x7F else byte
            if remaining > 4:
                self.out.append(f"{(signed & (0xFF << (8 - remaining))) & 0xFFFFFFFF:02x}")
            else:
                self.out.append(f"{((signed >> 4) & 0x0F) & (0x0F << (4 - remaining)):1x}")
        self.out.append(f"/{bits}]")
        return limit

    def name(self, offset: int) -> int | None:
        """Print a name; return the offset after it in place, or None on failure."""
        length = self.label_length(offset)
        if length is None or not self.has(offset, 1):
            return None
        visited = 1
        byte = self.data[offset]
        offset += 1
        compressed = False
        after: int | None = None
        if byte & POINTER != POINTER:
            after = offset + length
        if byte == 0:
            self.out.append(".")
            return after
        while byte and offset < self.end:
            if byte & POINTER == POINTER:
                if not compressed:
                    after = offset + 1
                    compressed = True
                if not self.has(offset, 1):
                    return None
                offset = ((byte << 8) | self.data[offset]) & 0x3FFF
                length = self.label_length(offset)
                if length is None or not self.has(offset, 1):
                    return None
                byte = self.data[offset]
                offset += 1
                visited += 1
                # Each jump visits one more byte; once more bytes were visited than the
                # message holds, some byte was read twice, so the name loops.
                if visited >= self.end:
                    self.out.append("<LOOP>")
                    return None
                continue
            if byte & POINTER == EXTENDED_LABEL:
                kind = byte & ~POINTER
                if kind != BIT_LABEL:
                    self.out.append(f"<ELT {kind}>")
                    return None
                if self.bit_label(offset) is None:
                    return None
            elif not self.print_bytes(offset, length):
                return None
            offset += length
            visited += length
            self.out.append(".")
            length = self.label_length(offset)
            if length is None or not self.has(offset, 1):
                return None
            byte = self.data[offset]
            offset += 1
            visited += 1
            if not compressed and after is not None:
                after += length + 1
        return after

    def character_string(self, offset: int) -> int | None:
        if not self.has(offset, 1):
            return None
        length = self.data[offset]
        if not self.print_bytes(offset + 1, length):
            return None
        return offset + 1 + length

    def question(self, offset: int) -> int | None:
        start = offset
        offset = self.skip_name(offset)
        if offset is None or not self.has(offset, 4):
            return None
        self.out.append(" " + _type_name(self.u16(offset)))
        qclass = self.u16(offset + 2)
        if qclass != CLASS_IN:
            self.out.append(" " + _class_name(qclass))
        self.out.append("? ")
        after = self.name(start)
        return None if after is None else after + 4

    def record(self, offset: int) -> int | None:
        """Print one answer's type and RDATA; return the offset of the next record."""
        offset = self.skip_name(offset)
        if offset is None or not self.has(offset, 10):
            return self.end
        rtype, rclass = self.u16(offset), self.u16(offset + 2)
        if rclass != CLASS_IN and rtype != RdataType.OPT:
            self.out.append(" " + _class_name(rclass))
        length = self.u16(offset + 8)
        offset += 10
        after = offset + length
        self.out.append(" " + _type_name(rtype))
        if after > self.end:
            return None
        if not self._rdata(rtype, rclass, offset, length):
            return None
        return after

    def _rdata(self, rtype: int, rclass: int, offset: int, length: int) -> bool:
        """Print the RDATA types the original prints; return False where it gives up."""
        if rtype == RdataType.A:
            if not self.has(offset, 4):
                return False
            self.out.append(" " + ".".join(str(byte) for byte in self.data[offset : offset + 4]))
        elif rtype in (RdataType.NS, RdataType.CNAME, RdataType.PTR, RdataType.DNAME):
            self.out.append(" ")
            return self.name(offset) is not None
        elif rtype == RdataType.MX:
            self.out.append(" ")
            if not self.has(offset, 2) or self.name(offset + 2) is None:
                return False
            self.out.append(f" {self.u16(offset)}")
        elif rtype == RdataType.TXT:
            end = offset + length
            while offset < end:
                self.out.append(' "')
                offset = self.character_string(offset)
                if offset is None:
                    return False
                self.out.append('"')
        elif rtype == RdataType.SRV:
            self.out.append(" ")
            if not self.has(offset, 6) or self.name(offset + 6) is None:
                return False
            port, priority, weight = (self.u16(offset + 4), self.u16(offset),
                                      self.u16(offset + 2))
            self.out.append(f":{port} {priority} {weight}")
        elif rtype == RdataType.OPT:
            self.out.append(f" UDPsize={rclass}")
        elif rtype == UNSPECA:
            return self.has(offset, length) and self.print_bytes(offset, length)
        elif rtype == RdataType.TSIG:
            return offset + length <= self.end
        return True

    def message(self) -> None:
        if not self.has(0, HEADER_LENGTH):
            raise _Stop
        ident, flags = self.u16(0), self.u16(2)
        qdcount, ancount = self.u16(4), self.u16(6)
        nscount, arcount = self.u16(8), self.u16(10)
        if flags & 0x8000:
            self._response_header(ident, flags, qdcount)
            self._response_body(qdcount, ancount, nscount, arcount)
        else:
            self._query(ident, flags, qdcount, ancount, nscount, arcount)
        self.out.append(f" ({self.end})")

    def _response_header(self, ident: int, flags: int, qdcount: int) -> None:
        opcode, rcode = (flags >> 11) & 0xF, flags & 0xF
        self.out.append(
            f"{ident}{OPCODE_SUFFIXES[opcode]}{RCODE_SUFFIXES[rcode]}"
            f"{'*' if flags & 0x0400 else ''}{'' if flags & 0x0080 else '-'}"
            f"{'|' if flags & 0x0200 else ''}{'$' if flags & 0x0020 else ''}"
        )
        if qdcount != 1:
            self.out.append(f" [{qdcount}q]")

    def _response_body(self, qdcount: int, ancount: int, nscount: int, arcount: int) -> None:
        offset: int | None = HEADER_LENGTH
        for index in range(qdcount):
            # The original prints a comma before every question after the first.
            if index > 0:
                self.out.append(",")
            offset = self.skip_name(offset)
            if offset is None:
                raise _Stop
            offset += 4
        self.out.append(f" {ancount}/{nscount}/{arcount}")
        remaining = ancount
        if remaining:
            remaining -= 1
            offset = self.record(offset)
            if offset is None:
                raise _Stop
            while offset < self.end and remaining:
                remaining -= 1
                self.out.append(",")
                offset = self.record(offset)
                if offset is None:
                    raise _Stop
        if remaining > 0:
            raise _Stop

    def _query(self, ident: int, flags: int, qdcount: int, ancount: int, nscount: int,
               arcount: int) -> None:
        opcode = (flags >> 11) & 0xF
        self.out.append(
            f"{ident}{OPCODE_SUFFIXES[opcode]}{'+' if flags & 0x0100 else ''}"
            f"{'%' if flags & 0x0010 else ''}"
        )
        notes = ""
        if flags & UNUSUAL_QUERY_BITS:
            notes += f" [b2&3=0x{flags:x}]"
        if opcode == Opcode.IQUERY:
            if qdcount:
                notes += f" [{qdcount}q]"
            if ancount != 1:
                notes += f" [{ancount}a]"
        else:
            if ancount:
                notes += f" [{ancount}a]"
            if qdcount != 1:
                notes += f" [{qdcount}q]"
        if nscount:
            notes += f" [{nscount}n]"
        if arcount:
            notes += f" [{arcount}au]"
        self.out.append(f" {notes}" if notes else " [_]")

        remaining = qdcount
        offset: int | None = HEADER_LENGTH
        if remaining:
            remaining -= 1
            offset = self.question(offset)
            if offset is None:
                raise _Stop
            while offset < self.end and remaining:
                remaining -= 1
                offset = self.question(offset)
                if offset is None:
                    raise _Stop
        if remaining > 0:
            raise _Stop
