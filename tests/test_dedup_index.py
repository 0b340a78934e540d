"""Cross-build dedup: the index of published signatures under state_root."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation import storage
from curation.config import load_config
from curation.dedup import index
from curation.dedup.lsh import plan_near_dedup
from curation.dedup.minhash import compute_signatures
from curation.dedup.synthetic import synthetic_corpus
from curation.errors import TransientError


def _cfg(tmp_path: Path, build_id: str, **dedup):
    return load_config(
        overrides={
            "work_root": str(tmp_path / "work"),
            "state_root": str(tmp_path / "state"),
            "build_id": build_id,
            "dedup": dedup,
        }
    )


def _signatures(table: pa.Table, folder: Path, cfg) -> list[str]:
    docs, sigs = str(folder / "docs.parquet"), str(folder / "sig.parquet")
    storage.write_table(docs, table)
    compute_signatures([docs], sigs, cfg)
    return [sigs]


def _published(table: pa.Table, folder: Path) -> str:
    """A release data file: the doc_ids that made it through the filters."""
    uri = str(folder / "release" / "part-00000.parquet")
    storage.write_table(uri, table.select(["doc_id", "text"]))
    return uri


@pytest.fixture
def weeks():
    """Week 1: 600 documents. Week 2: 300 new ones, near-copies of 100 week-1 documents, 50 copies of new ones."""
    week1 = synthetic_corpus(600, seed=21, dup_fraction=0.0, mean_words=120)
    fresh = synthetic_corpus(300, seed=22, dup_fraction=0.0, mean_words=120)
    old_texts = week1["text"].to_pylist()[:100]
    copies = [t + " postscript" for t in old_texts]  # near-copies: one word added
    ids = (
        [f"w2-copy-{i:03d}" for i in range(100)]
        + [f"w2-new-{i:03d}" for i in range(300)]
        + [f"w2-dup-{i:03d}" for i in range(50)]
    )
    texts = copies + fresh["text"].to_pylist() + fresh["text"].to_pylist()[:50]
    week2 = pa.table({"doc_id": ids, "text": texts, "url": ids})
    return week1, week2


def test_published_documents_are_dropped_from_the_next_build(tmp_path, weeks):
    week1, week2 = weeks
    cfg1 = _cfg(tmp_path, "2026-W01")
    sig1 = _signatures(week1, tmp_path / "w1", cfg1)
    # Only what was published goes in: week 1 published all but its last 100 documents.
    published = week1.slice(0, 500)
    stats = index.add_to_index(sig1, [_published(published, tmp_path / "w1")], cfg1, "2026-W01")
    assert stats.rows_in == 600 and stats.rows_out == 500 and stats.dropped["not_published"] == 100
    manifest = index.current_manifest(cfg1)
    assert manifest["version"] == 1 and list(manifest["builds"]) == ["2026-W01"]
    indexed = pa.concat_tables([storage.read_table(u) for u in index.published_signatures(cfg1)])
    assert sorted(indexed["doc_id"].to_pylist()) == sorted(published["doc_id"].to_pylist())

    cfg2 = _cfg(tmp_path, "2026-W02")
    docs2 = str(tmp_path / "w2" / "docs.parquet")
    storage.write_table(docs2, week2)
    out = str(tmp_path / "w2" / "near.parquet")
    plan_near_dedup([docs2], out, cfg2)
    dups = storage.read_table(out)
    kept = dict(zip(dups["doc_id"].to_pylist(), dups["kept_doc_id"].to_pylist(), strict=True))
    week1_ids = week1["doc_id"].to_pylist()
    # The 100 near-copies of week 1 go, each pointing at the published original...
    for i in range(100):
        assert kept[f"w2-copy-{i:03d}"] == week1_ids[i]
    # ... of the 50 new documents copied within the build, the smaller doc_id ("w2-dup-") stays.
    within = {k: v for k, v in kept.items() if not k.startswith("w2-copy-")}
    assert within == {f"w2-new-{i:03d}": f"w2-dup-{i:03d}" for i in range(50)}
    assert set(dups["reason"].to_pylist()) == {"dup_near"}

    # The index check alone gives the cross-build rows only.
    sig2 = _signatures(week2, tmp_path / "w2c", cfg2)
    only = storage.read_table(index.check_against_index(sig2, str(tmp_path / "w2c" / "x.parquet"), cfg2).outputs[0])
    assert dict(zip(only["doc_id"].to_pylist(), only["kept_doc_id"].to_pylist(), strict=True)) == {
        f"w2-copy-{i:03d}": week1_ids[i] for i in range(100)
    }


def test_a_rerun_of_a_published_build_does_not_drop_itself(tmp_path, weeks):
    week1, _ = weeks
    cfg = _cfg(tmp_path, "2026-W01")
    sig = _signatures(week1, tmp_path / "w1", cfg)
    index.add_to_index(sig, [_published(week1, tmp_path / "w1")], cfg, "2026-W01")
    docs = str(tmp_path / "w1" / "docs.parquet")
    rerun = storage.read_table(plan_near_dedup([docs], str(tmp_path / "rerun.parquet"), cfg).outputs[0])
    assert rerun.num_rows == 0
    # Re-adding the build replaces its entry: one build, one version more.
    index.add_to_index(sig, [_published(week1, tmp_path / "w1")], cfg, "2026-W01")
    manifest = index.current_manifest(cfg)
    assert manifest["version"] == 2 and len(index.published_signatures(cfg)) == 1


def test_other_minhash_parameters_use_another_index(tmp_path, weeks):
    week1, _ = weeks
    cfg = _cfg(tmp_path, "2026-W01")
    index.add_to_index(_signatures(week1, tmp_path / "w1", cfg), [_published(week1, tmp_path / "w1")], cfg, "2026-W01")
    assert index.published_signatures(cfg)
    assert index.published_signatures(_cfg(tmp_path, "2026-W02", seed=2)) == []
    assert index.index_root(cfg) != index.index_root(_cfg(tmp_path, "x", bands=20, rows_per_band=5))


def test_an_interrupted_update_leaves_the_previous_index(tmp_path, weeks, monkeypatch):
    week1, week2 = weeks
    cfg = _cfg(tmp_path, "2026-W01")
    index.add_to_index(_signatures(week1, tmp_path / "w1", cfg), [_published(week1, tmp_path / "w1")], cfg, "2026-W01")
    before = index.published_signatures(cfg)
    write_json = storage.write_json

    def crash_on_pointer(uri, obj):  # the worker dies just before CURRENT moves
        if uri.endswith("/CURRENT"):
            raise KeyboardInterrupt("killed")
        write_json(uri, obj)

    monkeypatch.setattr(index.storage, "write_json", crash_on_pointer)
    cfg2 = _cfg(tmp_path, "2026-W02")
    with pytest.raises(KeyboardInterrupt):
        index.add_to_index(_signatures(week2, tmp_path / "w2", cfg2), [_published(week2, tmp_path / "w2")], cfg2, "2026-W02")
    monkeypatch.undo()
    # The new shards and manifest exist, but readers still see version 1 only.
    assert index.current_manifest(cfg)["version"] == 1 and index.published_signatures(cfg) == before
    assert storage.list_files(storage.join(index.index_root(cfg), "builds", "2026-W02"))
    # The retry completes on top of version 1.
    index.add_to_index(_signatures(week2, tmp_path / "w2", cfg2), [_published(week2, tmp_path / "w2")], cfg2, "2026-W02")
    assert index.current_manifest(cfg)["version"] == 2 and len(index.published_signatures(cfg)) == 2


def test_a_concurrent_update_is_refused_as_transient(tmp_path, weeks, monkeypatch):
    week1, week2 = weeks
    cfg = _cfg(tmp_path, "2026-W01")
    sig1 = _signatures(week1, tmp_path / "w1", cfg)
    sig2 = _signatures(week2, tmp_path / "w2", cfg)
    pub2 = _published(week2, tmp_path / "w2")
    read_manifest = index.current_manifest
    calls = {"n": 0}

    def other_writer_in_between(c):
        calls["n"] += 1
        if calls["n"] == 2:  # after our shards are written, another publish lands first
            index.current_manifest = read_manifest
            index.add_to_index(sig1, [_published(week1, tmp_path / "w1")], cfg, "2026-W01")
        return read_manifest(c)

    monkeypatch.setattr(index, "current_manifest", other_writer_in_between)
    with pytest.raises(TransientError, match="retry"):
        index.add_to_index(sig2, [pub2], cfg, "2026-W02")
    monkeypatch.undo()
    assert list(index.current_manifest(cfg)["builds"]) == ["2026-W01"]
    assert pc.sum(pa.array([storage.parquet_rows(u) for u in index.published_signatures(cfg)])).as_py() == 600
