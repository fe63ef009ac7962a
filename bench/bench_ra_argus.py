"""Time argus 3.0.8's ra clients against the Wirewatch ra commands on the same million flows.

Usage: python bench/bench_ra_argus.py [--flows 1000000] [--runs 3] [--seed 7] [--keep DIR]

Steps:
1. Generate a classic pcap with NumPy: Ethernet/IPv4 frames between private
   addresses (clients in 10.0.0.0/8, servers in 172.16.0.0/12, DNS resolvers in
   192.168.0.0/24), every flow a distinct 5-tuple, in time order over 15 minutes.
   The mix is UDP request/response pairs (some unanswered), DNS queries and answers
   on port 53, and TCP connections (SYN, SYN-ACK, data both ways, FIN both ways,
   last ACK; a few refused with RST-ACK). Payload sizes vary, so byte counts differ.
   IPv4 header checksums are valid, TCP checksums are zero and UDP ones absent.
2. Meter it with both sensors:
       argus -X -F argus.conf -r CAP -w A.argus
       wirewatch capture -r CAP -w W.arrows -S 86400 -U 128 -A
3. Time each client command pair, --runs times interleaved, on these records and
   on a 2-packet capture, which shows the fixed start-up cost. The commands are
   racluster -m saddr daddr, rasort -m bytes and ra - dst port 53. Each runs once
   writing records (-w FILE) and once printing default fields to /dev/null. The
   argus clients get -X (ignore /etc/ra.conf) and, when printing, -n (no reverse
   name lookups).

The Wirewatch sources are compiled to bytecode first, as an installed package is
(bench/bytecode.py). Each command runs as a direct child process; os.wait4 gives its user+system CPU
time and peak resident memory, time.perf_counter its wall time. The tables give
medians. The target is each Wirewatch command at least 5x faster (wall time) than
the argus client. The script always exits 0 because it is a benchmark; a failing
command is reported in the table with its exit status and error text.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bytecode import compile_sources  # noqa: E402

from appliance.archive import read_records  # noqa: E402

SHARED = ROOT / ".." / "shared"
ARGUS_CONF = SHARED / "oracle" / "argus.conf"
TINY_PCAP = SHARED / "corpus" / "dns-ptr.pcap"
WIREWATCH = Path(sys.executable).parent / "wirewatch"
ARGUS_TOOLS = ("argus", "ra", "racluster", "rasort")
TIME = "/usr/bin/time"
CHILD_ENV = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
SPEED_TARGET = 5.0

# Generated traffic.
CAPTURE_START = 1_733_313_600  # 2024-12-04 12:00:00 UTC
SPAN_SECONDS = 900
CLIENTS = 40_000
CLIENT_BASE = 0x0A010000  # 10.1.0.0
SERVERS = 60_000
SERVER_BASE = 0xAC100001  # 172.16.0.1
FAVOURITES = 12
SHARE_FAVOURITE = 0.7
RESOLVERS = 8
RESOLVER_BASE = 0xC0A80035  # 192.168.0.53
SHARE_DNS = 0.20
SHARE_TCP = 0.15
SHARE_UDP_UNANSWERED = 0.10
SHARE_TCP_REFUSED = 0.03
UDP_PORTS = np.array([123, 443, 161, 514, 1900, 5060, 3478, 51820], dtype=np.uint16)
TCP_PORTS = np.array([443, 80, 22, 25, 993, 8080], dtype=np.uint16)
DNS_NAMES = ("www.example.com", "mail.example.org", "api.example.net", "cdn.example.com",
             "ntp.example.net", "login.example.com", "time.example.org",
             "a-rather-long-host-name-for-the-benchmark.example.org")

# Frame layout.
PCAP_GLOBAL_HEADER = np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], dtype="<u4").tobytes()
ETHER_LEN = 14
IPV4_LEN = 20
UDP_LEN = 8
TCP_LEN = 20
ETHERTYPE_IPV4 = 0x0800
PROTO_TCP = 6
PROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CLIENT_MAC = bytes.fromhex("020000000001")
ROUTER_MAC = bytes.fromhex("020000000002")
#: One packet's pcap record header, Ethernet, IPv4 and a TCP header, or a UDP header
#: followed by the first 12 payload bytes (always zero there, since every UDP payload
#: is at least 12 bytes long). Every frame is at least this long, so rows never overlap.
ROW = np.dtype([
    ("ts_sec", "<u4"), ("ts_usec", "<u4"), ("incl_len", "<u4"), ("orig_len", "<u4"),
    ("eth_dst", "V6"), ("eth_src", "V6"), ("ethertype", ">u2"),
    ("ver_ihl", "u1"), ("tos", "u1"), ("total_len", ">u2"), ("ip_id", ">u2"),
    ("frag", ">u2"), ("ttl", "u1"), ("proto", "u1"), ("ip_csum", ">u2"),
    ("saddr", ">u4"), ("daddr", ">u4"),
    ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"),
    ("tcp_offset", "u1"), ("tcp_flags", "u1"), ("window", ">u2"), ("tcp_csum", ">u2"),
    ("urgent", ">u2"),
])
RECORD_HEADER_LEN = 16
IP_HEADER_START = RECORD_HEADER_LEN + ETHER_LEN
L4_START = IP_HEADER_START + IPV4_LEN
WRITE_CHUNK = 131_072


@dataclass
class Packets:
    """Column arrays of generated packets, one entry per packet."""

    time_us: list[np.ndarray] = field(default_factory=list)
    saddr: list[np.ndarray] = field(default_factory=list)
    daddr: list[np.ndarray] = field(default_factory=list)
    sport: list[np.ndarray] = field(default_factory=list)
    dport: list[np.ndarray] = field(default_factory=list)
    proto: list[np.ndarray] = field(default_factory=list)
    flags: list[np.ndarray] = field(default_factory=list)
    seq: list[np.ndarray] = field(default_factory=list)
    ack: list[np.ndarray] = field(default_factory=list)
    payload: list[np.ndarray] = field(default_factory=list)
    ttl: list[np.ndarray] = field(default_factory=list)
    #: DNS message template index (see dns_templates), -1 for other payloads.
    dns: list[np.ndarray] = field(default_factory=list)
    dns_id: list[np.ndarray] = field(default_factory=list)

    def add(self, **columns: np.ndarray | int) -> None:
        size = len(columns["time_us"])
        for name, value in columns.items():
            getattr(self, name).append(np.broadcast_to(value, size))

    def concatenate(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(getattr(self, name)) for name in self.__dataclass_fields__}


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def dns_templates() -> list[bytes]:
    """Build DNS messages with ID 0: query k at index 2k, its answer (one A record) at 2k+1."""
    messages = []
    for number, name in enumerate(DNS_NAMES):
        question = _qname(name) + b"\x00\x01\x00\x01"  # type A, class IN
        answer = (b"\xc0\x0c\x00\x01\x00\x01" + (300).to_bytes(4, "big") + b"\x00\x04"
                  + bytes([192, 0, 2, 10 + number]))
        messages.append(b"\0\0\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question)
        messages.append(b"\0\0\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer)
    return messages


def _sizes(rng: np.random.Generator, count: int, median: float, low: int, high: int) -> np.ndarray:
    """Draw log-normal payload sizes in bytes, clipped to [low, high]."""
    return np.clip(rng.lognormal(np.log(median), 0.8, count), low, high).astype(np.int64)


def _round_trip_us(rng: np.random.Generator, count: int) -> np.ndarray:
    return 200 + rng.exponential(20_000, count).astype(np.int64)


def _servers(rng: np.random.Generator, client: np.ndarray) -> np.ndarray:
    """Pick a server number for each flow's client.

    Most flows go to one of the client's own FAVOURITES servers, chosen with a
    geometric distribution. The rest go to any server, and u**3 skews that choice
    towards low server numbers, so many clients share the popular ones.
    """
    count = len(client)
    favourite = np.minimum(rng.geometric(0.35, count), FAVOURITES)
    own = (client * 7_919 + favourite * 104_729) % SERVERS
    shared = (SERVERS * rng.random(count) ** 3).astype(np.int64)
    return np.where(rng.random(count) < SHARE_FAVOURITE, own, shared)


def plan_flows(flows: int, rng: np.random.Generator) -> Packets:
    """Draw every flow's endpoints and start time and return all of their packets.

    Flow f gets client f % CLIENTS and a source port that is a bijection of
    f // CLIENTS for that client, so no two flows share a 5-tuple.
    """
    ids = rng.permutation(flows)
    client = ids % CLIENTS
    sport = (1024 + ((ids // CLIENTS) * 977 + client * 13) % 60_000).astype(np.uint16)
    caddr = (CLIENT_BASE + client).astype(np.uint32)
    saddr_server = (SERVER_BASE + _servers(rng, client)).astype(np.uint32)
    start = rng.integers(0, SPAN_SECONDS * 1_000_000, flows)
    kind = rng.random(flows)
    packets = Packets()
    dns = kind < SHARE_DNS
    tcp = (kind >= SHARE_DNS) & (kind < SHARE_DNS + SHARE_TCP)
    udp = kind >= SHARE_DNS + SHARE_TCP
    _add_dns(packets, rng, caddr[dns], sport[dns], start[dns])
    _add_udp(packets, rng, caddr[udp], sport[udp], saddr_server[udp], start[udp])
    _add_tcp(packets, rng, caddr[tcp], sport[tcp], saddr_server[tcp], start[tcp])
    return packets


def _add_dns(packets: Packets, rng: np.random.Generator, client: np.ndarray,
             sport: np.ndarray, start: np.ndarray) -> None:
    count = len(client)
    resolver = (RESOLVER_BASE + rng.integers(0, RESOLVERS, count)).astype(np.uint32)
    name = rng.integers(0, len(DNS_NAMES), count)
    message_id = rng.integers(0, 65536, count).astype(np.uint16)
    lengths = np.array([len(message) for message in dns_templates()])
    reply = start + _round_trip_us(rng, count)
    common = {"proto": PROTO_UDP, "flags": 0, "seq": 0, "ack": 0, "dns_id": message_id}
    packets.add(time_us=start, saddr=client, daddr=resolver, sport=sport, dport=53,
                payload=lengths[2 * name], ttl=64, dns=2 * name, **common)
    packets.add(time_us=reply, saddr=resolver, daddr=client, sport=53, dport=sport,
                payload=lengths[2 * name + 1], ttl=63, dns=2 * name + 1, **common)


def _add_udp(packets: Packets, rng: np.random.Generator, client: np.ndarray,
             sport: np.ndarray, server: np.ndarray, start: np.ndarray) -> None:
    count = len(client)
    dport = UDP_PORTS[rng.integers(0, len(UDP_PORTS), count)]
    common = {"proto": PROTO_UDP, "flags": 0, "seq": 0, "ack": 0, "dns": -1, "dns_id": 0}
    packets.add(time_us=start, saddr=client, daddr=server, sport=sport, dport=dport,
                payload=_sizes(rng, count, 60, 16, 600), ttl=64, **common)
    answered = rng.random(count) >= SHARE_UDP_UNANSWERED
    count = int(answered.sum())
    packets.add(time_us=start[answered] + _round_trip_us(rng, count), saddr=server[answered],
                daddr=client[answered], sport=dport[answered], dport=sport[answered],
                payload=_sizes(rng, count, 150, 16, 1400), ttl=57, **common)


def _add_tcp(packets: Packets, rng: np.random.Generator, client: np.ndarray,
             sport: np.ndarray, server: np.ndarray, start: np.ndarray) -> None:
    """Add connections: SYN, SYN-ACK, request, response, FIN-ACK each way, last ACK.

    A refused connection is a SYN followed by an RST-ACK from the server.
    """
    count = len(client)
    dport = TCP_PORTS[rng.integers(0, len(TCP_PORTS), count)]
    rtt = _round_trip_us(rng, count)
    client_isn = rng.integers(0, 2**32, count, dtype=np.uint64)
    server_isn = rng.integers(0, 2**32, count, dtype=np.uint64)
    request = _sizes(rng, count, 300, 40, 1400)
    response = _sizes(rng, count, 600, 60, 1400)
    refused = rng.random(count) < SHARE_TCP_REFUSED
    forward = {"saddr": client, "daddr": server, "sport": sport, "dport": dport, "ttl": 64}
    backward = {"saddr": server, "daddr": client, "sport": dport, "dport": sport, "ttl": 57}
    mask32 = np.uint64(0xFFFFFFFF)

    def seq(isn: np.ndarray, offset: np.ndarray | int) -> np.ndarray:
        return ((isn + np.uint64(1) + np.asarray(offset, dtype=np.uint64)) & mask32).astype(
            np.uint32)

    # (time offset, direction, flags, seq, ack, payload) per packet of a full connection.
    steps = [
        (0, forward, TCP_SYN, seq(client_isn, -1 % 2**32), 0, 0),
        (rtt, backward, TCP_SYN | TCP_ACK, seq(server_isn, -1 % 2**32), seq(client_isn, 0), 0),
        (rtt + 150, forward, TCP_PSH | TCP_ACK, seq(client_isn, 0), seq(server_isn, 0), request),
        (2 * rtt + 5_000, backward, TCP_PSH | TCP_ACK, seq(server_isn, 0),
         seq(client_isn, request), response),
        (2 * rtt + 6_000, forward, TCP_FIN | TCP_ACK, seq(client_isn, request),
         seq(server_isn, response), 0),
        (3 * rtt + 6_000, backward, TCP_FIN | TCP_ACK, seq(server_isn, response),
         seq(client_isn, request + 1), 0),
        (3 * rtt + 6_100, forward, TCP_ACK, seq(client_isn, request + 1),
         seq(server_isn, response + 1), 0),
    ]
    for step, (offset, direction, flags, sequence, ack, payload) in enumerate(steps):
        keep = ~refused if step > 0 else np.ones(count, dtype=bool)
        columns = {name: np.broadcast_to(value, count)[keep] for name, value in direction.items()}
        packets.add(time_us=(start + offset)[keep], proto=PROTO_TCP, flags=flags,
                    seq=np.broadcast_to(sequence, count)[keep],
                    ack=np.broadcast_to(ack, count)[keep],
                    payload=np.broadcast_to(payload, count)[keep], dns=-1, dns_id=0, **columns)
    packets.add(time_us=start[refused] + rtt[refused], saddr=server[refused],
                daddr=client[refused], sport=dport[refused], dport=sport[refused], ttl=57,
                proto=PROTO_TCP, flags=TCP_RST | TCP_ACK, seq=0,
                ack=seq(client_isn, 0)[refused], payload=0, dns=-1, dns_id=0)


def _ipv4_checksums(rows: np.ndarray) -> np.ndarray:
    """Return the IPv4 header checksum of every row (the checksum field must be zero)."""
    header = rows.view(np.uint8).reshape(len(rows), -1)[:, IP_HEADER_START:L4_START]
    words = header[:, 0::2].astype(np.uint32) << 8 | header[:, 1::2]
    total = words.sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


def _fill_rows(columns: dict[str, np.ndarray], order: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Build the fixed-size header rows of the packets ``order`` selects."""
    rows = np.zeros(len(order), dtype=ROW)
    time_us = CAPTURE_START * 1_000_000 + columns["time_us"][order]
    rows["ts_sec"] = time_us // 1_000_000
    rows["ts_usec"] = time_us % 1_000_000
    rows["incl_len"] = frame
    rows["orig_len"] = frame

    rows["eth_dst"] = np.void(ROUTER_MAC)
    rows["eth_src"] = np.void(CLIENT_MAC)
    rows["ethertype"] = ETHERTYPE_IPV4

    rows["ver_ihl"] = 0x45
    rows["total_len"] = frame - ETHER_LEN
    rows["ip_id"] = order.astype(np.uint16)
    rows["frag"] = 0x4000  # don't fragment
    rows["ttl"] = columns["ttl"][order]
    proto = columns["proto"][order]
    rows["proto"] = proto
    rows["saddr"] = columns["saddr"][order]
    rows["daddr"] = columns["daddr"][order]
    rows["sport"] = columns["sport"][order]
    rows["dport"] = columns["dport"][order]

    tcp = proto == PROTO_TCP
    udp_length = (frame - ETHER_LEN - IPV4_LEN).astype(np.uint32)
    # For UDP the seq field's bytes contain the UDP length and a zero (absent) checksum.
    rows["seq"] = np.where(tcp, columns["seq"][order], udp_length << 16)
    rows["ack"] = np.where(tcp, columns["ack"][order], 0)
    rows["tcp_offset"] = np.where(tcp, 0x50, 0)
    rows["tcp_flags"] = np.where(tcp, columns["flags"][order], 0)
    rows["window"] = np.where(tcp, 64_240, 0)
    rows["ip_csum"] = _ipv4_checksums(rows)
    return rows


