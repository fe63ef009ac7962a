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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
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
from appliance.query.expr import seconds_between
from appliance.query.rows import take_rows, take_slices
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
    ordered = sorted_records(table, keys, limit)
    table, order = ordered.table, ordered.order
    if columns is not None:
        requested = with_mac_sources(table, columns)
        table = table.select([name for name in table.column_names if name in requested])
        return take_rows(table, pa.array(order), compact_strings=True)
    return take_rows(table, pa.array(order))


#: Sorted records of up to this many bytes are gathered at once when written.
WHOLE_GATHER_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class SortedRecords:
    """Records and the order they sort in, gathered a slice at a time when written.

    ``rasort -w`` writes this instead of a gathered table, so that it needs the memory
    of one slice of records rather than of all of them.
    """

    table: pa.Table
    order: np.ndarray

    @property
    def num_rows(self) -> int:
        """The number of records in the order."""
        return len(self.order)

    @property
    def column_names(self) -> list[str]:
        """The record columns."""
        return self.table.column_names

    def slice(self, offset: int = 0, length: int | None = None) -> SortedRecords:
        """Return the records from ``offset`` of the order, ``length`` of them (None: all)."""
        end = None if length is None else offset + length
        return SortedRecords(self.table, self.order[offset:end])

    def slices(self) -> Iterator[pa.Table]:
        """Yield the records in order, gathered a slice at a time.

        Records up to ``WHOLE_GATHER_BYTES`` are gathered at once, which is faster.
        """
        if len(self.order) == 0:
            return
        if self.table.nbytes <= WHOLE_GATHER_BYTES:
            yield take_rows(self.table, pa.array(self.order))
            return
        yield from take_slices(self.table, self.order)


def sorted_records(table: pa.Table, keys: list[str] | None = None,
                   limit: int | None = None) -> SortedRecords:
    """Return ``table`` with the order of its rows by the -m ``keys``, without gathering them.

    Arguments and errors are those of ``sort_records``.
    """
    parsed = [parse_sort_key(key) for key in (keys or DEFAULT_KEYS)]
    table = conform(table)
    if table.num_rows < 2:
        return SortedRecords(table, np.arange(table.num_rows)[:limit])
    compared: list[pa.Array | pa.ChunkedArray] = []
    descending: list[bool] = []
    for key in parsed:
        for values in _key_values(table, key.name):
            compared.append(values)
            descending.append(key.descending)
    order = sort_order(compared, descending)
    del compared
    log.debug("sorted %d records by %s", table.num_rows, [key.name for key in parsed])
    return SortedRecords(table, order[:limit])


#: Up to this many rows, one compared column is sorted by Arrow; above, by polars.
ARROW_SORT_ROWS = 2_000_000


def sort_order(compared: list[pa.Array | pa.ChunkedArray],
               descending: list[bool]) -> np.ndarray:
    """Return the stable order of rows by ``compared`` values, nulls last in each.

    Arrow sorts one column of a million rows in half the time polars takes, and needs
    no more imports. polars, loaded only when needed (0.1 s), sorts on every core: one
    column of ten million rows in about half Arrow's time, several columns in a third.
    """
    if len(compared) == 1 and len(compared[0]) <= ARROW_SORT_ROWS:
        order = pc.array_sort_indices(compared[0], order="descending" if descending[0]
                                      else "ascending", null_placement="at_end")
        return order.to_numpy()
    import polars as pl

    frame = pl.DataFrame([pl.Series(f"_{index}", values)
                          for index, values in enumerate(compared)])
    order = frame.select(pl.arg_sort_by(frame.columns, descending=descending,
                                        nulls_last=True, maintain_order=True)).to_series()
    return order.to_numpy()


def _key_values(table: pa.Table, name: str) -> list[pa.Array | pa.ChunkedArray]:
    """Build the columns that one key compares, in comparison order."""
    address = parse_address_key(name)
    if address is not None:
        high, low, valid = address_words(table.column(address.field))
        if address.prefix is not None:
            high, low = mask_words(high, low, prefix_mask_bits(high, low, address.prefix))
        return [pa.array(high, mask=~valid), pa.array(low, mask=~valid)]
    if name in ("smac", "dmac"):
        return [table.column(name).cast(pa.binary())]
    if name in ASCENDING_KEYS or name in ("stime", "ltime", "trans", "pkts", "spkts", "dpkts",
                                          "bytes", "sbytes", "dbytes", "sappbytes",
                                          "dappbytes"):
        return [table.column(name)]
    return [_derived(table, name)]


#: The counter behind each rate (packets per second) and load (bits per second) key.
RATE_COUNTERS = {"rate": "pkts", "srate": "spkts", "drate": "dpkts",
                 "load": "bytes", "sload": "sbytes", "dload": "dbytes"}


def _derived(table: pa.Table, name: str) -> pa.ChunkedArray:
    """Compute a key that is not a stored column: dur, appbytes, rates and loads.

    Rates are packets per second counted as (packets - 1) / dur, and loads bits per
    second, as Argus prints them; both are 0 for records with a zero duration.
    """
    seconds = seconds_between("stime", "ltime").evaluate(table)
    if name == "dur":
        return seconds
    if name == "appbytes":
        return pc.add(table.column("sappbytes"), table.column("dappbytes"))
    amount = pc.cast(table.column(RATE_COUNTERS[name]), pa.float64())
    if name.endswith("rate"):
        amount = pc.subtract(amount, 1.0)
        amount = pc.if_else(pc.less(amount, 0.0), 0.0, amount)
    else:
        amount = pc.multiply(amount, 8.0)
    positive = pc.greater(seconds, 0.0)
    return pc.if_else(positive, pc.divide(amount, pc.if_else(positive, seconds, 1.0)), 0.0)
