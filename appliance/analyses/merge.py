"""racluster's merge rules: one output column per group of records, from the group ids.

``Merger`` builds the merged records from two shared compiled passes over the rows
(``appliance.analyses.grouping``). The two passes run on two threads, because the
compiled kernels and Arrow's compute functions release the GIL. Only the requested
columns are built, and the others are null.

String columns (flgs, state, dir) are dictionary-encoded, and each group keeps the set
of codes it saw as a 64-bit mask. Every merge rule on them (agreement, TCP state
priority, "all members unsure") is then a question about the mask, answered once per
distinct mask rather than once per row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.analyses.flags import merge_flags
from appliance.analyses.grouping import (
    add_bounds,
    add_first_minimum,
    add_masks,
    add_totals,
)
from appliance.analyses.keys import (
    address_words,
    common_prefix_length,
    mac_words,
    mask_words,
    prefix_mask_bits,
    words_to_addresses,
    words_to_macs,
)
from appliance.analyses.shortstrings import ShortStringCoder
from appliance.records import FLOW_SCHEMA, TIMESTAMP, EtherType

log = logging.getLogger(__name__)

COUNTERS = ["pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "sappbytes", "dappbytes"]

#: Fields that become 0 when the members differ (0 prints as no port / proto ``ip``).
ZERO_WHEN_DIFFERENT = ["proto", "sport", "dport"]

#: Fields that become null when the members differ.
NULL_WHEN_DIFFERENT = ["srcid", "etype", "vlan", "sttl", "dttl", "stos", "dtos", "cause",
                       "sco", "dco", "sas", "das", "label"]

#: TCP states in increasing priority; the merged record shows the highest one present.
TCP_STATE_PRIORITY = ["REQ", "ACC", "CON", "TIM", "CLO", "FIN", "RST"]

#: Maximum number of distinct strings in a column for the mask rules. With more, rows are
#: merged one by one in Python.
MASK_BITS = 64

TCP = 6
ADDRESS_FIELDS = ("saddr", "daddr")
MAC_FIELDS = ("smac", "dmac")


def numbers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return a numeric or time column as (values, valid) NumPy arrays, nulls as 0.

    A column of one chunk without nulls is read in place; times become int64.
    """
    if isinstance(column, pa.ChunkedArray):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        array = column
    if pa.types.is_timestamp(array.type):
        array = array.view(pa.int64())
    if array.null_count == 0:
        return array.to_numpy(zero_copy_only=False), np.ones(len(array), dtype=bool)
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return pc.fill_null(array, 0).to_numpy(zero_copy_only=False), valid


def unsigned(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return ``numbers`` as unsigned 64-bit values (times must not be negative)."""
    values, valid = numbers(column)
    if values.dtype == np.int64:
        return values.view(np.uint64), valid
    return values.astype(np.uint64), valid


def _frozen(arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Return contiguous read-only views, so that a tuple of them has one numba type."""
    views = []
    for array in arrays:
        view = np.ascontiguousarray(array).view()
        view.setflags(write=False)
        views.append(view)
    return tuple(views)


class StringCodes:
    """Numbers the distinct strings of a column across batches, in order of appearance.

    Codes at or above ``limit`` are returned as not valid, so that bit masks of the
    codes never overflow. When ``texts`` is longer than ``limit``, the limit was passed.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.index: dict[str, int] = {}
        self.limit = limit
        self._short: ShortStringCoder | None = ShortStringCoder(limit) if limit else None

    @property
    def texts(self) -> list[str]:
        return list(self.index)

    def encode(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Return a batch's (int64 codes, valid); nulls get code 0 and valid False."""
        if self._short is not None:
            valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool) \
                if column.null_count else np.ones(len(column), dtype=bool)
            codes = self._short.code(column, valid)
            if codes is not None:
                for text in self._short.texts[len(self.index):]:
                    self.index[text] = len(self.index)
                return codes, valid
            # A long value or too many texts: Arrow's dictionary encoding from here on.
            self._short = None
        encoded = pc.dictionary_encode(column)
        mapping = np.array([self.index.setdefault(text, len(self.index))
                            for text in encoded.dictionary.to_pylist()] or [0], dtype=np.int64)
        indices, valid = numbers(encoded.indices)
        codes = mapping[indices]
        if self.limit is not None and len(self.index) > self.limit:
            valid = valid & (codes < self.limit)
            codes = np.where(codes < self.limit, codes, 0)
        return codes, valid


