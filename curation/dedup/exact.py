"""Exact dedup (normalized-text hash) and URL dedup (normalized URL) over the whole build.

Two steps that scale out under Airflow:

1. `plan_exact_dedup` / `plan_url_dedup` read only `doc_id` and the key column of every shard
   and write the table of duplicates to drop. With `partitions > 1` each call handles the keys
   whose hash falls in its `partition` (one mapped task each, memory 1/partitions): every
   partition's table goes to the filter, which accepts a list of them.
2. Each shard's filter task drops the doc_ids listed there (see `curation.filtering`).

Keep rule (deterministic whatever the shard order or parallelism): among documents with the
same key, the one with the smallest `doc_id` is kept.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation import storage
from curation.config import BuildConfig
from curation.errors import ConfigError
from curation.stats import StageStats

STAGE = "dedup"
DUPLICATES = pa.schema([("doc_id", pa.string()), ("kept_doc_id", pa.string()), ("reason", pa.string())])


def plan_exact_dedup(inputs: list[str], output: str, cfg: BuildConfig, partition: int = 0, partitions: int = 1) -> StageStats:
    """Write to `output` every doc_id whose normalized text duplicates a kept document's."""
    return _plan_key_dedup(inputs, output, "text_hash", lambda column: column, "dup_exact", partition, partitions)


def plan_url_dedup(inputs: list[str], output: str, cfg: BuildConfig, partition: int = 0, partitions: int = 1) -> StageStats:
    """Write to `output` every doc_id whose normalized URL (`normalize.normalize_url`) is a kept document's."""
    from curation.dedup.normalize import normalize_urls

    return _plan_key_dedup(inputs, output, "url", normalize_urls, "dup_url", partition, partitions)


def duplicates_table(keys: pa.Table, reason: str) -> pa.Table:
    """(doc_id, key) -> every doc_id whose key an earlier (smaller) doc_id has, with that doc_id.

    Rows with a null key are nobody's duplicate.
    """
    keys = keys.filter(pc.is_valid(keys["key"]))
    keepers = keys.group_by("key").aggregate([("doc_id", "min")]).rename_columns(["key", "kept_doc_id"])
    joined = keys.join(keepers, "key")
    dups = joined.filter(pc.not_equal(joined["doc_id"], joined["kept_doc_id"]))
    dups = dups.select(["doc_id", "kept_doc_id"]).sort_by([("doc_id", "ascending"), ("kept_doc_id", "ascending")])
    return dups.append_column("reason", pa.array([reason] * dups.num_rows, pa.string())).cast(DUPLICATES)


def _plan_key_dedup(inputs, output, column, normalize, reason, partition, partitions) -> StageStats:
    started = time.monotonic()
    if not 0 <= partition < partitions:
        raise ConfigError(f"partition {partition} outside 0..{partitions - 1}")
    parts = []
    for uri in inputs:
        table = storage.read_table(uri, columns=["doc_id", column])
        key = normalize(table[column])
        if partitions > 1:
            key_hash = np.fromiter(
                (xxhash.xxh64_intdigest(k.encode()) if k is not None else 0 for k in key.to_pylist()), np.uint64, len(key)
            )
            mine = pa.array(key_hash % np.uint64(partitions) == partition)
            table, key = table.filter(mine), pc.filter(key, mine)
        parts.append(pa.table({"doc_id": table["doc_id"], "key": key}))
    keys = pa.concat_tables(parts) if parts else pa.table({"doc_id": pa.array([], pa.string()), "key": pa.array([], pa.string())})
    dups = duplicates_table(keys, reason)
    size = storage.write_table(output, dups)
    # The plan removes nothing itself: it counts the documents it looked at.
    shard = reason.removeprefix("dup_") + (f"-p{partition:04d}" if partitions > 1 else "")
    stats = StageStats(stage=STAGE, shard=shard, rows_in=keys.num_rows, rows_out=keys.num_rows, bytes_out=size, outputs=[output])
    stats.seconds = time.monotonic() - started
    return stats
