"""Gathering rows of chunked record tables: sorted slices for rasort -w, filters for ra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from appliance.analyses import sort as sort_module
from appliance.analyses.sort import sort_records, sorted_records
from appliance.archive import RecordWriter, read_records
from appliance.cli.ra_cmd import main
from appliance.query import rows as rows_module
from appliance.query.rows import filter_rows, take_slices
from tests.oracle_records import REFERENCE, read_reference_flows


def chunked_table(rows: int, chunk_rows: int, seed: int = 7) -> pa.Table:
    """A table of several chunks with every kind of column a record has, some nulls."""
    rng = np.random.default_rng(seed)
    words = ["CON", "FIN", "RST", None, "REQ"]
    payloads = [None, b"", b"\x00\x01GET / HTTP/1.1", bytes(range(200)), b"x" * 7]
    columns = {
        "counter": pa.array(rng.integers(0, 1 << 40, rows, dtype=np.uint64)),
        "small": pa.array(rng.integers(0, 255, rows, dtype=np.uint8)),
        "sometimes": pa.array([None if value % 3 == 0 else int(value)
                               for value in rng.integers(0, 4096, rows)], pa.uint16()),
        "address": pa.array([bytes(rng.integers(0, 256, 16, dtype=np.uint8))
                             for _ in range(rows)], pa.binary(16)),
        "state": pa.array([words[value] for value in rng.integers(0, len(words), rows)]),
        "user": pa.array([payloads[value] for value in rng.integers(0, len(payloads), rows)],
                         pa.binary()),
        "never": pa.nulls(rows, pa.string()),
    }
    table = pa.table(columns)
    return pa.Table.from_batches(table.to_batches(max_chunksize=chunk_rows))


@pytest.mark.parametrize(("chunk_rows", "slice_bytes"), [(97, 1), (1000, 20_000), (5000, 10**9)])
def test_slices_keep_requested_order(chunk_rows: int, slice_bytes: int) -> None:
    table = chunked_table(5000, chunk_rows)
    order = np.random.default_rng(3).permutation(table.num_rows)
    order = np.concatenate([order, order[:50]])  # a row may be requested twice
    slices = list(take_slices(table, order, slice_bytes=slice_bytes))

    assert sum(part.num_rows for part in slices) == len(order)
    gathered = pa.concat_tables(slices).combine_chunks()
    assert gathered.equals(table.take(pa.array(order)).combine_chunks())
    if slice_bytes == 1:
        assert len(slices) == -(-len(order) // rows_module.MIN_SLICE_ROWS)


def test_sorted_records_slice_window() -> None:
    table = chunked_table(300, 64)
    ordered = sorted_records(table.append_column("bytes", table.column("counter")), ["bytes"])
    assert ordered.num_rows == 300
    window = ordered.slice(10, 5)
    assert window.num_rows == 5
    assert list(window.order) == list(ordered.order[10:15])


@pytest.mark.parametrize("capture", ["http-wikipedia.pcap", "tls-with-dns.pcap",
                                     "big-synthetic-mix.pcap"])
def test_rasort_w_writes_sorted_slices(capture: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """rasort -w gathers in slices above WHOLE_GATHER_BYTES: force it for a small file."""
    reference = REFERENCE / f"{capture}.ra.csv"
    if not reference.exists():
        pytest.skip(f"{reference} is absent: the oracle references are in ../shared")
    records = read_reference_flows(reference)
    source = tmp_path / "in.arrows"
    with RecordWriter(source) as writer:
        for batch in records.to_batches(max_chunksize=max(3, records.num_rows // 40)):
            writer.write(batch)
    monkeypatch.setattr(sort_module, "WHOLE_GATHER_BYTES", 0)
    monkeypatch.setattr(rows_module, "MIN_SLICE_ROWS", max(2, records.num_rows // 7))
    monkeypatch.setattr(rows_module, "SLICE_BYTES", 1)
    target = tmp_path / "sorted.arrows"
    gathered = []

    def counted(*args: object) -> object:
        for part in take_slices(*args):
            gathered.append(part.num_rows)
            yield part

    monkeypatch.setattr(sort_module, "take_slices", counted)
    assert main("rasort", ["-r", str(source), "-m", "bytes", "sport", "-w", str(target)]) == 0

    assert len(gathered) > 1
    assert sum(gathered) == records.num_rows
    expected = sort_records(read_records(source), ["bytes", "sport"])
    assert read_records(target).combine_chunks().equals(expected.combine_chunks())


@pytest.mark.parametrize("share", [0.001, 0.2, 0.5, 0.9])
def test_filter_rows_matches_arrow_filter(share: float) -> None:
    """Both ways of filter_rows (gather below half, filter above) against Arrow's filter."""
    table = chunked_table(rows_module.THREADED_ROWS + 3000, 7000)
    rng = np.random.default_rng(11)
    chosen = rng.random(table.num_rows) < share
    unknown = rng.random(table.num_rows) < 0.01
    mask = pa.array(chosen, mask=unknown)  # a null in the mask drops the row

    filtered = filter_rows(table, mask)

    assert filtered.combine_chunks().equals(table.filter(mask).combine_chunks())
    assert filtered.column("counter").num_chunks == 1


def test_chunk_take_no_rows() -> None:
    table = chunked_table(300, 64)

    for column in table.columns:
        taken = rows_module.ChunkTake(np.array([], dtype=np.int64))(column)

        assert len(taken) == 0
        assert taken.type == column.type
