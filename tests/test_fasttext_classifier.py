"""fastText classifiers: training from files via the CLI, held-out evaluation, scoring by ModelRef."""

import json
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation import storage
from curation.cli import app
from curation.config import FastTextModelConfig
from curation.errors import BadInputError, ConfigError
from curation.models import ModelRef, sha256_file
from curation.scoring import fasttext_classifier as ft

SMALL = ft.TrainParams(dim=16, epoch=25, lr=0.5, bucket=50_000, seed=0)


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory) -> dict:
    """A quality model trained through `curation train-classifier` from JSONL positives and Parquet negatives."""
    root = tmp_path_factory.mktemp("quality")
    positives, negatives = ft.demo_texts("quality", 300, seed=1)
    (root / "pos.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(positives)))
    pq.write_table(pa.table({"text": [*negatives, None, "  "]}), root / "neg.parquet")  # 2 unusable rows
    result = CliRunner().invoke(
        app,
        [
            "train-classifier",
            "--positives",
            str(root / "pos.jsonl"),
            "--negatives",
            str(root / "neg.parquet"),
            "--output",
            str(root / "quality.bin"),
            "--label",
            "quality",
            *("--dim", "16", "--epoch", "25", "--lr", "0.5", "--bucket", "50000", "--holdout", "0.25"),
        ],
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "output": result.output, "model": root / "quality.bin"}


def test_cli_writes_model_checksum_and_report(quality_model):
    model = quality_model["model"]
    digest = sha256_file(model)
    assert (model.parent / "quality.sha256").read_text() == f"{digest}  quality.bin\n"
    report = json.loads((model.parent / "quality.eval.json").read_text())
    assert report["model_sha256"] == digest and f"sha256: {digest}" in quality_model["output"]
    assert report["label"] == "__label__quality" and report["params"]["word_ngrams"] == 2
    assert report["test"]["positives"] == 75 and report["test"]["negatives"] == 75  # 25% of each class held out
    assert report["skipped_empty"] == {"positives": 0, "negatives": 2}
    for metric in ("precision", "recall", "roc_auc"):
        assert 0.0 <= report["test"][metric] <= 1.0
    print(f"\nheld-out ROC AUC {report['test']['roc_auc']:.4f}, precision {report['test']['precision']:.4f}")
    assert report["test"]["roc_auc"] >= 0.98


def test_quality_model_separates_fresh_held_out_texts(quality_model):
    """Texts from another seed, never seen in training: the AUC is computed here and asserted."""
    positives, negatives = ft.demo_texts("quality", 100, seed=99)
    cfg = FastTextModelConfig(
        model=ModelRef(uri=str(quality_model["model"]), sha256=sha256_file(quality_model["model"])), label="__label__quality"
    )
    scores = ft.score_texts(pa.array(positives + negatives), cfg, batch_size=64)  # several batches
    truth = np.array([True] * 100 + [False] * 100)
    auc = ft.roc_auc(scores, truth)
    print(f"\nfresh held-out ROC AUC {auc:.4f}")
    assert auc >= 0.98
    assert ft.evaluate(scores, truth)["recall"] >= 0.9
    # Word salad has exactly an article's words: only the bigrams tell it apart.
    salad = scores[100:][3::4]
    assert np.median(salad) < np.median(scores[:100])


def test_wrong_checksum_fails_with_a_clear_error(quality_model):
    cfg = FastTextModelConfig(model=ModelRef(uri=str(quality_model["model"]), sha256="0" * 64), label="__label__quality")
    with pytest.raises(ConfigError, match=r"has sha256 [0-9a-f]{64}, but the config expects 0{64}"):
        ft.score_texts(pa.array(["some text"]), cfg)


def test_wrong_label_and_non_model_files_fail_clearly(quality_model, tmp_path):
    cfg = FastTextModelConfig(model=ModelRef(uri=str(quality_model["model"])), label="__label__hq")
    with pytest.raises(ConfigError, match=r"not '__label__hq'"):
        ft.score_texts(pa.array(["text"]), cfg)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match="not a fastText model"):
        ft.load_classifier(ModelRef(uri=str(junk)))


def test_model_is_loaded_once_per_process(quality_model):
    ref = ModelRef(uri=str(quality_model["model"]))
    first = ft.load_classifier(ref)
    assert ft.load_classifier(ref) is first
    assert ft.load_classifier(ModelRef(uri=str(quality_model["model"]))) is first


