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


#: ICMP (v4) type -> state mnemonic, as argus 3.0.8 prints it; types missing here print
#: UNK. Types 1, 2 and 7 (unassigned) print an empty state. Destination unreachable
#: (type 3) looks its code up in ICMP_UNREACHABLE_STATES instead.
ICMP_STATES = {
    0: "ECR", 1: "", 2: "", 4: "SRC", 5: "RED", 6: "AHA", 7: "", 8: "ECO", 9: "RTA",
    10: "RTS", 11: "TXD", 12: "PAR", 13: "TST", 14: "TSR", 15: "IRQ", 16: "IRR", 17: "MAS",
    18: "MSR", 19: "SEC", **dict.fromkeys(range(20, 30), "ROB"), 30: "TRC", 31: "DCE",
    32: "MHR", 33: "WAY", 34: "IAH", 35: "MRQ", 36: "MRP", 37: "DNQ", 38: "DNP", 39: "SKP",
    40: "PHO", 41: "NRS", 42: "NRA", 43: "NNS", 44: "NNA", 45: "PTB",
}
#: ICMP destination-unreachable code -> state mnemonic; codes above 15 print UR.
ICMP_UNREACHABLE_STATES = {
    0: "URN", 1: "URH", 2: "URO", 3: "URP", 4: "URF", 5: "URS", 6: "URNU", 7: "URHU",
    8: "URISO", 9: "URNPRO", 10: "URHPRO", 11: "URNTOS", 12: "URHTOS", 13: "URFIL",
    14: "URPRE", 15: "URCUT",
}
#: State of a destination-unreachable message with a code above 15.
ICMP_UNREACHABLE_OTHER = "UR"
#: ICMPv6 type -> state mnemonic, whatever the code; types missing here and in
#: ICMPV6_CODE_STATES print UNK. argus keys a reply under the type of its query, so the
#: replies to echo (129), MLD queries (131, 132), router and neighbour solicitations
#: (134, 136) print the query's state even when the query was not seen.
ICMPV6_STATES = {
    2: "PTB", 128: "ECO", 129: "ECO", 130: "MRQ", 131: "MRQ", 132: "MRQ", 133: "NRS",
    134: "NRS", 135: "NNS", 136: "NNS", 137: "RED", 143: "MHR",
}
#: ICMPv6 (type, code) -> state mnemonic for the error types whose state names the code:
#: destination unreachable (1), time exceeded (3) and parameter problem (4). Other codes
#: of these types print UNK.
ICMPV6_CODE_STATES = {
    (1, 0): "URNR", (1, 1): "URAD", (1, 2): "URBS", (1, 3): "URAR", (1, 4): "URP",
    (1, 5): "URSF", (1, 6): "URRR", (1, 7): "URES", (3, 0): "TXT", (3, 1): "TXR",
    (4, 0): "PPH", (4, 1): "PPNH", (4, 2): "PPO",
}

#: Column 3 of flgs for a flow that an ICMP error quoted, by ICMP (v4) error type.
ICMP_MAPPED_LETTERS = {3: "U", 5: "R", 11: "T"}
ICMPV6_MAPPED_LETTERS = {1: "U", 3: "T"}
