"""Time the flow table with many concurrent flows, and measure its memory per active flow.

Usage: python bench/bench_flows.py [--flows N] [--packets-per-flow K] [-U BYTES]

Builds Ethernet/IPv4/UDP frames in memory, one flow per (source address, source
port) pair, N flows each sending K packets (all flows start before any repeats,
so N flows are active at once), and feeds them to FlowMeter in batches. Every
frame carries 18 payload bytes from the source, so with -U each flow stores 36
bytes of user data. Prints packets per CPU second of the decode and flow-table
path, where the flow table's bytes go (per slot and per active flow), and the
peak resident memory of the process before and after the final flush. The flush
streams the records (FlowMeter.flush_batches), as `wirewatch capture -r` does, so
only one output batch of records is held at a time.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from appliance.flows import CaptureSettings, FlowMeter
from appliance.flows.table import FlowTable
from appliance.pcapio import PacketBatch

FRAME_LEN = 60
BATCH = 16384
#: Ethernet + IPv4 (20 bytes, UDP) + UDP header + 18 payload bytes, checksums left zero.
TEMPLATE = bytes.fromhex(
    "020000000002" "020000000001" "0800"
    "4500002e00004000401100000a000001c0a80001"
    "04000035001a0000"
) + bytes(18)
SADDR = 26
SPORT = 34


def frames(first_flow: int, count: int, flows: int) -> np.ndarray:
    """Return ``count`` frames (rows of FRAME_LEN bytes) of flows first_flow, first_flow+1, ..."""
    out = np.tile(np.frombuffer(TEMPLATE, dtype=np.uint8), (count, 1))
    flow = (first_flow + np.arange(count, dtype=np.int64)) % flows
    host = flow // 50000
    port = 1024 + flow % 50000
    out[:, SADDR + 2] = (host >> 8) & 0xFF
    out[:, SADDR + 3] = host & 0xFF
    out[:, SPORT] = port >> 8
    out[:, SPORT + 1] = port & 0xFF
    return out


def batch_of(rows: np.ndarray, ts_us: np.ndarray) -> PacketBatch:
    count = len(rows)
    return PacketBatch(
        buffer=rows.reshape(-1),
        offset=np.arange(count, dtype=np.int64) * FRAME_LEN,
        caplen=np.full(count, FRAME_LEN, dtype=np.int32),
        wirelen=np.full(count, FRAME_LEN, dtype=np.int32),
        ts_us=ts_us,
        linktype=np.ones(count, dtype=np.int32),
    )


def memory_report(table: FlowTable, active: int) -> list[str]:
    """Return lines that show the flow table's bytes per active flow, array by array."""
    arrays = {
        "flows (flow-wide fields, MACs)": table.flows,
        "sides (per-direction fields)": table.sides,
        "keys": table.keys,
        "hashes": table.hashes,
        "free-slot stack": table.free,
        "hash index": table.index,
        "user-data pool": table.chunks,
        "user-data chain": table.chunk_next,
    }
    lines = [f"{name}: {array.nbytes / active:.1f}" for name, array in arrays.items()]
    total = sum(array.nbytes for array in arrays.values())
    lines.append(f"total: {total / active:.0f} bytes per active flow ({total / 2**20:,.0f} MiB), "
                 f"of which the user-data pool {table.user_bytes() / active:.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--packets-per-flow", type=int, default=2)
    parser.add_argument("-U", dest="user_data_len", type=int, default=0)
    args = parser.parse_args()

    settings = CaptureSettings(status_interval=86400, user_data_len=args.user_data_len,
                               appbytes=True)
    FlowMeter(settings).process(batch_of(frames(0, 2, 2), np.zeros(2, dtype=np.int64)))
    meter = FlowMeter(settings)
    total = args.flows * args.packets_per_flow
    start_us = 1_700_000_000_000_000
    cpu = 0.0
    records = 0
    for first in range(0, total, BATCH):
        count = min(BATCH, total - first)
        batch = batch_of(frames(first, count, args.flows),
                         start_us + first + np.arange(count, dtype=np.int64))
        began = time.process_time()
        records += sum(b.num_rows for b in meter.process(batch))
        cpu += time.process_time() - began
    active = meter.stats["flows_active"]
    rss_before_flush = peak_rss_mib()
    began = time.process_time()
    records += sum(b.num_rows for b in meter.flush_batches())
    flush_cpu = time.process_time() - began
    table = meter.table
    print(f"flows: {args.flows:,}, packets: {total:,}, -U {args.user_data_len}")
    print(f"active flows before flush: {active:,}; records: {records:,}")
    print(f"packets/s (CPU, decode + flow table): {total / cpu:,.0f}")
    print(f"flush of {active:,} flows: {flush_cpu:.2f} s CPU")
    print(f"flow table: {table.slots:,} slots ({active / table.slots:.0%} in use), "
          f"{table.bytes_per_slot()} bytes per slot with the hash index "
          f"({len(table.index):,} buckets), "
          f"{len(table.chunk_next):,} user-data chunks of {table.chunks.shape[1]} bytes")
    print("bytes per active flow:")
    for line in memory_report(table, active):
        print(f"  {line}")
    print(f"peak RSS: {rss_before_flush:,.0f} MiB before the flush, "
          f"{peak_rss_mib():,.0f} MiB after it")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