def test_public_checkpoints_go_through_model_ref_and_fail_offline():
    dclm = FastTextModelConfig(
        model=ModelRef(uri="hf-hub:mlfoundations/fasttext-oh-eli5/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin"),
        label="__label__hq",
        preprocess="newlines",
    )
    with pytest.raises(ConfigError, match="cannot fetch hf-hub:mlfoundations/fasttext-oh-eli5"):
        ft.score_texts(pa.array(["a text"]), dclm)


def test_training_is_deterministic(tmp_path):
    positives, negatives = ft.demo_texts("toxicity", 60, seed=3)
    a = ft.train_classifier(pa.array(positives), pa.array(negatives), str(tmp_path / "a.bin"), "toxic", SMALL)
    b = ft.train_classifier(pa.array(positives), pa.array(negatives), str(tmp_path / "b.bin"), "toxic", SMALL)
    assert a.model.sha256 == b.model.sha256 == sha256_file(tmp_path / "a.bin")
    assert a.report["test"] == b.report["test"]


def test_preprocessing_and_metrics_by_hand():
    assert ft.normalize_text(pa.array(["Hello, World!\n\nIt's  FINE.", None])).to_pylist() == ["hello world it s fine", ""]
    assert ft.newlines_to_spaces(pa.array(["a\nb\r\nc"])).to_pylist() == ["a b  c"]
    # Positives 0.35 and 0.8 vs negatives 0.1 and 0.4: 3 of 4 pairs ordered right.
    assert ft.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert ft.roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)  # a tie counts half
    metrics = ft.evaluate(np.array([0.9, 0.6, 0.2, 0.7]), np.array([1, 1, 1, 0]))
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)


def test_normalization_matches_a_per_string_reference():
    rng = random.Random(0)
    alphabet = "aB .,\n\t-éЖ“”_9  ÉŒ'!"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(2000)] + [None, "Plain ASCII."]
    # The reference: lower-case, every run of non-letters/digits (and '_') is one space, trimmed.
    reference = [" ".join(re.sub(r"[\W_]+", " ", (t or "").lower()).split()) for t in texts]
    assert ft.normalize_text(pa.array(texts)).to_pylist() == reference
    loose = ft.normalize_text(pa.array(texts), collapse=False).to_pylist()
    assert [t.split() for t in loose] == [r.split() for r in reference]  # the same fastText tokens


def test_scoring_without_collapsing_predicts_the_same(quality_model):
    model = ft.load_classifier(ModelRef(uri=str(quality_model["model"])))
    texts = pa.array(ft.demo_texts("quality", 30, seed=8)[0] + ["Odd   spacing,\n\n  and “quotes” — here!  "])
    collapsed = ft.predict_label(model, ft.normalize_text(texts).to_pylist(), "__label__quality")
    loose = ft.predict_label(model, ft.prepare(texts, "normalize").to_pylist(), "__label__quality")
    assert np.array_equal(collapsed, loose)


def test_bad_training_input_names_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text column"}\n')
    with pytest.raises(BadInputError, match=r"bad.jsonl has no `text` column"):
        ft.train_classifier([str(bad)], [str(bad)], str(tmp_path / "m.bin"))
    with pytest.raises(BadInputError, match="no training files match"):
        ft.train_classifier([str(tmp_path / "missing-*.jsonl")], [str(bad)], str(tmp_path / "m.bin"))


def test_demo_models_score_their_own_task(tmp_path):
    refs = ft.train_demo_models(str(tmp_path / "demo"), seed=0, n=150)
    assert set(refs) == {"quality", "toxicity"}
    toxic, clean = ft.demo_texts("toxicity", 40, seed=42)
    cfg = FastTextModelConfig(model=refs["toxicity"], label="__label__toxic")
    scores = ft.score_texts(pa.array(toxic + clean), cfg)
    assert ft.roc_auc(scores, np.array([True] * 40 + [False] * 40)) >= 0.95
    overrides = ft.demo_scoring_overrides(refs)
    assert overrides["scoring"]["toxicity"]["model"]["sha256"] == refs["toxicity"].sha256


@pytest.mark.slow
def test_model_from_s3(quality_model, s3_bucket):
    uri = f"s3://{s3_bucket}/models/quality.bin"
    storage.upload_file(quality_model["model"], uri)
    cfg = FastTextModelConfig(model=ModelRef(uri=uri, sha256=sha256_file(quality_model["model"])), label="__label__quality")
    local = FastTextModelConfig(model=ModelRef(uri=str(quality_model["model"])), label="__label__quality")
    texts = pa.array(ft.demo_texts("quality", 5, seed=7)[0])
    assert np.array_equal(ft.score_texts(texts, cfg), ft.score_texts(texts, local))
