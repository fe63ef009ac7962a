"""Time the ra text output of flow records: column-at-once formatting against row-wise.

The records come from a record file (--records, as `wirewatch capture -w` writes it)
or are generated with NumPy: IPv4 TCP, UDP and ICMP flows with random addresses,
ports, times and counters. Each measurement formats every record with
``render_lines`` and writes the lines to /dev/null, as `wirewatch ra` prints them,
and reports the process CPU time (time.process_time) of the best of --repeat runs.
The row-wise formatters (``render_lines_by_row``) run on --row-wise-rows records
only, because they take about 20 s per million records.

Usage: python bench/bench_render.py [--rows 1000000] [--records FILE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from appliance.archive import read_records
from appliance.query.fields import DEFAULT_FIELDS
from appliance.query.render import RenderOptions, render_lines, render_lines_by_row
from appliance.records import FLOW_SCHEMA, IPV4_MAPPED_PREFIX, TIMESTAMP, EtherType, conform

Renderer = Callable[[pa.Table, list[str], RenderOptions], Iterator[str]]
OPTION_SETS = {
    "-n": RenderOptions(numeric=1),
    "-n -c , -u": RenderOptions(numeric=1, delimiter=",", epoch=True),
    "(names)": RenderOptions(),
}


def generated_records(rows: int, seed: int = 7) -> pa.Table:
    """Return ``rows`` IPv4 flow records with random addresses, ports, times and counters."""
    rng = np.random.default_rng(seed)
    prefix = np.frombuffer(IPV4_MAPPED_PREFIX, dtype=np.uint8)

    def addresses() -> pa.Array:
        raw = np.empty((rows, 16), dtype=np.uint8)
        raw[:, :12] = prefix
        raw[:, 12:] = rng.integers(0, 256, (rows, 4), dtype=np.uint8)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(16), rows, [None, pa.py_buffer(raw.tobytes())])

    start = 1_733_270_400_000_000 + np.sort(rng.integers(0, 86_400_000_000, rows))
    packets = rng.integers(1, 5000, rows, dtype=np.uint64)
    columns = {
        "stime": pa.array(start).cast(TIMESTAMP),
        "ltime": pa.array(start + rng.integers(0, 60_000_000, rows)).cast(TIMESTAMP),
        "etype": pa.array(np.full(rows, int(EtherType.IPV4), dtype=np.uint16)),
        "proto": pa.array(rng.choice(np.array([1, 6, 17], dtype=np.uint8), rows)),
        "saddr": addresses(),
        "sport": pa.array(rng.integers(0, 65_536, rows, dtype=np.uint16)),
        "daddr": addresses(),
        "dport": pa.array(rng.choice(np.array([53, 80, 443, 8080], dtype=np.uint16), rows)),
        "dir": pa.array(rng.choice(np.array(["->", "<->", "<-"]), rows)),
        "state": pa.array(rng.choice(np.array(["CON", "FIN", "RST", "INT"]), rows)),
        "flgs": pa.array(np.full(rows, " e       ")),
        "pkts": pa.array(packets),
        "bytes": pa.array(packets * rng.integers(60, 1500, rows, dtype=np.uint64)),
    }
    schema = pa.schema([FLOW_SCHEMA.field(name) for name in columns])
    return conform(pa.table(columns, schema=schema))


def cpu_seconds(renderer: Renderer, table: pa.Table, options: RenderOptions,
                repeat: int) -> float:
    """Return the least CPU time of ``repeat`` runs that print the table to /dev/null."""
    best = float("inf")
    with open("/dev/null", "w") as sink:
        for _ in range(repeat):
            started = time.process_time()
            for line in renderer(table, DEFAULT_FIELDS, options):
                sink.write(line + "\n")
            best = min(best, time.process_time() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--records", help="record file to print instead of generated records")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--row-wise-rows", type=int, default=50_000,
                        help="records the row-wise formatters print (their time is scaled)")
    args = parser.parse_args()

    table = read_records(args.records) if args.records else generated_records(args.rows)
    print(f"{table.num_rows} records, Python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'options':<14}{'column-at-once s':>18}{'row-wise s (scaled)':>22}{'speed-up':>10}")
    sample = table.slice(0, args.row_wise_rows)
    for label, options in OPTION_SETS.items():
        fast = cpu_seconds(render_lines, table, options, args.repeat)
        slow = cpu_seconds(render_lines_by_row, sample, options, 1)
        scaled = slow * table.num_rows / max(sample.num_rows, 1)
        print(f"{label:<14}{fast:>18.2f}{scaled:>22.2f}{scaled / fast:>9.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
