"""Image-text pairs after CLIP scoring: drop image duplicates (exact, perceptual, semantic).

Input: CLIP-scored pairs shards; `duplicates`: IMAGE_DUPLICATES tables (pair_id, kept_pair_id,
reason) from `curation.dedup.images.plan_image_dedup`. Output: the kept pairs, and the removed
ones in `dropped/` with their reason. Selection by score happens next, in `curation.select`.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from curation import layout, storage
from curation.config import BuildConfig
from curation.schema import DROPPED
from curation.stats import StageStats

STAGE = "pairs_dedup"


def filter_pairs(inputs: list[str], output: str, cfg: BuildConfig, duplicates: list[str]) -> StageStats:
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    plans = [storage.read_table(uri, columns=["pair_id", "kept_pair_id", "reason"]) for uri in duplicates]
    removals = (
        pa.concat_tables(plans)
        if plans
        else pa.table(
            {"pair_id": pa.array([], pa.string()), "kept_pair_id": pa.array([], pa.string()), "reason": pa.array([], pa.string())}
        )
    )
    dropped: list[pa.Table] = []
    first = storage.read_table(inputs[0])
    with storage.TableWriter(output, first.schema) as writer:
        for i, uri in enumerate(inputs):
            table = first if i == 0 else storage.read_table(uri)
            stats.rows_in += table.num_rows
            stats.bytes_in += storage.size(uri)
            index = pc.index_in(table["pair_id"], value_set=removals["pair_id"].combine_chunks())
            drop = pc.is_valid(index).to_numpy(zero_copy_only=False)
            if drop.any():
                reason = removals["reason"].take(index.filter(pc.is_valid(index))).to_numpy(zero_copy_only=False)
                kept_id = removals["kept_pair_id"].take(index.filter(pc.is_valid(index))).to_pylist()
                stats.drop_each(reason)
                gone = table.filter(drop)
                dropped.append(
                    pa.table(
                        {
                            "stage": [STAGE] * gone.num_rows,
                            "reason": reason.tolist(),
                            "doc_id": gone["doc_id"] if "doc_id" in gone.column_names else [None] * gone.num_rows,
                            "url": gone["image_url"] if "image_url" in gone.column_names else [None] * gone.num_rows,
                            "source_uri": [uri] * gone.num_rows,
                            "source_offset": [None] * gone.num_rows,
                            "detail": [
                                f"pair {p}: duplicate of {k}" for p, k in zip(gone["pair_id"].to_pylist(), kept_id, strict=True)
                            ],
                        },
                        schema=DROPPED,
                    )
                )
            writer.write(table.filter(~drop))
    layout.finish_shard(stats, writer, output, started, dropped)
    return stats
