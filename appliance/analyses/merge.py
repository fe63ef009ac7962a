"""racluster's merge rules: one output column per group of records, from the group ids.

``Merger`` builds the merged records with compiled passes over the rows
(``appliance.analyses.grouping``): two passes shared between columns (the counter sums
and the string sets), then one pass per column for the others. Passes run on two
threads, because the compiled kernels and Arrow's compute functions release the GIL.
Only the requested columns are built, and the others are null. Per-group values are
kept in the column's own type where they can be, so that an output column is the
accumulator itself, without a copy.

String columns (flgs, state, dir) are dictionary-encoded, and each group keeps the set
of codes it saw as a 64-bit mask. Every merge rule on them (agreement, TCP state
priority, "all members unsure") is then a question about the mask, answered once per
distinct mask rather than once per row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.analyses.columns import (
    constant_value,
    null_array,
    repeat_value,
    take_chunked,
    take_columns,
)
from appliance.analyses.flags import merge_flags
from appliance.analyses.grouping import (
    AGREE,
    add_agreement,
    add_bounds,
    add_extreme,
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
from appliance.records import FLOW_SCHEMA, MAC, TIMESTAMP, EtherType

log = logging.getLogger(__name__)

COUNTERS = ["pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "sappbytes", "dappbytes"]

#: Fields that become 0 when the members differ (0 prints as no port / proto ``ip``).
ZERO_WHEN_DIFFERENT = ["proto", "sport", "dport"]

#: Fields that become null when the members differ.
NULL_WHEN_DIFFERENT = ["srcid", "etype", "vlan", "sttl", "dttl", "stos", "dtos", "cause",
                       "sco", "dco", "sas", "das", "label"]

#: Fields that keep the value of the group's earliest record: user data, and the
#: ``appproto`` that argus keeps from the first record it merges.
EARLIEST_RECORD_FIELDS = ["suser", "duser", "appproto"]

#: TCP states in increasing priority; the merged record shows the highest one present.
TCP_STATE_PRIORITY = ["REQ", "ACC", "CON", "TIM", "CLO", "FIN", "RST"]

#: Maximum number of distinct strings in a column for the mask rules. With more, rows are
#: merged one by one in Python.
MASK_BITS = 64

TCP = 6
ADDRESS_FIELDS = ("saddr", "daddr")
MAC_FIELDS = ("smac", "dmac")

#: The validity passed to the compiled passes for a batch without nulls.
NO_NULLS = np.zeros(0, dtype=np.bool_)


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
    return values.astype(np.uint64, copy=False), valid


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
        self._earliest_lock = threading.Lock()

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

    def _values(self, name: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (group ids, values, valid) per batch of a numeric, time or MAC column.

        ``valid`` is NO_NULLS for a batch without nulls. Null values are 0.
        """
        for offset, batch in batches(self.table, [name]):
            column = batch.column(0)
            if name in MAC_FIELDS:
                values, valid = mac_words(column)
            else:
                values, valid = numbers(column)
            yield (self.ids[offset:offset + batch.num_rows], values,
                   np.asarray(valid, dtype=np.bool_) if column.null_count else NO_NULLS)

    def _per_group(self, name: str) -> np.ndarray:
        """Return zeros, one per group, of the NumPy type of a column's values."""
        kind = self.table.schema.field(name).type
        if name in MAC_FIELDS:
            dtype = np.dtype(np.uint64)
        elif pa.types.is_timestamp(kind):
            dtype = np.dtype(np.int64)
        else:
            dtype = np.dtype(kind.to_pandas_dtype())
        return np.zeros(self.count, dtype=dtype)

    def agreement(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return each group's first non-null value of a column and its agreement state.

        The state (uint8) is ``grouping.UNSEEN`` for a group without values, AGREE
        when every non-null value equals the first, DIFFER otherwise.
        """
        first = self._per_group(name)
        agreement = np.zeros(self.count, dtype=np.uint8)
        for ids, values, valid in self._values(name):
            add_agreement(values, valid, ids, first, agreement)
        return first, agreement

    def extreme(self, name: str, lowest: bool) -> tuple[np.ndarray, np.ndarray]:
        """Return each group's smallest (``lowest``) or largest non-null value, and
        whether it had one. Groups without a value get 0."""
        best = self._per_group(name)
        seen = np.zeros(self.count, dtype=np.bool_)
        for ids, values, valid in self._values(name):
            add_extreme(values, valid, ids, lowest, best, seen)
        return best, seen

    @property
    def earliest(self) -> np.ndarray:
        """The first row with the smallest stime of each group."""
        with self._earliest_lock:
            return self._find_earliest()

    def _find_earliest(self) -> np.ndarray:
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

    def take_many(self, names: list[str], rows: np.ndarray) -> dict[str, pa.Array]:
        """Gather the same rows of several columns, sorting the rows once."""
        gathered = take_columns([self.table.column(name) for name in names], rows)
        return dict(zip(names, gathered, strict=True))

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


def _address_words(arrays: list[pa.Array]) -> list[tuple[np.ndarray, np.ndarray]]:
    high, low, valid = address_words(arrays[0])
    return [(high, valid), (low, valid)]


class Merger:
    """Builder of the merged columns of a cluster result.

    The counter sums and the string sets of flgs, state and dir are shared between
    columns, and ``shared_passes`` returns their passes, to be started first. Every other
    column's own pass runs when the column is built. The builders may run on several
    threads at once. A builder that needs a shared result waits for it, or computes it.
    """

    def __init__(self, groups: Groups, key_values: list[str], norep: bool,
                 address_keys: dict[str, int | None], requested: set[str]) -> None:
        self.groups = groups
        self.key_values = key_values
        self.norep = norep
        self.address_keys = address_keys
        self._sum_names = [name for name in [*COUNTERS, "trans"] if name in requested]
        if requested & {"state", "dir"}:
            self._sum_names += [name for name in ("spkts", "dpkts") if name not in self._sum_names]
        self._string_names = [name for name in ("flgs", "state", "dir") if name in requested]
        self._summaries: dict[str, tuple[bool, object | None]] = {}
        self._shared_results: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}

    def shared_passes(self) -> list[Callable[[], object]]:
        """Return the passes shared between columns, to start before the builders: the
        counter sums and the string sets of flgs, state and dir."""
        passes: list[Callable[[], object]] = [lambda: self.sums]
        for name in self._string_names:
            passes.append(lambda name=name: self.masks(name))
        return passes

    @property
    def sums(self) -> dict[str, np.ndarray]:
        """Per-group sums of the counters (and trans), by column."""
        return self._shared("sums", self._sum)

    def _sum(self) -> dict[str, np.ndarray]:
        totals = self.groups.totals(self._sum_names)
        # Contiguous copies, so that each counter column is its sums without a further
        # copy and the (groups, columns) array is released here.
        return {name: np.ascontiguousarray(totals[:, index])
                for index, name in enumerate(self._sum_names)}

    def masks(self, name: str) -> tuple[np.ndarray, list] | None:
        """Return a string column's per-group masks of codes and the texts the codes
        number, or None when the column has more than MASK_BITS distinct texts."""
        return self._shared(f"masks {name}", lambda: self.groups.scan({}, [name]).masks[name])

    def _summary(self, name: str) -> tuple[bool, object | None]:
        """Return whether a column is all null, and its value when every row has it."""
        if name not in self._summaries:
            column = self.groups.table.column(name)
            self._summaries[name] = (column.null_count == len(column), constant_value(column))
        return self._summaries[name]

    def _shared(self, key: str, compute: Callable[[], object]) -> object:
        """Return ``compute()``, computed once for all builders that ask for ``key``."""
        with self._locks.setdefault(key, threading.Lock()):
            if key not in self._shared_results:
                self._shared_results[key] = compute()
            return self._shared_results[key]

    def agreement(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``Groups.agreement`` of a column, computed once, because proto's serves
        both the proto and the state column."""
        return self._shared(f"agreement {name}", lambda: self.groups.agreement(name))

    def bounds(self, name: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Return per-group (low, high, seen) of a column: one triple, two for addresses."""
        if name in ADDRESS_FIELDS:
            measure = Measure([name], _address_words, width=2)
        else:
            measure = plain(name)
        return self._shared(f"bounds {name}",
                            lambda: self.groups.scan({name: measure}, []).bounds[name])

    # One column each.

    def times(self, requested: set[str]) -> dict[str, pa.Array]:
        """Return those of stime (earliest), ltime (latest) and seq (lowest) that are
        requested."""
        merged = {}
        if "stime" in requested:
            low, seen = self.groups.extreme("stime", lowest=True)
            merged["stime"] = pa.array(low, mask=~seen).cast(TIMESTAMP)
        if "ltime" in requested:
            high, seen = self.groups.extreme("ltime", lowest=False)
            merged["ltime"] = pa.array(high, mask=~seen).cast(TIMESTAMP)
        if "seq" in requested:
            low, seen = self.groups.extreme("seq", lowest=True)
            merged["seq"] = pa.array(low, mask=~seen).cast(pa.uint64())
        return merged

    def equal_or(self, name: str) -> pa.Array:
        """Return a column's value where every member agrees (nulls ignored), else 0 or null."""
        field = FLOW_SCHEMA.field(name)
        groups = self.groups
        if name in self.key_values:
            return groups.take(name, groups.first)
        zero = name in ZERO_WHEN_DIFFERENT
        all_null, value = self._summary(name)
        if all_null:
            if zero:
                return pa.array(np.zeros(groups.count, dtype=np.int64)).cast(field.type)
            return null_array(field.type, groups.count)
        if value is not None:
            return repeat_value(value, field.type, groups.count)
        if pa.types.is_string(field.type):
            return self._equal_strings(name)
        if name == "etype":
            return self._equal_etype()
        first, agreement = self.agreement(name) if name == "proto" \
            else groups.agreement(name)
        equal = agreement == AGREE
        merged = np.where(equal, first, first.dtype.type(0))
        if zero:
            return pa.array(merged).cast(field.type)
        return pa.array(merged, mask=~equal).cast(field.type)

    def _equal_etype(self) -> pa.Array:
        """Return etype where the members agree, and IPv6 for IPv4 and IPv6 members.

        Such members' addresses merge into an IPv6 prefix (the common prefix of
        IPv4-mapped and IPv6 addresses), so the record stays an IP flow."""
        low, high, seen = self.bounds("etype")[0]
        mixed_ip = seen & (low == int(EtherType.IPV4)) & (high == int(EtherType.IPV6))
        equal = (seen & (low == high)) | mixed_ip
        low = np.where(mixed_ip, np.uint64(int(EtherType.IPV6)), low)
        return pa.array(low, mask=~equal).cast(FLOW_SCHEMA.field("etype").type)

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
        if self.address_keys.get(name, 0) is None:
            # A whole-address key: every member has the first row's address.
            return self.groups.take(name, self.groups.first)
        (min_high, max_high, seen), (min_low, max_low, _) = self.bounds(name)
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

    def mac(self, name: str) -> pa.Array:
        """Return each group's MAC address (smac or dmac) where every member agrees, else null."""
        all_null, value = self._summary(name)
        if all_null:
            return null_array(MAC, self.groups.count)
        if value is not None:
            return repeat_value(value, MAC, self.groups.count)
        first, agreement = self.groups.agreement(name)
        equal = agreement == AGREE
        return words_to_macs(np.where(equal, first, np.uint64(0)), equal)

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

    def earliest_values(self, names: list[str]) -> dict[str, pa.Array]:
        """Return columns that keep each group's earliest record's value, gathered
        together (EARLIEST_RECORD_FIELDS)."""
        merged: dict[str, pa.Array] = {}
        present = []
        for name in names:
            column = self.groups.table.column(name)
            if column.null_count == len(column):
                merged[name] = null_array(FLOW_SCHEMA.field(name).type, self.groups.count)
            else:
                present.append(name)
        if present:
            merged.update(self.groups.take_many(present, self.groups.earliest))
        return merged
