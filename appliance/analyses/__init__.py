"""Analyses over flow record tables: racluster, rasort, ralabel and radump for DNS.

Each takes and returns pyarrow Tables with the flow record schema (``extract_dns``
returns its own DNS schema). racluster groups in compiled (numba) loops; rasort sorts
with Arrow, or polars for several keys.

The names below are loaded on first use, so that a command importing one analysis
does not pay for the compiled code of the others.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> module that defines it.
_HOMES = {
    "cluster_records": "cluster",
    "extract_dns": "dns",
    "radump_text": "dns",
    "AnalysisKeyError": "keys",
    "CountryLabeler": "label",
    "LabelError": "label",
    "database_info": "label",
    "label_records": "label",
    "sort_records": "sort",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
