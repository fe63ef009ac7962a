"""racluster: merge flow records that share a key (-m), with Argus's merge rules.

Merge rules, as racluster 3.0.8 applies them:

* stime is the minimum, ltime the maximum, trans the sum of trans, and every
  counter (pkts, bytes, appbytes, per direction) the sum;
* flgs are merged position by position (see ``merge_flags``);
* state follows the TCP priority RST > FIN > CLO > TIM > CON > ACC > REQ when every
  member is TCP, otherwise it is derived from the merged packet counts;
* dir is derived from the merged spkts/dpkts;
* suser, duser and appproto (``rtp``, ``rtcp``) come from the earliest record;
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
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from appliance.analyses.columns import null_array
from appliance.analyses.grouping import Grouper, KeyPacking
from appliance.analyses.keys import (
    ADDRESS_ETYPES,
    AnalysisKeyError,
    address_words,
    mac_words,
    mask_words,
    parse_address_key,
    prefix_mask_bits,
    with_mac_sources,
)
from appliance.analyses.merge import (
    ADDRESS_FIELDS,
    COUNTERS,
    EARLIEST_RECORD_FIELDS,
    MAC_FIELDS,
    NULL_WHEN_DIFFERENT,
    ZERO_WHEN_DIFFERENT,
    Groups,
    Merger,
    StringCodes,
    batches,
    numbers,
)
from appliance.analyses.states import merged_dir, merged_state
from appliance.records import FLOW_SCHEMA, conform

log = logging.getLogger(__name__)

#: The key racluster uses without -m: the flow key, so status records of one flow merge.
DEFAULT_KEYS = ["etype", "proto", "saddr", "sport", "daddr", "dport"]

#: -m keys that group on a column's value unchanged.
VALUE_KEYS = frozenset(
    ["proto", "sport", "dport", "smac", "dmac", "stos", "dtos", "sttl", "dttl", "vlan",
     "sco", "dco", "sas", "das", "srcid", "etype"]
)

MODES = (None, "rmon", "norep")

#: Batches whose keys are packed ahead of the one being inserted, at most.
PACKED_AHEAD = 2

#: Column pairs exchanged when -M rmon counts a record from the destination's side.
DIRECTION_PAIRS = [
    ("saddr", "daddr"), ("sport", "dport"), ("smac", "dmac"), ("spkts", "dpkts"),
    ("sbytes", "dbytes"), ("sappbytes", "dappbytes"), ("sttl", "dttl"), ("stos", "dtos"),
    ("suser", "duser"), ("sco", "dco"), ("sas", "das"),
]

def cluster_records(
    table: pa.Table, keys: list[str] | None = None, mode: str | None = None,
    columns: set[str] | None = None,
) -> pa.Table:
    """Merge the records of ``table`` that share the -m ``keys``.

    ``keys`` are racluster -m keys (``saddr``, ``daddr/24``, ``proto``, ``sport`` ...);
    None means the full flow key. ``mode`` "rmon" counts every record twice, once
    from each end, so each address appears as a host with sent (s*) and received
    (d*) counters; "norep" reports trans as 0. Output row order follows the first
    record of each group. ``columns`` names the record columns to merge (None: all);
    the others are null, which saves their passes when only some fields are printed.
    Raises ``AnalysisKeyError`` for an unknown key or mode.
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
    ids, first = _group(table, key_list)
    if columns is None:
        requested = set(FLOW_SCHEMA.names)
    else:
        requested = with_mac_sources(table, set(columns)) & set(FLOW_SCHEMA.names)
    result = _assemble(table, ids, first, key_list, mode == "norep", requested)
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


class _KeyColumns:
    """Computes the key columns of one record batch as unsigned integers.

    Null values become 0 and every other value is shifted up by one, so nulls group
    together. Strings are numbered consistently across batches.
    """

    def __init__(self, schema: pa.Schema, key_list: list[str]) -> None:
        self.values, self.addresses = _key_expression_names(key_list)
        self.strings = {name: StringCodes() for name in self.values
                        if pa.types.is_string(schema.field(name).type)}
        needed = ["etype", "saddr", *self.values]
        for field, _ in self.addresses:
            needed += [field, "smac" if field == "saddr" else "dmac"]
        self.names = list(dict.fromkeys(needed))

    def _value(self, batch: pa.RecordBatch, name: str) -> np.ndarray:
        column = batch.column(self.names.index(name))
        if name in MAC_FIELDS:
            value, valid = mac_words(column)
        elif name in self.strings:
            value, valid = self.strings[name].encode(column)
        else:
            value, valid = numbers(column)
        return np.where(valid, value.astype(np.uint64) + np.uint64(1), np.uint64(0))

    def __call__(self, batch: pa.RecordBatch) -> list[np.ndarray]:
        etype, _ = numbers(batch.column(0))
        words = {"saddr": address_words(batch.column(1))}
        has_ip = words["saddr"][2] & ((etype == ADDRESS_ETYPES[0]) | (etype == ADDRESS_ETYPES[1])
                                      | (etype == ADDRESS_ETYPES[2]))
        every_ip = bool(has_ip.all())
        # IP flows group together whatever their version; ARP and non-IP flows by ethertype.
        family = np.where(has_ip & (etype != ADDRESS_ETYPES[2]), 0,
                          etype.astype(np.uint64) + np.uint64(1)).astype(np.uint64)
        columns = [family] + [self._value(batch, name) for name in self.values]
        for field, prefix in self.addresses:
            if field not in words:
                words[field] = address_words(batch.column(self.names.index(field)))
            high, low, _ = words[field]
            if prefix is not None:
                # ARP flows keep their whole addresses under a mask, as in argus.
                masked_high, masked_low = mask_words(high, low,
                                                     prefix_mask_bits(high, low, prefix))
                arp = etype == ADDRESS_ETYPES[2]
                high = np.where(arp, high, masked_high)
                low = np.where(arp, low, masked_low)
            if every_ip:
                columns += [high, low]
                continue
            mac = "smac" if field == "saddr" else "dmac"
            mac_value, _ = mac_words(batch.column(self.names.index(mac)))
            columns.append(np.where(has_ip, high, np.uint64(0)))
            columns.append(np.where(has_ip, low, mac_value))
        return columns


