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

NOTE: racluster's -M correct (also merging a flow's records seen with the reversed key)
is not implemented; records are merged only under their own key.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa

from appliance.analyses.flags import merge_flags
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

    frame, group_columns = _prepare(table, key_list)
    if frame.height == 0:
        return conform(FLOW_SCHEMA.empty_table())
    grouped = frame.group_by(group_columns, maintain_order=True).agg(_aggregations(group_columns))
    result = _assemble(grouped, norep=mode == "norep")
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


def _prepare(table: pa.Table, key_list: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """Build the polars frame with helper columns, and name the columns to group on."""
    values, addresses = _key_expression_names(key_list)
    etype = table.column("etype").to_numpy(zero_copy_only=False)
    etype = np.nan_to_num(np.asarray(etype, dtype=np.float64), nan=0).astype(np.int64)

    helpers: dict[str, np.ndarray] = {}
    words = {name: address_words(table.column(name)) for name in ADDRESS_FIELDS}
    macs = {name: mac_words(table.column(name)) for name in MAC_FIELDS}
    has_ip = words["saddr"][2] & np.isin(etype, ADDRESS_ETYPES)
    # IP flows group together whatever their version; ARP and non-IP flows by ethertype.
    helpers["_family"] = np.where(has_ip & (etype != ADDRESS_ETYPES[2]), -1, etype)

    for name in ADDRESS_FIELDS:
        high, low, valid = words[name]
        helpers[f"_{name}_high"] = high
        helpers[f"_{name}_low"] = low
        helpers[f"_{name}_valid"] = valid
    for name in MAC_FIELDS:
        helpers[f"_{name}_value"], helpers[f"_{name}_valid"] = macs[name]

    # MAC columns are replaced by integer helpers below, so MAC keys group on those.
    group_columns = ["_family", *(f"_{name}_value" if name in MAC_FIELDS else name
                                  for name in values)]
    for field, prefix in addresses:
        high, low, _ = words[field]
        mac_value = macs["smac" if field == "saddr" else "dmac"][0]
        key_high = np.where(has_ip, high, np.uint64(0))
        key_low = np.where(has_ip, low, mac_value)
        if prefix is not None:
            masked_high, masked_low = mask_words(high, low, prefix_mask_bits(high, low, prefix))
            key_high = np.where(has_ip, masked_high, key_high)
            key_low = np.where(has_ip, masked_low, key_low)
        suffix = "" if prefix is None else f"_{prefix}"
        helpers[f"_key_{field}{suffix}_high"] = key_high
        helpers[f"_key_{field}{suffix}_low"] = key_low
        group_columns += [f"_key_{field}{suffix}_high", f"_key_{field}{suffix}_low"]

    base = table.drop_columns(list(ADDRESS_FIELDS) + list(MAC_FIELDS))
    frame = pl.from_arrow(base)
    frame = frame.with_columns([pl.Series(name, array) for name, array in helpers.items()])
    return frame, list(dict.fromkeys(group_columns))


def _equal_or(name: str, fallback: pl.Expr) -> pl.Expr:
    """Keep a column's value when every member agrees (nulls ignored), else ``fallback``."""
    column = pl.col(name)
    return (
        pl.when(column.min() == column.max()).then(column.min()).otherwise(fallback).alias(name)
    )


def _aggregations(group_columns: list[str]) -> list[pl.Expr]:
    """Aggregations for one group; their results are finished by ``_assemble``.

    Key columns are left out because the group-by output already contains their value.
    """
    first = pl.col("stime").arg_min()
    expressions = [
        pl.col("stime").min(),
        pl.col("ltime").max(),
        pl.col("trans").sum().alias("trans"),
        pl.col("seq").min(),
        *[pl.col(name).sum() for name in COUNTERS],
        *[_equal_or(name, pl.lit(0)) for name in ZERO_WHEN_DIFFERENT
          if name not in group_columns],
        *[_equal_or(name, pl.lit(None)) for name in NULL_WHEN_DIFFERENT
          if name not in group_columns],
        pl.col("suser").get(first),
        pl.col("duser").get(first),
        pl.col("flgs").min().alias("_flgs_min"),
        pl.col("flgs").max().alias("_flgs_max"),
        pl.col("flgs").n_unique().alias("_flgs_count"),
        pl.col("flgs").unique().alias("_flgs_unique"),
        pl.col("state").get(first).alias("_state_first"),
        (pl.col("state").min() == pl.col("state").max()).alias("_state_equal"),
        pl.col("state").min().alias("_state_min"),
        pl.col("state")
        .replace_strict(TCP_STATE_PRIORITY, list(range(1, 8)), default=0, return_dtype=pl.Int8)
        .max()
        .alias("_tcp_rank"),
        (pl.col("proto") == TCP).all().alias("_all_tcp"),
        (pl.col("state") == "INT").any().alias("_any_int"),
        pl.col("dir").str.contains("?", literal=True).all().alias("_all_unsure"),
        (pl.col("dir") == "who").all().alias("_all_who"),
    ]
    for name in ADDRESS_FIELDS:
        for word in ("high", "low"):
            column = pl.col(f"_{name}_{word}").filter(pl.col(f"_{name}_valid"))
            expressions += [column.min().alias(f"_{name}_{word}_min"),
                            column.max().alias(f"_{name}_{word}_max")]
        expressions.append(pl.col(f"_{name}_valid").any())
    for name in MAC_FIELDS:
        column = pl.col(f"_{name}_value").filter(pl.col(f"_{name}_valid"))
        expressions += [column.min().alias(f"_{name}_min"), column.max().alias(f"_{name}_max")]
    return expressions


def _merged_addresses(grouped: pl.DataFrame, name: str) -> pa.Array:
    """Reduce each group's addresses to their longest common prefix."""
    valid = grouped[f"_{name}_valid"].to_numpy()

    def word(suffix: str) -> np.ndarray:
        return grouped[f"_{name}_{suffix}"].fill_null(0).to_numpy().astype(np.uint64)

    min_high, min_low = word("high_min"), word("low_min")
    length = common_prefix_length(min_high, min_low, word("high_max"), word("low_max"))
    high, low = mask_words(min_high, min_low, length)
    return words_to_addresses(high, low, valid)


def _merged_macs(grouped: pl.DataFrame, name: str) -> pa.Array:
    """Keep each group's MAC address when every member agrees, else null."""
    low = grouped[f"_{name}_min"]
    high = grouped[f"_{name}_max"]
    equal = (low == high).fill_null(False).to_numpy()
    return words_to_macs(low.fill_null(0).to_numpy().astype(np.uint64), equal)


def _merged_flags(grouped: pl.DataFrame) -> pl.Series:
    """Merge each group's flgs strings position by position.

    Most groups hold one distinct string, which is kept as is; only the others are
    merged in Python.
    """
    flags = grouped["_flgs_min"]
    mixed = (grouped["_flgs_count"] > 1).arg_true()
    if mixed.len() == 0:
        return flags.alias("flgs")
    merged = [merge_flags(values) for values in grouped["_flgs_unique"].gather(mixed).to_list()]
    return flags.scatter(mixed, pl.Series(merged, dtype=pl.String)).alias("flgs")


def _state_expression() -> pl.Expr:
    """Derive the merged state: TCP priority, else from the directions that carried packets."""
    tcp_state = pl.col("_tcp_rank").replace_strict(
        list(range(1, 8)), TCP_STATE_PRIORITY, default=None, return_dtype=pl.String
    )
    by_direction = (
        pl.when((pl.col("spkts") > 0) & (pl.col("dpkts") > 0)).then(pl.lit("CON"))
        .when(pl.col("spkts") > 0)
        .then(pl.when(pl.col("_any_int")).then(pl.lit("INT")).otherwise(pl.lit("REQ")))
        .when(pl.col("dpkts") > 0).then(pl.lit("RSP"))
        .otherwise(pl.col("_state_first"))
    )
    return (
        pl.when(pl.col("_state_equal")).then(pl.col("_state_min"))
        .when(pl.col("_all_tcp") & (pl.col("_tcp_rank") > 0)).then(tcp_state)
        .otherwise(by_direction)
        .alias("state")
    )


def _dir_expression() -> pl.Expr:
    """Derive dir from the merged packet counts, keeping ARP's ``who`` and Argus's ``?``."""
    both = (pl.col("spkts") > 0) & (pl.col("dpkts") > 0)
    source_only = pl.col("spkts") > 0
    unsure = pl.col("_all_unsure")
    return (
        pl.when(pl.col("_all_who")).then(pl.lit("who"))
        .when(both).then(pl.when(unsure).then(pl.lit("<?>")).otherwise(pl.lit("<->")))
        .when(source_only).then(pl.when(unsure).then(pl.lit("?>")).otherwise(pl.lit("->")))
        .otherwise(pl.when(unsure).then(pl.lit("<?")).otherwise(pl.lit("<-")))
        .alias("dir")
    )


def _assemble(grouped: pl.DataFrame, norep: bool) -> pa.Table:
    """Turn the aggregated groups into flow records with the full schema."""
    trans = pl.lit(0) if norep else pl.col("trans")
    grouped = grouped.with_columns(
        _state_expression(), _dir_expression(), trans.cast(pl.UInt32).alias("trans")
    )
    arrow = grouped.to_arrow()
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for field in FLOW_SCHEMA:
        if field.name in ADDRESS_FIELDS:
            columns[field.name] = _merged_addresses(grouped, field.name)
        elif field.name in MAC_FIELDS:
            columns[field.name] = _merged_macs(grouped, field.name)
        elif field.name == "flgs":
            columns[field.name] = _merged_flags(grouped).to_arrow()
        else:
            columns[field.name] = arrow.column(field.name)
    merged = pa.table({name: column for name, column in columns.items()})
    return conform(merged)
