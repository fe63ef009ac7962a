"""Argus's printed vocabulary for flows: TCP flags, ICMP state mnemonics and flgs letters."""

from __future__ import annotations

from enum import IntFlag


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
