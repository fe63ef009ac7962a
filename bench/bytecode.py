"""Compile Wirewatch's sources to bytecode before the commands are timed.

pip compiles the bytecode of a package it installs, as the Ansible role's install does,
so a sensor's commands start without compiling anything. A development checkout is
installed in editable mode, and where PYTHONDONTWRITEBYTECODE is set Python compiles
every imported module again at each start: about 40 ms more for the ra commands. The
benchmarks time the commands as installed.
"""

from __future__ import annotations

import compileall
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("appliance", "worker", "api")


def compile_sources() -> None:
    """Write the bytecode of every module of the Wirewatch packages (quietly)."""
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
