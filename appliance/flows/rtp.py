"""RTP and RTCP recognition in UDP flows, as argus 3.0.8 does it.

argus looks at the first packet of a UDP flow whose ports are both 1024 or above
and outside AFS's 7000-7010. When the payload starts with a version 2 header, the
flow is RTCP if one of the payload's RTCP packets is a sender or receiver report,
and RTP otherwise. Later packets can take the RTP mark away again: a version 2 packet
whose SSRC is zero or differs from the one its direction sent before, or whose
extension header length does not fit the payload. A record then prints its protocol
as ``rtp`` or ``rtcp`` instead of ``udp`` (the ``appproto`` column).

After a direction's first RTP header, argus leaves the RTP headers out of its
application bytes and user data. It also counts the packets that the sequence numbers
skip (flgs column 4) and marks voice packets without whole frames as silence (flgs
column 5).

An RTP flow keeps its header state in its directions' TCP fields, which a UDP flow
does not use: ``seq`` contains the SSRC and ``ack`` the sequence number of the
direction's last RTP header (0: none yet), ``seq_base`` the record's skipped packets
and a ``tcp_status`` bit (RTP_SILENCE) its silence.

NOTE: observed with argus 3.0.8.2 on crafted flows, not found in its source: a record
prints ``rtp`` only when it is an IPv4 flow and one of its directions sent at least
RTP_MIN_PACKETS packets, while ``rtcp`` needs one packet and IPv4 or IPv6. An IPv6
RTP flow prints ``udp``, although argus leaves its RTP headers out of its application
bytes as for IPv4.
"""

from __future__ import annotations

import numpy as np

from appliance.decode.constants import ET_IPV4, ET_IPV6, FRAG_WHOLE, P_UDP
from appliance.decode.link import u16, u32
from appliance.flows import layout as f
from appliance.jit import njit

#: ``transport_state`` of a UDP flow.
RTP_NONE = 0  #: not RTP or RTCP, or no longer
RTP_PENDING = 1  #: the flow's first packet has not been looked at
RTP_FLOW = 2
RTCP_FLOW = 3

RTP_VERSION = 2
RTP_HEADER_LEN = 12
RTCP_HEADER_LEN = 8
RTCP_SENDER_REPORT = 200
RTCP_RECEIVER_REPORT = 201
#: Ports below this are never RTP (argus's "well-known" ports).
FIRST_RTP_PORT = 1024
#: AFS uses these ports with headers that look like RTP.
AFS_PORTS = (7000, 7010)
#: Packets one direction of a record must send before the record prints ``rtp``.
RTP_MIN_PACKETS = 5
#: Payload types whose packets argus expects to hold whole 10-byte frames: PCMU,
#: PCMA, G722, G728 and G729.
SILENCE_FRAMED_TYPES = (0, 8, 9, 15, 18)
PT_G723 = 4
#: ``tcp_status`` bit of an RTP direction that sent silence in the record.
RTP_SILENCE = 128


@njit(cache=True, inline="always")
def rtp_port(port):
    """Tell whether argus looks for RTP on a flow with this port."""
    return port >= FIRST_RTP_PORT and not (AFS_PORTS[0] <= port <= AFS_PORTS[1])


@njit(cache=True, inline="always")
def initial_state(etype, proto, sport, dport):
    """Return the ``transport_state`` of a new UDP flow with these key fields."""
    if ((etype == ET_IPV4 or etype == ET_IPV6) and proto == P_UDP and rtp_port(sport)
            and rtp_port(dport)):
        return RTP_PENDING
    return RTP_NONE


@njit(cache=True)
def has_report(buffer, start, caplen):
    """Tell whether the captured payload contains an RTCP sender or receiver report.

    The RTCP packets of a compound payload follow each other, each one 4 bytes plus
    its length field in 32-bit words long.
    """
    pos = 0
    while pos + RTCP_HEADER_LEN <= caplen:
        at = start + pos
        kind = buffer[at + 1]
        if buffer[at] >> 6 == RTP_VERSION and (
                kind == RTCP_SENDER_REPORT or kind == RTCP_RECEIVER_REPORT):
            return True
        size = u16(buffer, at + 2) * 4 + 4
        if size <= 4:
            return False
        pos += size
    return False


@njit(cache=True)
def first_kind(sides, slot, side, buffer, start, caplen):
    """Return the flow's transport_state (RTP_NONE, RTP_FLOW or RTCP_FLOW) from its first
    packet's payload."""
    if caplen < RTP_HEADER_LEN or buffer[start] >> 6 != RTP_VERSION:
        return RTP_NONE
    if has_report(buffer, start, caplen):
        return RTCP_FLOW
    remember(sides, slot, side, buffer, start)
    return RTP_FLOW


@njit(cache=True, inline="always")
def remember(sides, slot, side, buffer, start):
    """Store the SSRC and sequence number of a direction's latest RTP header."""
    sides[slot, side].seq = u32(buffer, start + 8)
    sides[slot, side].ack = u16(buffer, start + 2)


