"""Find the highest packet rate that live capture takes with zero drops, for wirewatch and argus.

Usage (root): python bench/bench_live.py [PCAP] [--rates 25000,50000,...] [--seconds 3]

Makes two network namespaces joined by a veth pair, then for each rate replays PCAP from
the sender end with tcpreplay (looped to last about --seconds) while one receiver
captures on the other end: ``argus -i`` and then wirewatch's ring capture and flow meter
(the code behind ``wirewatch capture -i``). A receiver has zero drops when it counts every
packet sent. Prints one line per rate and receiver: packets counted, kernel drops (wirewatch),
receiver CPU seconds and packets per receiver CPU second. Namespaces are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / ".." / "shared" / "corpus"
DEFAULT_PCAP = CORPUS / "big-synthetic-mix.pcap"
DEFAULT_RATES = "25000,50000,100000,200000,400000,0"  # 0 = tcpreplay --topspeed
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def receive(interface: str, output: Path) -> None:
    """Receiver process: capture until SIGTERM, then write counters and CPU time as JSON."""
    sys.path.insert(0, str(REPO))
    from appliance.archive import RecordWriter
    from appliance.flows import CaptureSettings, FlowMeter
    from appliance.live import LiveSettings
    from appliance.live.run import capture_interface

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    start: list[float] = []

    def ready() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start.append(usage.ru_utime + usage.ru_stime)
        print("ready", flush=True)

    settings = CaptureSettings(status_interval=60, user_data_len=128, appbytes=True)
    # Warm the compiled code first, so that compiling is not counted as capture CPU.
    from appliance.capture import flows_from_file

    for _ in flows_from_file(CORPUS / "http-wikipedia.pcap", settings):
        pass
    meter = FlowMeter(settings)
    with RecordWriter(output.with_suffix(".arrows")) as writer:
        counters = capture_interface(LiveSettings(interface), meter, writer, stop, ready)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters["cpu"] = usage.ru_utime + usage.ru_stime - start[0]
    output.write_text(json.dumps(counters))


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def argus_packets(path: Path) -> int:
    text = subprocess.run(["ra", "-r", str(path), "-n", "-s", "pkts", "-L", "-1"],
                          capture_output=True, text=True, check=True).stdout
    return sum(int(line) for line in text.split() if line.isdigit())


class Bench:
    def __init__(self, pcap: Path, seconds: float) -> None:
        tag = secrets.token_hex(3)
        self.tx, self.rx = f"ww-bench-{tag}-tx", f"ww-bench-{tag}-rx"
        self.tx_if, self.rx_if = f"wwb{tag}a", f"wwb{tag}b"
        self.pcap = pcap
        self.seconds = seconds
        self.work = Path(tempfile.mkdtemp(prefix="wirewatch-bench-live-"))
        self.frames = self._count_frames()

    def _count_frames(self) -> int:
        sys.path.insert(0, str(REPO))
        from appliance.pcapio import read_packets

        return sum(len(batch) for batch in read_packets(self.pcap))

    def setup(self) -> None:
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.tx)
        run("ip", "netns", "add", self.rx)
        run("ip", "link", "add", self.tx_if, "netns", self.tx, "mtu", "9000", "type", "veth",
            "peer", "name", self.rx_if, "netns", self.rx, "mtu", "9000")
        for ns, interface in ((self.tx, self.tx_if), (self.rx, self.rx_if)):
            run("ip", "netns", "exec", ns, "sysctl", "-qw",
                f"net.ipv6.conf.{interface}.disable_ipv6=1")
            run("ip", "-n", ns, "link", "set", interface, "up")

    def teardown(self) -> None:
        for ns in (self.tx, self.rx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def replay(self, rate: int) -> tuple[int, float]:
        loops = max(1, round(rate * self.seconds / self.frames)) if rate else 4
        speed = [f"--pps={rate}"] if rate else ["--topspeed"]
        started = time.monotonic()
        subprocess.run(["ip", "netns", "exec", self.tx, "tcpreplay", "-q", "-i", self.tx_if,
                        *speed, f"--loop={loops}", str(self.pcap)], check=True,
                       capture_output=True)
        return loops * self.frames, time.monotonic() - started

    def wirewatch(self, rate: int) -> dict[str, float]:
        output = self.work / f"wirewatch-{rate}.json"
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", self.rx, sys.executable, __file__, "--receive", self.rx_if,
             str(output)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert receiver.stdout.readline().strip() == "ready"
        sent, elapsed = self.replay(rate)
        time.sleep(0.5)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(60)
        counters = json.loads(output.read_text())
        return {"sent": sent, "seconds": elapsed, "counted": counters["packets"],
                "drops": counters["kernel_drops"], "cpu": counters["cpu"]}

    def argus(self, rate: int) -> dict[str, float]:
        output = self.work / f"argus-{rate}.argus"
        receiver = subprocess.Popen(["ip", "netns", "exec", self.rx, "argus", "-X", "-i",
                                     self.rx_if, "-w", str(output)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        before = process_cpu(receiver.pid)
        sent, elapsed = self.replay(rate)
        time.sleep(0.5)
        cpu = process_cpu(receiver.pid) - before
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(60)
        return {"sent": sent, "seconds": elapsed, "counted": argus_packets(output),
                "drops": -1, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcap", nargs="?", type=Path, default=DEFAULT_PCAP)
    parser.add_argument("--rates", default=DEFAULT_RATES)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--receive", nargs=2, metavar=("IFACE", "OUTPUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.receive[0], Path(args.receive[1]))
        return 0
    bench = Bench(args.pcap.resolve(), args.seconds)
    baseline_dir = bench.work / "offline.argus"
    subprocess.run(["argus", "-X", "-r", str(bench.pcap), "-w", str(baseline_dir)], check=True)
    per_copy = argus_packets(baseline_dir)
    bench.setup()
    try:
        print(f"{bench.pcap.name}: {bench.frames} frames; argus counts {per_copy} offline")
        print("receiver   rate_asked  sent_pps   sent  counted  drops  cpu_s  pkts/cpu_s")
        for rate in (int(r) for r in args.rates.split(",")):
            for name in ("argus", "wirewatch"):
                result = getattr(bench, name)(rate)
                expected = result["sent"] * per_copy // bench.frames if name == "argus" \
                    else result["sent"]
                lost = expected - result["counted"]
                print(f"{name:10} {rate or 'top':>10} {result['sent'] / result['seconds']:9.0f} "
                      f"{result['sent']:7d} {result['counted']:8d} "
                      f"{lost if name == 'argus' else result['drops']:6d} {result['cpu']:6.2f} "
                      f"{result['counted'] / max(result['cpu'], 1e-9):11.0f}", flush=True)
    finally:
        bench.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
