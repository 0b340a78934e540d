"""fastText scoring: `score_texts` vs a raw `model.predict` loop on the same texts, docs/s.

The baseline is the practical limit of the library: one `model.predict(text)` call per document
on texts already preprocessed (the preprocessing is done before timing starts). The candidate
starts from the raw Arrow column: it preprocesses (lower-case, punctuation, whitespace), predicts
in batches, and returns the probability of the configured label for every document.

    .venv/bin/python -m bench.bench_fasttext --docs 20000
"""

from __future__ import annotations

import argparse
import tempfile

import pyarrow as pa

from bench.harness import compare
from curation.config import FastTextModelConfig
from curation.scoring.fasttext_classifier import (
    TrainParams,
    demo_texts,
    load_classifier,
    normalize_text,
    score_texts,
    train_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        positives, negatives = demo_texts("quality", 500, seed=0)
        params = TrainParams(dim=args.dim, epoch=5, lr=0.5, bucket=200_000, seed=0)
        trained = train_classifier(pa.array(positives), pa.array(negatives), f"{tmp}/quality.bin", "quality", params)
        cfg = FastTextModelConfig(model=trained.model, label=trained.label)
        good, junk = demo_texts("quality", args.docs // 2, seed=1)
        texts = pa.array(good + junk)
        model = load_classifier(cfg.model)
        prepared = normalize_text(texts).to_pylist()

        def raw_loop() -> int:
            for text in prepared:
                model.predict(text)
            return len(prepared)

        compare(
            "fasttext_scoring",
            "docs/s",
            lambda: len(score_texts(texts, cfg)),
            raw_loop,
            repeat=args.repeat,
            target=0.8,
            extra={
                "docs": len(texts),
                "mean_words_per_doc": round(sum(len(t.split()) for t in prepared) / len(prepared), 1),
                "model_dim": args.dim,
                "cores_used": 1,
                "baseline_kind": "model.predict(text) per document on texts preprocessed before timing",
            },
        )


if __name__ == "__main__":
    main()
