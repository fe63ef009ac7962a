"""Run a whole Wirewatch sensor on one machine and submit four analyses through its API.

The demo builds the demo GeoIP database and writes a configuration that replays
demo/http-wikipedia.pcap. It starts the capture daemon, one Celery worker and gunicorn
(127.0.0.1, a free port) as subprocesses and waits for the replay to finish. Then it
submits a cluster, a sort, a label and a DNS job over HTTP and prints each result as a
table.
Every process it started is stopped at the end, also after an error or Ctrl-C.

Without $WIREWATCH_BROKER_URL the broker and result backend are SQLite files in the
temporary data directory; with WIREWATCH_BROKER_URL=redis://... they are that Redis.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "demo" / "http-wikipedia.pcap"
COUNTRY_TABLE = REPO / "demo" / "geoip" / "countries.tsv"
BUILD_GEOIP = REPO / "scripts" / "build_geoip_db.py"
SRCID = "demo"

#: The jobs submitted: heading, job spec, and the result columns printed (None = all).
JOBS: list[tuple[str, dict[str, Any], list[str] | None]] = [
    ("cluster by host pair (racluster -m saddr daddr)",
     {"analysis": "cluster", "keys": ["saddr", "daddr"],
      "fields": ["stime", "ltime", "saddr", "daddr", "pkts", "bytes", "trans"]}, None),
    ("records sorted by bytes (rasort -m bytes)",
     {"analysis": "sort", "keys": ["bytes"], "top": 15}, None),
    ("records labelled with country codes (ralabel)",
     {"analysis": "label", "fields": ["stime", "saddr", "sco", "daddr", "dco", "pkts",
                                      "bytes"]}, None),
    ("DNS messages (radump)",
     {"analysis": "dns"}, ["saddr", "daddr", "side", "rcode", "qname", "qtype", "radump"]),
]

STARTUP_TIMEOUT = 120.0
JOB_TIMEOUT = 300.0


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step."""