def _scatter(buffer: np.ndarray, starts: np.ndarray, rows: np.ndarray) -> None:
    """Copy row i (a 2-D uint8 array) to buffer[starts[i]:starts[i] + row width]."""
    buffer[starts[:, None] + np.arange(rows.shape[1])] = rows


def write_pcap(columns: dict[str, np.ndarray], path: Path) -> int:
    """Write the packets in time order as a classic pcap file; return the packet count."""
    order = np.argsort(columns["time_us"], kind="stable")
    header = np.where(columns["proto"][order] == PROTO_TCP, TCP_LEN, UDP_LEN)
    frame = (ETHER_LEN + IPV4_LEN + header + columns["payload"][order]).astype(np.int64)
    ends = np.cumsum(RECORD_HEADER_LEN + frame)
    starts = ends - RECORD_HEADER_LEN - frame
    buffer = np.zeros(ends[-1], dtype=np.uint8)
    for first in range(0, len(order), WRITE_CHUNK):
        part = slice(first, first + WRITE_CHUNK)
        rows = _fill_rows(columns, order[part], frame[part])
        _scatter(buffer, starts[part], rows.view(np.uint8).reshape(len(rows), -1))
    dns = columns["dns"][order]
    dns_id = columns["dns_id"][order].astype(">u2").view(np.uint8).reshape(-1, 2)
    for number, message in enumerate(dns_templates()):
        chosen = np.flatnonzero(dns == number)
        payload = np.tile(np.frombuffer(message, dtype=np.uint8), (len(chosen), 1))
        payload[:, :2] = dns_id[chosen]
        _scatter(buffer, starts[chosen] + L4_START + UDP_LEN, payload)
    with path.open("wb") as out:
        out.write(PCAP_GLOBAL_HEADER)
        out.write(buffer.data)
    return len(order)


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mib: float
    status: int
    error: str


