"""Split flow records at aligned time boundaries, as argus's rasplit ``-M time`` does.

A period of P seconds divides time into buckets ``[k*P, (k+1)*P)`` (UTC epoch, so hourly
buckets start at minute 0). A record whose ``stime``..``ltime`` span touches several
buckets becomes one piece per bucket. Each piece's ``stime`` and ``ltime`` are clipped to
its bucket, so a middle piece runs from one boundary to the next and a piece may end
exactly on the boundary where the next one starts. A record that ends exactly on a
boundary gets no zero-length piece after it (40.0-44.0 with 2 s buckets is two pieces).

Counters are shared out so that the pieces of a record add up to the record exactly:

* ``spkts`` and ``dpkts``: each direction in proportion to the time in each piece,
  rounded down cumulatively. Piece k gets ``floor(n*t_k/T) - floor(n*t_(k-1)/T)`` of the
  ``n`` packets, where ``t_k`` is the time from ``stime`` to the end of piece k and ``T``
  is the record's duration. When a direction has at least as many packets as the record
  has pieces, every piece gets at least one packet of it.
* ``sbytes`` follows the share of ``spkts`` each piece got and ``sappbytes`` the share
  of ``sbytes`` (likewise ``dbytes`` and ``dappbytes``), rounded down, with the rest on
  the last piece. So a piece never has bytes without packets.
* ``pkts = spkts + dpkts`` and ``bytes = sbytes + dbytes`` in each piece.

A bucket that gets no packet in either direction gets no piece, so every piece has at
least one packet. ``suser`` and ``duser`` stay on the first piece only, because the
payload bytes they hold were sent at the start of the record. Other columns are copied.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.records import FLOW_SCHEMA, conform

MICROSECONDS = 1_000_000
#: Per direction: packets (split by time), bytes (by packet share), payload (by byte share).
DIRECTIONS = (("spkts", "sbytes", "sappbytes"), ("dpkts", "dbytes", "dappbytes"))
#: Columns kept only on a record's first piece.
FIRST_PIECE_ONLY = ("suser", "duser")


def period_microseconds(period: float) -> int:
    """Convert a bucket period in seconds to whole microseconds; reject periods below 1 us."""
    period_us = round(period * MICROSECONDS)
    if period_us < 1:
        raise ValueError(f"split period must be a positive number of seconds, got {period!r}")
    return period_us


def bucket_starts(table: pa.Table, period: float) -> np.ndarray:
    """Return the start (epoch microseconds) of the bucket holding each record's ``stime``.

    Records without an ``stime`` get -1.
    """
    period_us = period_microseconds(period)
    stime, valid = _microseconds(table.column("stime"))
    return np.where(valid, stime // period_us * period_us, -1)


def split_records(records: pa.Table | pa.RecordBatch, period: float) -> pa.Table:
    """Split every record that crosses a boundary of ``period``-second aligned buckets.

    Returns a table with the flow schema (plus any extra columns of ``records``). Records
    inside one bucket are returned unchanged and in order. The pieces of a split record
    follow one another in time order, at the record's place. Records without ``stime`` or
    ``ltime``, with ``ltime`` before ``stime``, or with no packets are not split.
    Raises ValueError for a period below one microsecond.
    """
    period_us = period_microseconds(period)
    table = pa.Table.from_batches([records]) if isinstance(records, pa.RecordBatch) else records
    table = conform(table)
    if table.num_rows == 0:
        return table

    stime, stime_valid = _microseconds(table.column("stime"))
    ltime, ltime_valid = _microseconds(table.column("ltime"))
    packets = _counter(table, "pkts")[0]
    first = stime // period_us
    last = np.maximum(first, -(-ltime // period_us) - 1)
    splittable = stime_valid & ltime_valid & (ltime > stime) & (packets > 0)
    count = np.where(splittable, last - first + 1, 1)
    if np.all(count == 1):
        return table

    pieces = _Pieces(stime, ltime, first, count, period_us)
    values = _share_counters(table, pieces)
    split = splittable & (count > 1)
    # A piece that got nothing is left out. Only a record with bytes in a direction
    # without packets (not one the flow meter writes) can have bytes in a packetless piece.
    carries = np.any([amounts > 0 for amounts in values.values()], axis=0)
    chosen = np.flatnonzero(carries | ~split[pieces.record])
    return _build(table, pieces, values, chosen, split)


class _Pieces:
    """One row per piece: its record, index within the record, clipped times and time share."""

    def __init__(self, stime: np.ndarray, ltime: np.ndarray, first: np.ndarray,
                 count: np.ndarray, period_us: int) -> None:
        self.record = np.repeat(np.arange(len(count)), count)
        #: Position of each record's first piece.
        self.starts = np.cumsum(count) - count
        self.index = np.arange(len(self.record)) - np.repeat(self.starts, count)
        self.count = count[self.record]
        self.is_last = self.index == self.count - 1
        start = (first[self.record] + self.index) * period_us
        record_stime = stime[self.record]
        record_ltime = ltime[self.record]
        self.stime = np.maximum(record_stime, start)
        self.ltime = np.minimum(record_ltime, start + period_us)
        #: Time from the record's stime to the end of the piece, and the record's duration.
        self.elapsed = self.ltime - record_stime
        self.duration = record_ltime - record_stime

    def spread(self, per_record: np.ndarray) -> np.ndarray:
        """Repeat a per-record array once per piece."""
        return per_record[self.record]

    def differences(self, cumulative: np.ndarray) -> np.ndarray:
        """Turn cumulative amounts at each piece's end into the amounts of each piece."""
        previous = np.concatenate(([0], cumulative[:-1]))
        previous[self.index == 0] = 0
        return cumulative - previous


