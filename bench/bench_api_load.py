"""Load the REST API: concurrent clients submit jobs and poll their status, over loopback.

Starts a redis-server (when installed, else the SQLite broker), one Celery worker and
``wirewatch serve`` (gunicorn) on 127.0.0.1, all on a temporary data directory whose
archive contains the records of one small corpus capture. The clients are asyncio tasks
in this one process, each with its own keep-alive HTTP/1.1 connection, so the generator
costs far less CPU than a thread per client. Two client models:

* ``--mode poll`` (a real client): submit a ra job, then poll GET /api/v1/jobs/<id> every
  --interval-min to --interval-max seconds (uniformly random) until the job is done or
  failed, then submit the next job.
* ``--mode closed`` (saturation): submit, then poll at once up to --polls times, with no
  pause between requests.

The run ends after --seconds or --max-requests requests, whichever comes first, and
every process is stopped. It prints latency percentiles per request kind and the CPU
seconds used by gunicorn, the Celery worker, redis-server and the generator itself.

Usage: python bench/bench_api_load.py [--mode poll|closed] [--clients 100] [--seconds 60]
       [--worker-nice 10] [--work-dir /dev/shm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
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
FINAL_STATES = ("done", "failed", "cancelled")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Stats:
    """Latencies (seconds) by request kind, error counts and finished jobs."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"submit": [], "poll": []}
        self.errors: dict[str, int] = {}
        self.requests = 0
        self.jobs_finished = 0
        self.reconnects = 0

    def add(self, kind: str, seconds: float, status: int, expected: int) -> None:
        self.requests += 1
        self.latency[kind].append(seconds)
        if status != expected:
            self.error(f"{kind} HTTP {status}")

    def error(self, text: str) -> None:
        self.errors[text] = self.errors.get(text, 0) + 1


class Connection:
    """One keep-alive HTTP/1.1 connection that reconnects when the server closed it."""

    def __init__(self, port: int, token: str, stats: Stats) -> None:
        self.port = port
        self.stats = stats
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request; return the status and body. Retries once on a closed socket."""
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        payload = head.encode() + body
        for attempt in (1, 2):
            reused = self.writer is not None
            if self.writer is None:
                await self.open()
            try:
                assert self.writer is not None
                self.writer.write(payload)
                return await self.read_response()
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if not reused or attempt == 2:
                    raise
                # The server closed an idle keep-alive connection; open a new one.
                self.stats.reconnects += 1
        raise AssertionError("not reached")

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def read_response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def client(port: int, token: str, stats: Stats, args: argparse.Namespace,
                 deadline: float) -> None:
    connection = Connection(port, token, stats)
    body = json.dumps(JOB).encode()
    # Spread the first submissions over one poll interval, as clients arriving at random.
    if args.mode == "poll":
        await asyncio.sleep(random.uniform(0, args.interval_max))

    def running() -> bool:
        return time.monotonic() < deadline and stats.requests < args.max_requests

    while running():
        try:
            started = time.perf_counter()
            status, text = await connection.request("POST", "/api/v1/jobs", body)
            stats.add("submit", time.perf_counter() - started, status, 202)
            if status != 202:
                continue
            job_id = json.loads(text)["id"]
            polls = 0
            while running() and (args.mode == "poll" or polls < args.polls):
                if args.mode == "poll":
                    await asyncio.sleep(random.uniform(args.interval_min, args.interval_max))
                    if not running():
                        break
                started = time.perf_counter()
                status, text = await connection.request("GET", f"/api/v1/jobs/{job_id}")
                stats.add("poll", time.perf_counter() - started, status, 200)
                polls += 1
                if json.loads(text).get("state") in FINAL_STATES:
                    stats.jobs_finished += 1
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            stats.error(type(error).__name__)
            connection.close()
            await asyncio.sleep(0.1)
    connection.close()


async def generate(port: int, token: str, args: argparse.Namespace) -> tuple[Stats, float]:
    stats = Stats()
    started = time.monotonic()
    deadline = started + args.seconds
    await asyncio.gather(*(client(port, token, stats, args, deadline)
                           for _ in range(args.clients)))
    return stats, time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def process_tree_cpu(root: int) -> float:
    """Return the CPU seconds (user + system) used so far by ``root`` and its descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / CLOCK_TICKS