def run_child(command: list[str], stdout_path: str = os.devnull) -> Run:
    """Run a command under /usr/bin/time; return its wall and CPU seconds and peak RSS.

    The peak RSS comes from /usr/bin/time (%M) because the rusage of a child forked
    straight from this process also counts the memory it shared with this process
    before exec. CPU time is the rusage of /usr/bin/time, which includes the command.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        with open(stdout_path, "wb") as stdout:
            start = time.perf_counter()
            process = subprocess.Popen([TIME, "-f", "%M", "-o", report.name, *command],
                                       stdout=stdout, stderr=subprocess.PIPE, env=CHILD_ENV)
            errors = process.stderr.read() if process.stderr else b""
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.stderr:
            process.stderr.close()
        lines = report.read().split()
    rss_kib = float(lines[-1]) if lines and lines[-1].isdigit() else float("nan")
    return Run(wall, usage.ru_utime + usage.ru_stime, rss_kib / 1024, process.returncode,
               errors.decode(errors="replace").strip()[-600:])


def count_lines(command: list[str]) -> int:
    """Run a command and count the lines it prints."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=CHILD_ENV)
    lines = 0
    assert process.stdout is not None
    while chunk := process.stdout.read(1 << 20):
        lines += chunk.count(b"\n")
    process.wait()
    return lines


