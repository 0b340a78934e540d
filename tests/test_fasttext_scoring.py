"""The document score stage: fastText scores and PII columns on filtered shards."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from curation import storage
from curation.config import load_config
from curation.errors import ConfigError
from curation.schema import CLASSIFIED_DOCUMENTS, SCORED_DOCUMENTS
from curation.scoring import fasttext_classifier as ft
from curation.scoring.documents import score_shard
from curation.scoring.heuristics import heuristic_signals


def scored_documents(texts: list[str], prefix: str = "d") -> pa.Table:
    """A filter-stage shard (SCORED_DOCUMENTS) holding `texts`."""
    n = len(texts)
    columns = {
        "doc_id": [f"{prefix}{i:031x}"[:32] for i in range(n)],
        "url": [f"https://example.org/{prefix}/{i}" for i in range(n)],
        "domain": ["example.org"] * n,
        "warc_record_id": [f"<urn:uuid:{i}>" for i in range(n)],
        "fetch_time": [dt.datetime(2026, 11, 2, tzinfo=dt.UTC)] * n,
        "source_uri": ["crawl.warc.gz"] * n,
        "source_offset": list(range(n)),
        "title": [None] * n,
        "text": texts,
        "language": ["en"] * n,
        "language_score": [1.0] * n,
        "n_words": [len(t.split()) for t in texts],
        "text_hash": [f"{i:032x}" for i in range(n)],
    }
    table = pa.table(columns)
    signals = heuristic_signals(table["text"], [])
    for field in SCORED_DOCUMENTS:
        if field.name not in table.column_names:
            table = table.append_column(field, signals[field.name])
    return table.select(SCORED_DOCUMENTS.names).cast(SCORED_DOCUMENTS)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    return ft.train_demo_models(str(tmp_path_factory.mktemp("models")), seed=0)


def test_score_shard_adds_scores_and_masks_pii(tmp_path, demo_models):
    good, junk = ft.demo_texts("quality", 20, seed=11)
    toxic, _ = ft.demo_texts("toxicity", 10, seed=11)
    contact = good[0] + "\nContact the editor at editor@valleyvoice.example.net or 555-867-5309."
    texts = [*good[1:], contact, *junk, *toxic]
    storage.write_table(str(tmp_path / "filter.parquet"), scored_documents(texts))
    cfg = load_config(overrides=ft.demo_scoring_overrides(demo_models) | {"work_root": str(tmp_path)})
    stats = score_shard([str(tmp_path / "filter.parquet")], str(tmp_path / "score.parquet"), cfg)
    assert stats.rows_in == stats.rows_out == len(texts) and stats.balanced()
    out = storage.read_table(str(tmp_path / "score.parquet"))
    assert out.schema.names == CLASSIFIED_DOCUMENTS.names
    quality = out["quality_score"].to_numpy()
    truth = np.array([True] * 20 + [False] * 20 + [True] * 10)  # toxic pages are well-written prose
    assert ft.roc_auc(quality, truth) >= 0.95
    toxicity = out["toxicity_score"].to_numpy()
    assert toxicity[-10:].min() > np.median(toxicity[:20])
    row = out.slice(19, 1).to_pylist()[0]
    assert (row["pii_emails"], row["pii_phones"], row["pii_count"]) == (1, 1, 2)
    assert row["text"].endswith("at |||EMAIL_ADDRESS||| or |||PHONE_NUMBER|||.")
    assert out["pii_count"].to_pylist().count(0) == len(texts) - 1


def test_unconfigured_models_leave_null_columns(tmp_path):
    storage.write_table(str(tmp_path / "f.parquet"), scored_documents(["One text about the river. Call 555-123-4567 now."]))
    cfg = load_config(overrides={"scoring": {"pii_mask": False}})
    score_shard([str(tmp_path / "f.parquet")], str(tmp_path / "s.parquet"), cfg)
    out = storage.read_table(str(tmp_path / "s.parquet"))
    assert out["quality_score"].null_count == out["toxicity_score"].null_count == 1
    assert out["pii_phones"].to_pylist() == [1] and "555-123-4567" in out["text"][0].as_py()


def test_bad_model_fails_before_reading_data(tmp_path, demo_models):
    overrides = ft.demo_scoring_overrides(demo_models)
    overrides["scoring"]["quality"]["model"]["sha256"] = "f" * 64
    with pytest.raises(ConfigError, match="sha256"):
        score_shard([str(tmp_path / "missing.parquet")], str(tmp_path / "s.parquet"), load_config(overrides=overrides))


def test_crawl_through_filter_score_and_select(tmp_path, sample_crawl, demo_models):
    """Ingest -> filter -> score -> plan -> select on the sample crawl, with the lexicon rule off so
    that the toxicity classifier is what removes the toxic pages."""
    import json
    from pathlib import Path

    from curation.filtering import filter_shard
    from curation.ingest.warc import ingest
    from curation.select import plan_selection, select_shard

    rules = [
        {"column": "toxicity_score", "keep": "below", "threshold": 0.4, "reason": "toxicity"},
        {"column": "pii_count", "keep": "below", "threshold": 5, "reason": "pii"},
        {"column": "quality_score", "keep": "above", "threshold": 0.5, "reason": "quality"},
    ]
    overrides = {"work_root": str(tmp_path), "heuristics": {"max_toxic_words": 1000}, "select": {"rules": rules}}
    cfg = load_config(overrides=ft.demo_scoring_overrides(demo_models) | overrides)
    scored = []
    for i, crawl in enumerate(sample_crawl):
        ingest([crawl], f"{tmp_path}/ingest/{i}.parquet", cfg)
        filter_shard([f"{tmp_path}/ingest/{i}.parquet"], f"{tmp_path}/filter/{i}.parquet", cfg)
        stats = score_shard([f"{tmp_path}/filter/{i}.parquet"], f"{tmp_path}/score/{i}.parquet", cfg)
        assert stats.rows_in == stats.rows_out
        scored.append(f"{tmp_path}/score/{i}.parquet")
    plan = plan_selection(scored, f"{tmp_path}/select/plan.json", cfg)
    kinds = {
        r["url"]: r["kind"] for r in json.loads((Path(sample_crawl[0]).parent / "crawl-manifest.json").read_text())["records"]
    }
    kept, dropped = [], []
    for uri in scored:
        out = uri.replace("/score/", "/select/")
        select_shard([uri], out, cfg, plan)
        kept += storage.read_table(out)["url"].to_pylist()
        table = storage.read_table(out.replace("/select/", "/select/dropped/"))
        dropped += list(zip(table["url"].to_pylist(), table["reason"].to_pylist(), strict=True))
    assert sum(plan.dropped.values()) == len(dropped) and plan.rows_out == len(kept)
    # Every toxic page that got past ingest and the heuristics is removed by the classifier, as toxicity;
    # no clean article is removed.
    assert {url for url in kept if kinds[url] == "toxic"} == set()
    toxic = [reason for url, reason in dropped if kinds[url] == "toxic"]
    assert toxic and set(toxic) == {"toxicity"}
    assert [(url, reason) for url, reason in dropped if kinds[url] == "good"] == []
