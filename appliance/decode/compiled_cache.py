"""Invalidate numba's on-disk cache when any compiled packet-path module changes.

numba checks only the source file of the function it caches, so a cached
``decode_frames`` would keep using an old ``parse_icmp`` after transport.py
changed. This module fingerprints every module whose njit functions call each
other and removes the cache files when the fingerprint differs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: Directories holding modules with njit(cache=True) functions that call one another.
COMPILED_DIRECTORIES = [PACKAGE_ROOT / "decode", PACKAGE_ROOT / "flows", PACKAGE_ROOT / "pcapio"]
STAMP_NAME = "wirewatch-numba.stamp"


def source_fingerprint() -> str:
    """Return a hash of every Python source file in the compiled directories."""
    digest = hashlib.sha256()
    for directory in COMPILED_DIRECTORIES:
        for source in sorted(directory.glob("*.py")):
            digest.update(source.name.encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def invalidate_stale_cache() -> None:
    """Remove numba cache files written for other versions of the compiled modules."""
    fingerprint = source_fingerprint()
    stamp = PACKAGE_ROOT / "decode" / "__pycache__" / STAMP_NAME
    try:
        if stamp.is_file() and stamp.read_text() == fingerprint:
            return
        for directory in COMPILED_DIRECTORIES:
            for cached in (directory / "__pycache__").glob("*.nb[ic]"):
                cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(fingerprint)
    except OSError as error:
        # A read-only installation keeps its cache; numba then compiles in memory as needed.
        log.debug("cannot refresh the numba cache in %s: %s", stamp.parent, error)
