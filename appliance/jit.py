"""Compiled packet-path kernels: a prebuilt extension module when current, else numba's JIT.

The packet-path modules take ``njit`` from here. When ``appliance._kernels`` (built by
``python -m appliance.build_kernels``) exists and was built from the current sources,
``njit`` wraps each function in a ``Kernel`` that calls the module's ahead-of-time
compiled export for the argument types, so the capture command never imports numba.
Otherwise ``njit`` is ``numba.njit`` itself.

A call the prebuilt module has no export for (a kernel only tests call, or argument
types the build never saw) makes every kernel compile with numba's JIT from then on,
which gives the same results with numba's start-up cost. Calls that have an export
keep using it.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent
#: Directories holding modules with compiled functions that call one another.
COMPILED_DIRECTORIES = [PACKAGE_ROOT / name for name in ("decode", "flows", "pcapio", "live")]
#: Files outside them that decide how the compiled functions are built and called.
COMPILER_FILES = [PACKAGE_ROOT / "jit.py", PACKAGE_ROOT / "build_kernels.py"]
#: The packet-path kernels allocate no arrays: they work on arrays that Python passes
#: in. Without numba's runtime (NRT) they also keep no reference counts on them. With it,
#: every array passed to a compiled function, unpacked from a tuple or sliced is counted
#: up and down with atomic instructions (noinline calls), which took 60 % of the packet
#: path's CPU time on big10. A kernel that needs an allocation then fails to compile
#: ("NRT required but not enabled") instead of being slow.
NRT_OPTIONS: dict[str, Any] = {"_nrt": False}
#: Fingerprint of the sources that numba's on-disk cache was last written for.
CACHE_STAMP = PACKAGE_ROOT / "decode" / "__pycache__" / "wirewatch-numba.stamp"

#: Set to 1 to compile with numba's JIT even when the prebuilt module is current.
FORCE_JIT_VARIABLE = "WIREWATCH_JIT"
PREBUILT_MODULE = "appliance._kernels"
#: Name of the prebuilt module's export that returns the source fingerprint it was built from.
FINGERPRINT_EXPORT = "source_fingerprint"
#: The fingerprint is exported as this many 32-bit words of the SHA-256 digest.
FINGERPRINT_WORDS = 8


def source_fingerprint() -> str:
    """Return a SHA-256 hex digest of every source file of the compiled functions."""
    digest = hashlib.sha256()
    sources = [path for folder in COMPILED_DIRECTORIES for path in sorted(folder.glob("*.py"))]
    for source in sources + COMPILER_FILES:
        digest.update(f"{source.parent.name}/{source.name}".encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def invalidate_stale_cache() -> None:
    """Remove numba's cache files when any compiled module changed since they were written.

    numba checks only the source file of the function it caches, so a cached
    ``decode_frames`` would keep using an old ``parse_icmp`` after transport.py changed.
    """
    fingerprint = source_fingerprint()
    try:
        if CACHE_STAMP.is_file() and CACHE_STAMP.read_text() == fingerprint:
            return
        for directory in COMPILED_DIRECTORIES:
            for cached in (directory / "__pycache__").glob("*.nb[ic]"):
                cached.unlink(missing_ok=True)
        CACHE_STAMP.parent.mkdir(exist_ok=True)
        CACHE_STAMP.write_text(fingerprint)
    except OSError as error:
        # A read-only installation keeps its cache; numba then compiles in memory as needed.
        log.debug("cannot refresh the numba cache in %s: %s", CACHE_STAMP.parent, error)


def fingerprint_words(hexdigest: str) -> tuple[int, ...]:
    """Split a SHA-256 hex digest into ``FINGERPRINT_WORDS`` integers of 32 bits."""
    return tuple(int(hexdigest[i : i + 8], 16) for i in range(0, 8 * FINGERPRINT_WORDS, 8))


def load_prebuilt(fingerprint: str) -> tuple[ModuleType | None, str]:
    """Import the prebuilt module if it was built from sources with ``fingerprint``.

    Returns the module, or None when the kernels must compile with numba, and the reason.
    """
    if os.environ.get(FORCE_JIT_VARIABLE, "0") not in ("", "0"):
        return None, f"{FORCE_JIT_VARIABLE} is set"
    try:
        module = importlib.import_module(PREBUILT_MODULE)
    except ImportError as error:
        return None, (f"the prebuilt module cannot be imported ({error}); build it with "
                      "'python -m appliance.build_kernels'")
    built = getattr(module, FINGERPRINT_EXPORT, None)
    if built is None or tuple(built()) != fingerprint_words(fingerprint):
        return None, (f"the prebuilt module {module.__file__} was built from other sources; "
                      "rebuild it with 'python -m appliance.build_kernels'")
    return module, f"prebuilt module {module.__file__}"


_prebuilt, _reason = load_prebuilt(source_fingerprint())
_lock = threading.RLock()
_kernels: list[Kernel] = []
_numba_njit: Callable[..., Any] | None = None
_mode_logged = False


def _import_numba_njit() -> Callable[..., Any]:
    invalidate_stale_cache()
    import numba

    return numba.njit


if _prebuilt is None:
    _numba_njit = _import_numba_njit()


# Argument keys ---------------------------------------------------------------------------
#
# A key names the numba type of each argument, so that the key of a call's values
# and the key of an exported signature match when numba would pick that signature.

_dtype_texts: dict[np.dtype, str] = {}


def dtype_text(dtype: np.dtype) -> str:
    """Return a canonical text for a NumPy dtype: byte order, kind and size, fields, offsets."""
    text = _dtype_texts.get(dtype)
    if text is None:
        if dtype.subdtype is not None:
            base, shape = dtype.subdtype
            text = f"{dtype_text(base)}{list(shape)}"
        elif dtype.names is not None:
            fields = ",".join(
                f"{name}:{dtype_text(dtype.fields[name][0])}@{dtype.fields[name][1]}"
                for name in dtype.names
            )
            aligned = "aligned" if dtype.isalignedstruct else "packed"
            text = f"{{{fields}}}{dtype.itemsize}{aligned}"
        else:
            text = dtype.str
        _dtype_texts[dtype] = text
    return text


def value_key(value: object) -> object:
    """Return the key of one argument value, as numba would type it."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        if flags.c_contiguous:
            layout = "C"
        elif flags.f_contiguous:
            layout = "F"
        else:
            layout = "A"
        # numba 0.68 types an array as unaligned only when its dtype is a packed structure.
        aligned = value.dtype.names is None or value.dtype.isalignedstruct
        return ("array", dtype_text(value.dtype), value.ndim, layout, bool(flags.writeable),
                aligned)
    if isinstance(value, tuple):
        return ("tuple", *(value_key(item) for item in value))
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -(1 << 63) <= value < (1 << 63) else "uint64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, np.generic):
        return value.dtype.name
    return ("python", type(value).__qualname__)