@njit(cache=True)
def extension_fits(buffer, start, caplen, length):
    """Tell whether an RTP header extension passes argus's test.

    The test reads the extension's length field in the machine's (little-endian) byte
    order and accepts values from the payload length minus 4 to the payload length.
    """
    if caplen >= RTP_HEADER_LEN + 4:
        declared = np.int64(buffer[start + 14]) | (np.int64(buffer[start + 15]) << 8)
    else:
        declared = np.int64(0)
    return length - 4 <= declared <= length


@njit(cache=True)
def header_length(buffer, start, caplen, length):
    """Return the bytes of RTP header (CSRC list and extension included) before the
    media, at most ``length``.

    As in argus, the CSRC list counts only when it is shorter than the payload. argus
    reads the extension length as bytes and subtracts it even beyond the payload. Here
    it counts 32-bit words, as RFC 3550 defines it, and stops at the payload's end.
    """
    csrc = (buffer[start] & 0x0F) * 4
    if csrc >= length:
        return 0
    skip = RTP_HEADER_LEN + csrc
    if buffer[start] & 0x10 and skip + 4 <= caplen:
        skip += 4 + u16(buffer, start + skip + 2) * 4
    return min(skip, length)


@njit(cache=True, inline="always")
def is_silence(payload_type, media):
    """Tell whether a packet is silence by argus's rule: a fixed-rate voice codec's
    packet without whole frames."""
    if payload_type in SILENCE_FRAMED_TYPES:
        return media == 0 or media % 10 != 0
    if payload_type == PT_G723:
        return media == 0 or media == 4
    return False


@njit(cache=True)
def count_sequence(sides, slot, side, seq):
    """Count the packets a direction's RTP sequence numbers skipped, as argus does.

    A number above the expected one adds the skipped count; one below the previous
    takes one back (a late packet), down to 0. The numbers compare without wrapping,
    so a wrap from 65535 to 0 counts nothing.
    """
    record = sides[slot, side]
    last = np.int64(record.ack)
    if last == seq - 1:
        return
    if seq < last:
        if record.seq_base > 0:
            record.seq_base -= 1
    elif seq > last:
        record.seq_base += seq - last - 1


@njit(cache=True)
def later_packet(sides, slot, side, buffer, start, caplen, length):
    """Follow a later packet of an RTP flow.

    Returns the RTP header bytes to leave out of the application bytes and user data,
    or -1 when the packet shows that the flow is not RTP.
    """
    if caplen < RTP_HEADER_LEN or buffer[start] >> 6 != RTP_VERSION:
        return 0  # argus skips packets without a version 2 header
    if sides[slot, side].ack == 0:
        remember(sides, slot, side, buffer, start)
        return 0
    ssrc = u32(buffer, start + 8)
    if ssrc == 0 or ssrc != sides[slot, side].seq:
        return -1
    if buffer[start] & 0x10 and not extension_fits(buffer, start, caplen, length):
        return -1
    count_sequence(sides, slot, side, u16(buffer, start + 2))
    remember(sides, slot, side, buffer, start)
    skip = header_length(buffer, start, caplen, length)
    if skip and is_silence(buffer[start + 1] & 0x7F, length - skip):
        sides[slot, side].tcp_status |= RTP_SILENCE
    return skip


@njit(cache=True)
def update_rtp(flows, sides, slot, side, buffer, start, caplen, length, fragment):
    """Follow a UDP flow's RTP state through one of its packets.

    Returns the RTP header bytes that argus leaves out of the packet's application
    bytes and user data (0 for the first packet of each direction).
    """
    state = flows[slot].transport_state
    if fragment != FRAG_WHOLE or length <= 0:
        if state == RTP_PENDING:
            flows[slot].transport_state = RTP_NONE
        return 0
    if state == RTP_PENDING:
        flows[slot].transport_state = first_kind(sides, slot, side, buffer, start, caplen)
        return 0
    if state != RTP_FLOW:
        return 0
    skip = later_packet(sides, slot, side, buffer, start, caplen, length)
    if skip < 0:
        flows[slot].transport_state = RTP_NONE
        return 0
    return skip


@njit(cache=True)
def start_record_rtp(flows, sides, slot):
    """Start a record's loss counts and silence marks afresh (argus keeps the rest)."""
    if flows[slot].proto == P_UDP and flows[slot].transport_state == RTP_FLOW:
        for side in range(2):
            sides[slot, side].seq_base = 0
            sides[slot, side].tcp_status &= ~RTP_SILENCE & 0xFF


@njit(cache=True)
def appproto_code(flows, sides, slot):
    """Return the APPPROTOS index of a record of this flow."""
    flow = flows[slot]
    if flow.proto != P_UDP or (flow.etype != ET_IPV4 and flow.etype != ET_IPV6):
        return f.APP_NONE
    if flow.transport_state == RTCP_FLOW:
        return f.APP_RTCP
    if (flow.transport_state == RTP_FLOW and flow.etype == ET_IPV4
            and max(sides[slot, 0].pkts, sides[slot, 1].pkts) >= RTP_MIN_PACKETS):
        return f.APP_RTP
    return f.APP_NONE
