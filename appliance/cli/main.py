"""The ``wirewatch`` command: Argus's command names as subcommands.

``wirewatch capture`` is argus (packets to flow records); ``wirewatch ra``,
``racluster``, ``rasort``, ``ralabel`` and ``radump`` are the ra* clients. The
clients parse their own argument lists, because Argus's switches take several
words (``-s stime saddr``) and a filter follows a lone ``-``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from appliance import __version__

RA_TOOLS = ("ra", "racluster", "rasort", "ralabel", "radump")

USAGE = """\
usage: wirewatch [--version] COMMAND [ARGS...]

commands:
  capture     read packets (-r PCAP) and write flow records (-w FILE), like argus
  ra          print flow records (-r PATH [-s fields] [-t range] [- filter])
  racluster   aggregate records by keys (-m saddr daddr ...)
  rasort      sort records by keys (-m bytes ...)
  ralabel     add country codes and labels (--geoip DB.mmdb)
  radump      print records with user data decoded (DNS)

Run 'wirewatch COMMAND -h' for the switches of one command.
"""


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="wirewatch: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _run_capture(argv: list[str]) -> int:
    from appliance.cli import capture_cmd

    parser = argparse.ArgumentParser(prog="wirewatch")
    subparsers = parser.add_subparsers(dest="command", required=True)
    capture_cmd.add_parser(subparsers)
    args = parser.parse_args(["capture", *argv])
    return capture_cmd.run(args)


def main(argv: list[str] | None = None) -> int:
    """Run one wirewatch command and return its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    _configure_logging()
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(f"wirewatch {__version__}")
        return 0
    if command == "capture":
        return _run_capture(rest)
    if command in RA_TOOLS:
        from appliance.cli import ra_cmd

        return ra_cmd.main(command, rest)
    sys.stderr.write(f"wirewatch: unknown command {command!r}; run 'wirewatch --help'\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