def _share_counters(table: pa.Table, pieces: _Pieces) -> dict[str, np.ndarray]:
    """Return every counter's value in each piece (nulls count as 0 here).

    A record whose totals are not the sums of its directions (a null direction, or
    records from another source) has its totals shared out on their own, by the same rules.
    """
    values: dict[str, np.ndarray] = {}
    for packets_name, bytes_name, payload_name in DIRECTIONS:
        packets = pieces.spread(_counter(table, packets_name)[0])
        values[packets_name] = pieces.differences(_by_time(packets, pieces))
        wire = pieces.spread(_counter(table, bytes_name)[0])
        values[bytes_name] = _by_share(wire, values[packets_name], packets, pieces)
        payload = pieces.spread(_counter(table, payload_name)[0])
        values[payload_name] = _by_share(payload, values[bytes_name], wire, pieces)

    packets = pieces.spread(_counter(table, "pkts")[0])
    total_bytes = pieces.spread(_counter(table, "bytes")[0])
    consistent = (
        (packets == pieces.spread(_counter(table, "spkts")[0] + _counter(table, "dpkts")[0]))
        & (total_bytes == pieces.spread(_counter(table, "sbytes")[0]
                                        + _counter(table, "dbytes")[0]))
    )
    own_packets = _by_time(packets, pieces)
    own_packets = pieces.differences(own_packets)
    own_bytes = _by_share(total_bytes, own_packets, packets, pieces)
    values["pkts"] = np.where(consistent, values["spkts"] + values["dpkts"], own_packets)
    values["bytes"] = np.where(consistent, values["sbytes"] + values["dbytes"], own_bytes)
    return values


