"""Score stage for documents, per shard: fastText quality and toxicity scores, PII counts and masking.

Input: filtered shards (SCORED_DOCUMENTS). Output: the same rows with the TEXT_SCORES columns
appended (CLASSIFIED_DOCUMENTS). Nothing is dropped here: selection (curation/select.py) decides
on the scores over the whole build. A classifier that is not configured leaves its column null.
The classifiers see the text as extracted; the text written out is PII-masked when
`scoring.pii_mask` is on.
"""

from __future__ import annotations

import time

import pyarrow as pa

from curation import layout, storage
from curation.config import BuildConfig
from curation.schema import CLASSIFIED_DOCUMENTS, SCORED_DOCUMENTS, conform
from curation.scoring.fasttext_classifier import load_classifier, score_texts
from curation.scoring.pii import detect_pii
from curation.stats import Progress, StageStats

STAGE = "score"


def score_table(table: pa.Table, cfg: BuildConfig) -> pa.Table:
    """`table` (SCORED_DOCUMENTS columns) with the TEXT_SCORES columns appended and the text masked."""
    n = table.num_rows
    columns: dict[str, pa.Array] = {}
    for name, model_cfg in (("quality_score", cfg.scoring.quality), ("toxicity_score", cfg.scoring.toxicity)):
        scores = score_texts(table["text"], model_cfg, cfg.scoring.batch_rows) if model_cfg else None
        columns[name] = pa.array(scores, pa.float32()) if scores is not None else pa.nulls(n, pa.float32())
    pii = detect_pii(table["text"], mask=cfg.scoring.pii_mask)
    out = table.set_column(table.schema.get_field_index("text"), SCORED_DOCUMENTS.field("text"), pii["text"])
    for field in CLASSIFIED_DOCUMENTS:
        if field.name in columns:
            out = out.append_column(field, columns[field.name])
        elif field.name in pii.column_names and field.name != "text":
            out = out.append_column(field, pii[field.name])
    return out.select(CLASSIFIED_DOCUMENTS.names)


def score_shard(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Write `inputs` (filtered shards) with score columns to `output`; rows in == rows out."""
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    progress = Progress(stats)
    # Load (and verify) the models before reading data, so a bad model URI fails fast.
    for model_cfg in (cfg.scoring.quality, cfg.scoring.toxicity):
        if model_cfg:
            load_classifier(model_cfg.model)
    with storage.TableWriter(output, CLASSIFIED_DOCUMENTS) as writer:
        for uri in inputs:
            table = conform(storage.read_table(uri), SCORED_DOCUMENTS, where=f"score input {uri}")
            stats.bytes_in += storage.size(uri)
            for batch in table.to_batches(max_chunksize=cfg.scoring.batch_rows):
                batch = pa.Table.from_batches([batch])
                stats.rows_in += batch.num_rows
                writer.write(score_table(batch, cfg))
                progress.tick()
    layout.finish_shard(stats, writer, output, started)
    return stats
