"""Atomic file replacement: a reader sees the old file or the new one, never a part of it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomically(path: str | Path, data: bytes | str, sync: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    Missing parent directories are created. With ``sync`` the data is on disk before the
    rename, so a crash leaves either the old file or the whole new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomically(path: str | Path, document: Any, sync: bool = False) -> None:
    """Write ``document`` as indented JSON (unknown types as strings) atomically."""
    write_atomically(path, json.dumps(document, indent=2, default=str), sync=sync)
