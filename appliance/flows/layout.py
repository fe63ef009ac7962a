"""Layout of the columnar flow table and of emitted records, and the printed-name tables.

The flow table keeps one row ("slot") per active flow in a few NumPy arrays:

- ``state`` (slots x FLOW_COLUMNS, int64): flow-wide fields;
- ``sides`` (slots x 2 x SIDE_COLUMNS, int64): the source (0) and destination (1) direction;
- ``macs`` (slots x 2 x 6) and ``user`` (slots x 2 x user_data_len bytes).
 Emitted records go
to the same kind of arrays with RECORD_COLUMNS. The compiled code prints states,
directions, causes and flgs as small integer codes into the name tables below.
"""

from __future__ import annotations

import numpy as np

from appliance.decode.constants import ENCAPSULATION_LETTERS, IP_OPTION_LETTERS, Encapsulation
from appliance.flows.names import (
    ICMP_MAPPED_LETTERS,
    ICMP_STATES,
    ICMP_UNREACHABLE_STATES,
    ICMPV6_MAPPED_LETTERS,
    ICMPV6_STATES,
)

# Flow-wide columns of ``state``.
ETYPE = 0
PROTO = 1
VERSION = 2
SRC_IS_A = 3  #: 1 when key side A initiated the flow
VLAN = 4  #: -1 when untagged
ENCAPS = 5
STIME = 6
LTIME = 7
FIRST_RECORD = 8
MIDSTREAM = 9
FRAGMENTS = 10
ICMP_MAPPED = 11  #: flgs letter (ASCII) of an ICMP error that quoted the flow, 0 = none
ICMP_STATE = 12  #: state code set by a quoting ICMP error, -1 = none
SYN_ACK = 13
ESTABLISHED = 14
HAS_PACKETS = 15  #: the current record has counted a packet
ICMP_TYPE = 16
ICMP_CODE = 17
TIMEOUT = 18  #: idle timeout in microseconds
REVERSE_PENDING = 19
IN_USE = 20
IP_OPTIONS = 21  #: IpOption flags seen in the record's packets
FLOW_COLUMNS = 22

# Per-direction columns of ``sides``.
PKTS = 0
BYTES = 1
APPBYTES = 2
TTL = 3
TOS = 4
USER_LEN = 5
TCP_FLAGS = 6
NEXT_SEQ = 7  #: -1 = unknown
SYN_SEQ = 8  #: -1 = unknown
RETRANSMITTED = 9
SIDE_COLUMNS = 10

# Columns of an emitted record (``records``, int64).
R_SEQ = 0
R_STIME = 1
R_LTIME = 2
R_ETYPE = 3
R_PROTO = 4
R_SPORT = 5
R_DPORT = 6
R_VLAN = 7
R_DIR = 8
R_STATE = 9
R_CAUSE = 10
R_SPKTS = 11
R_DPKTS = 12
R_SBYTES = 13
R_DBYTES = 14
R_SAPPBYTES = 15
R_DAPPBYTES = 16
R_STTL = 17
R_DTTL = 18
R_STOS = 19
R_DTOS = 20
R_SUSER_LEN = 21
R_DUSER_LEN = 22
RECORD_COLUMNS = 23

# Entries of the ``meta`` array shared by the compiled functions.
M_NEXT_TICK = 0  #: -1 before the first packet
M_NEXT_SEQ = 1
M_ACTIVE = 2
M_HIGH_WATER = 3  #: slots below this have been used
M_FREE_TOP = 4  #: entries on the free-slot stack
M_RECORDS = 5  #: records waiting in the output arrays
M_INTERVAL = 6  #: status interval in microseconds
META_SIZE = 7

# Reasons the packet loop stops.
RUN_DONE = 0
RUN_TICK = 1  #: a status tick is due before this packet
RUN_FULL = 2  #: the record output arrays are full
RUN_GROW = 3  #: the slot arrays are full

FLGS_WIDTH = 9

DIRECTIONS = ["->", "<-", "<->", "<?>", "?>", "<?", "who"]
DIR_FORWARD, DIR_BACK, DIR_BOTH, DIR_MID_BOTH, DIR_MID_FORWARD, DIR_MID_BACK, DIR_WHO = range(7)

CAUSES = ["Start", "Status", "Close"]
CAUSE_START, CAUSE_STATUS, CAUSE_CLOSE = range(3)

_FIXED_STATES = ["RST", "FIN", "CON", "ACC", "REQ", "INT", "RSP", "UNK", "URH"]
STATES = _FIXED_STATES + sorted(
    {*ICMP_STATES.values(), *ICMP_UNREACHABLE_STATES.values(), *ICMPV6_STATES.values()}
    - set(_FIXED_STATES)
)
ST_RST, ST_FIN, ST_CON, ST_ACC, ST_REQ, ST_INT, ST_RSP, ST_UNK, ST_URH = range(9)


def _lookup(table: dict[int, str], default: int) -> np.ndarray:
    codes = np.full(256, default, dtype=np.int64)
    for key, name in table.items():
        codes[key] = STATES.index(name)
    return codes


#: ICMP type (v4) -> state code; type 3 looks up its code in ICMP_UNREACHABLE_CODES.
ICMP_STATE_CODES = _lookup(ICMP_STATES, ST_UNK)
ICMP_UNREACHABLE_CODES = _lookup(ICMP_UNREACHABLE_STATES, ST_URH)
ICMPV6_STATE_CODES = _lookup(ICMPV6_STATES, ST_UNK)


def _letters(table: dict[int, str]) -> np.ndarray:
    letters = np.full(256, ord("I"), dtype=np.int64)
    for key, letter in table.items():
        letters[key] = ord(letter)
    return letters


#: ICMP error type -> flgs column 3 letter of the flow it quotes.
ICMP_MAPPED_CODES = _letters(ICMP_MAPPED_LETTERS)
ICMPV6_MAPPED_CODES = _letters(ICMPV6_MAPPED_LETTERS)


#: Every Encapsulation bit.
ENCAPSULATION_MASK = 0x3FF


def _encapsulation_letters() -> np.ndarray:
    """flgs column 2 for each encapsulation bit set: one letter, '*' for several, ' '."""
    letters = np.full(ENCAPSULATION_MASK + 1, ord(" "), dtype=np.uint8)
    for bits in range(ENCAPSULATION_MASK + 1):
        seen = {letter for flag, letter in ENCAPSULATION_LETTERS.items() if bits & flag}
        if bits & Encapsulation.QINQ:
            seen.add("*")
        if len(seen) > 1:
            letters[bits] = ord("*")
        elif seen:
            letters[bits] = ord(seen.pop())
    return letters


ENCAPSULATION_CODES = _encapsulation_letters()


def _option_letters() -> np.ndarray:
    """flgs column 8 for each set of IPv4 options: one letter, 'O' for several, ' '."""
    letters = np.full(128, ord(" "), dtype=np.uint8)
    for bits in range(1, 128):
        seen = [letter for flag, letter in IP_OPTION_LETTERS.items() if bits & flag]
        letters[bits] = ord(seen[0]) if len(seen) == 1 else ord("O")
    return letters


IP_OPTION_CODES = _option_letters()