def machine_busy_cpu() -> float:
    """Return the CPU seconds all processes on the machine have used since boot (not idle)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    port = free_port()
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save",
                                "", "--appendonly", "no", "--dir", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"redis://127.0.0.1:{port}/0"


async def wait_healthy(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            line = await reader.readline()
            writer.close()
            if b" 200 " in line:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the API on port {port} did not respond within {timeout} s")


def start_services(args: argparse.Namespace, work: Path, broker: str | None,
                   log: Any) -> tuple[dict[str, subprocess.Popen[bytes]], int, str]:
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
    worker_command = [sys.executable, "-m", "appliance.cli.main", "worker", "--config",
                      str(config_path), "--concurrency", str(args.worker_concurrency),
                      "--loglevel", "WARNING"]
    if args.worker_nice:
        worker_command = ["nice", "-n", str(args.worker_nice), *worker_command]
    serve_command = [sys.executable, "-m", "appliance.cli.main", "serve", "--bind",
                     f"127.0.0.1:{port}", "--config", str(config_path)]
    if args.workers:
        serve_command += ["--workers", str(args.workers)]
    if args.threads:
        serve_command += ["--threads", str(args.threads)]
    services = {
        "worker": subprocess.Popen(worker_command, cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT),
        "gunicorn": subprocess.Popen(serve_command, cwd=REPO, env={
            **env, "GUNICORN_CMD_ARGS": "--access-logfile /dev/null"}, stdout=log,
            stderr=subprocess.STDOUT),
    }
    return services, port, token


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis, broker = start_redis(work)
    services: dict[str, subprocess.Popen[bytes]] = {}
    if redis is not None:
        services["redis-server"] = redis
    log = open(work / "services.log", "wb")  # noqa: SIM115 - closed below
    try:
        started, port, token = start_services(args, work, broker, log)
        services.update(started)
        asyncio.run(wait_healthy(port, 60))
        time.sleep(2)  # let the worker finish starting before the clock runs

        before = {name: process_tree_cpu(process.pid) for name, process in services.items()}
        generator_before = own_cpu()
        machine_before = machine_busy_cpu()
        stats, elapsed = asyncio.run(generate(port, token, args))
        machine = machine_busy_cpu() - machine_before
        cpu = {name: process_tree_cpu(process.pid) - before[name]
               for name, process in services.items()}
        cpu["generator"] = own_cpu() - generator_before
        # Whatever else ran on the machine during the measurement.
        cpu["other processes"] = max(0.0, machine - sum(cpu.values()))
        return {"stats": stats, "elapsed": elapsed, "cpu": cpu,
                "broker": "redis" if broker else "sqlite"}
    finally:
        for process in reversed(list(services.values())):
            stop_process(process)
        log.close()


def report(args: argparse.Namespace, outcome: dict[str, Any]) -> None:
    stats, elapsed = outcome["stats"], outcome["elapsed"]
    model = (f"poll every {args.interval_min}-{args.interval_max} s until done"
             if args.mode == "poll" else f"closed loop, up to {args.polls} polls per job")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, broker {outcome['broker']}, gunicorn "
          f"{args.workers or 'default'} workers x {args.threads or 'default'} threads, "
          f"Celery worker concurrency {args.worker_concurrency} nice {args.worker_nice}")
    print(f"clients: {args.clients}, {model}, {elapsed:.1f} s, data in "
          f"{args.work_dir or tempfile.gettempdir()}")
    print(f"requests: {stats.requests} ({stats.requests / elapsed:.0f}/s), jobs seen "
          f"finished: {stats.jobs_finished}, reconnects: {stats.reconnects}")
    for kind, values in stats.latency.items():
        if values:
            print(f"{kind}: {len(values)} requests ({len(values) / elapsed:.0f}/s), "
                  f"p50 {percentile(values, 0.5) * 1000:.1f} ms, "
                  f"p99 {percentile(values, 0.99) * 1000:.1f} ms, "
                  f"max {max(values) * 1000:.1f} ms, "
                  f"mean {statistics.fmean(values) * 1000:.1f} ms")
    print("CPU seconds: " + ", ".join(f"{name} {seconds:.1f}"
                                      for name, seconds in outcome["cpu"].items())
          + f" (of {elapsed * (os.cpu_count() or 1):.0f} available)")
    print(f"errors: {stats.errors or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("poll", "closed"), default="poll",
                        help="client model (default poll)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="stop after this many requests even before --seconds")
    parser.add_argument("--interval-min", type=float, default=0.5,
                        help="shortest pause between status polls in poll mode, seconds")
    parser.add_argument("--interval-max", type=float, default=1.0,
                        help="maximum pause between status polls in poll mode, seconds")
    parser.add_argument("--polls", type=int, default=5,
                        help="status polls per job at most in closed mode")
    parser.add_argument("--workers", type=int, default=0,
                        help="gunicorn worker processes (default: wirewatch serve's)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per gunicorn worker (default: wirewatch serve's)")
    parser.add_argument("--worker-concurrency", type=int, default=2,
                        help="Celery worker processes running the submitted jobs")
    parser.add_argument("--worker-nice", type=int, default=0,
                        help="run the Celery worker at this nice level (0: as the API)")
    parser.add_argument("--work-dir", default=None,
                        help="parent directory of the temporary data directory (default: "
                        "the system's temporary directory); /dev/shm takes the disk out")
    args = parser.parse_args()
    if not CAPTURE.is_file():
        print(f"capture corpus not found at {CAPTURE}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="wirewatch-bench-api-", dir=args.work_dir))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, outcome)
    return 0 if not outcome["stats"].errors else 1


if __name__ == "__main__":
    sys.exit(main())
