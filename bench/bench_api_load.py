"""Load the REST API: concurrent clients submit jobs and poll their status, over loopback.

Starts a redis-server (when installed; else the SQLite broker), one Celery worker and
``wirewatch serve`` (gunicorn) on 127.0.0.1, all on a temporary data directory whose
archive contains the records of one small corpus capture. Each client thread loops: submit a ra job,
then poll GET /api/v1/jobs/<id> up to --polls times. The run ends after --seconds or
--max-requests requests, whichever comes first, and every process is stopped.

Usage: python bench/bench_api_load.py [--clients 100] [--seconds 60] [--max-requests 200000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.services import (  # noqa: E402
    CORPUS,
    build_archive,
    free_port,
    service_env,
    stop_process,
)

CAPTURE = CORPUS / "dns-udp-basic.pcap"
JOB = {"analysis": "ra", "filter": "udp", "fields": ["stime", "saddr", "daddr", "pkts"]}


class Stats:
    """Latencies (seconds) by request kind and error counts, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"submit": [], "poll": []}
        self.errors: dict[str, int] = {}
        self.requests = 0

    def add(self, kind: str, seconds: float, status: int, expected: int) -> None:
        with self.lock:
            self.requests += 1
            self.latency[kind].append(seconds)
            if status != expected:
                key = f"{kind} HTTP {status}"
                self.errors[key] = self.errors.get(key, 0) + 1

    def error(self, text: str) -> None:
        with self.lock:
            self.errors[text] = self.errors.get(text, 0) + 1


def client_loop(port: int, token: str, stats: Stats, stop: threading.Event, polls: int,
                max_requests: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(JOB)
    while not stop.is_set() and stats.requests < max_requests:
        try:
            started = time.perf_counter()
            connection.request("POST", "/api/v1/jobs", body=body, headers=headers)
            response = connection.getresponse()
            job = json.loads(response.read())
            stats.add("submit", time.perf_counter() - started, response.status, 202)
            if response.status != 202:
                continue
            for _ in range(polls):
                if stop.is_set():
                    break
                started = time.perf_counter()
                connection.request("GET", f"/api/v1/jobs/{job['id']}", headers=headers)
                response = connection.getresponse()
                state = json.loads(response.read()).get("state")
                stats.add("poll", time.perf_counter() - started, response.status, 200)
                if state in ("done", "failed"):
                    break
        except (OSError, http.client.HTTPException, ValueError) as error:
            stats.error(type(error).__name__)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    port = free_port()
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save",
                                "", "--appendonly", "no", "--dir", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"redis://127.0.0.1:{port}/0"


def wait_healthy(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/v1/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API on port {port} did not respond within {timeout} s")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    processes: list[subprocess.Popen[bytes]] = []
    redis, broker = start_redis(work)
    if redis is not None:
        processes.append(redis)
    try:
        config_path = work / "wirewatch.toml"
        document: dict[str, Any] = {"data_dir": str(work / "data"), "srcid": "bench"}
        if broker:
            document["broker"] = {"url": broker}
        config_path.write_text(tomli_w.dumps(document))
        build_archive(CAPTURE, work / "data" / "archive", "bench")
        from appliance.tokens import create_token

        _, token = create_token(config_path, ["read", "jobs"])
        env = service_env(config_path, None)
        port = free_port()
        logs = open(work / "services.log", "wb")  # noqa: SIM115 - closed below
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "appliance.cli.main", "worker", "--config",
             str(config_path), "--concurrency", "2", "--loglevel", "WARNING"],
            cwd=REPO, env=env, stdout=logs, stderr=subprocess.STDOUT))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "appliance.cli.main", "serve", "--bind",
             f"127.0.0.1:{port}", "--workers", str(args.workers), "--threads",
             str(args.threads), "--config", str(config_path)],
            cwd=REPO, env={**env, "GUNICORN_CMD_ARGS": "--access-logfile /dev/null"},
            stdout=logs, stderr=subprocess.STDOUT))
        wait_healthy(port, 60)

        stats, stop = Stats(), threading.Event()
        threads = [threading.Thread(target=client_loop, args=(port, token, stats, stop,
                                                              args.polls, args.max_requests))
                   for _ in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        stop.wait(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(60)
        elapsed = time.perf_counter() - started
        logs.close()
        return {"stats": stats, "elapsed": elapsed, "broker": "redis" if broker else "sqlite"}
    finally:
        for process in reversed(processes):
            stop_process(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent client threads")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="stop after this many requests even before --seconds")
    parser.add_argument("--polls", type=int, default=5, help="status polls per job at most")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    args = parser.parse_args()
    if not CAPTURE.is_file():
        print(f"capture corpus not found at {CAPTURE}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="wirewatch-bench-api-"))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats, elapsed = outcome["stats"], outcome["elapsed"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, broker {outcome['broker']}, gunicorn "
          f"{args.workers} workers x {args.threads} threads, {args.clients} clients, "
          f"{elapsed:.1f} s")
    print(f"requests: {stats.requests} ({stats.requests / elapsed:.0f}/s)")
    for kind, values in stats.latency.items():
        if values:
            print(f"{kind}: {len(values)} requests ({len(values) / elapsed:.0f}/s), "
                  f"p50 {percentile(values, 0.5) * 1000:.1f} ms, "
                  f"p99 {percentile(values, 0.99) * 1000:.1f} ms, "
                  f"mean {statistics.fmean(values) * 1000:.1f} ms")
    print(f"errors: {stats.errors or 'none'}")
    return 0 if not stats.errors else 1


if __name__ == "__main__":
    sys.exit(main())