def _by_time(total: np.ndarray, pieces: _Pieces) -> np.ndarray:
    """Share ``total`` out in proportion to time; return the cumulative amount per piece end.

    Where ``total`` is at least the number of pieces, each piece gets at least one: the
    cumulative amount at piece k is kept within ``[k + 1, total - (count - 1 - k)]``.
    Because such a total is at least one per bucket length of the record, the rounded-down
    shares of whole buckets are at least one apart, so the clipped sequence still rises
    by at least one per piece.
    """
    cumulative = _proportion(total, pieces.elapsed, pieces.duration, pieces.is_last)
    enough = total >= pieces.count
    index = pieces.index
    floor = index + 1
    ceiling = total - (pieces.count - 1 - index)
    clipped = np.minimum(np.maximum(cumulative, floor), ceiling)
    return np.where(enough, clipped, cumulative)


def _by_share(total: np.ndarray, piece_basis: np.ndarray, basis: np.ndarray,
              pieces: _Pieces) -> np.ndarray:
    """Share ``total`` in proportion to another counter's pieces; return per-piece amounts.

    Every piece but the last gets ``floor(total * piece_basis / basis)`` and the last
    piece the rest, as argus 3.0.8 rasplit does. Where ``basis`` is 0, time decides.
    """
    not_last = np.zeros_like(pieces.is_last)
    by_basis = _proportion(total, piece_basis, basis, not_last)
    by_time = pieces.differences(
        _proportion(total, pieces.elapsed, pieces.duration, pieces.is_last))
    shares = np.where(basis > 0, by_basis, by_time)
    shares[pieces.is_last] = 0
    shares[pieces.is_last] = total[pieces.is_last] - np.add.reduceat(shares, pieces.starts)
    return shares


def _proportion(total: np.ndarray, part: np.ndarray, whole: np.ndarray,
                is_last: np.ndarray) -> np.ndarray:
    """Return ``floor(total * part / whole)``, and exactly ``total`` on each last piece.

    The product is formed in extended precision (80-bit on x86-64), so it is exact up to
    2**64 and the rounding down is exact for every realistic counter and duration.
    """
    safe_whole = np.where(whole > 0, whole, 1).astype(np.longdouble)
    share = np.floor(total.astype(np.longdouble) * part.astype(np.longdouble) / safe_whole)
    share = np.clip(share, 0, total).astype(np.int64)
    return np.where(is_last | (whole <= 0), total, share)


def _microseconds(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Return a timestamp column as int64 epoch microseconds (nulls as 0) and its validity."""
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    micros = pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return pc.fill_null(micros, 0).to_numpy(zero_copy_only=False).astype(np.int64), valid


def _counter(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return a counter column as int64 (nulls as 0) and its validity."""
    column = table.column(name)
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, valid


def _build(table: pa.Table, pieces: _Pieces, values: dict[str, np.ndarray],
           chosen: np.ndarray, split: np.ndarray) -> pa.Table:
    """Assemble the output from the chosen (non-empty) pieces.

    Rows of records that are not split stay as they were.
    """
    record = pieces.record[chosen]
    out = table.take(pa.array(record))
    is_split = pa.array(split[record])
    first_piece = np.concatenate(([True], record[1:] != record[:-1]))

    replacements: dict[str, pa.Array] = {
        "stime": _timestamps(pieces.stime[chosen], table.column("stime").type),
        "ltime": _timestamps(pieces.ltime[chosen], table.column("ltime").type),
    }
    for name, piece_values in values.items():
        valid = _counter(table, name)[1][record]
        replacements[name] = pa.array(piece_values[chosen], mask=~valid,
                                      type=FLOW_SCHEMA.field(name).type)
    for name in FIRST_PIECE_ONLY:
        column = out.column(name).combine_chunks()
        replacements[name] = pc.if_else(pa.array(first_piece), column,
                                        pa.nulls(len(column), column.type))

    for name, array in replacements.items():
        position = out.schema.get_field_index(name)
        original = out.column(name).combine_chunks()
        merged = pc.if_else(is_split, array.cast(original.type), original)
        out = out.set_column(position, out.schema.field(name), merged)
    return out


def _timestamps(micros: np.ndarray, dtype: pa.DataType) -> pa.Array:
    return pa.array(micros, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")).cast(dtype)
