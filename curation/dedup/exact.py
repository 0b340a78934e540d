"""Exact dedup over the whole build, in two steps that scale out under Airflow:

1. `plan_exact_dedup` (one global task) reads only `doc_id` and `text_hash` of every shard and
   writes the table of duplicates to drop.
2. Each shard's filter task drops the doc_ids listed there (see `curation.filtering`).

Keep rule (deterministic whatever the shard order or parallelism): among documents with the
same normalized-text hash, the one with the smallest `doc_id` is kept.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.config import BuildConfig
from curation.stats import StageStats

STAGE = "dedup"
DUPLICATES = pa.schema([("doc_id", pa.string()), ("kept_doc_id", pa.string()), ("reason", pa.string())])


def plan_exact_dedup(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Write to `output` every doc_id that duplicates a kept document, with the one kept."""
    started = time.monotonic()
    keys = (
        pa.concat_tables([storage.read_table(uri, columns=["doc_id", "text_hash"]) for uri in inputs])
        if inputs
        else (pa.table({"doc_id": pa.array([], pa.string()), "text_hash": pa.array([], pa.string())}))
    )
    keepers = keys.group_by("text_hash").aggregate([("doc_id", "min")]).rename_columns(["text_hash", "kept_doc_id"])
    joined = keys.join(keepers, "text_hash")
    dups = joined.filter(pc.not_equal(joined["doc_id"], joined["kept_doc_id"]))
    dups = dups.select(["doc_id", "kept_doc_id"]).sort_by("doc_id")
    dups = dups.append_column("reason", pa.array(["dup_exact"] * dups.num_rows, pa.string())).cast(DUPLICATES)
    size = storage.write_table(output, dups)
    # The plan removes nothing itself: it counts the documents it looked at and the duplicates found.
    stats = StageStats(stage=STAGE, shard="plan", rows_in=keys.num_rows, rows_out=keys.num_rows, bytes_out=size, outputs=[output])
    stats.seconds = time.monotonic() - started
    return stats
