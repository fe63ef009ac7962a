"""One flow's state: counters per direction, TCP state, user data and the printed fields."""

from __future__ import annotations

from appliance.decode.constants import ET_ARP, ET_IPV4, ET_IPV6, P_ICMP, P_ICMPV6, P_TCP
from appliance.flows import names
from appliance.flows.names import TcpFlag

SEQUENCE_SPACE = 1 << 32
HALF_SEQUENCE_SPACE = 1 << 31

#: Idle timeouts in seconds (argus 3.0.8 compiled-in defaults).
TIMEOUT_TCP = 60.0
TIMEOUT_IP = 30.0
TIMEOUT_ICMP = 5.0
TIMEOUT_ARP = 5.0
TIMEOUT_OTHER = 30.0


def sequence_after(first: int, second: int) -> bool:
    """Tell whether TCP sequence number ``first`` lies after ``second`` (modulo 2**32)."""
    return 0 < (first - second) % SEQUENCE_SPACE < HALF_SEQUENCE_SPACE


class Direction:
    """Per-direction counters of the current record, plus TCP sequence tracking."""

    __slots__ = ("pkts", "bytes", "appbytes", "ttl", "tos", "user", "tcp_flags", "next_seq",
                 "syn_seq", "retransmitted")

    def __init__(self) -> None:
        self.pkts = 0
        self.bytes = 0
        self.appbytes = 0
        self.ttl = 0
        self.tos = 0
        self.user = bytearray()
        self.tcp_flags = 0
        self.next_seq: int | None = None
        self.syn_seq: int | None = None
        self.retransmitted = False

    def start_record(self) -> None:
        self.pkts = 0
        self.bytes = 0
        self.appbytes = 0
        self.user = bytearray()

    def track_sequence(self, flags: int, seq: int, payload_len: int) -> None:
        """Mark a retransmission: a repeated SYN, or payload that ends at or before data seen.

        NOTE: argus 3.0.8 flags fewer data retransmissions than this rule does (it left
        a server's repeated 714-byte segment unflagged), so flgs column 4 can differ.
        """
        if flags & TcpFlag.SYN:
            if self.syn_seq == seq:
                self.retransmitted = True
            self.syn_seq = seq
            self.next_seq = (seq + 1) % SEQUENCE_SPACE
            return
        if payload_len <= 0:
            return
        end = (seq + payload_len) % SEQUENCE_SPACE
        if payload_len == 1 and end == self.next_seq:
            return  # a keepalive probe repeats the last byte on purpose
        if self.next_seq is not None and not sequence_after(end, self.next_seq):
            self.retransmitted = True
            return
        self.next_seq = end


