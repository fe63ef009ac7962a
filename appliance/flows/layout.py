"""Layout of the flow table and of emitted records, and the printed-name tables.

The flow table keeps one row ("slot") per active flow in a few NumPy arrays:

- ``flows`` (slots, FLOW_DTYPE): flow-wide fields, each in the narrowest type its
  values allow, and the two MAC addresses;
- ``sides`` (slots x 2, SIDE_DTYPE): the source (0) and destination (1) direction;
- user data in chunks of up to 32 bytes from a shared pool, chained per direction,
  so a flow takes room only for the payload bytes it has captured (see ``userdata``).

Structured rows keep one flow's fields together, so updating a flow touches a few
cache lines rather than one per field. Emitted records go to int64 arrays with
RECORD_COLUMNS. The compiled code prints states, directions, causes and flgs as
small integer codes into the name tables below.
"""

from __future__ import annotations

import numpy as np

from appliance.decode.constants import ENCAPSULATION_LETTERS, IP_OPTION_LETTERS, Encapsulation
from appliance.flows.names import (
    ICMP_MAPPED_LETTERS,
    ICMP_STATES,
    ICMP_UNREACHABLE_OTHER,
    ICMP_UNREACHABLE_STATES,
    ICMPV6_CODE_STATES,
    ICMPV6_MAPPED_LETTERS,
    ICMPV6_STATES,
)

#: Flow-wide fields. No field is uint64, because numba turns arithmetic that mixes
#: uint64 and int64 into floating point; counters that can grow large are int64.
FLOW_DTYPE = np.dtype(
    [
        ("stime", np.int64),  # microseconds
        ("ltime", np.int64),
        ("report_base", np.int64),  # the record's first packet, where its status interval starts
        ("ip_ids", np.uint16, (2,)),  # IPv4 id of each direction's last TCP data segment
        ("etype", np.uint16),
        ("vlan", np.int16),  # -1 when untagged
        ("encaps", np.uint16),  # Encapsulation bits seen
        ("proto", np.uint8),
        ("version", np.uint8),
        ("src_is_a", np.uint8),  # 1 when key side A initiated the flow
        ("first_record", np.uint8),
        ("midstream", np.uint8),
        ("fragments", np.uint8),
        ("icmp_mapped", np.uint8),  # flgs letter (ASCII) of a quoting ICMP error, 0 = none
        ("icmp_state", np.int8),  # state code set by a quoting ICMP error, -1 = none
        ("syn_ack", np.uint8),
        ("established", np.uint8),
        ("has_packets", np.uint8),  # the current record has counted a packet
        ("icmp_type", np.uint8),
        ("icmp_code", np.uint8),
        ("reverse_pending", np.uint8),
        ("in_use", np.uint8),
        ("ip_options", np.uint8),  # IpOption flags seen in the record's packets
        # TCP flows: TcpState of the connection (argus's state machine). UDP flows: what
        # argus's RTP recognition made of them (``rtp``: RTP_NONE ... RTCP_FLOW).
        ("transport_state", np.uint8),
        ("window_shift", np.uint8),  # window-scale shift: source in the low nibble, dest high
        ("macs", np.uint8, (2, 6)),  # source and destination MAC
    ],
    align=True,
)

#: Bits of a side's ``tcp_status``.
TS_RETRANSMITTED = 1  #: flgs column 4: data or a SYN sent again
TS_OUT_OF_ORDER = 2  #: flgs column 4: data below the highest sequence number seen
TS_WINDOW_SHUT = 4  #: flgs column 5: advertised a zero window
TS_CONGESTED = 8  #: flgs column 6: sent ECE on an ECN-capable connection
TS_ECN_CAPABLE = 16  #: the first SYN or SYN-ACK negotiated ECN
TS_BASE_SET = 32  #: ``seq_base`` holds a sequence number
TS_FIN_ACKED = 64  #: the other side acknowledged this side's FIN
# Bit 128 is RTP_SILENCE of an RTP flow (``rtp``), which has no TCP state.
#: Bits that describe one record and are cleared when the next record starts.
TS_RECORD_BITS = TS_RETRANSMITTED | TS_OUT_OF_ORDER | TS_WINDOW_SHUT | TS_CONGESTED

#: Per-direction fields. The TCP fields follow argus 3.0.8's per-direction metrics;
#: sequence arithmetic is modulo 2**32, as in argus's unsigned 32-bit fields. An RTP
#: flow, which has no TCP state, keeps its RTP header state in the TCP fields instead
#: (``rtp`` names them).
SIDE_DTYPE = np.dtype(
    [
        ("pkts", np.int64),
        ("bytes", np.int64),
        ("start", np.int64),  # time of the direction's first packet in the record
        ("appbytes", np.int64),
        ("seq", np.uint32),  # highest sequence number sent (argus ``seq``)
        ("ack", np.uint32),  # last acknowledgment sent, minus 1 (argus ``ack``)
        ("seq_base", np.uint32),  # first sequence number plus payload bytes counted
        ("window_bytes", np.uint32),  # bytes sent and not yet acknowledged (``winbytes``)
        ("user_head", np.int32),  # first user-data chunk, -1 = none
        ("user_tail", np.int32),  # last user-data chunk, -1 = none
        ("user_len", np.uint16),
        ("window", np.uint16),  # last nonzero advertised window, unscaled
        ("ttl", np.uint8),
        ("tos", np.uint8),
        ("tcp_flags", np.uint8),
        ("tcp_status", np.uint8),  # TS_* bits
    ],
    align=True,
)

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
R_APPPROTO = 23  #: index into APPPROTOS
RECORD_COLUMNS = 24

