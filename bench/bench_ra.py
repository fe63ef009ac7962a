"""Time the ra tools' analyses on ten million generated flow records, with peak memory.

The records are generated with NumPy straight into the flow record schema (one day of
traffic in time order: 60,000 client hosts talking to 250,000 servers, TCP, UDP and
ICMP, realistic packet and byte counts, no user data) and written once as a record
file, the Arrow stream that `wirewatch capture -w` writes, in batches of 65,536 records.
Each run of a measurement is its own Python process, which runs what the ra command
runs (read the file with ``read_records``, then ``execute`` the job spec) after the
same spec ran once on 1,000 records, so that start-up (imports, loading compiled code)
is not counted; the best time of --repeat runs is kept. Printing is excluded; the
"-w" rows include writing the LZ4-compressed record file next to the input, as the
commands do.
Memory is reported twice: the peak resident memory (ru_maxrss), which also counts the
pages of the memory-mapped record file that were read, and the peak anonymous memory
(RssAnon, sampled every 5 ms), which is what the process needs beyond the page cache.

A printed result needs only the columns of its -s fields, and the commands build only
those (``printed_columns``); the "-w" rows build and write whole records. Sorted
records are written as `rasort -w` writes them, gathered a slice at a time.

Usage: python bench/bench_ra.py [--rows 10000000] [--repeat 3] [--keep] [--records FILE]
                                [--only cluster cluster-w ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.records import FLOW_SCHEMA, EtherType  # noqa: E402

DAY_START = 1_733_270_400  # 2024-12-04 00:00:00 UTC
CHUNK = 65_536
CLIENTS = 60_000
SERVERS = 250_000
#: Ten minutes from 12:00 of the generated day.
WINDOW = "2024/12/04.12:00+10m"

#: Job specs of the measured commands, and whether the result is printed (projected).
OPERATIONS = {
    "cluster": ({"analysis": "cluster", "keys": ["saddr", "daddr"]}, True),
    "cluster-w": ({"analysis": "cluster", "keys": ["saddr", "daddr"]}, False),
    "sort": ({"analysis": "sort", "keys": ["bytes"]}, True),
    "sort-w": ({"analysis": "sort", "keys": ["bytes"]}, False),
    "sort-top": ({"analysis": "sort", "keys": ["bytes"], "top": 10}, True),
    "time": ({"analysis": "ra", "time": WINDOW}, True),
    "time+filter": ({"analysis": "ra", "time": WINDOW, "filter": "dst port 53"}, True),
}
LABELS = {
    "cluster": "racluster -m saddr daddr", "cluster-w": "racluster -m saddr daddr -w",
    "sort": "rasort -m bytes", "sort-w": "rasort -m bytes -w",
    "sort-top": "rasort -m bytes -N 10", "time": f"ra -t {WINDOW}",
    "time+filter": f"ra -t {WINDOW} - dst port 53",
}
TARGETS = {"cluster": 2.0, "cluster-w": 2.0, "sort": 4.0, "sort-w": 4.0, "time": 0.1}
MEMORY_TARGET_MB = 1024


def _addresses(hosts: np.ndarray, network: int) -> pa.Array:
    """IPv4-mapped 16-byte addresses network + host number."""
    raw = np.zeros((len(hosts), 16), dtype=np.uint8)
    raw[:, 10:12] = 0xFF
    raw[:, 12:16] = (np.uint32(network) + hosts.astype(np.uint32)).astype(">u4").view(
        np.uint8).reshape(-1, 4)
    return pa.Array.from_buffers(pa.binary(16), len(hosts), [None, pa.py_buffer(raw.tobytes())])


def _macs(hosts: np.ndarray) -> pa.Array:
    raw = (hosts.astype(np.uint64) | np.uint64(0x02_00_00_00_00_00)).astype(">u8")
    raw = raw.view(np.uint8).reshape(-1, 8)[:, 2:]
    return pa.Array.from_buffers(pa.binary(6), len(hosts),
                                 [None, pa.py_buffer(np.ascontiguousarray(raw).tobytes())])


def _choice(values: list[str], indices: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(indices))


def generate_chunk(rng: np.random.Generator, first: int, count: int, total: int) -> pa.RecordBatch:
    """Generate records first..first+count of a day of ``total`` records, in time order."""
    offsets = (np.arange(first, first + count) * (86_400 * 1_000_000 // total)).astype(np.int64)
    stime = DAY_START * 1_000_000 + offsets + rng.integers(0, 1000, count)
    duration = rng.exponential(2_000_000, count).astype(np.int64)
    proto = rng.choice(np.array([6, 17, 1], dtype=np.uint8), count, p=[0.6, 0.35, 0.05])
    clients = rng.zipf(1.3, count) % CLIENTS
    servers = rng.zipf(1.2, count) % SERVERS
    dport = np.where(proto == 17, rng.choice([53, 123, 443, 5353], count, p=[0.7, 0.1, 0.15, 0.05]),
                     rng.choice([80, 443, 22, 8080], count, p=[0.3, 0.6, 0.05, 0.05]))
    dport = np.where(proto == 1, rng.integers(0, 65536, count), dport).astype(np.uint16)
    sport = np.where(proto == 1, 0x0800, rng.integers(32768, 61000, count)).astype(np.uint16)
    spkts = rng.geometric(0.15, count).astype(np.uint64)
    dpkts = np.where(rng.random(count) < 0.9, rng.geometric(0.12, count), 0).astype(np.uint64)
    sbytes = spkts * rng.integers(60, 600, count).astype(np.uint64)
    dbytes = dpkts * rng.integers(60, 1500, count).astype(np.uint64)
    both = dpkts > 0
    columns = {
        "srcid": pa.nulls(count, pa.string()),
        "seq": pa.array(np.arange(first, first + count, dtype=np.uint64)),
        "stime": pa.array(stime, pa.int64()).cast(FLOW_SCHEMA.field("stime").type),
        "ltime": pa.array(stime + duration, pa.int64()).cast(FLOW_SCHEMA.field("ltime").type),
        "etype": pa.array(np.full(count, int(EtherType.IPV4), dtype=np.uint16)),
        "proto": pa.array(proto),
        "saddr": _addresses(clients, 0x0A000000),
        "sport": pa.array(sport),
        "daddr": _addresses(servers, 0x50000000),
        "dport": pa.array(dport),
        "smac": _macs(clients),
        "dmac": _macs(np.zeros(count, dtype=np.int64)),
        "vlan": pa.nulls(count, pa.uint16()),
        "dir": _choice(["->", "<->"], both.astype(np.int8)),
        "state": _choice(["REQ", "CON", "FIN", "RST", "INT"],
                         np.where(proto == 6, rng.integers(0, 4, count), 4 - both)),
        "flgs": _choice([" e       ", " e d     "], (rng.random(count) < 0.02).astype(np.int8)),
        "cause": _choice(["Start"], np.zeros(count, dtype=np.int8)),
        "trans": pa.array(np.ones(count, dtype=np.uint32)),
        "pkts": pa.array(spkts + dpkts), "spkts": pa.array(spkts), "dpkts": pa.array(dpkts),
        "bytes": pa.array(sbytes + dbytes), "sbytes": pa.array(sbytes),
        "dbytes": pa.array(dbytes),
        "sappbytes": pa.array(sbytes - spkts * np.uint64(54)),
        "dappbytes": pa.array(np.where(both, dbytes - dpkts * np.uint64(54), 0).astype(np.uint64)),
        "sttl": pa.array(rng.choice(np.array([64, 128], dtype=np.uint8), count)),
        "dttl": pa.array(rng.choice(np.array([52, 119, 245], dtype=np.uint8), count)),
        "stos": pa.array(np.zeros(count, dtype=np.uint8)),
        "dtos": pa.array(np.zeros(count, dtype=np.uint8)),
    }
    arrays = [columns[field.name] if field.name in columns else pa.nulls(count, field.type)
              for field in FLOW_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)


def write_records(path: Path, rows: int) -> None:
    rng = np.random.default_rng(20261204)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, FLOW_SCHEMA) as writer:
        for first in range(0, rows, CHUNK):
            writer.write_batch(generate_chunk(rng, first, min(CHUNK, rows - first), rows))


class AnonymousPeak:
    """Samples the process's anonymous resident memory (RssAnon) every few milliseconds.

    ru_maxrss also counts the pages of the memory-mapped record file that were read,
    which the kernel can drop at any time; RssAnon is the memory the process needs.
    """

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak_kb / 1024


def run_operation(operation: str, path: Path, repeat: int) -> dict[str, object]:
    """Run one measurement in this process; return best time, rows out and peak memory."""
    from appliance.archive import read_records
    from appliance.cli.ra_cmd import write_records
    from appliance.jobs import execute, printed_columns
    from appliance.jobspec import JobSpec

    settings, printed = OPERATIONS[operation]
    spec = JobSpec.from_dict({**settings, "now": float(DAY_START + 86_400)})
    columns = printed_columns(spec) if printed else None
    output = path.with_name(f"{operation}.out.arrows")
    # Load the compiled code first: start-up is not part of the analysis (the comparison
    # with argus in bench_ra_argus.py measures it).
    execute(spec, read_records(path).slice(0, 1000), columns=columns)
    best, rows, rows_in = float("inf"), 0, 0
    anonymous = AnonymousPeak()
    for _ in range(repeat):
        started = time.perf_counter()
        records = read_records(path)
        # As the command does: a printed result is only built, a -w result is also written.
        result = execute(spec, records, columns=columns, gather=printed)
        if not printed:
            write_records(str(output), result.rows)
        best = min(best, time.perf_counter() - started)
        rows, rows_in = result.rows.num_rows, records.num_rows
        del records, result
        output.unlink(missing_ok=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"operation": operation, "seconds": best, "rows_in": rows_in,
            "rows_out": rows, "peak_mb": peak, "anonymous_mb": anonymous.stop()}


def measure(operation: str, path: Path, repeat: int) -> dict[str, object]:
    """Run one measurement ``repeat`` times, each in a new process; keep the best time.

    Memory is the largest of the runs, so that no run inherits another's allocations.
    """
    command = [sys.executable, __file__, "--run", operation, "--file", str(path),
               "--repeat", "1"]
    results = [json.loads(subprocess.run(command, capture_output=True, text=True,
                                         check=True).stdout) for _ in range(repeat)]
    best = min(results, key=lambda result: result["seconds"])
    return {**best, "peak_mb": max(result["peak_mb"] for result in results),
            "anonymous_mb": max(result["anonymous_mb"] for result in results)}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"pyarrow {pa.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="records to generate")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--keep", action="store_true", help="keep the generated record file")
    parser.add_argument("--records", type=Path,
                        help="use this record file (from an earlier --keep run) instead")
    parser.add_argument("--only", nargs="+", choices=list(OPERATIONS), metavar="OPERATION",
                        help="measure only these operations (default: all): "
                             + ", ".join(OPERATIONS))
    parser.add_argument("--run", choices=list(OPERATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_operation(args.run, args.file, args.repeat)))
        return 0

    if args.records:
        directory, path = None, args.records
        print(f"records from {path}; {machine()}; best of {args.repeat}")
    else:
        directory = Path(tempfile.mkdtemp(prefix="bench_ra."))
        path = directory / "records.arrows"
        started = time.perf_counter()
        write_records(path, args.rows)
        print(f"generated {args.rows:,} records ({path.stat().st_size / 1e6:,.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s; {machine()}; best of {args.repeat}")
    print(f"load average before the measurements: {os.getloadavg()[0]:.1f}")
    print("| command | seconds | target | records out | peak RSS (MB) | peak anonymous (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    failed = False
    try:
        for operation in args.only or OPERATIONS:
            result = measure(operation, path, args.repeat)
            target = TARGETS.get(operation)
            over = (target is not None and result["seconds"] > target) or \
                result["anonymous_mb"] > MEMORY_TARGET_MB
            failed |= over
            print(f"| {LABELS[operation]} | {result['seconds']:.3f} | "
                  f"{'-' if target is None else f'<= {target:g}'} | {result['rows_out']:,} | "
                  f"{result['peak_mb']:,.0f} | {result['anonymous_mb']:,.0f}"
                  f"{' (over target)' if over else ''} |", flush=True)
    finally:
        if directory is not None and not args.keep:
            path.unlink(missing_ok=True)
            directory.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
