"""Merging Argus flgs strings, one character position at a time.

flgs is a fixed-width string in which each position reports one property (position 1
encapsulation, 2 ICMP mapping, 3 loss and reordering, 4 window closure, 5 ECN, 6
fragments, 7 IP options). Merging keeps a position's character when the members agree
or only one member sets it. Where two members set different characters, the
position's "both directions" character is used when the pair is a src/dst pair, and
``*`` ("several") otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Per position, pairs of src/dst characters and the character Argus prints for both.
BOTH_DIRECTIONS: dict[int, dict[frozenset[str], str]] = {
    3: {frozenset("sd"): "*", frozenset("ir"): "&"},
    4: {frozenset("SD"): "@", frozenset("sd"): "*"},
    5: {frozenset("xt"): "E"},
}

SEVERAL = "*"


def merge_flag_characters(position: int, characters: set[str]) -> str:
    """Merge the characters set at one position (blanks already removed)."""
    if not characters:
        return " "
    if len(characters) == 1:
        return next(iter(characters))
    return BOTH_DIRECTIONS.get(position, {}).get(frozenset(characters), SEVERAL)


def merge_flags(values: Iterable[str | None]) -> str | None:
    """Merge several flgs strings into one, position by position; None if all are null."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    width = max(len(value) for value in present)
    merged = []
    for position in range(width):
        characters = {value[position] for value in present if position < len(value)}
        characters.discard(" ")
        merged.append(merge_flag_characters(position, characters))
    return "".join(merged)
