"""Language id: the bundled detector, and the fastText path (lid.176 / GlotLID) with a model trained here."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import layout
from curation.errors import ConfigError
from curation.ingest.langid import FastTextLanguageId, language_identifier, normalize_code
from curation.ingest.sample_crawl import write_jsonl_copy, write_sample_crawl
from curation.models import ModelRef, sha256_file


@pytest.fixture(scope="module")
def tiny_lid_model(tmp_path_factory) -> Path:
    """A fastText language-id model trained on another seed's sample crawl (en/de/fr/es), lid.176-style labels."""
    import fasttext

    root = tmp_path_factory.mktemp("lid")
    paths = write_sample_crawl(str(root / "crawl"), pages=240, seed=99, files=1)
    manifest = json.loads((root / "crawl" / "crawl-manifest.json").read_text())
    lang = {r["url"]: r.get("lang", "en") for r in manifest["records"] if r["kind"] in ("good", "non_english", "toxic")}
    write_jsonl_copy(paths[0], str(root / "text.jsonl"))
    lines = []
    for row in map(json.loads, (root / "text.jsonl").read_text().splitlines()):
        if row["url"] in lang:
            # One example per sentence, as lid.176 was trained on sentences.
            sentences = re.split(r"(?<=[.!?])\s+", row["text"])
            lines += [f"__label__{lang[row['url']]} {s}" for s in sentences if len(s.split()) > 4]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    model = fasttext.train_supervised(str(root / "train.txt"), epoch=30, dim=16, minn=2, maxn=4, lr=1.0, thread=1, seed=1)
    model.save_model(str(root / "lid.bin"))
    return root / "lid.bin"


def test_label_codes_are_normalised_to_iso_639_1():
    assert normalize_code("__label__en") == "en"
    assert normalize_code("__label__deu_Latn") == "de"  # GlotLID
    assert normalize_code("__label__cmn_Hani") == "zh"
    assert normalize_code("__label__yue_Hani") == "yue"  # no ISO 639-1 code: kept


def test_bundled_detector_works_offline(sample_crawl):
    langs, scores = language_identifier(None).predict(
        ["The council agreed to repair the old bridge before the winter came.", "Die Stadt liegt an einem breiten Fluss."]
    )
    assert langs == ["en", "de"] and all(0 < s <= 1 for s in scores)


def test_fasttext_model_by_uri_labels_pages_and_drives_the_allowlist(tmp_path, build_config, sample_crawl, tiny_lid_model):
    ref = {"uri": str(tiny_lid_model), "sha256": sha256_file(tiny_lid_model)}
    manifest = json.loads((Path(sample_crawl[0]).parent / "crawl-manifest.json").read_text())
    truth = {r["url"]: r.get("lang", "en") for r in manifest["records"] if r["kind"] in ("good", "non_english")}

    out = str(tmp_path / "all.parquet")
    ingest_all = build_config(ingest={"language_id": ref, "languages": []})
    from curation.ingest.warc import ingest

    ingest(sample_crawl, out, ingest_all)
    docs = pq.read_table(out, columns=["url", "language", "language_score"]).to_pylist()
    judged = [(truth[d["url"]], d["language"]) for d in docs if d["url"] in truth]
    assert {t for t, _ in judged} == {"en", "de", "fr", "es"}
    assert sum(t == p for t, p in judged) / len(judged) > 0.97
    assert all(0.0 <= d["language_score"] <= 1.0 for d in docs)

    out_en = str(tmp_path / "en.parquet")
    stats = ingest(
        sample_crawl, out_en, build_config(ingest={"language_id": ref, "languages": ["en"], "min_language_score": 0.65})
    )
    dropped = pq.read_table(layout.dropped_uri(out_en)).to_pylist()
    lang_drops = Counter(truth.get(d["url"]) for d in dropped if d["reason"] == "lang")
    assert lang_drops["de"] + lang_drops["fr"] + lang_drops["es"] == sum(1 for t in truth.values() if t != "en")
    assert set(pq.read_table(out_en, columns=["language"])["language"].to_pylist()) == {"en"}
    assert stats.balanced()


def test_model_checks_fail_fast_with_a_config_error(tiny_lid_model):
    with pytest.raises(ConfigError, match="sha256"):
        language_identifier(ModelRef(uri=str(tiny_lid_model), sha256="0" * 64))
    with pytest.raises(ConfigError, match="glotlid"):  # HF_HUB_OFFLINE=1: the GlotLID path fails at once, not in a download
        language_identifier(ModelRef(uri="hf-hub:cis-lmu/glotlid/model.bin"))
    model = FastTextLanguageId(str(tiny_lid_model))
    langs, scores = model.predict(["La ville se trouve au bord d'une large rivière,\net en été de nombreux visiteurs arrivent."])
    assert langs == ["fr"] and scores[0] > 0.5
