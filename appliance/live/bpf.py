"""Kernel packet filters: tcpdump expressions compiled to classic BPF through libpcap.

libpcap's ``pcap_compile`` on a "dead" handle (no interface opened) turns an expression
into BPF instructions; the kernel runs them on every packet before it reaches the ring.
The accepting instructions return the snap length, so the kernel also truncates packets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: LINKTYPE_ETHERNET: the link type filters are compiled for by default.
LINKTYPE_ETHERNET = 1
#: Bytes of one classic BPF instruction (u16 code, u8 jt, u8 jf, u32 k).
INSTRUCTION_SIZE = 8
#: pcap_compile's netmask argument when it is unknown (broadcast tests then fail).
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF


class FilterError(ValueError):
    """A filter expression libpcap rejects, or libpcap missing."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"filter {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@dataclass(frozen=True)
class CompiledFilter:
    """A compiled filter: the expression, the snap length and the raw instructions."""

    expression: str
    snaplen: int
    instructions: bytes

    @property
    def length(self) -> int:
        return len(self.instructions) // INSTRUCTION_SIZE


_lock = threading.Lock()  # pcap_compile is not thread-safe in older libpcap releases
_library: ctypes.CDLL | None = None


def _libpcap() -> ctypes.CDLL:
    global _library
    if _library is not None:
        return _library
    name = ctypes.util.find_library("pcap")
    candidates = [name] if name else []
    candidates += ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"]
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate)
            break
        except OSError:
            continue
    else:
        raise FilterError("", "libpcap is not installed (Debian: apt-get install libpcap0.8)")
    library.pcap_open_dead.restype = ctypes.c_void_p
    library.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    library.pcap_compile.restype = ctypes.c_int
    library.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram),
                                     ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
    library.pcap_geterr.restype = ctypes.c_char_p
    library.pcap_geterr.argtypes = [ctypes.c_void_p]
    library.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    library.pcap_close.argtypes = [ctypes.c_void_p]
    _library = library
    return library


def compile_filter(expression: str, snaplen: int = 65535,
                   linktype: int = LINKTYPE_ETHERNET) -> CompiledFilter:
    """Compile a tcpdump filter expression ("" accepts every packet) for the kernel.

    Raises FilterError naming the expression and libpcap's reason.
    """
    try:
        library = _libpcap()
    except FilterError as error:
        raise FilterError(expression, error.reason) from None
    with _lock:
        handle = library.pcap_open_dead(linktype, snaplen)
        if not handle:
            raise FilterError(expression, "pcap_open_dead failed")
        try:
            program = _BpfProgram()
            status = library.pcap_compile(handle, ctypes.byref(program),
                                          expression.encode(), 1, PCAP_NETMASK_UNKNOWN)
            if status != 0:
                reason = (library.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
                raise FilterError(expression, f"{reason}; use tcpdump filter syntax, "
                                  "for example 'tcp port 80 or udp'")
            try:
                instructions = ctypes.string_at(program.bf_insns,
                                                program.bf_len * INSTRUCTION_SIZE)
            finally:
                library.pcap_freecode(ctypes.byref(program))
        finally:
            library.pcap_close(handle)
    return CompiledFilter(expression, snaplen, instructions)