def _group(table: pa.Table, key_list: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Group the records by the -m keys, one batch at a time.

    Returns the group id of each row and the first row of each group. The key columns
    are computed twice per batch: once to learn their ranges, once to pack and insert
    them, so that no whole-table key column is ever held. Both passes use two threads:
    the ranges are learned from two halves of the batches at once, and a batch's keys
    are packed while the batches before it are inserted.
    """
    keys = _KeyColumns(table.schema, key_list)
    parts = list(batches(table, keys.names))
    packing = KeyPacking()
    with ThreadPoolExecutor(max_workers=1) as pool:
        if keys.strings:
            # String codes are numbered in order of appearance, by one thread.
            _observe(keys, packing, parts, threading.Lock())
        else:
            lock = threading.Lock()
            half = len(parts) // 2
            other = pool.submit(_observe, keys, packing, parts[half:], lock)
            _observe(keys, packing, parts[:half], lock)
            other.result()
        grouper: Grouper | None = None
        pending: deque[tuple[int, Future]] = deque()
        for offset, batch in parts:
            pending.append((offset, pool.submit(_pack, keys, packing, batch)))
            if len(pending) > PACKED_AHEAD:
                grouper = _insert(grouper, table.num_rows, *pending.popleft())
        while pending:
            grouper = _insert(grouper, table.num_rows, *pending.popleft())
    assert grouper is not None
    return grouper.ids, grouper.first


def _observe(keys: _KeyColumns, packing: KeyPacking, parts: list[tuple[int, pa.RecordBatch]],
             lock: threading.Lock) -> None:
    """Feed the key ranges of some batches to ``packing``."""
    for _, batch in parts:
        columns = keys(batch)
        with lock:
            packing.observe(columns)


def _pack(keys: _KeyColumns, packing: KeyPacking, batch: pa.RecordBatch) -> np.ndarray:
    return packing.pack(keys(batch))


def _insert(grouper: Grouper | None, rows: int, offset: int, packed: Future) -> Grouper:
    """Insert one batch's packed keys, creating the grouper at the first batch."""
    keys = packed.result()
    if grouper is None:
        grouper = Grouper(rows, keys.shape[1])
    grouper.insert(keys, offset)
    return grouper


def _assemble(table: pa.Table, ids: np.ndarray, first: np.ndarray, key_list: list[str],
              norep: bool, requested: set[str]) -> pa.Table:
    """Build one flow record per group with the merge rules; columns not ``requested`` are null."""
    values, addresses = _key_expression_names(key_list)
    merger = Merger(Groups(table, ids, first), values, norep, dict(addresses), requested)
    shared = merger.shared_passes()
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda task: task(),
                              [*shared, *_builders(merger, requested).values()]))
    columns: dict[str, pa.Array] = {}
    for result in built[len(shared):]:
        columns.update(result)
    count = len(first)
    arrays = [columns[field.name].cast(field.type) if field.name in columns
              else null_array(field.type, count) for field in FLOW_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FLOW_SCHEMA)


def _builders(merger: Merger, requested: set[str]) -> dict[str, object]:
    """Map each requested column (or set of columns) to the function that builds it.

    Each function returns {name: array}.
    """
    builders: dict[str, object] = {}
    if requested & {"stime", "ltime", "seq"}:
        builders["times"] = lambda: merger.times(requested)
    counters = [name for name in COUNTERS if name in requested]
    if counters:
        builders["counters"] = lambda: {name: pa.array(merger.sums[name]) for name in counters}
    if "trans" in requested:
        builders["trans"] = lambda: {"trans": pa.array(
            np.zeros(merger.groups.count, dtype=np.uint64) if merger.norep
            else merger.sums["trans"]).cast(pa.uint32())}
    for name in ZERO_WHEN_DIFFERENT + NULL_WHEN_DIFFERENT:
        if name in requested:
            builders[name] = lambda name=name: {name: merger.equal_or(name)}
    earliest = [name for name in EARLIEST_RECORD_FIELDS if name in requested]
    if earliest:
        builders["earliest"] = lambda: merger.earliest_values(earliest)
    for name in ADDRESS_FIELDS:
        if name in requested:
            builders[name] = lambda name=name: {name: merger.addresses(name)}
    for name in MAC_FIELDS:
        if name in requested:
            builders[name] = lambda name=name: {name: merger.mac(name)}
    if "flgs" in requested:
        builders["flgs"] = lambda: {"flgs": merger.flags()}
    if "state" in requested:
        builders["state"] = lambda: {"state": merged_state(merger)}
    if "dir" in requested:
        builders["dir"] = lambda: {"dir": merged_dir(merger)}
    return builders
