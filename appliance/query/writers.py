"""Output formats of the ra tools besides argus text: CSV, NDJSON, Parquet and record streams.

CSV and NDJSON carry the printed fields (``-s``) with their printed values, the
same rows a job result holds: CSV with ra's column labels as the header, NDJSON
one JSON object per line keyed by field name, counters as numbers. Parquet and
Arrow record streams carry the records themselves, every column typed, so that
they can be read back or loaded into other tools (``-s`` does not apply).
``-w FILE`` picks the format from the file name (see ``format_for_path``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

log = logging.getLogger(__name__)

#: File name endings and the format each one selects; any other name gets a record stream.
SUFFIX_FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson",
                  ".parquet": "parquet"}


def format_for_path(path: str) -> str:
    """Return the output format ``-w path`` writes: by suffix, else an Arrow record stream."""
    if path == "-":
        return "arrow"
    return SUFFIX_FORMATS.get(Path(path).suffix.lower(), "arrow")


def json_default(value: Any) -> Any:
    """Serialise values json does not know: bytes as hex, times as ISO 8601."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def ndjson_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Yield one compact JSON object per row."""
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=json_default)


def csv_lines(rows: Iterable[dict[str, Any]], names: list[str], labels: list[str]) -> Iterator[str]:
    """Yield the CSV header (``labels``) and one line per row, values in ``names`` order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="")
    for values in ([labels], ([row.get(name, "") for name in names] for row in rows)):
        for value in values:
            writer.writerow(["" if item is None else item for item in value])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()


def write_text(path: str, lines: Iterable[str]) -> None:
    """Write lines to ``path`` (UTF-8, one per line)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for line in lines:
            handle.write(line + "\n")
    log.info("wrote %s", path)


def write_parquet(table: pa.Table, sink: str | BinaryIO) -> None:
    """Write a table to a Parquet file (zstd compressed)."""
    import pyarrow.parquet as pq  # loaded only for Parquet output: it takes 0.02 s

    pq.write_table(table, sink, compression="zstd")
    log.info("wrote %d rows as Parquet to %s", table.num_rows, sink)
