"""The printable field catalogue and `-s` field-list editing, with Argus's labels and widths.

Labels and default widths are those of ra 3.0.8. Numbers and most strings are
right-aligned in their column. Ports and user data are left-aligned, and a few
labels (Seq, srcUdata, dstUdata) are centred, as ra prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Align(Enum):
    """Placement of a value or label inside its fixed-width column."""

    RIGHT = "right"
    LEFT = "left"
    CENTER = "center"


@dataclass(frozen=True)
class Field:
    """One printable field: its name, column label, default width and alignment."""

    name: str
    label: str
    width: int
    align: Align = Align.RIGHT
    label_align: Align = Align.RIGHT
    #: Time fields grow by the ``-p`` precision (the digits after the decimal point).
    is_time: bool = False
    #: User-data fields print ``s[N]=`` before the text, so the column is wider (see field_width).
    is_user_data: bool = False


def _fields(*entries: Field) -> dict[str, Field]:
    return {entry.name: entry for entry in entries}


CATALOGUE: dict[str, Field] = _fields(
    Field("stime", "StartTime", 12, is_time=True),
    Field("ltime", "LastTime", 12, is_time=True),
    Field("dur", "Dur", 10),
    Field("trans", "Trans", 6),
    Field("srcid", "SrcId", 18),
    Field("seq", "Seq", 12, label_align=Align.CENTER),
    Field("cause", "Cause", 7),
    Field("proto", "Proto", 6),
    Field("saddr", "SrcAddr", 18),
    Field("sport", "Sport", 6, align=Align.LEFT),
    Field("dir", "Dir", 5),
    Field("daddr", "DstAddr", 18),
    Field("dport", "Dport", 6, align=Align.LEFT),
    Field("smac", "SrcMac", 18),
    Field("dmac", "DstMac", 18),
    Field("vlan", "Vlan", 6),
    Field("pkts", "TotPkts", 8),
    Field("spkts", "SrcPkts", 8),
    Field("dpkts", "DstPkts", 8),
    Field("bytes", "TotBytes", 10),
    Field("sbytes", "SrcBytes", 12),
    Field("dbytes", "DstBytes", 12),
    Field("appbytes", "TotAppByte", 10),
    Field("sappbytes", "SAppBytes", 12),
    Field("dappbytes", "DAppBytes", 12),
    Field("rate", "Rate", 12),
    Field("srate", "SrcRate", 12),
    Field("drate", "DstRate", 12),
    Field("load", "Load", 8),
    Field("sload", "SrcLoad", 8),
    Field("dload", "DstLoad", 8),
    Field("state", "State", 5),
    Field("flgs", "Flgs", 9),
    Field("sttl", "sTtl", 4),
    Field("dttl", "dTtl", 4),
    Field("stos", "sTos", 5),
    Field("dtos", "dTos", 5),
    Field("suser", "srcUdata", 16, Align.LEFT, Align.CENTER, is_user_data=True),
    Field("duser", "dstUdata", 16, Align.LEFT, Align.CENTER, is_user_data=True),
    Field("sco", "sCo", 3),
    Field("dco", "dCo", 3),
    Field("sas", "sAS", 6),
    Field("das", "dAS", 6),
    Field("label", "Label", 5),
)

DEFAULT_FIELDS: list[str] = [
    "stime", "flgs", "proto", "saddr", "sport", "dir", "daddr", "dport", "pkts", "bytes", "state",
]

#: Record columns a printed field reads, where they are not just the field's own column.
FIELD_SOURCES: dict[str, frozenset[str]] = {
    "dur": frozenset({"stime", "ltime"}),
    "appbytes": frozenset({"sappbytes", "dappbytes"}),
    "rate": frozenset({"pkts", "stime", "ltime"}),
    "srate": frozenset({"spkts", "stime", "ltime"}),
    "drate": frozenset({"dpkts", "stime", "ltime"}),
    "load": frozenset({"spkts", "sbytes", "dpkts", "dbytes", "stime", "ltime"}),
    "sload": frozenset({"spkts", "sbytes", "stime", "ltime"}),
    "dload": frozenset({"dpkts", "dbytes", "stime", "ltime"}),
    "proto": frozenset({"etype", "proto", "saddr", "appproto"}),
    "saddr": frozenset({"etype", "saddr"}),
    "daddr": frozenset({"etype", "daddr"}),
    "sport": frozenset({"etype", "proto", "saddr", "sport", "dport"}),
    "dport": frozenset({"etype", "proto", "saddr", "sport", "dport"}),
    "sttl": frozenset({"sttl", "spkts"}),
    "dttl": frozenset({"dttl", "dpkts"}),
    "stos": frozenset({"stos", "spkts"}),
    "dtos": frozenset({"dtos", "dpkts"}),
    "suser": frozenset({"suser", "proto"}),
    "duser": frozenset({"duser", "proto"}),
}


#: The MAC column an address field prints for a record without that address.
ADDRESS_MACS = {"saddr": "smac", "daddr": "dmac"}


def source_columns(fields: list[str]) -> set[str]:
    """Return the record columns that printing ``fields`` (``-s`` entries) reads."""
    columns: set[str] = set()
    for item in fields:
        name = split_field(item)[0]
        columns |= FIELD_SOURCES.get(name, {name})
    return columns


_ITEM = re.compile(r"^(?P<op>[+-]?)(?P<pos>\d*)(?P<name>[A-Za-z]+)(?::(?P<width>[^:]*))?$")


class UnknownFieldError(ValueError):
    """A `-s` item names no known field, or gives an invalid width."""

    def __init__(self, name: str, reason: str = "unknown field") -> None:
        self.name = name
        known = " ".join(CATALOGUE)
        super().__init__(f"{reason}: {name!r} (known fields: {known})")


def split_field(item: str) -> tuple[str, int | None]:
    """Split a printed-field entry such as ``suser:128`` into its name and width."""
    name, _, width = item.partition(":")
    return name, int(width) if width else None


def field_width(item: str, precision: int = 6) -> int:
    """Return the column width of a printed-field entry, ``-p`` precision included."""
    name, width = split_field(item)
    spec = CATALOGUE[name]
    base = spec.width if width is None else width
    if spec.is_time and width is None:
        base += precision
    if spec.is_user_data:
        # ra 3.0.8 widens a user-data column of N bytes to N + 8 (N <= 10) or N + 9,
        # at least 11, to hold the "s[N]=" prefix.
        base = max(base + (8 if base <= 10 else 9), 11)
    return base


def parse_field_list(words: list[str], base: list[str] | None = None) -> list[str]:
    """Apply `-s` items to a field list and return the printed fields.

    Items follow ra(1): a plain name as the first item replaces the whole list,
    ``+name`` appends, ``+Nname`` inserts after the N-th field, ``-name``
    removes, and ``name:width`` sets a column width. Words holding spaces are
    split, so ``-s "+dur -proto"`` works. Entries come back as ``name`` or
    ``name:width``. Raises UnknownFieldError naming the first unknown field.
    """
    items = [item for word in words for item in word.split()]
    fields = list(DEFAULT_FIELDS if base is None else base)
    for index, item in enumerate(items):
        match = _ITEM.match(item)
        if match is None:
            raise UnknownFieldError(item, "invalid field item")
        name = match["name"]
        if name not in CATALOGUE:
            raise UnknownFieldError(name)
        entry = name
        if match["width"] is not None:
            if not match["width"].isdigit() or int(match["width"]) < 1:
                raise UnknownFieldError(item, "width must be a whole number of at least 1")
            entry = f"{name}:{int(match['width'])}"
        op = match["op"]
        if op == "" and index == 0:
            fields = [entry]
        elif op == "-":
            fields = [kept for kept in fields if split_field(kept)[0] != name]
        elif op == "+" and match["pos"]:
            position = min(int(match["pos"]), len(fields))
            fields.insert(position, entry)
        else:
            fields.append(entry)
    return fields
