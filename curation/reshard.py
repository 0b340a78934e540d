"""Deterministic resharding of Parquet shards into release files of a target size.

Rows keep the order of the inputs sorted by URI, so the same inputs and settings always give
the same files, byte for byte. Output files are zstd Parquet with bounded row groups (rows and
uncompressed bytes), page indexes and statistics, readable by pyarrow, `datasets`, polars and
duckdb. Dictionary encoding is kept for the columns where it pays (few distinct values) and
skipped for long unique text, where it only costs time.

Like Iceberg's `rewrite_data_files`, a file that is already laid out as the release wants (zstd,
bounded row groups, between `passthrough_min_ratio` and `passthrough_max_ratio` of the target
size) is published as it is; every other input is streamed through a writer that rolls over to
a new file when the target is reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.config import PublishConfig
from curation.errors import ConfigError

_READ_BATCH_ROWS = 1024
_DICTIONARY_MAX_DISTINCT = 0.5  # share of distinct values in a column above which dictionaries don't pay
_STATISTICS_MAX_MEAN_BYTES = 128  # min/max of long free text (documents, captions) filter nothing and bloat footers
_FOOTER_BYTES_PER_CHUNK = 100  # footer metadata per column chunk, roughly (offsets, sizes, statistics)
_ROW_GROUP_SLACK = 1.5  # a row group closes on the first row past its budget; Parquet's own byte count differs a bit


@dataclass(frozen=True)
class ParquetLayout:
    shard_bytes: int = 256 * 2**20
    shard_rows: int | None = None
    row_group_rows: int = 100_000
    row_group_bytes: int = 128 * 2**20
    zstd_level: int = 3
    passthrough_min_ratio: float = 0.75
    passthrough_max_ratio: float = 1.8

    @classmethod
    def from_config(cls, publish: PublishConfig) -> ParquetLayout:
        return cls(
            shard_bytes=publish.shard_bytes,
            shard_rows=publish.shard_rows,
            row_group_rows=publish.row_group_rows,
            row_group_bytes=publish.row_group_bytes,
            zstd_level=publish.zstd_level,
            passthrough_min_ratio=publish.passthrough_min_ratio,
            passthrough_max_ratio=publish.passthrough_max_ratio,
        )

    def conforms(self, path: Path, schema: pa.Schema) -> bool:
        """True if `path` can be published unchanged: right schema, zstd, bounded row groups, right size."""
        if self.shard_rows is not None:  # an exact row count per file is asked for: always rewrite
            return False
        size = path.stat().st_size
        if not self.passthrough_min_ratio * self.shard_bytes <= size <= self.passthrough_max_ratio * self.shard_bytes:
            return False
        parquet = pq.ParquetFile(path)
        if not parquet.schema_arrow.equals(schema, check_metadata=False):
            return False
        meta = parquet.metadata
        max_group_bytes = _ROW_GROUP_SLACK * min(self.row_group_bytes, self.shard_bytes)
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            if group.num_rows > self.row_group_rows or group.total_byte_size > max_group_bytes:
                return False
            if any(group.column(c).compression != "ZSTD" for c in range(group.num_columns)):
                return False
        return True


def release_schema(inputs: list[Path]) -> pa.Schema:
    """The schema every input must share (field docs kept from the first); ConfigError names a misfit."""
    schema = pq.read_schema(inputs[0])
    for path in inputs[1:]:
        other = pq.read_schema(path)
        if not other.equals(schema, check_metadata=False):
            raise ConfigError(
                f"input shard {path} has a different schema from {inputs[0]}; a release needs one schema.\n"
                f"{inputs[0]}: {schema.names}\n{path}: {other.names}"
            )
    return schema


class ParquetFileWriter:
    """One Parquet file written row group by row group; each row group bounded in rows and bytes."""

    def __init__(self, path: Path, schema: pa.Schema, layout: ParquetLayout, max_rows: int | None = None):
        self.path = path
        self.schema = schema
        self.layout = layout
        self.max_rows = max_rows
        self.rows = 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._groups = 0
        # A row group never holds more than a whole shard's worth of (uncompressed) bytes.
        self._group_bytes = min(layout.row_group_bytes, layout.shard_bytes)

    @property
    def room(self) -> int | None:
        """Rows this file still takes when a row count is set."""
        return None if self.max_rows is None else self.max_rows - self.rows - self._buffered_rows

    @property
    def written_bytes(self) -> int:
        """Bytes so far, with an estimate of the footer still to come (column chunk metadata)."""
        return self._sink.tell() + self._groups * len(self.schema) * _FOOTER_BYTES_PER_CHUNK

    def fit(self, batch: pa.RecordBatch) -> int:
        """How many leading rows of `batch` the open row group (and the file's `room`) still takes; >= 1.

        Bytes are estimated from the batch's mean row size, so a row group closes close to its budget.
        """
        rows = self.layout.row_group_rows - self._buffered_rows
        if self.room is not None:
            rows = min(rows, self.room)
        per_row = batch.nbytes / batch.num_rows if batch.num_rows else 1.0
        by_bytes = int((self._group_bytes - self._buffered_bytes) // max(per_row, 1.0))
        return max(1, min(rows, by_bytes, batch.num_rows))

    def add(self, batch: pa.RecordBatch) -> None:
        """Buffer `batch` (it must fit `room`), flushing each row group when it reaches its bounds."""
        while batch.num_rows:
            n = self.fit(batch)
            piece, batch = batch.slice(0, n), batch.slice(n)
            self._buffer.append(piece)
            self._buffered_rows += piece.num_rows
            self._buffered_bytes += piece.nbytes
            full = self._buffered_rows >= self.layout.row_group_rows or self._buffered_bytes >= self._group_bytes
            if full or self.room == 0:
                self.flush()

    def flush(self) -> None:
        if not self._buffered_rows:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._sink,
                self.schema,
                compression="zstd",
                compression_level=self.layout.zstd_level,
                use_dictionary=_dictionary_columns(table),
                write_statistics=_statistics_columns(table),
                write_page_index=True,
            )
        self._writer.write_table(table, row_group_size=table.num_rows)  # exactly one row group
        self.rows += table.num_rows
        self._groups += 1
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0

    def close(self) -> int:
        """Finish the file; returns its row count."""
        self.flush()
        if self._writer is None:  # no rows: still a valid, empty file with the schema
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression="zstd")
        self._writer.close()
        self._sink.close()
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._sink.close()
        self.path.unlink(missing_ok=True)


def _statistics_columns(table: pa.Table) -> list[str]:
    """Every column but long free text (its min/max would be whole documents in every footer)."""
    out = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type) or pa.types.is_large_string(column.type):
            lengths = pc.binary_length(column)
            mean = pc.mean(lengths).as_py() or 0
            if mean > _STATISTICS_MAX_MEAN_BYTES:
                continue
        out.append(name)
    return out


def _dictionary_columns(table: pa.Table) -> list[str]:
    """Columns with few distinct values in the first row group (language, domain, ...)."""
    out = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_nested(column.type) or not len(column):
            continue
        if pc.count_distinct(column).as_py() <= _DICTIONARY_MAX_DISTINCT * len(column):
            out.append(name)
    return out


@dataclass(frozen=True)
class RowFilter:
    """Rows to keep: `keep(batch)` is a bool mask over a batch holding at least `columns`."""

    columns: list[str]
    keep: Callable[[pa.RecordBatch], np.ndarray]

    def drops_any(self, path: Path) -> bool:
        """True if any row of `path` would be removed (reads only `columns`)."""
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64 * _READ_BATCH_ROWS, columns=self.columns):
            if not self.keep(batch).all():
                return True
        return False


@dataclass
class Reshard:
    """What `reshard` wrote, in file order."""

    schema: pa.Schema
    files: list[tuple[Path, int]]  # (local file, rows)
    passthrough: int = 0
    rewritten_inputs: int = 0
    removed: int = 0  # rows the RowFilter took out

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.files)


def reshard(
    inputs: list[Path],
    out_dir: Path,
    layout: ParquetLayout,
    on_file: Callable[[int, Path, int], None] | None = None,
    name: str = "part-{:05d}.parquet",
    row_filter: RowFilter | None = None,
) -> Reshard:
    """Reshard local Parquet `inputs` (already in release order) into `out_dir`.

    `on_file(index, path, rows)` is called as soon as each output file is complete (so uploads can
    start while later files are written). A passed-through input is reported with its own path.
    With `row_filter`, rows it rejects are left out (and an input losing rows is never passed through).
    """
    if not inputs:
        raise ConfigError("nothing to reshard: no input shards")
    schema = release_schema(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Reshard(schema=schema, files=[])
    next_index = 0
    current: ParquetFileWriter | None = None
    current_index = -1

    indexed: list[tuple[int, Path, int]] = []

    def finish(index: int, path: Path, rows: int) -> None:
        indexed.append((index, path, rows))
        if on_file is not None:
            on_file(index, path, rows)

    def roll() -> None:
        nonlocal current
        if current is not None:
            finish(current_index, current.path, current.close())
            current = None

    for path in inputs:
        if layout.conforms(path, schema) and not (row_filter is not None and row_filter.drops_any(path)):
            finish(next_index, path, pq.ParquetFile(path).metadata.num_rows)
            next_index += 1
            result.passthrough += 1
            continue
        result.rewritten_inputs += 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_READ_BATCH_ROWS):
            if row_filter is not None:
                mask = row_filter.keep(batch)
                result.removed += int((~mask).sum())
                batch = batch.filter(pa.array(mask))
            while batch.num_rows:
                if current is None:
                    current_index, next_index = next_index, next_index + 1
                    current = ParquetFileWriter(out_dir / name.format(current_index), schema, layout, layout.shard_rows)
                # At most one row group per step, so the file rolls over as soon as it reaches the target.
                n = current.fit(batch)
                current.add(batch.slice(0, n))
                batch = batch.slice(n)
                if current.room == 0 or current.written_bytes >= layout.shard_bytes:
                    roll()
    roll()
    result.files = [(path, rows) for _, path, rows in sorted(indexed)]
    return result


def rewrite_filtered(src: Path, dst: Path, layout: ParquetLayout, keep: Callable[[pa.RecordBatch], np.ndarray]) -> int:
    """Copy `src` to `dst` keeping the rows `keep(batch)` marks True, with the release layout; returns rows."""
    parquet = pq.ParquetFile(src)
    writer = ParquetFileWriter(dst, parquet.schema_arrow, layout)
    try:
        for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS):
            mask = keep(batch)
            if mask.any():
                writer.add(batch.filter(pa.array(mask)))
        return writer.close()
    except BaseException:
        writer.abort()
        raise
