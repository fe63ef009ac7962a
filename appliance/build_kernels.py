"""Build ``appliance._kernels``: the packet-path kernels compiled ahead of time by numba.pycc.

Usage: python -m appliance.build_kernels [--target-cpu CPU] [--check]

The build runs the capture path once with numba's JIT on synthetic packets: a pcap
file, a live-capture batch, and enough flows to grow the flow table. It then finds the
compiled functions that Python code calls and exports each signature numba compiled
for them. So a changed kernel signature is picked up by the next build without editing this
file. The module also exports the fingerprint of the sources it was built from, and
``appliance.jit`` uses the module only while the sources are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from numba.pycc import CC

log = logging.getLogger(__name__)

#: Generic x86-64 code runs on every x86-64 machine, so a module built on one host
#: (a CI runner, a developer's laptop) stays valid when the tree is copied to another.
DEFAULT_TARGET_CPU = "x86-64"
#: Same as ``appliance.jit.FORCE_JIT_VARIABLE``; importing appliance.jit would load the kernels.
FORCE_JIT = "WIREWATCH_JIT"
#: Distinct UDP flows sent through the flow meter: more than its initial slots, so it grows.
GROWTH_FLOWS = 5000


# Synthetic packets ------------------------------------------------------------------------


def _ipv4(proto: int, source: bytes, destination: bytes, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                         source, destination)
    return header + payload


def _ethernet(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return bytes.fromhex("020000000002" "020000000001") + struct.pack("!H", ethertype) + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _tcp(sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 8192, 0, 0) + payload


def synthetic_frames() -> list[bytes]:
    """Return Ethernet frames of UDP, TCP, ICMP (an error quoting UDP) and ARP, and many flows."""
    client, server = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    udp = _ipv4(17, client, server, _udp(40000, 53, b"query"))
    frames = [
        _ethernet(udp),
        _ethernet(_ipv4(6, client, server, _tcp(40001, 80, 0x02))),
        _ethernet(_ipv4(6, server, client, _tcp(80, 40001, 0x12))),
        _ethernet(_ipv4(6, client, server, _tcp(40001, 80, 0x18, b"GET / HTTP/1.0\r\n"))),
        _ethernet(_ipv4(1, server, client, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + udp[:28])),
        _ethernet(bytes.fromhex("0001080006040001") + bytes(6) + client + bytes(6) + server,
                  ethertype=0x0806),
    ]
    frames += [_ethernet(_ipv4(17, client, server, _udp(1024 + n, 9, b"x")))
               for n in range(GROWTH_FLOWS)]
    return frames


def write_pcap(path: Path, frames: list[bytes]) -> None:
    """Write frames as a little-endian microsecond pcap file, one packet every 10 ms."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for index, frame in enumerate(frames):
            seconds, micros = divmod(index * 10_000, 1_000_000)
            out.write(struct.pack("<IIII", 1_000_000 + seconds, micros, len(frame), len(frame)))
            out.write(frame)


# The capture path, run once -------------------------------------------------------------


def exercise_capture_path() -> None:
    """Call every compiled function the capture path calls from Python, with real types."""
    import numpy as np

    from appliance.capture import warm_up
    from appliance.flows import CaptureSettings, FlowMeter
    from appliance.live.walk import walk_block
    from appliance.pcapio import PacketBatch, read_packets

    frames = synthetic_frames()
    with tempfile.TemporaryDirectory(prefix="wirewatch-kernels-") as work:
        capture = Path(work) / "synthetic.pcap"
        write_pcap(capture, frames)
        for settings in (CaptureSettings(86400, 128, True), CaptureSettings(1, 0, False)):
            meter = FlowMeter(settings)
            for batch in read_packets(capture, batch_size=1024):
                meter.process(batch)
            meter.flush()
            warm_up(settings)

    # A live capture copies frames out of the ring into a writable buffer.
    live = PacketBatch.from_frames(frames[:6], [1_000_000 + n for n in range(6)])
    live.buffer = live.buffer.copy()
    meter = FlowMeter(CaptureSettings(1, 128, True))
    meter.process(live)
    meter.advance(10_000_000)
    meter.flush()
    block = np.zeros(4096, dtype=np.uint8)  # a ring block holding no packets
    walk_block(block, np.zeros(4096, dtype=np.uint8), 0, np.zeros(8, dtype=np.int64),
               np.zeros(8, dtype=np.int32), np.zeros(8, dtype=np.int32),
               np.zeros(8, dtype=np.int64), 0)


# Which compiled functions Python calls ---------------------------------------------------


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _code_objects(constant)


def _python_functions(module: ModuleType) -> Iterator[FunctionType]:
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, FunctionType):
            yield value
        elif isinstance(value, type):
            for member in vars(value).values():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if isinstance(member, FunctionType):
                    yield member


def python_called_dispatchers() -> dict[str, object]:
    """Return the numba dispatchers that plain Python functions of ``appliance`` call, by name.

    A name counts when a Python function's code refers to it and the function's module
    binds that name to a dispatcher.
    """
    from numba.core.dispatcher import Dispatcher

    found: dict[str, object] = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("appliance.") or module is None:
            continue
        namespace = vars(module)
        for function in _python_functions(module):
            for code in _code_objects(function.__code__):
                for reference in code.co_names:
                    value = namespace.get(reference)
                    if isinstance(value, Dispatcher):
                        py_func = value.py_func
                        found[f"{py_func.__module__}.{py_func.__qualname__}"] = value
    return found


