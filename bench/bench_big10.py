"""Compare argus 3.0.8 and ``wirewatch capture`` on big10, in CPU time and peak memory.

Usage: python bench/bench_big10.py [--runs N] [--mix PCAP] [--keep DIR]

big10 is ten copies of big-synthetic-mix.pcap, copy k moved k * 200 s later,
concatenated (947,200 packets); it is built in a temporary directory. The two
commands then run interleaved, N times each:

    argus -X -F argus.conf -r big10 -w OUT
    wirewatch capture -r big10 -w OUT -S 86400 -U 128 -A

argus always runs for about one second of wall time however little work it
does, so the fair measure is CPU time (user + system of the child process). The
script prints the medians as a Markdown table: CPU seconds, packets per CPU
second, wall seconds and peak resident memory. It also times Wirewatch on a
2-packet file, which is its fixed start-up cost (Python, NumPy and pyarrow
imports, and numba's import and cache loading when the kernels compile with
numba's JIT), and shows the rate without it. Every frame of big10 is Ethernet,
so the whole run uses the compiled path. The kernels come from the prebuilt
module when it is current (see appliance/jit.py); set WIREWATCH_JIT=1 to time
numba's JIT instead. The script prints which one ran. The Wirewatch sources are
compiled to bytecode first, as an installed package is (bench/bytecode.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from bytecode import compile_sources

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
DEFAULT_MIX = SHARED / "corpus" / "big-synthetic-mix.pcap"
ARGUS_CONF = SHARED / "oracle" / "argus.conf"
WIREWATCH = Path(sys.executable).parent / "wirewatch"
COPIES = 10
SHIFT_SECONDS = 200
PCAP_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
LITTLE_ENDIAN_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")


def build_big10(mix: Path, target: Path) -> int:
    """Write ``COPIES`` time-shifted copies of a classic pcap file as one file; return packets."""
    data = mix.read_bytes()
    if data[:4] not in LITTLE_ENDIAN_MAGICS:
        raise SystemExit(f"{mix}: expected a little-endian classic pcap file")
    record = struct.Struct("<IIII")
    offsets = []
    pos = PCAP_HEADER_LEN
    while pos + RECORD_HEADER_LEN <= len(data):
        offsets.append(pos)
        pos += RECORD_HEADER_LEN + record.unpack_from(data, pos)[2]
    body = data[PCAP_HEADER_LEN:pos]
    seconds = [record.unpack_from(data, offset)[0] for offset in offsets]
    with target.open("wb") as out:
        out.write(data[:PCAP_HEADER_LEN])
        for copy in range(COPIES):
            shifted = bytearray(body)
            for offset, second in zip(offsets, seconds, strict=True):
                struct.pack_into("<I", shifted, offset - PCAP_HEADER_LEN,
                                 second + copy * SHIFT_SECONDS)
            out.write(shifted)
    return COPIES * len(offsets)


def run_child(command: list[str]) -> dict[str, float]:
    """Run a command; return its CPU seconds, wall seconds and peak RSS (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed with status {process.returncode}: {errors}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": wall,
            "rss": usage.ru_maxrss / 1024}


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def kernel_source() -> str:
    """Return where the child processes' compiled kernels come from (``jit.mode_reason()``)."""
    code = "from appliance import jit; print(jit.mode_reason())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--mix", type=Path, default=DEFAULT_MIX, help="the pcap to copy")
    parser.add_argument("--keep", type=Path, help="build big10 in this directory and keep it")
    args = parser.parse_args()
    compile_sources()
    if shutil.which("argus") is None:
        raise SystemExit("argus is not installed; install the argus-server package")

    work = args.keep or Path(tempfile.mkdtemp(prefix="wirewatch-big10-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        big10 = work / "big10.pcap"
        packets = build_big10(args.mix, big10)
        commands = {
            "argus 3.0.8": ["argus", "-X", "-F", str(ARGUS_CONF), "-r", str(big10),
                            "-w", str(work / "out.argus")],
            "wirewatch capture": [str(WIREWATCH), "capture", "-r", str(big10),
                                  "-w", str(work / "out.arrows"), "-S", "86400", "-U", "128",
                                  "-A"],
        }
        tiny = SHARED / "corpus" / "dns-ptr.pcap"
        startup = [str(WIREWATCH), "capture", "-r", str(tiny), "-w", str(work / "tiny.arrows"),
                   "-S", "86400", "-U", "128", "-A"]
        run_child(commands["wirewatch capture"])  # fill numba's cache when the JIT is used
        results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        results["wirewatch start-up (2 packets)"] = []
        for _ in range(args.runs):
            (work / "out.argus").unlink(missing_ok=True)
            for name, command in commands.items():
                results[name].append(run_child(command))
            results["wirewatch start-up (2 packets)"].append(run_child(startup))
        with pa.ipc.open_stream(work / "out.arrows") as reader:
            records = reader.read_all().num_rows
        print(f"machine: {machine()}")
        print(f"compiled kernels: {kernel_source()}")
        print(f"input: big10, {packets:,} packets, {big10.stat().st_size / 1e6:.0f} MB; "
              f"{args.runs} interleaved runs each; medians; Wirewatch wrote {records:,} records")
        print()
        print("| command | CPU s | packets/s (CPU) | wall s | peak RSS MiB |")
        print("|---|---|---|---|---|")
        medians = {}
        for name, runs in results.items():
            cpu = statistics.median(run["cpu"] for run in runs)
            wall = statistics.median(run["wall"] for run in runs)
            rss = statistics.median(run["rss"] for run in runs)
            medians[name] = cpu
            rate = f"{packets / cpu:,.0f}" if "start-up" not in name else "-"
            print(f"| {name} | {cpu:.2f} | {rate} | {wall:.2f} | {rss:.0f} |")
        work_cpu = medians["wirewatch capture"] - medians["wirewatch start-up (2 packets)"]
        print(f"| wirewatch without start-up (difference) | {work_cpu:.2f} | "
              f"{packets / work_cpu:,.0f} | | |")
        print()
        print(f"Wirewatch / argus packet rate: whole process "
              f"{medians['argus 3.0.8'] / medians['wirewatch capture']:.2f}x, "
              f"without start-up {medians['argus 3.0.8'] / work_cpu:.2f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
