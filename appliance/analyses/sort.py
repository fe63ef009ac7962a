"""rasort: order flow records by -m keys, compared left to right.

Each key has a default direction: counters (pkts, bytes, rate, load, trans ...) and
times (stime, ltime, dur) sort descending, so the largest and the latest come first;
addresses, ports, proto and the other identifiers sort ascending. ``key:asc`` or
``key:desc`` overrides the default. Addresses compare numerically (8.8.8.8 before
10.0.0.1), IPv4 before IPv6 except ``::/96``. Nulls sort last in either direction. The
sort is stable: records with equal keys keep their input order.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from appliance.analyses.keys import (
    AnalysisKeyError,
    address_words,
    mask_words,
    parse_address_key,
    prefix_mask_bits,
    with_mac_sources,
)
from appliance.records import conform

log = logging.getLogger(__name__)

DEFAULT_KEYS = ["stime"]

#: Keys sorted descending unless overridden.
DESCENDING_KEYS = frozenset(
    ["stime", "ltime", "dur", "trans", "pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes",
     "appbytes", "sappbytes", "dappbytes", "rate", "srate", "drate", "load", "sload", "dload"]
)

#: Keys sorted ascending unless overridden: columns of the record, compared by value.
ASCENDING_KEYS = frozenset(
    ["proto", "sport", "dport", "smac", "dmac", "stos", "dtos", "sttl", "dttl", "vlan",
     "srcid", "seq", "etype", "sco", "dco", "sas", "das", "state", "dir", "label", "cause"]
)

DIRECTIONS = {"asc": False, "desc": True}


@dataclass(frozen=True)
class SortKey:
    """One parsed -m key: the key text (with any /len), and whether it sorts descending."""

    name: str
    descending: bool


def parse_sort_key(text: str) -> SortKey:
    """Parse ``field``, ``field:asc``, ``field:desc`` or ``saddr/24[:asc]``."""
    name, _, direction = text.partition(":")
    if direction and direction not in DIRECTIONS:
        raise AnalysisKeyError(text, "the direction after ':' must be asc or desc")
    if parse_address_key(name) is not None:
        default = False
    elif name in DESCENDING_KEYS:
        default = True
    elif name in ASCENDING_KEYS:
        default = False
    else:
        known = ", ".join(sorted(DESCENDING_KEYS | ASCENDING_KEYS | {"saddr[/len]", "daddr[/len]"}))
        raise AnalysisKeyError(name, f"unknown sort key; use one of {known}")
    return SortKey(name, DIRECTIONS[direction] if direction else default)


def sort_records(table: pa.Table, keys: list[str] | None = None,
                 limit: int | None = None, columns: set[str] | None = None) -> pa.Table:
    """Return ``table`` ordered by the -m ``keys`` (default stime), stable.

    ``limit`` keeps only the first rows of the order (``rasort -N``), which saves
    gathering the others. ``columns`` names the record columns to gather (None: all);
    the result then holds only those. Raises ``AnalysisKeyError`` for an unknown key or
    direction.
    """
    parsed = [parse_sort_key(key) for key in (keys or DEFAULT_KEYS)]
    table = conform(table)
    if table.num_rows < 2:
        return table.slice(0, limit)
    compared: list[pl.Series] = []
    descending: list[bool] = []
    for position, key in enumerate(parsed):
        for series in _key_series(table, key.name, position):
            compared.append(series)
            descending.append(key.descending)
    frame = pl.DataFrame(compared)
    order = frame.select(pl.arg_sort_by([series.name for series in compared],
                                        descending=descending, nulls_last=True,
                                        maintain_order=True)).to_series()
    del frame, compared
    log.debug("sorted %d records by %s", table.num_rows, [key.name for key in parsed])
    if limit is not None:
        order = order.head(limit)
    if columns is not None:
        requested = with_mac_sources(table, columns)
        table = table.select([name for name in table.column_names if name in requested])
        return take_rows(table, pa.array(order.to_numpy()), compact_strings=True)
    return take_rows(table, pa.array(order.to_numpy()))


#: String columns with at most this many distinct values are gathered as dictionary codes
#: when the result is only printed.
COMPACT_STRINGS = 127


def take_rows(table: pa.Table, indices: pa.Array, compact_strings: bool = False) -> pa.Table:
    """Gather rows of ``table`` in ``indices`` order, one column per thread.

    Each column is joined into one chunk first: a take over one chunk is several times
    faster than over many, and only one joined column per thread exists at a time.
    ``compact_strings`` (for printed results) gathers string columns of few values
    (state, dir, flgs) as dictionary arrays with one-byte codes, which print the same and
    take a byte per row. It also gathers one column at a time, so that only one joined
    column exists at once.
    """
    if len(indices) < 100_000:
        return table.take(indices)

    def gather(column: pa.ChunkedArray) -> pa.Array:
        if column.null_count == len(column):
            return pa.nulls(len(indices), column.type)
        joined = column.combine_chunks()
        if compact_strings and pa.types.is_string(joined.type):
            encoded = pc.dictionary_encode(joined)
            if len(encoded.dictionary) <= COMPACT_STRINGS:
                codes = encoded.indices.cast(pa.int8()).take(indices)
                return pa.DictionaryArray.from_arrays(codes, encoded.dictionary)
        return joined.take(indices)

    # The widest columns first, while few gathered columns exist: each thread joins one
    # column before it gathers it, so this keeps the peak memory low.
    widest = sorted(range(table.num_columns), key=lambda index: -table.column(index).nbytes)
    threads = 1 if compact_strings else os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        gathered = dict(zip(widest, pool.map(gather, [table.column(index) for index in widest]),
                            strict=True))
    return pa.Table.from_arrays([gathered[index] for index in range(table.num_columns)],
                                names=table.column_names)


def _key_series(table: pa.Table, name: str, position: int) -> list[pl.Series]:
    """Build the polars columns that one key compares, in comparison order."""
    prefix = f"_{position}"
    address = parse_address_key(name)
    if address is not None:
        high, low, valid = address_words(table.column(address.field))
        if address.prefix is not None:
            high, low = mask_words(high, low, prefix_mask_bits(high, low, address.prefix))
        return [
            pl.Series(f"{prefix}_high", high).set(pl.Series(~valid), None),
            pl.Series(f"{prefix}_low", low).set(pl.Series(~valid), None),
        ]
    if name in ("smac", "dmac"):
        return [pl.Series(f"{prefix}", table.column(name).cast(pa.binary()))]
    if name in ASCENDING_KEYS or name in ("stime", "ltime", "trans", "pkts", "spkts", "dpkts",
                                          "bytes", "sbytes", "dbytes", "sappbytes",
                                          "dappbytes"):
        return [pl.Series(prefix, table.column(name))]
    return [_derived(table, name).alias(prefix)]


def _derived(table: pa.Table, name: str) -> pl.Series:
    """Compute a key that is not a stored column: dur, appbytes, rates and loads.

    Rates are packets per second counted as (packets - 1) / dur, and loads bits per
    second, as Argus prints them; both are 0 for records with a zero duration.
    """
    frame = pl.from_arrow(
        table.select(["stime", "ltime", "pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes",
                      "sappbytes", "dappbytes"])
    )
    seconds = (pl.col("ltime") - pl.col("stime")).dt.total_microseconds() / 1e6
    if name == "dur":
        return frame.select(seconds.alias(name)).to_series()
    if name == "appbytes":
        return frame.select((pl.col("sappbytes") + pl.col("dappbytes")).alias(name)).to_series()
    counter = {"rate": "pkts", "srate": "spkts", "drate": "dpkts",
               "load": "bytes", "sload": "sbytes", "dload": "dbytes"}[name]
    if name.endswith("rate"):
        amount = (pl.col(counter).cast(pl.Float64) - 1).clip(lower_bound=0)
    else:
        amount = pl.col(counter).cast(pl.Float64) * 8
    value = pl.when(seconds > 0).then(amount / seconds).otherwise(0.0)
    return frame.select(value.alias(name)).to_series()

