"""racluster: merge flow records that share a key (-m), with Argus's merge rules.

Merge rules, as racluster 3.0.8 applies them:

* stime is the minimum, ltime the maximum, trans the sum of trans, and every
  counter (pkts, bytes, appbytes, per direction) the sum;
* flgs are merged position by position (see ``merge_flags``);
* state follows the TCP priority RST > FIN > CLO > TIM > CON > ACC > REQ when every
  member is TCP, otherwise it is derived from the merged packet counts;
* dir is derived from the merged spkts/dpkts;
* a field that is not in the key keeps its value when every member agrees.
  Otherwise addresses become the longest common prefix of the members, ports and
  proto become 0 (proto 0 prints as ``ip``), and every other field becomes null.

Flows of different families (IP, ARP, non-IP keyed by MAC) never merge. Non-IP flows
have no IP addresses, so their saddr/daddr keys use smac/dmac instead.

Records are grouped by a hash table over the packed key columns and merged with one
pass per reduction (``appliance.analyses.grouping``).

NOTE: racluster's -M correct (also merging a flow's records seen with the reversed key)
is not implemented; records are merged only under their own key.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.analyses.flags import merge_flags
from appliance.analyses.grouping import (
    bit_union,
    first_minimum,
    group_ids,
    min_max,
    min_max_many,
    total,
)
from appliance.analyses.keys import (
    ADDRESS_ETYPES,
    AnalysisKeyError,
    address_words,
    common_prefix_length,
    mac_words,
    mask_words,
    parse_address_key,
    prefix_mask_bits,
    words_to_addresses,
    words_to_macs,
)
from appliance.records import FLOW_SCHEMA, TIMESTAMP, conform

log = logging.getLogger(__name__)

#: The key racluster uses without -m: the flow key, so status records of one flow merge.
DEFAULT_KEYS = ["etype", "proto", "saddr", "sport", "daddr", "dport"]

#: -m keys that group on a column's value unchanged.
VALUE_KEYS = frozenset(
    ["proto", "sport", "dport", "smac", "dmac", "stos", "dtos", "sttl", "dttl", "vlan",
     "sco", "dco", "sas", "das", "srcid", "etype"]
)

MODES = (None, "rmon", "norep")

COUNTERS = ["pkts", "spkts", "dpkts", "bytes", "sbytes", "dbytes", "sappbytes", "dappbytes"]

#: Fields that become 0 when the members differ (0 prints as no port / proto ``ip``).
ZERO_WHEN_DIFFERENT = ["proto", "sport", "dport"]

#: Fields that become null when the members differ.
NULL_WHEN_DIFFERENT = ["srcid", "etype", "vlan", "sttl", "dttl", "stos", "dtos", "cause",
                       "sco", "dco", "sas", "das", "label"]

#: Column pairs exchanged when -M rmon counts a record from the destination's side.
DIRECTION_PAIRS = [
    ("saddr", "daddr"), ("sport", "dport"), ("smac", "dmac"), ("spkts", "dpkts"),
    ("sbytes", "dbytes"), ("sappbytes", "dappbytes"), ("sttl", "dttl"), ("stos", "dtos"),
    ("suser", "duser"), ("sco", "dco"), ("sas", "das"),
]

#: TCP states in increasing priority; the merged record shows the highest one present.
TCP_STATE_PRIORITY = ["REQ", "ACC", "CON", "TIM", "CLO", "FIN", "RST"]

TCP = 6
ADDRESS_FIELDS = ("saddr", "daddr")
MAC_FIELDS = ("smac", "dmac")


def cluster_records(
    table: pa.Table, keys: list[str] | None = None, mode: str | None = None
) -> pa.Table:
    """Merge the records of ``table`` that share the -m ``keys``.

    ``keys`` are racluster -m keys (``saddr``, ``daddr/24``, ``proto``, ``sport`` ...);
    None means the full flow key. ``mode`` "rmon" counts every record twice, once
    from each end, so each address appears as a host with sent (s*) and received
    (d*) counters; "norep" reports trans as 0. Output row order follows the first
    record of each group. Raises ``AnalysisKeyError`` for an unknown key or mode.
    """
    if mode not in MODES:
        raise AnalysisKeyError(str(mode), "the cluster mode must be one of rmon, norep")
    table = conform(table).select(FLOW_SCHEMA.names)
    if mode == "rmon":
        table = pa.concat_tables([table, swap_directions(table)])
        keys = keys or ["saddr"]
    key_list = list(DEFAULT_KEYS if keys is None else keys)
    if not key_list:
        raise AnalysisKeyError("", "give at least one key, for example saddr daddr")

    _key_expression_names(key_list)
    if table.num_rows == 0:
        return conform(FLOW_SCHEMA.empty_table())
    ids, first, values, words = _group(table, key_list)
    result = _assemble(table, ids, first, values, words, norep=mode == "norep")
    log.debug("clustered %d records into %d by %s", table.num_rows, result.num_rows, key_list)
    return result


def swap_directions(table: pa.Table) -> pa.Table:
    """Return ``table`` seen from the destination: every s*/d* column pair exchanged."""
    columns = {name: table.column(name) for name in table.column_names}
    for source, destination in DIRECTION_PAIRS:
        columns[source], columns[destination] = columns[destination], columns[source]
    swapped = pa.table(columns).select(table.column_names)
    return swapped.cast(table.schema)


def _key_expression_names(key_list: list[str]) -> tuple[list[str], list[tuple[str, int | None]]]:
    """Split keys into value columns and address keys; sport/dport imply proto."""
    values: list[str] = []
    addresses: list[tuple[str, int | None]] = []
    for key in key_list:
        address = parse_address_key(key)
        if address is not None:
            addresses.append((address.field, address.prefix))
        elif key in VALUE_KEYS:
            values.append(key)
        else:
            known = ", ".join(sorted(VALUE_KEYS | {"saddr[/len]", "daddr[/len]"}))
            raise AnalysisKeyError(key, f"unknown cluster key; use one of {known}")
    if ("sport" in values or "dport" in values) and "proto" not in values:
        values.append("proto")
    return values, addresses


def _numbers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return a numeric or time column as (int64 or uint64 values, valid), nulls as 0."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_timestamp(array.type):
        array = array.cast(pa.int64())
    if array.null_count == 0:
        valid = np.ones(len(array), dtype=bool)
        values = array.to_numpy(zero_copy_only=False)
    else:
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        values = pc.fill_null(array, 0).to_numpy(zero_copy_only=False)
    dtype = np.uint64 if pa.types.is_unsigned_integer(array.type) else np.int64
    return values.astype(dtype, copy=False), valid


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Dictionary-encode a string column: (int64 codes, valid, dictionary of values)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array)
    codes, valid = _numbers(encoded.indices)
    return codes.astype(np.int64, copy=False), valid, encoded.dictionary


def _key_column(table: pa.Table, name: str, macs: dict) -> np.ndarray:
    """Return a value key as unsigned integers, with 0 for null (nulls group together)."""
    if name in MAC_FIELDS:
        value, valid = macs[name]
    elif pa.types.is_string(table.schema.field(name).type):
        value, valid, _ = _codes(table.column(name))
    else:
        value, valid = _numbers(table.column(name))
    return np.where(valid, value.astype(np.uint64) + np.uint64(1), np.uint64(0))


class _LazyMacs(dict):
    """MAC columns as (value, valid) words, converted on first use."""

    def __init__(self, table: pa.Table) -> None:
        super().__init__()
        self.table = table

    def __missing__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self[name] = mac_words(self.table.column(name))
        return self[name]


def _group(table: pa.Table, key_list: list[str]) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Group the records by the -m keys.

    Returns the group id of each row, the first row of each group, the value keys and
    the address words of saddr and daddr (reused when merging addresses).
    """
    values, addresses = _key_expression_names(key_list)
    etype, _ = _numbers(table.column("etype"))
    words = {name: address_words(table.column(name)) for name in ADDRESS_FIELDS}
    has_ip = words["saddr"][2] & np.isin(etype, ADDRESS_ETYPES)
    macs = _LazyMacs(table)
    # IP flows group together whatever their version; ARP and non-IP flows by ethertype.
    family = np.where(has_ip & (etype != ADDRESS_ETYPES[2]), 0, etype + 1).astype(np.uint64)
    columns = [family] + [_key_column(table, name, macs) for name in values]
    every_ip = bool(has_ip.all())
    for field, prefix in addresses:
        high, low, _ = words[field]
        if prefix is not None:
            high, low = mask_words(high, low, prefix_mask_bits(high, low, prefix))
        if every_ip:
            columns += [high, low]
            continue
        mac_value = macs["smac" if field == "saddr" else "dmac"][0]
        columns.append(np.where(has_ip, high, np.uint64(0)))
        columns.append(np.where(has_ip, low, mac_value))
    ids, first = group_ids(columns)
    return ids, first, values, words


