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
from curation.takedown import blocked_mask, load_blocklist

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


def load_removals(duplicates: list[str]) -> pa.Table:
    """doc_id -> (reason, detail) from dedup tables (doc_id, kept_doc_id, reason); first one wins."""
    tables = [storage.read_table(uri, columns=["doc_id", "kept_doc_id", "reason"]) for uri in duplicates]
    if not tables:
        return pa.table(
            {"doc_id": pa.array([], pa.string()), "reason": pa.array([], pa.string()), "detail": pa.array([], pa.string())}
        )
    table = pa.concat_tables(tables)
    detail = pc.binary_join_element_wise("duplicate of ", table["kept_doc_id"], "")
    return pa.table({"doc_id": table["doc_id"], "reason": table["reason"], "detail": detail})


def filter_shard(inputs: list[str], output: str, cfg: BuildConfig, duplicates: str | list[str] | None = None) -> StageStats:
    """Write the kept, scored documents of `inputs` to `output`.

    Removes, in this order: takedowns (blocklist under state_root), the doc_ids listed in the
    dedup tables `duplicates` (with their reason, e.g. dup_exact / dup_near), then rows failing
    the heuristic rules.
    """
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    progress = Progress(stats)
    removals = load_removals([duplicates] if isinstance(duplicates, str) else list(duplicates or []))
    removal_ids = removals["doc_id"].combine_chunks()
    blocklist = load_blocklist(cfg)
    dropped: list[pa.Table] = []

    def remove(batch: pa.Table, mask: np.ndarray, reason: np.ndarray, detail: np.ndarray) -> pa.Table:
        if not mask.any():
            return batch
        stats.drop_each(reason[mask])
        dropped.append(_dropped_rows(batch.filter(mask), reason[mask], detail[mask]))
        return batch.filter(~mask)

    with storage.TableWriter(output, SCORED_DOCUMENTS) as writer:
        for uri in inputs:
            table = storage.read_table(uri)
            stats.bytes_in += storage.size(uri)
            for batch in table.select(DOCUMENTS.names).to_batches(max_chunksize=_BATCH_ROWS):
                batch = pa.Table.from_batches([batch])
                stats.rows_in += batch.num_rows
                taken_down = blocked_mask(batch, blocklist)
                n = batch.num_rows
                batch = remove(batch, taken_down, np.full(n, "takedown", object), np.full(n, "on the takedown blocklist", object))
                index = pc.index_in(batch["doc_id"], value_set=removal_ids)
                is_dup = pc.is_valid(index).to_numpy(zero_copy_only=False)
                if is_dup.any():
                    reason = removals["reason"].take(index.fill_null(0)).to_numpy(zero_copy_only=False).astype(object)
                    detail = removals["detail"].take(index.fill_null(0)).to_numpy(zero_copy_only=False).astype(object)
                    batch = remove(batch, is_dup, reason, detail)
                signals = heuristic_signals(batch["text"], cfg.heuristics.toxic_words)
                reason, detail = drop_reasons(signals, cfg.heuristics)
                keep = reason == ""
                remove(batch, ~keep, reason, detail)
                scored = batch.drop_columns(["n_words"])
                for field in SCORED_DOCUMENTS:
                    if field.name not in scored.column_names:
                        scored = scored.append_column(field, signals[field.name])
                writer.write(scored.select(SCORED_DOCUMENTS.names).filter(keep))
                progress.tick()
    layout.finish_shard(stats, writer, output, started, dropped)
    return stats