def export_name(qualified_name: str, key: object) -> str:
    """Return the prebuilt module's export name for a kernel and an argument key."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return f"{qualified_name.replace('.', '_')}__{digest}"


# Kernels ---------------------------------------------------------------------------------


class Kernel:
    """A compiled function served by the prebuilt module, or by numba once the JIT is on."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py_func = function
        self.options = options
        self.qualified_name = f"{function.__module__}.{function.__qualname__}"
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__doc__ = function.__doc__
        self.__module__ = function.__module__
        self.__wrapped__ = function
        self.dispatcher: Callable[..., Any] | None = None
        self._targets: dict[object, Callable[..., Any]] = {}

    def __repr__(self) -> str:
        return f"<Kernel {self.qualified_name}>"

    @property
    def _numba_type_(self) -> Any:
        """The numba type of the dispatcher, so numba compiles calls to a Kernel global.

        numba types a global through this attribute when its class is not registered.
        Before the JIT is enabled there is no dispatcher and no numba type.
        """
        if self.dispatcher is None:
            raise AttributeError("_numba_type_")
        return self.dispatcher._numba_type_

    def __call__(self, *args: Any, **keywords: Any) -> Any:
        if keywords:  # the exports take positional arguments only
            enable_jit(f"{self.qualified_name} was called with keyword arguments")
            return self.dispatcher(*args, **keywords)
        key = tuple(value_key(arg) for arg in args)
        target = self._targets.get(key)
        if target is None:
            target = self._resolve(key)
        return target(*args)

    def _resolve(self, key: tuple) -> Callable[..., Any]:
        target = getattr(_prebuilt, export_name(self.qualified_name, key), None)
        if target is None:
            log.debug("the prebuilt module has no %s for the argument types %s",
                      self.qualified_name, key)
            enable_jit(f"the prebuilt module has no {self.qualified_name} for these "
                       "argument types")
            target = self.dispatcher
        self._targets[key] = target
        return target


def njit(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Compile a function like ``numba.njit`` (same options), or serve it from the prebuilt module.

    Use it bare (``@njit``) or with options (``@njit(cache=True)``). The functions
    compile without numba's runtime (``_nrt=False``, see ``NRT_OPTIONS``) unless the
    options say otherwise.
    """
    options = {**NRT_OPTIONS, **options}

    def decorate(target: Callable[..., Any]) -> Any:
        with _lock:
            if _numba_njit is not None:
                return _numba_njit(**options)(target)
            kernel = Kernel(target, options)
            _kernels.append(kernel)
            return kernel

    if function is not None:
        return decorate(function)
    return decorate


def enable_jit(reason: str) -> None:
    """Give every Kernel a numba dispatcher, and make ``njit`` return numba's from now on."""
    global _numba_njit
    with _lock:
        if _numba_njit is not None:
            return
        log.info("compiled kernels: switching to numba's JIT because %s", reason)
        numba_njit = _import_numba_njit()
        for kernel in _kernels:
            kernel.dispatcher = numba_njit(**kernel.options)(kernel.py_func)
        _numba_njit = numba_njit


def prebuilt_module() -> ModuleType | None:
    """Return the prebuilt module in use, or None when the kernels compile with numba."""
    return _prebuilt


def uses_jit() -> bool:
    """Tell whether kernels compile with numba, from the start or since a missing export."""
    return _numba_njit is not None


def mode_reason() -> str:
    """Return why the kernels come from the prebuilt module or from numba's JIT."""
    return _reason


def log_mode() -> None:
    """Log once, at INFO, where the compiled kernels come from."""
    global _mode_logged
    if not _mode_logged:
        _mode_logged = True
        if _prebuilt is None:
            log.info("compiled kernels: numba's JIT, because %s", _reason)
        else:
            log.info("compiled kernels: %s", _reason)