class _Groups:
    """Per-group reductions of one table, sharing the group ids."""

    def __init__(self, table: pa.Table, ids: np.ndarray, first: np.ndarray) -> None:
        self.table = table
        self.ids = ids
        self.first = first
        self.count = len(first)
        self._earliest: np.ndarray | None = None
        self._bounds: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def prefetch(self, names: list[str]) -> None:
        """Compute the bounds of several numeric columns in one pass over the rows."""
        names = [name for name in dict.fromkeys(names) if name not in self._bounds]
        converted = [_numbers(self.table.column(name)) for name in names]
        low, high, seen = min_max_many([values for values, _ in converted],
                                       [valid for _, valid in converted], self.ids, self.count)
        for index, name in enumerate(names):
            dtype = converted[index][0].dtype
            self._bounds[name] = (low[:, index].astype(dtype), high[:, index].astype(dtype),
                                  seen[:, index].copy())

    def min_max(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if name not in self._bounds:
            values, valid = _numbers(self.table.column(name))
            self._bounds[name] = min_max(values, valid, self.ids, self.count)
        return self._bounds[name]

    def sums(self, names: list[str]) -> dict[str, np.ndarray]:
        """Per-group sums of several counters (nulls as 0)."""
        sums = {}
        for name in names:
            values, _ = _numbers(self.table.column(name))
            sums[name] = total(values.astype(np.uint64, copy=False), self.ids, self.count)
        return sums

    def needs_pass(self, name: str) -> bool:
        """Tell whether equal_or must look at the rows (not all null, not one value)."""
        column = self.table.column(name)
        if pa.types.is_string(column.type) or column.null_count == len(column):
            return False
        if column.null_count:
            return True
        bounds = pc.min_max(column)
        return bounds["min"] != bounds["max"]

    @property
    def earliest(self) -> np.ndarray:
        """The first row with the smallest stime of each group."""
        if self._earliest is None:
            stime, _ = _numbers(self.table.column("stime"))
            self._earliest = first_minimum(stime, self.ids, self.count)
        return self._earliest

    def take(self, name: str, rows: np.ndarray) -> pa.Array:
        return self.table.column(name).take(pa.array(rows)).combine_chunks()

    def equal_or(self, name: str, fallback_zero: bool) -> pa.Array:
        """Return a column's value where every member agrees (nulls ignored), else 0 or null."""
        field = self.table.schema.field(name)
        column = self.table.column(name)
        if column.null_count == len(column):
            if fallback_zero:
                return pa.array(np.zeros(self.count, dtype=np.int64)).cast(field.type)
            return pa.nulls(self.count, field.type)
        if column.null_count == 0:
            bounds = pc.min_max(column)
            if bounds["min"] == bounds["max"]:
                # One value in the whole table: every group agrees on it.
                return pa.repeat(bounds["min"], self.count).cast(field.type)
        if pa.types.is_string(field.type):
            codes, valid, dictionary = _codes(self.table.column(name))
            if len(dictionary) == 0:
                return pa.nulls(self.count, field.type)
            low, high, seen = min_max(codes, valid, self.ids, self.count)
            equal = seen & (low == high)
            return pc.if_else(pa.array(equal), dictionary.take(pa.array(low)),
                              pa.nulls(self.count, field.type))
        low, high, seen = self.min_max(name)
        equal = seen & (low == high)
        if fallback_zero:
            return pa.array(np.where(equal, low, 0)).cast(field.type)
        return pa.array(low, mask=~equal).cast(field.type)


def _all_any(groups: _Groups, flags: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per group: whether every valid row has the flag (True when none is valid), and any."""
    low, high, seen = min_max(flags.astype(np.int64), valid, groups.ids, groups.count)
    return ~seen | (low == 1), seen & (high == 1)


def _merged_addresses(groups: _Groups, name: str, words: tuple) -> pa.Array:
    """Reduce each group's addresses to their longest common prefix."""
    high, low, valid = words
    min_high, max_high, seen = min_max(high, valid, groups.ids, groups.count)
    min_low, max_low, _ = min_max(low, valid, groups.ids, groups.count)
    length = common_prefix_length(min_high, min_low, max_high, max_low)
    merged_high, merged_low = mask_words(min_high, min_low, length)
    return words_to_addresses(merged_high, merged_low, seen)


def _merged_macs(groups: _Groups, name: str) -> pa.Array:
    """Keep each group's MAC address when every member agrees, else null."""
    value, valid = mac_words(groups.table.column(name))
    low, high, seen = min_max(value, valid, groups.ids, groups.count)
    return words_to_macs(low, seen & (low == high))


def _merged_flags(groups: _Groups) -> pa.Array:
    """Merge each group's flgs strings position by position (see ``merge_flags``).

    The set of distinct strings of a group is kept as a bit mask, so each distinct
    combination is merged once.
    """
    codes, valid, dictionary = _codes(groups.table.column("flgs"))
    texts = dictionary.to_pylist()
    if len(texts) > 64:
        rows = [[] for _ in range(groups.count)]
        for group, code, ok in zip(groups.ids, codes, valid, strict=True):
            if ok:
                rows[group].append(texts[code])
        return pa.array([merge_flags(set(row)) for row in rows], pa.string())
    masks = pc.dictionary_encode(pa.array(bit_union(codes, valid, groups.ids, groups.count)))
    merged = []
    for mask in masks.dictionary.to_pylist():
        members = [texts[bit] for bit in range(len(texts)) if mask >> bit & 1]
        merged.append(members[0] if len(members) == 1 else merge_flags(members))
    return pa.array(merged, pa.string()).take(masks.indices)


def _merged_state(groups: _Groups, spkts: np.ndarray, dpkts: np.ndarray) -> pa.Array:
    """Return the merged state: TCP priority, else from the directions that carried packets."""
    codes, valid, dictionary = _codes(groups.table.column("state"))
    texts = dictionary.to_pylist()
    low, high, seen = min_max(codes, valid, groups.ids, groups.count)
    ranks = np.array([TCP_STATE_PRIORITY.index(text) + 1 if text in TCP_STATE_PRIORITY else 0
                      for text in texts] or [0], dtype=np.int64)
    _, top_rank, _ = min_max(ranks[codes], valid, groups.ids, groups.count)
    proto, proto_valid = _numbers(groups.table.column("proto"))
    all_tcp, _ = _all_any(groups, proto == TCP, proto_valid)
    is_int = np.array([text == "INT" for text in texts] or [False])[codes]
    _, any_int = _all_any(groups, is_int, valid)
    # Choices index a table of names: the group's own state (codes), the TCP
    # priority states, then CON, INT, REQ, RSP, and -1 for the earliest record's state.
    fixed = [*TCP_STATE_PRIORITY, "CON", "INT", "REQ", "RSP"]
    offset = len(texts)
    sent, received = spkts > 0, dpkts > 0
    choice = np.select(
        [seen & (low == high), all_tcp & (top_rank > 0), sent & received,
         sent & any_int, sent, received],
        [low, offset + top_rank - 1, offset + 7, offset + 8, offset + 9, offset + 10],
        default=-1)
    names = pa.array(texts + fixed, pa.string())
    merged = names.take(pa.array(np.where(choice < 0, 0, choice)))
    if (choice < 0).any():
        earliest = groups.take("state", groups.earliest)
        merged = pc.if_else(pa.array(choice < 0), earliest, merged)
    return merged


def _merged_dir(groups: _Groups, spkts: np.ndarray, dpkts: np.ndarray) -> pa.Array:
    """Return dir from the merged packet counts, keeping ARP's ``who`` and Argus's ``?``."""
    codes, valid, dictionary = _codes(groups.table.column("dir"))
    texts = dictionary.to_pylist()
    unsure_text = np.array(["?" in text for text in texts] or [False])
    who_text = np.array([text == "who" for text in texts] or [False])
    all_unsure, _ = _all_any(groups, unsure_text[codes], valid)
    all_who, _ = _all_any(groups, who_text[codes], valid)
    both = (spkts > 0) & (dpkts > 0)
    source = spkts > 0
    choices = np.select(
        [all_who, both & all_unsure, both, source & all_unsure, source, all_unsure],
        [0, 1, 2, 3, 4, 5], default=6)
    return pa.array(["who", "<?>", "<->", "?>", "->", "<?", "<-"]).take(pa.array(choices))


def _assemble(table: pa.Table, ids: np.ndarray, first: np.ndarray, values: list[str],
              words: dict, norep: bool) -> pa.Table:
    """Build one flow record per group with the merge rules."""
    groups = _Groups(table, ids, first)
    sums = groups.sums([*COUNTERS, "trans"])
    varying = [name for name in ZERO_WHEN_DIFFERENT + NULL_WHEN_DIFFERENT
               if name not in values and groups.needs_pass(name)]
    groups.prefetch(["stime", "ltime", "seq", *varying])
    columns: dict[str, pa.Array] = {}
    stime_low, _, stime_seen = groups.min_max("stime")
    _, ltime_high, ltime_seen = groups.min_max("ltime")
    columns["stime"] = pa.array(stime_low, mask=~stime_seen).cast(TIMESTAMP)
    columns["ltime"] = pa.array(ltime_high, mask=~ltime_seen).cast(TIMESTAMP)
    trans = np.zeros(groups.count, dtype=np.uint64) if norep else sums["trans"]
    columns["trans"] = pa.array(trans).cast(pa.uint32())
    seq_low, _, seq_seen = groups.min_max("seq")
    columns["seq"] = pa.array(seq_low, mask=~seq_seen).cast(pa.uint64())
    for name in COUNTERS:
        columns[name] = pa.array(sums[name])
    for name in ZERO_WHEN_DIFFERENT + NULL_WHEN_DIFFERENT:
        if name in values:
            columns[name] = groups.take(name, first)
        else:
            columns[name] = groups.equal_or(name, fallback_zero=name in ZERO_WHEN_DIFFERENT)
    for name in ("suser", "duser"):
        columns[name] = groups.take(name, groups.earliest)
    for name in ADDRESS_FIELDS:
        columns[name] = _merged_addresses(groups, name, words[name])
    for name in MAC_FIELDS:
        columns[name] = _merged_macs(groups, name)
    columns["flgs"] = _merged_flags(groups)
    columns["state"] = _merged_state(groups, sums["spkts"], sums["dpkts"])
    columns["dir"] = _merged_dir(groups, sums["spkts"], sums["dpkts"])
    arrays = [columns[field.name].cast(field.type) for field in FLOW_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FLOW_SCHEMA)