def type_key(numba_type: object) -> object:
    """Return the argument key (as ``appliance.jit.value_key`` computes it) of a numba type."""
    from numba.core import types
    from numba.np.numpy_support import as_dtype

    from appliance.jit import dtype_text

    if isinstance(numba_type, types.Array):
        return ("array", dtype_text(as_dtype(numba_type.dtype)), numba_type.ndim,
                numba_type.layout, numba_type.mutable, numba_type.aligned)
    if isinstance(numba_type, types.BaseTuple):
        return ("tuple", *(type_key(item) for item in numba_type))
    if isinstance(numba_type, (types.Boolean, types.Integer, types.Float)):
        return str(numba_type)
    raise TypeError(f"cannot export an argument of numba type {numba_type}")


# The build --------------------------------------------------------------------------------


def build(target_cpu: str) -> Path:
    """Compile the prebuilt module next to ``appliance.jit`` and return its path."""
    from numba.pycc import CC

    from appliance import jit

    if jit.prebuilt_module() is not None or not jit.uses_jit():
        raise RuntimeError("the kernels were loaded from the prebuilt module; "
                           f"build in a fresh process with {jit.FORCE_JIT_VARIABLE}=1")
    fingerprint = jit.source_fingerprint()
    started = time.monotonic()
    exercise_capture_path()
    log.info("capture path run with numba's JIT in %.1f s", time.monotonic() - started)

    compiler = CC(jit.PREBUILT_MODULE.rsplit(".", 1)[1])
    compiler.target_cpu = target_cpu
    # The kernels compile without numba's runtime (appliance.jit.NRT_OPTIONS), so the
    # module needs neither its reference counting nor its allocator.
    compiler.use_nrt = False
    exports = _export_kernels(compiler)
    _export_fingerprint(compiler, fingerprint)
    started = time.monotonic()
    target = _compile_into_package(compiler)
    log.info("compiled %d exports for %s in %.1f s", exports, target_cpu,
             time.monotonic() - started)
    return target


def _export_kernels(compiler: CC) -> int:
    """Mark each signature of each Python-called kernel for export; return how many."""
    from appliance import jit

    exports = 0
    for qualified_name, dispatcher in sorted(python_called_dispatchers().items()):
        if not dispatcher.signatures:
            log.warning("%s was not called while building; it will compile with numba",
                        qualified_name)
        for signature in dispatcher.signatures:
            key = tuple(type_key(argument) for argument in signature)
            full_signature = dispatcher.overloads[signature].signature
            compiler.export(jit.export_name(qualified_name, key), full_signature)(
                dispatcher.py_func)
            exports += 1
            log.info("exporting %s%s", qualified_name, signature)
    return exports


def _export_fingerprint(compiler: CC, fingerprint: str) -> None:
    from numba import types

    from appliance import jit

    words = jit.fingerprint_words(fingerprint)

    def source_fingerprint() -> tuple[int, ...]:
        return words

    compiler.export(jit.FINGERPRINT_EXPORT, types.UniTuple(types.int64, len(words))())(
        source_fingerprint)


def _compile_into_package(compiler: CC) -> Path:
    from appliance import jit

    with tempfile.TemporaryDirectory(prefix="wirewatch-pycc-") as work:
        compiler.output_dir = work
        compiler.compile()
        built = Path(work) / compiler.output_file
        target = jit.PACKAGE_ROOT / compiler.output_file
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(built, staged)
        # os.replace is atomic, so a process importing the module gets the old or the new file.
        os.replace(staged, target)
    return target


def check() -> None:
    """Run the capture path on the prebuilt module alone; raise if any call needed numba."""
    from appliance import jit

    if jit.prebuilt_module() is None:
        raise RuntimeError(f"the prebuilt module is not used: {jit.mode_reason()}")
    exercise_capture_path()
    if jit.uses_jit() or "numba" in sys.modules:
        raise RuntimeError("the capture path needed numba's JIT; see the log for the call")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-cpu", default=DEFAULT_TARGET_CPU,
                        help=f"LLVM CPU name to compile for (default {DEFAULT_TARGET_CPU}; "
                        "'host' for this machine's CPU only)")
    parser.add_argument("--check", action="store_true",
                        help="only check that the built module serves the whole capture path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.check:
        try:
            check()
        except RuntimeError as error:
            print(f"build_kernels: check failed: {error}", file=sys.stderr)
            return 1
        return 0

    os.environ[FORCE_JIT] = "1"
    path = build(args.target_cpu)
    environment = {key: value for key, value in os.environ.items() if key != FORCE_JIT}
    result = subprocess.run([sys.executable, "-m", "appliance.build_kernels", "--check"],
                            env=environment)
    if result.returncode != 0:
        print(f"build_kernels: {path} was built but failed its check; if a source file "
              "changed during the build, run the build again", file=sys.stderr)
        return 1
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
