"""Argus's printed vocabulary for flows: state mnemonics, ICMP names, dir and flgs letters."""

from __future__ import annotations

from enum import IntFlag

from appliance.decode.constants import ENCAPSULATION_LETTERS, Encapsulation


class TcpFlag(IntFlag):
    """TCP header flags."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


#: ICMP (v4) type -> state mnemonic; unreachable codes are looked up separately.
ICMP_STATES = {
    0: "ECR", 4: "SRC", 5: "RED", 8: "ECO", 9: "RTA", 10: "RTS", 11: "TXD", 12: "PAR",
    13: "TST", 14: "TSR", 15: "IRQ", 16: "IRR", 17: "MAS", 18: "MSR",
}
#: ICMP destination-unreachable code -> state mnemonic.
ICMP_UNREACHABLE_STATES = {0: "URN", 1: "URH", 2: "URP", 3: "URP", 4: "URF", 5: "URS"}
#: ICMPv6 type -> state mnemonic.
ICMPV6_STATES = {
    1: "UNR", 2: "PTB", 3: "TXD", 4: "PAR", 128: "ECO", 129: "ECR", 130: "MRQ", 131: "MHR",
    132: "MHR", 133: "NRS", 134: "NRA", 135: "NNS", 136: "NNA", 137: "RED", 143: "MHR",
}

#: Column 3 of flgs for a flow that an ICMP error quoted, by ICMP (v4) error type.
ICMP_MAPPED_LETTERS = {3: "U", 5: "R", 11: "T"}
ICMPV6_MAPPED_LETTERS = {1: "U", 3: "T"}

FLGS_WIDTH = 9


def icmp_state(icmp_type: int, code: int, version: int) -> str:
    """Return argus's state mnemonic for an ICMP flow of this type."""
    if version == 6:
        return ICMPV6_STATES.get(icmp_type, "UNK")
    if icmp_type == 3:
        return ICMP_UNREACHABLE_STATES.get(code, "URH")
    return ICMP_STATES.get(icmp_type, "UNK")


def icmp_mapped_letter(icmp_type: int, version: int) -> str:
    """Return the flgs letter that marks a flow quoted by this ICMP error type."""
    letters = ICMPV6_MAPPED_LETTERS if version == 6 else ICMP_MAPPED_LETTERS
    return letters.get(icmp_type, "I")


def encapsulation_letter(encapsulation: int) -> str:
    """Return column 2 of flgs: one encapsulation's letter, '*' for several, ' ' for none."""
    seen = {letter for flag, letter in ENCAPSULATION_LETTERS.items() if encapsulation & flag}
    if encapsulation & Encapsulation.QINQ:
        seen.add("*")
    if len(seen) > 1:
        return "*"
    return seen.pop() if seen else " "


def retransmission_letter(source: bool, destination: bool) -> str:
    """Return column 4 of flgs: 's' source, 'd' destination or '*' both retransmitted."""
    if source and destination:
        return "*"
    if source:
        return "s"
    return "d" if destination else " "


def flgs_text(encapsulation: int, icmp_mapped: str, retransmitted: str, fragments: bool) -> str:
    """Build the fixed-width positional flgs string."""
    columns = [" "] * FLGS_WIDTH
    columns[1] = encapsulation_letter(encapsulation)
    columns[2] = icmp_mapped or " "
    columns[3] = retransmitted
    columns[6] = "F" if fragments else " "
    return "".join(columns)