def count_argus_records(path: Path) -> int:
    """Count the flow records of an argus file (ra -X skips management records)."""
    return count_lines(["ra", "-X", "-n", "-L", "-1", "-s", "proto", "-r", str(path)])


def count_wirewatch_records(path: Path) -> int:
    return read_records(path).num_rows


@dataclass
class Pair:
    """One measured command as argus and as Wirewatch run it."""

    name: str
    argus: list[str]
    wirewatch: list[str]
    #: Output file each side writes (None when it prints to /dev/null).
    argus_out: Path | None = None
    wirewatch_out: Path | None = None
    runs: dict[str, list[Run]] = field(default_factory=lambda: {"argus": [], "wirewatch": []})

    def run_once(self, wirewatch_first: bool) -> None:
        sides = ["wirewatch", "argus"] if wirewatch_first else ["argus", "wirewatch"]
        for side in sides:
            output = self.argus_out if side == "argus" else self.wirewatch_out
            if output is not None:
                output.unlink(missing_ok=True)  # ra -w appends to an existing file
            self.runs[side].append(run_child(getattr(self, side)))


def make_pairs(argus_in: Path, wirewatch_in: Path, work: Path, tag: str) -> list[Pair]:
    """Build the six command pairs on one argus file and the matching Wirewatch file."""
    ww = str(WIREWATCH)
    a_in, w_in = str(argus_in), str(wirewatch_in)
    analyses = [
        ("racluster -m saddr daddr", ["racluster"], ["-m", "saddr", "daddr"], []),
        ("rasort -m bytes", ["rasort"], ["-m", "bytes"], []),
        ("ra - dst port 53", ["ra"], [], ["-", "dst", "port", "53"]),
    ]
    pairs = []
    for name, tool, keys, tail in analyses:
        stem = f"{tag}-{tool[0]}"
        a_out, w_out = work / f"{stem}.argus", work / f"{stem}.arrows"
        pairs.append(Pair(
            f"{name} -w FILE",
            [*tool, "-X", "-r", a_in, *keys, "-w", str(a_out), *tail],
            [ww, *tool, "-r", w_in, *keys, "-w", str(w_out), *tail],
            a_out, w_out))
    for name, tool, keys, tail in analyses:
        pairs.append(Pair(
            f"{name} > /dev/null",
            [*tool, "-X", "-n", "-r", a_in, *keys, *tail],
            [ww, *tool, "-n", "-r", w_in, *keys, *tail]))
    return pairs


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def median(runs: list[Run], attribute: str) -> float:
    return statistics.median(getattr(run, attribute) for run in runs)


