"""Filter stage, per shard: drop exact duplicates, add heuristic signal columns, apply the rules.

Input: an ingest shard (DOCUMENTS). Output: the kept rows with one column per signal
(SCORED_DOCUMENTS), plus the dropped rows with their reason in `filter/dropped/`.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import layout, storage
from curation.config import BuildConfig
from curation.schema import DOCUMENTS, DROPPED, SCORED_DOCUMENTS
from curation.scoring.heuristics import drop_reasons, heuristic_signals
from curation.stats import Progress, StageStats

STAGE = "filter"
_BATCH_ROWS = 4_096


def _dropped_rows(batch: pa.Table, reason: np.ndarray, detail: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "stage": pa.array([STAGE] * batch.num_rows, pa.string()),
            "reason": pa.array(reason, pa.string()),
            "doc_id": batch["doc_id"],
            "url": batch["url"],
            "source_uri": batch["source_uri"],
            "source_offset": batch["source_offset"],
            "detail": pa.array(detail, pa.string()),
        },
        schema=DROPPED,
    )


def filter_shard(inputs: list[str], output: str, cfg: BuildConfig, duplicates: str | None = None) -> StageStats:
    """Write the kept, scored documents of `inputs` to `output`; `duplicates` is the dedup plan."""
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    progress = Progress(stats)
    dup_ids = storage.read_table(duplicates, columns=["doc_id"])["doc_id"] if duplicates else pa.array([], pa.string())
    dropped: list[pa.Table] = []
    with storage.TableWriter(output, SCORED_DOCUMENTS) as writer:
        for uri in inputs:
            table = storage.read_table(uri)
            stats.bytes_in += storage.size(uri)
            for batch in table.select(DOCUMENTS.names).to_batches(max_chunksize=_BATCH_ROWS):
                batch = pa.Table.from_batches([batch])
                stats.rows_in += batch.num_rows
                is_dup = pc.is_in(batch["doc_id"], value_set=dup_ids).to_numpy(zero_copy_only=False)
                if is_dup.any():
                    n_dup = int(is_dup.sum())
                    dropped.append(
                        _dropped_rows(
                            batch.filter(is_dup), np.full(n_dup, "dup_exact", object), np.full(n_dup, "exact duplicate", object)
                        )
                    )
                    stats.drop("dup_exact", n_dup)
                    batch = batch.filter(~is_dup)
                signals = heuristic_signals(batch["text"], cfg.heuristics.toxic_words)
                reason, detail = drop_reasons(signals, cfg.heuristics)
                keep = reason == ""
                for name, count in zip(*np.unique(reason[~keep], return_counts=True), strict=True):
                    stats.drop(str(name), int(count))
                if (~keep).any():
                    dropped.append(_dropped_rows(batch.filter(~keep), reason[~keep], detail[~keep]))
                scored = batch.drop_columns(["n_words"])
                for field in SCORED_DOCUMENTS:
                    if field.name not in scored.column_names:
                        scored = scored.append_column(field, signals[field.name])
                writer.write(scored.select(SCORED_DOCUMENTS.names).filter(keep))
                progress.tick()
    stats.rows_out = writer.rows
    stats.bytes_out = writer.bytes
    stats.outputs = [output]
    storage.write_table(layout.dropped_uri(output), pa.concat_tables(dropped) if dropped else DROPPED.empty_table())
    stats.seconds = time.monotonic() - started
    return stats
