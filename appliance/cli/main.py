"""The ``wirewatch`` command: Argus's command names as subcommands.

``wirewatch capture`` is argus (packets to flow records); ``wirewatch ra``,
``racluster``, ``rasort``, ``ralabel`` and ``radump`` are the ra* clients. The
clients parse their own argument lists, because Argus's switches take several
words (``-s stime saddr``) and a filter follows a lone ``-``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from appliance import __version__

RA_TOOLS = ("ra", "racluster", "rasort", "ralabel", "radump")
SERVICE_COMMANDS = ("config", "token", "serve", "worker")

USAGE = """\
usage: wirewatch [--version] COMMAND [ARGS...]

commands:
  capture     meter packets (-r PCAP or -i IFACE) into flow records (-w FILE or
              --archive DIR), like argus
  ra          print flow records (-r PATH [-s fields] [-t range] [- filter])
  racluster   aggregate records by keys (-m saddr daddr ...)
  rasort      sort records by keys (-m bytes ...)
  ralabel     add country codes and labels (--geoip DB.mmdb)
  radump      print records with user data decoded (DNS)
  config      config init --data-dir DIR: print a valid configuration
  token       token create --scopes read,jobs,admin | token revoke ID: API tokens
  serve       serve the REST API with gunicorn (--bind HOST:PORT)
  worker      run this sensor's Celery worker

Run 'wirewatch COMMAND -h' for the switches of one command.
"""


class _CommandFormatter(logging.Formatter):
    """Format log lines like the commands' own error messages: ``ra: warning: ...``."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.command}: {record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(command: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CommandFormatter(command))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a command's modules are imported.

    Importing NumPy and pyarrow creates many objects that live as long as the process,
    and the collections their allocations trigger scan them again and again (10 to
    20 ms of each start). Afterwards they are frozen, so later collections skip them.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _run_capture(argv: list[str]) -> int:
    with _collector_paused():
        from appliance.cli import capture_cmd

    parser = argparse.ArgumentParser(prog="wirewatch")
    subparsers = parser.add_subparsers(dest="command", required=True)
    capture_cmd.add_parser(subparsers)
    args = parser.parse_args(["capture", *argv])
    return capture_cmd.run(args)


def main(argv: list[str] | None = None) -> int:
    """Run one wirewatch command and return its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    _configure_logging(argv[0] if argv and not argv[0].startswith("-") else "wirewatch")
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(f"wirewatch {__version__}")
        return 0
    if command == "capture":
        return _run_capture(rest)
    if command in SERVICE_COMMANDS:
        from appliance.cli import service_cmd

        return service_cmd.main(argv)
    if command in RA_TOOLS:
        with _collector_paused():
            from appliance.cli import ra_cmd

        return ra_cmd.main(command, rest)
    sys.stderr.write(f"wirewatch: unknown command {command!r}; run 'wirewatch --help'\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
