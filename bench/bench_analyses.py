"""Time racluster and rasort on about one million flow records.

The records are the argus 3.0.8 reference records of the big synthetic mix capture
(ra.csv, 6,641 rows), copied until the table has --rows rows. Each copy gets its own
address space (the copy number is added to the last 32 bits of saddr), so the number of
groups grows with the copies as it would in a busy network.

Usage: python bench/bench_analyses.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.analyses import cluster_records, sort_records  # noqa: E402
from appliance.analyses.keys import address_words, words_to_addresses  # noqa: E402
from tests.oracle_records import REFERENCE, read_reference_flows  # noqa: E402

SOURCE = REFERENCE / "big-synthetic-mix.pcap.ra.csv"


def replicate(table: pa.Table, rows: int) -> pa.Table:
    """Copy ``table`` until it has ``rows`` rows, shifting saddr per copy."""
    copies = -(-rows // table.num_rows)
    tables = []
    high, low, valid = address_words(table.column("saddr"))
    for copy in range(copies):
        shifted = words_to_addresses(high, low + np.uint64(copy * 7919), valid)
        tables.append(table.set_column(table.schema.get_field_index("saddr"), "saddr", shifted))
    return pa.concat_tables(tables).slice(0, rows).combine_chunks()


def timed(label: str, repeat: int, function, *args, **kwargs) -> None:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    print(f"{label:40s} {best:7.3f} s  ({result.num_rows:,} rows out)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in the table")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    if not SOURCE.exists():
        print(f"reference records {SOURCE} not found", file=sys.stderr)
        return 2

    table = replicate(read_reference_flows(SOURCE), args.rows)
    print(f"{table.num_rows:,} records; Python {platform.python_version()}, "
          f"{platform.machine()}, best of {args.repeat}")
    timed("racluster -m saddr daddr", args.repeat, cluster_records, table, ["saddr", "daddr"])
    timed("racluster (default flow key)", args.repeat, cluster_records, table)
    timed("racluster -m saddr/16 proto", args.repeat, cluster_records, table, ["saddr/16", "proto"])
    timed("racluster -M rmon -m saddr", args.repeat, cluster_records, table, ["saddr"], "rmon")
    timed("rasort -m bytes", args.repeat, sort_records, table, ["bytes"])
    timed("rasort -m saddr dport stime", args.repeat, sort_records, table,
          ["saddr", "dport", "stime"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
