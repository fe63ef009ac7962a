"""``wirewatch capture``: read a capture file and write flow records, like ``argus -r -w``."""

from __future__ import annotations

import argparse
import logging
import sys

from appliance.archive import RecordWriter
from appliance.capture import CaptureSettings, flows_from_file
from appliance.pcapio import CaptureFileError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``capture`` subcommand and its switches to ``subparsers``."""
    parser = subparsers.add_parser(
        "capture",
        help="read packets from a capture file and write flow records",
        description="Read a pcap or pcapng file and write Argus-style flow records "
        "(an Arrow IPC stream).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-r", dest="read", metavar="PCAP",
                        help="pcap or pcapng file to read; '-' reads stdin")
    source.add_argument("-i", dest="interface", metavar="IFACE",
                        help="network interface to capture from until SIGTERM or SIGINT")
    parser.add_argument("-w", dest="write", required=True, metavar="FILE",
                        help="record file to write; '-' writes stdout")
    parser.add_argument("-S", dest="status_interval", type=float, default=60.0, metavar="SECS",
                        help="status interval in seconds: active flows are reported this "
                        "often and idle flows closed at these ticks (default 60)")
    parser.add_argument("-U", dest="user_data_len", type=int, default=0, metavar="BYTES",
                        help="payload bytes to keep per direction and record, 0 = none "
                        "(default 0)")
    parser.add_argument("-A", dest="appbytes", action="store_true",
                        help="count application bytes (sappbytes, dappbytes)")
    parser.add_argument("--srcid", default="", help="sensor id written into every record")
    parser.add_argument("filter", nargs="*", metavar="- FILTER",
                        help="with -i: '-' and a tcpdump filter expression run in the kernel")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``wirewatch capture``; return 0, or 2 for bad input."""
    try:
        settings = CaptureSettings(
            status_interval=args.status_interval,
            user_data_len=args.user_data_len,
            appbytes=args.appbytes,
            srcid=args.srcid,
        )
        if args.interface:
            return _run_live(args, settings)
        if args.filter:
            raise ValueError(f"filter {' '.join(args.filter)!r} works only with -i; "
                             "filter records read with -r with 'wirewatch ra'")
        records = flows_from_file(args.read, settings)
    except (CaptureFileError, ValueError) as error:
        sys.stderr.write(f"wirewatch capture: {error}\n")
        return 2
    try:
        with RecordWriter(args.write) as writer:
            for batch in records:
                writer.write(batch)
    except OSError as error:
        sys.stderr.write(f"wirewatch capture: cannot write {args.write}: {error.strerror}\n")
        return 2
    return 0


def _run_live(args: argparse.Namespace, settings: CaptureSettings) -> int:
    """Capture from ``args.interface`` into ``args.write`` until SIGTERM or SIGINT."""
    import signal
    import threading

    from appliance.flows import FlowMeter
    from appliance.live import FilterError, LiveCaptureError, LiveSettings
    from appliance.live.run import capture_interface

    words = args.filter[1:] if args.filter[:1] == ["-"] else args.filter
    live = LiveSettings(interface=args.interface, filter=" ".join(words))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with RecordWriter(args.write) as writer:
            capture_interface(live, FlowMeter(settings), writer, stop, lambda: sys.stderr.write(
                f"wirewatch capture: listening on {live.interface}, filter {live.filter!r}\n"))
    except (LiveCaptureError, FilterError) as error:
        sys.stderr.write(f"wirewatch capture: {error}\n")
        return 2
    return 0
