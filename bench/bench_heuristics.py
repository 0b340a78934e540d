"""Heuristic filters: `heuristic_signals` + `drop_reasons` vs datatrove's filters, docs/s on one core.

Both sides see the same documents (a generated sample crawl, ingested, plus generated junk pages). The baseline
is what FineWeb's pipeline runs: datatrove's GopherRepetitionFilter, GopherQualityFilter,
C4QualityFilter and FineWebQualityFilter with their default (published) thresholds, one document
at a time, each filter stopping at its first failed rule and a dropped document skipping the rest
(so the baseline does less work on bad documents). The candidate computes every signal column
for every document (Gopher, C4, FineWeb and the lexicon) and applies all rules. pyarrow runs on
one thread so that both rates are per core.

datatrove's English word tokenizer needs spaCy (`pip install -c constraints.txt spacy`; only the
blank English tokenizer is used, no model download).

    .venv/bin/python -m bench.bench_heuristics --pages 1000
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.harness import compare
from curation import storage
from curation.config import HeuristicsConfig, load_config
from curation.ingest.sample_crawl import write_sample_crawl
from curation.ingest.warc import ingest
from curation.scoring.fasttext_classifier import demo_texts
from curation.scoring.heuristics import drop_reasons, heuristic_signals

BATCH = 4096


def datatrove_filters() -> list:
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    return [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]


def datatrove_keep(texts: list[str], filters: list) -> list[str]:
    """'' for a kept document, else the name of the first filter that dropped it."""
    from datatrove.data import Document

    out = []
    for i, text in enumerate(texts):
        doc, verdict = Document(text=text, id=str(i)), ""
        for f in filters:
            result = f.filter(doc)
            if result is False or (isinstance(result, tuple) and not result[0]):
                verdict = type(f).__name__
                break
        out.append(verdict)
    return out


def ours(texts: pa.Array, cfg: HeuristicsConfig) -> np.ndarray:
    reasons = []
    for start in range(0, len(texts), BATCH):
        signals = heuristic_signals(texts.slice(start, BATCH), cfg.toxic_words)
        reasons.append(drop_reasons(signals, cfg)[0])
    return np.concatenate(reasons) if reasons else np.zeros(0, object)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_sample_crawl(str(Path(tmp) / "crawl"), pages=args.pages, seed=0, files=1)
        ingest(files, f"{tmp}/docs.parquet", load_config(overrides={"work_root": tmp}))
        extracted = storage.read_table(f"{tmp}/docs.parquet")["text"].to_pylist()
    # Plus generated junk (keyword stuffing, navigation, notices, word salad) so that every filter has work.
    as_list = extracted + demo_texts("quality", args.pages // 5, seed=1)[1]
    texts = pa.array(as_list, pa.string())
    cfg = HeuristicsConfig()
    filters = datatrove_filters()
    datatrove_keep(["Warm up the tokenizer once, before timing."], filters)

    # Agreement on keep / drop, lexicon off (datatrove's four filters have none).
    mine = ours(texts, cfg.model_copy(update={"toxic_words": []})) == ""
    theirs = np.array(datatrove_keep(as_list, filters)) == ""
    agreement = {
        "both_keep": int((mine & theirs).sum()),
        "both_drop": int((~mine & ~theirs).sum()),
        "only_datatrove_keeps": int((~mine & theirs).sum()),
        "only_we_keep": int((mine & ~theirs).sum()),
        "agreement": round(float((mine == theirs).mean()), 4),
        "our_reasons": dict(Counter(ours(texts, cfg))),
    }
    compare(
        "heuristics",
        "docs/s",
        lambda: len(ours(texts, cfg)),
        lambda: len(datatrove_keep(as_list, filters)),
        repeat=args.repeat,
        target=1.0,
        extra={
            "docs": len(as_list),
            "cores_used": 1,
            "baseline_filters": "datatrove 0.10.1 GopherRepetition, GopherQuality, C4Quality, FineWebQuality (defaults)",
            "decisions": agreement,
        },
    )
    print(f"keep/drop agreement with datatrove: {agreement}")


if __name__ == "__main__":
    main()