class Services:
    """The subprocesses of the demo sensor, with their log files."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))
        print(f"started {name} (pid {process.pid}), log {self.log_dir / (name + '.log')}")
        return process

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise DemoError(f"{name} exited with status {process.returncode}:\n"
                                f"{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        """Stop the processes in reverse start order: SIGTERM, then SIGKILL after 20 s.

        Every process is stopped before anything is printed, because printing can fail
        (a closed pipe on stdout) and must not leave a process running.
        """
        report = []
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    report.append(f"{name} did not stop within 20 s; killed it")
                    process.kill()
                    process.wait()
            report.append(f"stopped {name} (exit status {process.returncode})")
        self.processes.clear()
        try:
            print("\n".join(report), flush=True)
        except OSError:
            pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               services: Services) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check_alive()
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_json(method: str, url: str, body: dict[str, Any] | None = None,
              token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def http_text(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode("utf-8")


def write_config(work: Path, geoip_db: Path) -> Path:
    document = {
        "data_dir": str(work / "data"),
        "srcid": SRCID,
        "capture": {"source": str(CAPTURE), "status_interval": 60, "user_data_len": 128,
                    "appbytes": True, "rotate_seconds": 3600},
        "geoip": {"country_db": str(geoip_db)},
    }
    path = work / "wirewatch.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def start_sensor(services: Services, config_path: Path, port: int) -> None:
    python = sys.executable
    services.start("capture", [python, "-m", "worker.capture_daemon", "--config",
                               str(config_path)])
    services.start("worker", [python, "-m", "celery", "-A", "worker.celery_app", "worker",
                              "-Q", f"sensor.{SRCID}", "--concurrency", "1", "--pool",
                              "prefork", "--loglevel", "INFO", "--without-gossip",
                              "--without-mingle", "--without-heartbeat"])
    services.start("api", [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                           "--workers", "2", "--access-logfile", "-", "api:create_app()"])


def capture_finished(data_dir: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((data_dir / "capture-status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if status.get("state") == "failed":
        raise DemoError(f"capture daemon failed: {status.get('error')}")
    return status if status.get("state") == "finished" else None


def archive_records(archive_dir: Path) -> int:
    from appliance.archive import read_records

    if not archive_dir.is_dir():
        return 0
    return read_records(archive_dir).num_rows


def create_token(config_path: Path) -> str:
    """Add an API token with the read and jobs scopes through ``wirewatch token create``."""
    done = subprocess.run([sys.executable, "-m", "appliance.cli.main", "token", "create",
                           "--scopes", "read,jobs", "--label", "demo", "--config",
                           str(config_path)], cwd=REPO, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def run_job(base: str, spec: dict[str, Any], services: Services,
            token: str) -> tuple[dict[str, Any], str]:
    status, job = http_json("POST", f"{base}/api/v1/jobs", spec, token)
    if status != 202:
        raise DemoError(f"job {spec} rejected with HTTP {status}: {job}")
    url = f"{base}/api/v1/jobs/{job['id']}"

    def finished() -> dict[str, Any] | None:
        _, view = http_json("GET", url, token=token)
        return view if view["state"] in ("done", "failed", "cancelled") else None

    view = wait_until(finished, JOB_TIMEOUT, f"job {job['id']} ({spec['analysis']})", services)
    if view["state"] != "done":
        raise DemoError(f"job {job['id']} {view['state']}: {view.get('error')}")
    return view, http_text(f"{url}/result?format=csv", token)


def format_table(csv_text: str, columns: list[str] | None = None, max_rows: int = 40) -> str:
    """Align CSV rows into a text table; columns of numbers are right-aligned.

    ``columns`` picks header names to print, in that order (None prints every column).
    """
    rows = list(csv.reader(io.StringIO(csv_text)))
    if not rows:
        return "(no rows)"
    if columns is not None:
        indexes = [rows[0].index(name) for name in columns if name in rows[0]]
        rows = [[row[i] if i < len(row) else "" for i in indexes] for row in rows]
    header, body = rows[0], rows[1:]
    visible = body[:max_rows]
    widths = [max(len(row[i]) for row in [header, *visible]) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in visible if row[i]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [cell.rjust(width) if right else cell.ljust(width)
                 for cell, width, right in zip(row, widths, numeric, strict=True)]
        return "  ".join(cells).rstrip()

    lines = [line(header), "  ".join("-" * width for width in widths)]
    lines += [line(row) for row in visible]
    if len(body) > max_rows:
        lines.append(f"... {len(body) - max_rows} more rows")
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def run_demo(work: Path, serve: bool) -> None:
    log_dir = work / "logs"
    log_dir.mkdir(parents=True)
    geoip_db = work / "countries.mmdb"
    subprocess.run([sys.executable, str(BUILD_GEOIP), str(COUNTRY_TABLE), str(geoip_db)],
                   check=True, cwd=REPO)
    config_path = write_config(work, geoip_db)
    token = create_token(config_path)

    env = dict(os.environ, WIREWATCH_CONFIG=str(config_path))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    broker = env.get("WIREWATCH_BROKER_URL") or "SQLite files in the data directory"
    print(f"data directory {work / 'data'}, broker: {broker.split('@')[-1]}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    services = Services(log_dir, env)
    try:
        start_sensor(services, config_path, port)
        status = wait_until(lambda: capture_finished(work / "data"), STARTUP_TIMEOUT,
                            "the capture replay to finish", services)
        records = wait_until(lambda: archive_records(work / "data" / "archive"), 30,
                             "records in the archive", services)
        print(f"capture finished: {status['packets']} packets, {records} records archived")
        wait_until(lambda: _healthy(base), STARTUP_TIMEOUT, "the API to answer", services)

        for heading, spec, columns in JOBS:
            view, csv_text = run_job(base, spec, services, token)
            rows = (view.get("result") or {}).get("rows")
            print(f"\n== {heading}: {rows} rows, job {view['id']}, {view['seconds']:.2f} s ==")
            print(format_table(csv_text, columns))

        print(f"\nAPI: {base}/api/v1/healthz (jobs at {base}/api/v1/jobs, documentation at "
              f"{base}/api/v1/docs; send 'Authorization: Bearer {token}')")
        if serve:
            print("serving until Ctrl-C")
            while True:
                services.check_alive()
                time.sleep(1)
    except DemoError:
        for name, _ in services.processes:
            print(f"--- last lines of {name}.log ---\n{services.log_tail(name)}",
                  file=sys.stderr)
        raise
    finally:
        services.stop_all()


def _healthy(base: str) -> bool:
    try:
        status, body = http_json("GET", f"{base}/api/v1/healthz")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return status == 200 and body.get("status") == "ok"


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true",
                        help="keep the sensor running after the jobs until Ctrl-C")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary data directory (logs, archive, results)")
    args = parser.parse_args()

    # SIGTERM ends the demo like Ctrl-C, so the finally block stops every process.
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="wirewatch-demo-"))
    try:
        run_demo(work, args.serve)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DemoError, subprocess.CalledProcessError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
