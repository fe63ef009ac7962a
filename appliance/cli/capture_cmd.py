"""``wirewatch capture``: read packets and write flow records, like ``argus -r -w``.

``-w FILE`` writes one record file; ``--archive DIR`` writes a rotating archive directory
instead (rotation by packet time for ``-r``, by wall time for ``-i``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from appliance.archive import (
    ArchiveWriter,
    RecordFileError,
    RecordWriter,
    hold_for_status_interval,
)
from appliance.capture import BATCH_SIZE, CaptureSettings, flows_from_file, warm_up
from appliance.flows import FlowMeter
from appliance.pcapio import CaptureFileError, open_capture

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``capture`` subcommand and its switches to ``subparsers``."""
    parser = subparsers.add_parser(
        "capture",
        help="read packets from a capture file or an interface and write flow records",
        description="Read a pcap or pcapng file, or capture an interface, and write "
        "Argus-style flow records (Arrow IPC streams) to one file (-w) or a rotating "
        "archive directory (--archive).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-r", dest="read", metavar="PCAP",
                        help="pcap or pcapng file to read; '-' reads stdin")
    source.add_argument("-i", dest="interface", metavar="IFACE",
                        help="network interface to capture from until SIGTERM or SIGINT")
    parser.add_argument("-w", dest="write", metavar="FILE",
                        help="record file to write; '-' writes stdout")
    parser.add_argument("--archive", metavar="DIR",
                        help="archive directory to write instead of -w: an active file "
                        "rotated into DIR/YYYY/MM/DD/ by packet time (-r) or wall time (-i)")
    parser.add_argument("--rotate", dest="rotate_seconds", type=int, default=3600,
                        metavar="SECONDS",
                        help="with --archive: rotation period, aligned to the clock "
                        "(default 3600)")
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


def _check_output(args: argparse.Namespace) -> None:
    """Raise ValueError unless exactly one of -w and --archive is given."""
    if args.write is not None and args.archive is not None:
        raise ValueError(f"-w {args.write} and --archive {args.archive} exclude each other; "
                         "give one of them")
    if args.write is None and args.archive is None:
        raise ValueError("missing output: give -w FILE or --archive DIR")
    if args.archive is not None and args.rotate_seconds < 1:
        raise ValueError(f"--rotate {args.rotate_seconds}: give a period of at least 1 second")


def run(args: argparse.Namespace) -> int:
    """Run ``wirewatch capture``; return 0, or 2 for bad input."""
    try:
        _check_output(args)
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
        if args.archive is not None:
            return _read_into_archive(args, settings)
        records = flows_from_file(args.read, settings)
    except (CaptureFileError, ValueError) as error:
        sys.stderr.write(f"wirewatch capture: {error}\n")
        return 2
    try:
        with RecordWriter(args.write, joined=True) as writer:
            for batch in records:
                writer.write(batch)
    except OSError as error:
        sys.stderr.write(f"wirewatch capture: cannot write {args.write}: {error.strerror}\n")
        return 2
    return 0


def _run_live(args: argparse.Namespace, settings: CaptureSettings) -> int:
    """Capture from ``args.interface`` into ``args.write`` until SIGTERM or SIGINT."""
    from appliance.live import FilterError, LiveCaptureError, LiveSettings
    from appliance.live.run import capture_interface

    words = args.filter[1:] if args.filter[:1] == ["-"] else args.filter
    live = LiveSettings(interface=args.interface, filter=" ".join(words))
    stop = _stop_on_signals()
    try:
        writer = _open_output(args)
    except OSError as error:
        target = args.archive if args.archive is not None else args.write
        sys.stderr.write(f"wirewatch capture: cannot write {target}: {error.strerror}\n")
        return 2
    try:
        warm_up(settings)
        # An archive rotates by wall time here: ArchiveWriter.write defaults to time.time().
        capture_interface(live, FlowMeter(settings), writer, stop, lambda: sys.stderr.write(
            f"wirewatch capture: listening on {live.interface}, filter {live.filter!r}\n"))
    except (LiveCaptureError, FilterError) as error:
        sys.stderr.write(f"wirewatch capture: {error}\n")
        return 2
    finally:
        writer.close()
    return 0


def _stop_on_signals() -> threading.Event:
    """Return an event that SIGTERM and SIGINT set."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, writing out open flows", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    return stop


def _open_output(args: argparse.Namespace) -> RecordWriter | ArchiveWriter:
    if args.archive is not None:
        return _archive_writer(args)
    return RecordWriter(args.write)


def _archive_writer(args: argparse.Namespace) -> ArchiveWriter:
    """Open an archive writer whose hold time covers the records -S lets arrive late."""
    return ArchiveWriter(Path(args.archive), args.rotate_seconds,
                         hold_seconds=hold_for_status_interval(args.status_interval))


def _read_into_archive(args: argparse.Namespace, settings: CaptureSettings) -> int:
    """Meter ``args.read`` into the archive ``args.archive``, rotating by packet time.

    SIGTERM or SIGINT stops the read; the open flows are written out and the active
    file rotated into the archive either way.
    """
    reader = open_capture(args.read, BATCH_SIZE)
    stop = _stop_on_signals()
    try:
        writer = _archive_writer(args)
    except (OSError, RecordFileError) as error:
        sys.stderr.write(f"wirewatch capture: cannot use archive {args.archive}: {error}\n")
        return 2
    meter = FlowMeter(settings)
    packet_time = 0.0
    log.info("reading capture file %s into archive %s", args.read, args.archive)
    try:
        for batch in reader:
            if len(batch):
                packet_time = max(packet_time, float(batch.ts_us.max()) / 1e6)
            for records in meter.process(batch):
                writer.write(records, now=packet_time)
            if stop.is_set():
                log.warning("stopped reading %s early", args.read)
                break
        for records in meter.flush_batches():
            writer.write(records, now=packet_time)
    except OSError as error:
        sys.stderr.write(f"wirewatch capture: cannot write {args.archive}: {error}\n")
        return 2
    finally:
        writer.close()
    log.info("capture file %s: %d packets, %d records", args.read, meter.stats["packets"],
             meter.stats["records"])
    return 0