class Flow:
    """A bidirectional flow between the two sides of its key.

    ``src_is_a`` is true when side A initiated the flow.
    """

    __slots__ = ("key", "etype", "proto", "ip_version", "src_is_a", "src", "dst", "smac", "dmac",
                 "vlan", "encapsulation", "stime", "ltime", "first_record", "midstream",
                 "fragments", "icmp_mapped", "icmp_state", "syn_ack_seen", "established",
                 "record_has_packets", "icmp_type", "icmp_code", "timeout", "reverse_pending",
                 "transactional")

    def __init__(self, key: bytes, etype: int, proto: int, ip_version: int, src_is_a: bool) -> None:
        self.key = key
        self.etype = etype
        self.proto = proto
        self.ip_version = ip_version
        self.src_is_a = src_is_a
        self.src = Direction()
        self.dst = Direction()
        self.smac = b""
        self.dmac = b""
        self.vlan: int | None = None
        self.encapsulation = 0
        self.stime = 0
        self.ltime = 0
        self.first_record = True
        self.midstream = False
        self.fragments = False
        self.icmp_mapped = ""
        self.icmp_state = ""
        self.syn_ack_seen = False
        self.established = False
        self.record_has_packets = False
        self.icmp_type = 0
        self.icmp_code = 0
        self.timeout = flow_timeout(etype, proto)
        self.reverse_pending = False
        self.transactional = False

    def reverse(self) -> None:
        """Swap source and destination: a flow first seen by its SYN-ACK got an answer."""
        self.src_is_a = not self.src_is_a
        self.src, self.dst = self.dst, self.src
        self.smac, self.dmac = self.dmac, self.smac
        self.reverse_pending = False

    def next_transaction(self, role: int) -> bool:
        """Tell whether a packet starts a new request/response transaction on a DNS flow.

        argus 3.0.8 ends a UDP flow on port 53 when its initiator sends again after
        a response, so every DNS query on a reused port gets its own record.
        """
        from_src = (role == 0) == self.src_is_a
        return self.transactional and from_src and self.dst.pkts > 0

    @property
    def is_tcp(self) -> bool:
        return self.proto == P_TCP and self.etype in (ET_IPV4, ET_IPV6)

    @property
    def closed(self) -> bool:
        """Tell whether a TCP flow has seen a reset or a FIN."""
        flags = self.src.tcp_flags | self.dst.tcp_flags
        return bool(flags & (TcpFlag.RST | TcpFlag.FIN))

    def start_record(self, ts_us: int) -> None:
        self.src.start_record()
        self.dst.start_record()
        self.stime = ts_us
        self.ltime = ts_us
        self.record_has_packets = False

    def update_tcp(self, side: Direction, from_src: bool, flags: int, seq: int,
                   payload: int) -> None:
        side.tcp_flags |= flags
        side.track_sequence(flags, seq, payload)
        if flags & TcpFlag.SYN and flags & TcpFlag.ACK:
            self.syn_ack_seen = True
        elif from_src and flags & TcpFlag.ACK and self.syn_ack_seen:
            self.established = True

    def state(self) -> str:
        """Return argus's state mnemonic for the current record."""
        if self.icmp_state:
            return self.icmp_state
        if self.is_tcp:
            return self.tcp_state()
        if self.proto in (P_ICMP, P_ICMPV6) and self.etype in (ET_IPV4, ET_IPV6):
            return names.icmp_state(self.icmp_type, self.icmp_code, self.ip_version)
        if self.src.pkts and self.dst.pkts:
            return "CON"
        if self.src.pkts:
            return "INT" if self.first_record else "REQ"
        return "RSP"

    def tcp_state(self) -> str:
        flags = self.src.tcp_flags | self.dst.tcp_flags
        if flags & TcpFlag.RST:
            return "RST"
        if flags & TcpFlag.FIN:
            return "FIN"
        if self.established or self.midstream:
            return "CON"
        if self.syn_ack_seen:
            return "ACC"
        if self.src.tcp_flags & TcpFlag.SYN:
            return "REQ"
        return "CON" if self.src.pkts and self.dst.pkts else "INT"

    def direction(self) -> str:
        """Return the dir field: who carried packets, and whether the initiator is certain."""
        if self.etype == ET_ARP:
            return "who"
        both = self.src.pkts and self.dst.pkts
        if self.is_tcp:
            if self.midstream:
                return "<?>" if both else ("?>" if self.src.pkts else "<?")
            return "->"
        if both:
            return "<->"
        return "->" if self.src.pkts else "<-"

    def flgs(self) -> str:
        retransmitted = names.retransmission_letter(self.src.retransmitted, self.dst.retransmitted)
        return names.flgs_text(self.encapsulation, self.icmp_mapped, retransmitted, self.fragments)


def flow_timeout(etype: int, proto: int) -> float:
    """Return the idle timeout in seconds for a flow of this ethertype and IP protocol."""
    if etype == ET_ARP:
        return TIMEOUT_ARP
    if etype not in (ET_IPV4, ET_IPV6):
        return TIMEOUT_OTHER
    if proto == P_TCP:
        return TIMEOUT_TCP
    if proto in (P_ICMP, P_ICMPV6):
        return TIMEOUT_ICMP
    return TIMEOUT_IP