def failure(runs: list[Run]) -> str | None:
    bad = [run for run in runs if run.status != 0]
    if not bad:
        return None
    return f"exit status {bad[-1].status}: {bad[-1].error or '(no stderr)'}"


def record_counts(pair: Pair, count_printed: bool) -> tuple[str, str]:
    """Count the records each side wrote, or the lines it prints (one more, untimed run)."""
    counts = []
    for side in ("argus", "wirewatch"):
        if failure(pair.runs[side]):
            counts.append("failed")
            continue
        output = pair.argus_out if side == "argus" else pair.wirewatch_out
        if output is None and not count_printed:
            counts.append("not counted")
        elif output is None:
            counts.append(f"{count_lines(getattr(pair, side)):,} lines")
        elif side == "argus":
            counts.append(f"{count_argus_records(output):,}")
        else:
            counts.append(f"{count_wirewatch_records(output):,}")
    return counts[0], counts[1]


def _ratio(argus: float, wirewatch: float) -> str:
    return f"{argus / wirewatch:.2f}x" if wirewatch > 0 else "-"


def print_table(pairs: list[Pair], judge: bool, count_printed: bool = False) -> list[str]:
    """Print one Markdown table row per pair; return the failure messages.

    With ``judge``, the table also shows whether the 5x target is met and how many
    records each side wrote. With ``count_printed``, an extra untimed run of each
    printing command counts the lines it prints.
    """
    problems = []
    extra = " 5x target | records out argus | records out wirewatch |" if judge else ""
    print(f"| command | argus wall s | wirewatch wall s | argus/wirewatch (wall) |{extra} "
          f"argus CPU s | wirewatch CPU s | argus/wirewatch (CPU) | "
          f"peak RSS argus MiB | peak RSS wirewatch MiB |")
    print("|---" * (9 + 3 * judge) + "|")
    for pair in pairs:
        broken = {side: failure(pair.runs[side]) for side in ("argus", "wirewatch")}
        for side, message in broken.items():
            if message:
                problems.append(f"{side} `{' '.join(getattr(pair, side))}` failed: {message}")
        a_wall, w_wall = median(pair.runs["argus"], "wall"), median(pair.runs["wirewatch"], "wall")
        a_cpu, w_cpu = median(pair.runs["argus"], "cpu"), median(pair.runs["wirewatch"], "cpu")
        cells = [pair.name, f"{a_wall:.2f}", f"{w_wall:.2f}", _ratio(a_wall, w_wall)]
        if judge:
            verdict = "met" if w_wall > 0 and a_wall / w_wall >= SPEED_TARGET else "NOT met"
            if any(broken.values()):
                verdict = "command failed"
            cells += [verdict, *record_counts(pair, count_printed)]
        cells += [f"{a_cpu:.2f}", f"{w_cpu:.2f}", _ratio(a_cpu, w_cpu),
                  f"{median(pair.runs['argus'], 'rss_mib'):.0f}",
                  f"{median(pair.runs['wirewatch'], 'rss_mib'):.0f}"]
        print("| " + " | ".join(cells) + " |")
    return problems


