"""Service commands: ``config init``, ``token create|revoke``, ``serve`` and ``worker``.

``--config PATH`` (default: $WIREWATCH_CONFIG) selects the configuration file. ``serve``
and ``worker`` replace this process with gunicorn or the Celery worker, passing the file
through $WIREWATCH_CONFIG, so this module imports neither Flask nor Celery.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import tomli_w

from appliance.config import (
    API_DEFAULTS,
    CAPTURE_DEFAULTS,
    CONFIG_ENV,
    JOBS_DEFAULTS,
    SENSORS_DEFAULTS,
    SRCID_PATTERN,
    ConfigError,
    load_config,
    parse_config,
    sensor_queue,
)

log = logging.getLogger(__name__)

#: Default gunicorn worker processes for ``wirewatch serve``: one per CPU, at least 2.
#: A request spends most of its time in Python, so more processes than CPUs only add
#: context switches (measured with bench/bench_api_load.py).
SERVE_WORKERS = max(2, os.cpu_count() or 2)
#: Default threads per worker process. More than one selects gunicorn's gthread worker,
#: which keeps idle keep-alive connections in a poller instead of a thread each, so
#: polling clients reuse their connections.
SERVE_THREADS = 8


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH",
                        help=f"configuration file (default: ${CONFIG_ENV})")


def _config_path(args: argparse.Namespace) -> Path:
    chosen = args.config or os.environ.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError("config", None, f"no configuration file; pass --config PATH or set "
                          f"${CONFIG_ENV}")
    return Path(chosen).expanduser().resolve()


def config_document(data_dir: Path, srcid: str) -> dict[str, Any]:
    """Return a complete configuration with every key at its default."""
    return {
        "data_dir": str(data_dir),
        "srcid": srcid,
        "capture": dict(CAPTURE_DEFAULTS),
        "archive": {"dir": str(data_dir / "archive")},
        "jobs": {**JOBS_DEFAULTS, "results_dir": str(data_dir / "results")},
        "broker": {"url": "", "result_backend": ""},
        "api": {key: value for key, value in API_DEFAULTS.items() if key != "tokens"},
        "sensors": dict(SENSORS_DEFAULTS),
    }


def run_config_init(args: argparse.Namespace) -> int:
    """Print a valid configuration for a data directory."""
    data_dir = Path(args.data_dir).expanduser().resolve()
    srcid = args.srcid or socket.gethostname()
    if not SRCID_PATTERN.fullmatch(srcid):
        sys.stderr.write(f"wirewatch: invalid --srcid {srcid!r}; use 1 to 64 letters, digits, "
                         "'.', '_', ':' or '-'\n")
        return 2
    document = config_document(data_dir, srcid)
    parse_config(document, None)
    sys.stdout.write(tomli_w.dumps(document))
    return 0


def run_token(args: argparse.Namespace) -> int:
    """Create or revoke an API token in the configuration file."""
    from appliance.tokens import create_token, parse_scopes, revoke_token

    path = _config_path(args)
    if args.token_command == "create":
        try:
            scopes = parse_scopes(args.scopes)
        except ValueError as error:
            sys.stderr.write(f"wirewatch: {error}\n")
            return 2
        record, token = create_token(path, scopes, args.label)
        sys.stderr.write(f"token {record.id} with scopes {','.join(scopes)} added to {path}; "
                         "it is shown once, store it now\n")
        print(token)
        return 0
    if not revoke_token(path, args.id):
        sys.stderr.write(f"wirewatch: no token with id {args.id!r} in {path}; "
                         "the ids are the 'id' keys under [[api.tokens]]\n")
        return 2
    sys.stderr.write(f"token {args.id} revoked\n")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving the API."""
    path = _config_path(args)
    load_config(path)  # fail here, with exit status 2, on an invalid file
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        sys.stderr.write(f"wirewatch: invalid --bind {args.bind!r}; expected HOST:PORT such "
                         "as 127.0.0.1:8000\n")
        return 2
    argv = [sys.executable, "-m", "gunicorn", "--bind", args.bind, "--workers",
            str(args.workers), "--threads", str(args.threads), "--access-logfile", "-",
            "api:create_app()"]
    os.environ[CONFIG_ENV] = str(path)
    os.execv(sys.executable, argv)
    return 0  # not reached


def run_worker(args: argparse.Namespace) -> int:
    """Replace this process with the Celery worker of this sensor's queues."""
    path = _config_path(args)
    config = load_config(path)
    queues = [sensor_queue(config.srcid)]
    if not args.no_fleet:
        queues.append(f"fleet.{config.srcid}")
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q",
            ",".join(queues), "--concurrency", str(args.concurrency), "--loglevel",
            args.loglevel, "--hostname", f"{config.srcid}@%h"]
    os.environ[CONFIG_ENV] = str(path)
    os.execv(sys.executable, argv)
    return 0  # not reached


def add_parsers(subparsers: Any) -> None:
    """Add the config, token, serve and worker subcommands."""
    config = subparsers.add_parser("config", help="print a configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    init = config_commands.add_parser("init", help="print a valid configuration")
    init.add_argument("--data-dir", required=True, metavar="DIR",
                      help="data directory (archive, results, broker files)")
    init.add_argument("--srcid", default="", help="sensor id (default: the host name)")
    init.set_defaults(run=run_config_init)

    token = subparsers.add_parser("token", help="create or revoke API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="add a token and print it once")
    create.add_argument("--scopes", default="read",
                        help="comma-separated scopes: read, jobs, admin (default: read)")
    create.add_argument("--label", default="", help="a note on who uses the token")
    _config_argument(create)
    create.set_defaults(run=run_token)
    revoke = token_commands.add_parser("revoke", help="remove a token by its id")
    revoke.add_argument("id", help="the token id (the 16 hex digits after 'ww_')")
    _config_argument(revoke)
    revoke.set_defaults(run=run_token)

    serve = subparsers.add_parser("serve", help="serve the REST API with gunicorn")
    serve.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on")
    serve.add_argument("--workers", type=int, default=SERVE_WORKERS,
                       help="gunicorn worker processes (default: one per CPU, at least 2)")
    serve.add_argument("--threads", type=int, default=SERVE_THREADS,
                       help=f"threads per worker process (default {SERVE_THREADS}; more "
                       "than 1 selects gunicorn's gthread worker)")
    _config_argument(serve)
    serve.set_defaults(run=run_serve)

    worker = subparsers.add_parser("worker", help="run this sensor's Celery worker")
    worker.add_argument("--concurrency", type=int, default=2,
                        help="worker processes (default 2: a fleet merge waits on parts)")
    worker.add_argument("--no-fleet", action="store_true",
                        help="do not consume fleet.<srcid> (this sensor coordinates no "
                        "fleet jobs)")
    worker.add_argument("--loglevel", default="INFO", help="Celery log level")
    _config_argument(worker)
    worker.set_defaults(run=run_worker)


def main(argv: list[str]) -> int:
    """Parse and run one service command; errors in the configuration exit with status 2."""
    parser = argparse.ArgumentParser(prog="wirewatch")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        sys.stderr.write(f"wirewatch: {error}\n")
        return 2
