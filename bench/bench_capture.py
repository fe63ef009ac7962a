"""Time the packet path (read, decode, flow table) on a large capture file.

Usage: python bench/bench_capture.py [PCAP] [--repeat N]

Prints CPU time, packets per second and peak resident memory for each stage:
reading alone, reading plus decoding, and the whole flows_from_file path. The
first run of a fresh checkout also compiles the numba code; the script warms
the cache on a small file before timing.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from appliance.capture import CaptureSettings, flows_from_file
from appliance.decode import decode_batch
from appliance.pcapio import read_packets

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
DEFAULT_PCAP = CORPUS / "big-synthetic-mix.pcap"
SETTINGS = CaptureSettings(status_interval=60, user_data_len=128, appbytes=True)


def read_only(path: Path) -> int:
    return sum(len(batch) for batch in read_packets(path))


def read_and_decode(path: Path) -> int:
    return sum(len(decode_batch(batch)) for batch in read_packets(path))


def full_path(path: Path) -> int:
    return sum(batch.num_rows for batch in flows_from_file(path, SETTINGS))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcap", nargs="?", type=Path, default=DEFAULT_PCAP)
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the best is shown")
    args = parser.parse_args()

    packets = read_only(args.pcap)
    full_path(args.pcap)  # warm caches and compiled code
    print(f"file: {args.pcap.resolve()} ({packets} packets)")
    print(f"{'stage':<22}{'CPU s':>9}{'packets/s':>13}{'result':>10}")
    for name, stage in [("read", read_only), ("read+decode", read_and_decode),
                        ("flows_from_file", full_path)]:
        best = None
        for _ in range(args.repeat):
            start = time.process_time()
            result = stage(args.pcap)
            elapsed = time.process_time() - start
            best = elapsed if best is None else min(best, elapsed)
        print(f"{name:<22}{best:>9.3f}{packets / best:>13,.0f}{result:>10}")
    print(f"peak RSS: {peak_rss_mib():.1f} MiB")


if __name__ == "__main__":
    main()