def print_without_startup(big: list[Pair], tiny: list[Pair]) -> None:
    """Print each side's time on the big input minus its time on the 2-packet input."""
    print("| command | argus wall s minus start-up | wirewatch wall s minus start-up | "
          "argus/wirewatch without start-up | wirewatch start-up share of its wall time |")
    print("|---|---|---|---|---|")
    for pair, small in zip(big, tiny, strict=True):
        runs = [*pair.runs.values(), *small.runs.values()]
        if any(failure(side_runs) for side_runs in runs):
            print(f"| {pair.name} | command failed | | | |")
            continue
        work = {}
        for side in ("argus", "wirewatch"):
            work[side] = median(pair.runs[side], "wall") - median(small.runs[side], "wall")
        startup = median(small.runs["wirewatch"], "wall")
        share = startup / median(pair.runs["wirewatch"], "wall")
        print(f"| {pair.name} | {work['argus']:.2f} | {work['wirewatch']:.2f} | "
              f"{_ratio(work['argus'], work['wirewatch'])} | {share:.0%} |")


def meter(capture: Path, work: Path, name: str) -> tuple[Path, Path, Run, Run]:
    """Run argus and wirewatch capture on one pcap; return both outputs and their runs."""
    argus_out, wirewatch_out = work / f"{name}.argus", work / f"{name}.arrows"
    argus_out.unlink(missing_ok=True)  # argus -w appends to an existing file
    wirewatch_out.unlink(missing_ok=True)
    argus_run = run_child(["argus", "-X", "-F", str(ARGUS_CONF), "-r", str(capture),
                           "-w", str(argus_out)])
    wirewatch_run = run_child([str(WIREWATCH), "capture", "-r", str(capture), "-w",
                               str(wirewatch_out), "-S", "86400", "-U", "128", "-A"])
    for tool, run in (("argus", argus_run), ("wirewatch capture", wirewatch_run)):
        if run.status != 0:
            raise SystemExit(f"{tool} failed on {capture} with exit status {run.status}: "
                             f"{run.error}")
    return argus_out, wirewatch_out, argus_run, wirewatch_run