# Entries of the ``meta`` array shared by the compiled functions.
M_NEXT_TICK = 0  #: -1 before the first packet
M_NEXT_SEQ = 1
M_ACTIVE = 2
M_HIGH_WATER = 3  #: slots below this have been used
M_FREE_TOP = 4  #: entries on the free-slot stack
M_RECORDS = 5  #: records waiting in the output arrays
M_INTERVAL = 6  #: status interval in microseconds
M_USER_LIMIT = 7  #: user-data bytes kept per direction (-U)
M_CHUNK_HIGH = 8  #: user-data chunks below this have been used
M_CHUNK_FREE = 9  #: first chunk of the free-chunk chain, -1 = none
M_CHUNKS_FREE = 10  #: chunks on that chain
META_SIZE = 11

# Reasons the packet loop stops.
RUN_DONE = 0
RUN_TICK = 1  #: a status tick is due before this packet
RUN_FULL = 2  #: the record output arrays are full
RUN_GROW = 3  #: the slot arrays are full
RUN_GROW_USER = 4  #: the user-data chunk pool may not hold the next packet's payload

FLGS_WIDTH = 9

DIRECTIONS = ["->", "<-", "<->", "<?>", "?>", "<?", "who"]
DIR_FORWARD, DIR_BACK, DIR_BOTH, DIR_MID_BOTH, DIR_MID_FORWARD, DIR_MID_BACK, DIR_WHO = range(7)

#: ``appproto`` values: what argus recognised in a UDP flow's payload (0 = nothing).
APPPROTOS = ["", "rtp", "rtcp"]
APP_NONE, APP_RTP, APP_RTCP = range(3)

CAUSES = ["Start", "Status", "Close"]
CAUSE_START, CAUSE_STATUS, CAUSE_CLOSE = range(3)

_FIXED_STATES = ["RST", "FIN", "CON", "ACC", "REQ", "INT", "RSP", "UNK", "URH"]
STATES = _FIXED_STATES + sorted(
    {*ICMP_STATES.values(), *ICMP_UNREACHABLE_STATES.values(), ICMP_UNREACHABLE_OTHER,
     *ICMPV6_STATES.values(), *ICMPV6_CODE_STATES.values()}
    - set(_FIXED_STATES)
)
ST_RST, ST_FIN, ST_CON, ST_ACC, ST_REQ, ST_INT, ST_RSP, ST_UNK, ST_URH = range(9)


def _lookup(table: dict[int, str], size: int, default: str) -> np.ndarray:
    codes = np.full(size, STATES.index(default), dtype=np.int64)
    for key, name in table.items():
        codes[key] = STATES.index(name)
    return codes


#: ICMP type (v4) -> state code; type 3 looks up its code in ICMP_UNREACHABLE_CODES.
ICMP_STATE_CODES = _lookup(ICMP_STATES, 256, "UNK")
ICMP_UNREACHABLE_CODES = _lookup(ICMP_UNREACHABLE_STATES, 256, ICMP_UNREACHABLE_OTHER)


def _icmpv6_lookup() -> np.ndarray:
    """Return the ICMPv6 table: a type's state for each of its codes, then the code states."""
    codes = _lookup({}, 1 << 16, "UNK")
    for icmp_type, name in ICMPV6_STATES.items():
        codes[icmp_type << 8 : (icmp_type + 1) << 8] = STATES.index(name)
    for (icmp_type, code), name in ICMPV6_CODE_STATES.items():
        codes[(icmp_type << 8) | code] = STATES.index(name)
    return codes


#: ICMPv6 type << 8 | code -> state code.
ICMPV6_STATE_CODES = _icmpv6_lookup()


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
    # Plain ints: an IntFlag operation creates a flag member, 30 times slower.
    flag_letters = [(int(flag), letter) for flag, letter in ENCAPSULATION_LETTERS.items()]
    qinq = int(Encapsulation.QINQ)
    for bits in range(ENCAPSULATION_MASK + 1):
        seen = {letter for flag, letter in flag_letters if bits & flag}
        if bits & qinq:
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
    flag_letters = [(int(flag), letter) for flag, letter in IP_OPTION_LETTERS.items()]
    for bits in range(1, 128):
        seen = [letter for flag, letter in flag_letters if bits & flag]
        letters[bits] = ord(seen[0]) if len(seen) == 1 else ord("O")
    return letters


IP_OPTION_CODES = _option_letters()