def take_chunked(column: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """Gather ``rows`` of a chunked column: sorted, split by chunk, then put back in order."""
    rows = np.asarray(rows, dtype=np.int64)
    if column.num_chunks <= 1 or len(rows) == 0:
        return column.take(pa.array(rows)).combine_chunks()
    ascending = bool(np.all(rows[1:] >= rows[:-1]))
    order = None if ascending else np.argsort(rows, kind="stable")
    ordered = rows if order is None else rows[order]
    starts = np.cumsum([0] + [len(chunk) for chunk in column.chunks])
    cuts = np.searchsorted(ordered, starts)
    pieces = [chunk.take(pa.array(ordered[cuts[index]:cuts[index + 1]] - starts[index]))
              for index, chunk in enumerate(column.chunks) if cuts[index + 1] > cuts[index]]
    gathered = pa.concat_arrays(pieces)
    if order is None:
        return gathered
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return gathered.take(pa.array(inverse))


def batches(table: pa.Table, names: list[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (first row, batch) over the named columns of ``table``, without copying."""
    offset = 0
    for batch in table.select(names).to_batches():
        if batch.num_rows:
            yield offset, batch
            offset += batch.num_rows


@dataclass
class Measure:
    """A value of the fused pass: the columns it reads, and how a batch's arrays of them
    become ``width`` (unsigned values, valid) pairs."""

    columns: list[str]
    convert: Callable[[list[pa.Array]], list[tuple[np.ndarray, np.ndarray]]]
    width: int = 1


def plain(name: str) -> Measure:
    """Measure one numeric or time column as it is."""
    return Measure([name], lambda arrays: [unsigned(arrays[0])])


class Scan:
    """The result of ``Groups.scan``: per-group bounds by measure, string masks by column."""

    def __init__(self, measures: dict[str, Measure], low: np.ndarray, high: np.ndarray,
                 seen: np.ndarray, masks: np.ndarray, strings: list[str],
                 encoders: dict[str, StringCodes]) -> None:
        self.bounds: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        column = 0
        for name, measure in measures.items():
            self.bounds[name] = [(low[:, index], high[:, index], seen[:, index])
                                 for index in range(column, column + measure.width)]
            column += measure.width
        self.masks: dict[str, tuple[np.ndarray, list] | None] = {}
        for index, name in enumerate(strings):
            texts = encoders[name].texts
            self.masks[name] = None if len(texts) > MASK_BITS else (masks[:, index], texts)


class Groups:
    """The rows of one table numbered by group, with the reductions shared between columns.

    Every reduction reads the table one record batch at a time.
    """

    def __init__(self, table: pa.Table, ids: np.ndarray, first: np.ndarray) -> None:
        self.table = table
        self.ids = ids
        self.first = first
        self.count = len(first)
        self._earliest: np.ndarray | None = None

    def scan(self, measures: dict[str, Measure], strings: list[str]) -> Scan:
        """Measure per-group bounds and string masks of many columns in one pass."""
        names = list(dict.fromkeys([column for measure in measures.values()
                                    for column in measure.columns] + strings))
        width = sum(measure.width for measure in measures.values())
        low = np.zeros((self.count, width), dtype=np.uint64)
        high = np.zeros((self.count, width), dtype=np.uint64)
        seen = np.zeros((self.count, width), dtype=np.bool_)
        masks = np.zeros((self.count, len(strings)), dtype=np.uint64)
        encoders = {name: StringCodes(MASK_BITS) for name in strings}
        for offset, batch in batches(self.table, names) if names else ():
            ids = self.ids[offset:offset + batch.num_rows]
            pairs = []
            for measure in measures.values():
                pairs += measure.convert([batch.column(names.index(column))
                                          for column in measure.columns])
            if pairs:
                add_bounds(_frozen([values for values, _ in pairs]),
                           _frozen([np.asarray(valid, dtype=np.bool_) for _, valid in pairs]),
                           ids, low, high, seen)
            if encoders:
                code_pairs = [encoder.encode(batch.column(names.index(name)))
                              for name, encoder in encoders.items()]
                add_masks(_frozen([values for values, _ in code_pairs]),
                          _frozen([np.asarray(valid, dtype=np.bool_) for _, valid in code_pairs]),
                          ids, masks)
        return Scan(measures, low, high, seen, masks, strings, encoders)

    def totals(self, names: list[str]) -> np.ndarray:
        """Sum unsigned columns per group (nulls as 0), as a (groups, columns) array."""
        sums = np.zeros((self.count, len(names)), dtype=np.uint64)
        if not names:
            return sums
        for offset, batch in batches(self.table, names):
            columns = _frozen([unsigned(batch.column(name))[0] for name in names])
            add_totals(columns, self.ids[offset:offset + batch.num_rows], sums)
        return sums

    @property
    def earliest(self) -> np.ndarray:
        """The first row with the smallest stime of each group."""
        if self._earliest is None:
            best = np.zeros(self.count, dtype=np.int64)
            rows = np.full(self.count, -1, dtype=np.int64)
            for offset, batch in batches(self.table, ["stime"]):
                values, _ = numbers(batch.column(0))
                add_first_minimum(values, self.ids[offset:offset + batch.num_rows], offset,
                                  best, rows)
            self._earliest = rows
        return self._earliest

    def take(self, name: str, rows: np.ndarray) -> pa.Array:
        """Gather rows of a column, chunk by chunk (faster than a take over many chunks)."""
        return take_chunked(self.table.column(name), rows)

    def by_rows(self, name: str) -> list[list]:
        """Collect each group's non-null values of a column in row order (the slow path)."""
        rows: list[list] = [[] for _ in range(self.count)]
        for group, value in zip(self.ids, self.table.column(name).to_pylist(), strict=True):
            if value is not None:
                rows[group].append(value)
        return rows


def _mask_members(mask: int, texts: list) -> list:
    return [texts[bit] for bit in range(len(texts)) if mask >> bit & 1]


def _per_mask(masks: np.ndarray, texts: list, rule: Callable[[list], object],
              kind: pa.DataType) -> pa.Array:
    """Apply ``rule`` to the members of each distinct mask and copy its results to groups."""
    encoded = pc.dictionary_encode(pa.array(masks))
    results = [rule(_mask_members(mask, texts)) for mask in encoded.dictionary.to_pylist()]
    return pa.array(results, kind).take(encoded.indices)


def _constant(column: pa.ChunkedArray) -> object | None:
    """Return the value of a column without nulls whose rows all equal it, else None."""
    if column.null_count or len(column) == 0:
        return None
    bounds = pc.min_max(column)
    return bounds["min"].as_py() if bounds["min"] == bounds["max"] else None


def _address_words(arrays: list[pa.Array]) -> list[tuple[np.ndarray, np.ndarray]]:
    high, low, valid = address_words(arrays[0])
    return [(high, valid), (low, valid)]


def _macs(arrays: list[pa.Array]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [mac_words(array) for array in arrays]


class Merger:
    """Builder of the merged columns of a cluster result, from two shared passes.

    ``prepare`` runs them on two threads: one sums the counters and collects the string
    sets, the other measures the bounds of every other numeric column.
    """

    def __init__(self, groups: Groups, key_values: list[str], norep: bool,
                 address_keys: dict[str, int | None]) -> None:
        self.groups = groups
        self.key_values = key_values
        self.norep = norep
        self.address_keys = address_keys
        self.sums: dict[str, np.ndarray] = {}
        self.scanned: Scan | None = None

    def prepare(self, requested: set[str]) -> None:
        """Run the passes that the ``requested`` columns need."""
        sums = [name for name in [*COUNTERS, "trans"] if name in requested]
        if requested & {"state", "dir"}:
            sums += [name for name in ("spkts", "dpkts") if name not in sums]
        measures: dict[str, Measure] = {name: plain(name) for name in ("stime", "ltime", "seq")
                                        if name in requested}
        strings = [name for name in ("flgs", "state", "dir") if name in requested]
        for name in ZERO_WHEN_DIFFERENT + NULL_WHEN_DIFFERENT:
            if name not in requested or name in self.key_values:
                continue
            column = self.groups.table.column(name)
            if column.null_count == len(column) or _constant(column) is not None:
                continue
            if pa.types.is_string(column.type):
                strings.append(name)
            else:
                measures[name] = plain(name)
        if "state" in requested:
            measures.setdefault("proto", plain("proto"))
        for name in ADDRESS_FIELDS:
            if name in requested and self.address_keys.get(name, 0) is not None:
                measures[name] = Measure([name], _address_words, width=2)
        if requested & set(MAC_FIELDS):
            measures["macs"] = Measure(list(MAC_FIELDS), _macs, width=2)
        def sums_and_strings() -> tuple[np.ndarray, Scan]:
            return self.groups.totals(sums), self.groups.scan({}, strings)

        with ThreadPoolExecutor(max_workers=1) as pool:
            other = pool.submit(sums_and_strings)
            self.scanned = self.groups.scan(measures, [])
            totals, string_scan = other.result()
        self.scanned.masks.update(string_scan.masks)
        self.sums = {name: totals[:, index] for index, name in enumerate(sums)}

    @property
    def scan(self) -> Scan:
        assert self.scanned is not None, "prepare() first"
        return self.scanned

    def masks(self, name: str) -> tuple[np.ndarray, list] | None:
        return self.scan.masks[name]

    # One column each.

    def times(self) -> dict[str, pa.Array]:
        """Return stime (earliest), ltime (latest) and seq (lowest), if measured."""
        bounds = self.scan.bounds
        merged = {}
        if "stime" in bounds:
            low, _, seen = bounds["stime"][0]
            merged["stime"] = pa.array(low.view(np.int64), mask=~seen).cast(TIMESTAMP)
        if "ltime" in bounds:
            _, high, seen = bounds["ltime"][0]
            merged["ltime"] = pa.array(high.view(np.int64), mask=~seen).cast(TIMESTAMP)
        if "seq" in bounds:
            low, _, seen = bounds["seq"][0]
            merged["seq"] = pa.array(low, mask=~seen).cast(pa.uint64())
        return merged

    def equal_or(self, name: str) -> pa.Array:
        """Return a column's value where every member agrees (nulls ignored), else 0 or null."""
        field = FLOW_SCHEMA.field(name)
        groups = self.groups
        if name in self.key_values:
            return groups.take(name, groups.first)
        column = groups.table.column(name)
        zero = name in ZERO_WHEN_DIFFERENT
        if column.null_count == len(column):
            if zero:
                return pa.array(np.zeros(groups.count, dtype=np.int64)).cast(field.type)
            return pa.nulls(groups.count, field.type)
        value = _constant(column)
        if value is not None:
            return pa.repeat(pa.scalar(value, field.type), groups.count)
        if pa.types.is_string(field.type):
            return self._equal_strings(name)
        low, high, seen = self.scan.bounds[name][0]
        equal = seen & (low == high)
        if name == "etype":
            # IPv4 and IPv6 members merge into an IPv6 prefix (their common prefix of
            # IPv4-mapped and IPv6 addresses), so the record stays an IP flow.
            mixed_ip = seen & (low == int(EtherType.IPV4)) & (high == int(EtherType.IPV6))
            low = np.where(mixed_ip, np.uint64(int(EtherType.IPV6)), low)
            equal = equal | mixed_ip
        if zero:
            return pa.array(np.where(equal, low, 0)).cast(field.type)
        return pa.array(low, mask=~equal).cast(field.type)

    def _equal_strings(self, name: str) -> pa.Array:
        masked = self.masks(name)
        if masked is None:
            rows = self.groups.by_rows(name)
            return pa.array([row[0] if row and len(set(row)) == 1 else None for row in rows],
                            pa.string())
        masks, texts = masked
        return _per_mask(masks, texts, lambda members: members[0] if len(members) == 1 else None,
                         pa.string())

    def addresses(self, name: str) -> pa.Array:
        """Reduce each group's addresses to their longest common prefix."""
        if name not in self.scan.bounds:
            # A whole-address key: every member has the first row's address.
            return self.groups.take(name, self.groups.first)
        (min_high, max_high, seen), (min_low, max_low, _) = self.scan.bounds[name]
        length = common_prefix_length(min_high, min_low, max_high, max_low)
        prefix = self.address_keys.get(name)
        if prefix is not None:
            # A masked key prints at most its network part, as argus does: a /16 group
            # of 141.142.220.x members prints 141.142.0.0. ARP flows and non-IP flows
            # (whose address contains a MAC) are not masked.
            bits = prefix_mask_bits(min_high, min_low, prefix)
            etype, _ = numbers(self.groups.take("etype", self.groups.first))
            ip = (etype == int(EtherType.IPV4)) | (etype == int(EtherType.IPV6))
            length = np.where(ip, np.minimum(length, bits), length)
        merged_high, merged_low = mask_words(min_high, min_low, length)
        return words_to_addresses(merged_high, merged_low, seen)

    def macs(self) -> dict[str, pa.Array]:
        """Return each group's MAC addresses where every member agrees, else null."""
        return {name: words_to_macs(low, seen & (low == high))
                for name, (low, high, seen) in zip(MAC_FIELDS, self.scan.bounds["macs"],
                                                   strict=True)}

    def flags(self) -> pa.Array:
        """Merge each group's flgs strings position by position (see ``merge_flags``)."""
        masked = self.masks("flgs")
        if masked is None:
            return pa.array([merge_flags(set(row)) for row in self.groups.by_rows("flgs")],
                            pa.string())
        masks, texts = masked

        def rule(members: list) -> str | None:
            if not members:
                return None
            return members[0] if len(members) == 1 else merge_flags(members)

        return _per_mask(masks, texts, rule, pa.string())

    def user_data(self, name: str) -> pa.Array:
        column = self.groups.table.column(name)
        if column.null_count == len(column):
            return pa.nulls(self.groups.count, FLOW_SCHEMA.field(name).type)
        return self.groups.take(name, self.groups.earliest)