def missing_tools() -> list[str]:
    missing = [tool for tool in ARGUS_TOOLS if shutil.which(tool) is None]
    if not Path(TIME).exists():
        missing.append(TIME)
    if not WIREWATCH.exists():
        missing.append(str(WIREWATCH))
    if not ARGUS_CONF.exists():
        missing.append(str(ARGUS_CONF))
    if not TINY_PCAP.exists():
        missing.append(str(TINY_PCAP))
    return missing


def benchmark(args: argparse.Namespace, work: Path) -> None:
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    capture = work / "flows.pcap"
    packets = write_pcap(plan_flows(args.flows, rng).concatenate(), capture)
    print(f"capture: {args.flows:,} distinct flows, {packets:,} packets, "
          f"{capture.stat().st_size / 1e6:.0f} MB, {SPAN_SECONDS} s of traffic, "
          f"generated in {time.perf_counter() - started:.1f} s")

    argus_file, wirewatch_file, argus_run, wirewatch_run = meter(capture, work, "flows")
    print(f"argus -X -F argus.conf -r CAP -w A.argus: {argus_run.wall:.1f} s wall, "
          f"{argus_run.cpu:.1f} s CPU, {argus_run.rss_mib:.0f} MiB, "
          f"{count_argus_records(argus_file):,} flow records")
    print(f"wirewatch capture -r CAP -w W.arrows -S 86400 -U 128 -A: {wirewatch_run.wall:.1f} s "
          f"wall, {wirewatch_run.cpu:.1f} s CPU, {wirewatch_run.rss_mib:.0f} MiB, "
          f"{count_wirewatch_records(wirewatch_file):,} flow records")
    tiny_argus, tiny_wirewatch, _, _ = meter(TINY_PCAP, work, "tiny")

    big = make_pairs(argus_file, wirewatch_file, work, "big")
    tiny = make_pairs(tiny_argus, tiny_wirewatch, work, "tiny")
    for pair in tiny:  # warm-up: page cache and compiled-code caches
        pair.run_once(wirewatch_first=False)
        pair.runs = {"argus": [], "wirewatch": []}
    for number in range(args.runs):
        for pair in big + tiny:
            pair.run_once(wirewatch_first=number % 2 == 1)

    print(f"load average (1, 5, 15 min) after: {load_average()}")
    print()
    print(f"### {args.flows:,} flows; {args.runs} interleaved runs per command; medians")
    print()
    problems = print_table(big, judge=True, count_printed=not args.no_line_count)
    print()
    print("### start-up: the same commands on a 2-packet capture (1 flow record)")
    print()
    problems += print_table(tiny, judge=False)
    print()
    print("### per-record work: flows-file time minus 2-packet time (medians)")
    print()
    print_without_startup(big, tiny)
    print()
    print("exact commands (flows files):")
    for pair in big:
        print(f"    argus:     {' '.join(pair.argus)}")
        print(f"    wirewatch: {' '.join(pair.wirewatch)}")
    print("    (the '> /dev/null' rows run with stdout on /dev/null; the '-w FILE' output "
          "is deleted before each run)")
    print()
    print("every run, wall seconds in run order (argus | wirewatch):")
    for pair in big:
        walls = {side: ", ".join(f"{run.wall:.2f}" for run in runs)
                 for side, runs in pair.runs.items()}
        print(f"    {pair.name}: {walls['argus']} | {walls['wirewatch']}")
    for problem in problems:
        print(f"FAILED: {problem}")
    print(f"total benchmark time: {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000,
                        help="distinct flows in the generated capture (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per command (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generator")
    parser.add_argument("--no-line-count", action="store_true",
                        help="skip the extra untimed runs that count the printed lines")
    parser.add_argument("--keep", type=Path,
                        help="write the capture and outputs to this directory and keep them")
    args = parser.parse_args()
    compile_sources()
    missing = missing_tools()
    if missing:
        print(f"skipped: not found: {', '.join(missing)}; install the argus-server and "
              f"argus-client packages and the wirewatch package in this venv")
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="wirewatch-ra-argus-"))
    try:
        benchmark(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
