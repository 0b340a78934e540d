"""MinHash LSH near-dup dedup: signatures, determinism, the sample crawl end to end, the filter."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation import storage
from curation.config import load_config
from curation.dedup.lsh import find_candidates, lsh_tasks, plan_near_dedup, resolve_duplicates
from curation.dedup.minhash import MinHasher, compute_signatures, estimate_jaccard, signature_schema
from curation.dedup.synthetic import synthetic_corpus
from curation.errors import ConfigError


def _cfg(tmp_path: Path, **dedup):
    return load_config(overrides={"work_root": str(tmp_path / "work"), "state_root": str(tmp_path / "state"), "dedup": dedup})


def _write_shards(table: pa.Table, folder: Path, bounds: list[int]) -> list[str]:
    uris = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        uris.append(str(folder / f"{i:05d}.parquet"))
        storage.write_table(uris[-1], table.slice(lo, hi - lo))
    return uris


def _run(documents: list[str], root: Path, cfg, task_order=lambda tasks: tasks) -> pa.Table:
    signatures = []
    for i, uri in enumerate(documents):
        signatures.append(str(root / "sig" / f"{i}.parquet"))
        compute_signatures([uri], signatures[-1], cfg)
    edges = []
    for bands, partition in task_order(lsh_tasks(cfg)):
        edges.append(str(root / "lsh" / f"{bands[0]}-{bands[-1]}-{partition}.parquet"))
        find_candidates(signatures, edges[-1], cfg, bands, partition)
    resolve_duplicates(edges, str(root / "near.parquet"), cfg)
    return storage.read_table(str(root / "near.parquet"))


def test_signatures_handle_short_empty_and_odd_texts():
    hasher = MinHasher()
    texts = pa.array(["", None, "   \n\t", "— | …", "one", "one two three", "One, two; THREE!", "x " * 3000, "naïve café 2024 x"])
    sig = hasher.signatures(texts)
    assert sig.has_words.tolist() == [False, False, False, False, True, True, True, True, True]
    assert sig.values.shape == (112, 5) and sig.sketch.shape == (5, 256)
    # Normalization: case and punctuation do not matter; a short text is one shingle of all its words.
    assert (sig.values[:, 1] == sig.values[:, 2]).all()
    assert estimate_jaccard(sig.sketch[1], sig.sketch[2]) == 1.0
    assert estimate_jaccard(sig.sketch[0], sig.sketch[1]) == 0.0
    # Same seed, same signatures; another seed, others.
    again = MinHasher().signatures(texts)
    assert (again.values == sig.values).all() and (again.sketch == sig.sketch).all()
    assert not (MinHasher(seed=2).signatures(texts).values == sig.values).all()


def test_signature_values_are_minima_of_the_hash_functions():
    """The vectorized kernel against a per-shingle Python loop on the same shingle hashes."""
    hasher = MinHasher(bands=4, rows=2)
    texts = pa.array(["the quick brown fox jumps over the lazy dog again and again", "a b c", "x y z w v u"])
    hashes, offsets = hasher.word_hashes(texts)
    shingles, shingle_offsets = hasher.shingles(hashes, offsets)
    sig = hasher.signatures(texts)
    for d in range(len(texts)):
        doc_shingles = [int(s) for s in shingles[shingle_offsets[d] : shingle_offsets[d + 1]]]
        expected = [min((s * int(a)) % 2**64 for s in doc_shingles) for a in hasher._perm]
        assert sig.values[:, d].tolist() == expected


def test_32_bit_hashes_and_other_band_shapes(tmp_path):
    cfg = _cfg(tmp_path, hash_bits=32, bands=9, rows_per_band=13, sketch_bins=64)
    corpus = synthetic_corpus(300, seed=5, dup_fraction=0.3, edit_rates=(0.0,), mean_words=60)
    docs = _write_shards(corpus, tmp_path / "docs", [0, 150, 300])
    dups = _run(docs, tmp_path / "run", cfg)
    sig = storage.read_table(str(tmp_path / "run" / "sig" / "0.parquet"))
    assert sig.schema == signature_schema(cfg.dedup) and sig.schema.field("sketch").type.list_size == 64
    # Exact copies are found whatever the shape (90 copies, one per row: some originals were copied twice).
    family = dict(zip(corpus["doc_id"].to_pylist(), corpus["family"].to_pylist(), strict=True))
    assert dups.num_rows == 90
    assert all(family[a] == family[b] for a, b in zip(dups["doc_id"].to_pylist(), dups["kept_doc_id"].to_pylist(), strict=True))


def test_shard_order_sharding_and_task_layout_do_not_change_the_result(tmp_path):
    corpus = synthetic_corpus(4000, seed=11, dup_fraction=0.3, edit_rates=(0.0, 0.01, 0.02, 0.05), mean_words=80)
    base = _cfg(tmp_path, band_groups=1, band_partitions=2)
    a = _run(_write_shards(corpus, tmp_path / "a", [0, 1000, 2000, 3000, 4000]), tmp_path / "ra", base)
    # Other shard boundaries, shards listed in reverse, 14 single-band tasks run backwards.
    shuffled = corpus.take(pa.array(np.random.default_rng(1).permutation(corpus.num_rows)))
    docs_b = _write_shards(shuffled, tmp_path / "b", [0, 1700, 2900, 4000])[::-1]
    b = _run(docs_b, tmp_path / "rb", _cfg(tmp_path, band_groups=14, band_partitions=1), task_order=lambda t: t[::-1])
    c = _run(docs_b, tmp_path / "rc", _cfg(tmp_path, band_groups=3, band_partitions=3))
    assert a.num_rows > 500
    assert a.equals(b) and a.equals(c)
    kept = lambda t: set(corpus["doc_id"].to_pylist()) - set(t["doc_id"].to_pylist())  # noqa: E731
    assert kept(a) == kept(b) == kept(c)
    # Idempotent: a rerun writes the same bytes.
    first = (tmp_path / "ra" / "near.parquet").read_bytes()
    _run(_write_shards(corpus, tmp_path / "a", [0, 1000, 2000, 3000, 4000]), tmp_path / "ra", base)
    assert (tmp_path / "ra" / "near.parquet").read_bytes() == first
    # Keep rule: the smallest doc_id of each cluster is kept, and kept documents are not dropped.
    assert set(a["kept_doc_id"].to_pylist()).isdisjoint(a["doc_id"].to_pylist())
    assert pc.all(pc.less(a["kept_doc_id"], a["doc_id"])).as_py()


def test_near_duplicates_of_the_sample_crawl_end_to_end(build_config, tmp_path):
    """Real ingest output: each near_duplicate page of the crawl (5-gram Jaccard 0.8-0.92 to an
    earlier article) ends in its source's cluster, every dropped page really is similar to the
    one kept, and the filter stage drops the planned rows as dup_near."""
    from curation.filtering import filter_shard
    from curation.ingest.warc import ingest
    from tests.test_dedup_accuracy import jaccard, shingle_set

    cfg = build_config()
    manifest = json.loads((Path(cfg.inputs[0]).parent / "crawl-manifest.json").read_text())
    shards = []
    for i, uri in enumerate(cfg.inputs):
        shards.append(str(tmp_path / "ingest" / f"{i:05d}.parquet"))
        ingest([uri], shards[-1], cfg)
    near = str(tmp_path / "dedup" / "near.parquet")
    plan_near_dedup(shards, near, cfg)
    dups = storage.read_table(near)
    docs = pa.concat_tables([storage.read_table(s, columns=["doc_id", "url", "text"]) for s in shards])
    id_of = dict(zip(docs["url"].to_pylist(), docs["doc_id"].to_pylist(), strict=True))
    text_of = dict(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist(), strict=True))
    kept = dict(zip(dups["doc_id"].to_pylist(), dups["kept_doc_id"].to_pylist(), strict=True))
    cluster = lambda doc_id: kept.get(doc_id, doc_id)  # noqa: E731
    pairs = [(id_of[r["url"]], id_of[r["source_url"]]) for r in manifest["records"] if r["kind"] == "near_duplicate"]
    pairs = [(a, b) for a, b in pairs if a in text_of and b in text_of]
    assert len(pairs) >= 10
    assert all(cluster(a) == cluster(b) for a, b in pairs)
    for doc_id, kept_id in kept.items():
        assert jaccard(shingle_set(text_of[doc_id]), shingle_set(text_of[kept_id])) >= 0.7, (doc_id, kept_id)
    in_first = set(storage.read_table(shards[0], columns=["doc_id"])["doc_id"].to_pylist())
    stats = filter_shard(shards[:1], str(tmp_path / "filter" / "00000.parquet"), cfg, duplicates=[near])
    assert stats.dropped["dup_near"] == len(in_first & set(kept)) > 0 and stats.balanced()


def test_bad_task_arguments_are_config_errors(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ConfigError, match="bands"):
        find_candidates([], str(tmp_path / "x.parquet"), cfg, 14)
    with pytest.raises(ConfigError, match="partition"):
        find_candidates([], str(tmp_path / "x.parquet"), cfg, 0, partition=5)
    # No input, no edges, an empty duplicates table.
    find_candidates([], str(tmp_path / "e.parquet"), cfg, [0, 1])
    resolve_duplicates([str(tmp_path / "e.parquet")], str(tmp_path / "d.parquet"), cfg)
    assert storage.read_table(str(tmp_path / "d.parquet")).num_rows == 0


def test_signature_batches_are_bounded_by_rows_and_text_bytes():
    from curation.dedup.minhash import text_batches

    table = pa.table(
        {"doc_id": [str(i) for i in range(10)], "text": ["x" * 100, "y" * 500, None, "z" * 50, "w" * 1000, *"abcde"]}
    )
    assert [b.num_rows for b in text_batches(table, max_rows=4, max_bytes=600)] == [3, 1, 1, 4, 1]
    # However the rows are batched, the signatures are the same.
    hasher = MinHasher()
    whole = hasher.signatures(table["text"])
    parts = [hasher.signatures(b["text"]) for b in text_batches(table, max_rows=3, max_bytes=10**6)]
    assert (np.concatenate([p.values for p in parts], axis=1) == whole.values).all()


@pytest.mark.slow
def test_the_same_plan_with_every_file_on_s3(s3_bucket, tmp_path):
    corpus = synthetic_corpus(1500, seed=12, dup_fraction=0.3, edit_rates=(0.0, 0.01), mean_words=60)
    local_docs = _write_shards(corpus, tmp_path / "docs", [0, 700, 1500])
    cfg = load_config(overrides={"work_root": f"s3://{s3_bucket}/work", "state_root": f"s3://{s3_bucket}/state"})
    s3_docs = []
    for i, uri in enumerate(local_docs):
        s3_docs.append(f"s3://{s3_bucket}/docs/{i}.parquet")
        storage.write_bytes(s3_docs[-1], Path(uri).read_bytes())
    remote = plan_near_dedup(s3_docs, f"s3://{s3_bucket}/work/dedup/near.parquet", cfg)
    assert storage.list_files(f"s3://{s3_bucket}/work/dedup/lsh/")
    local = plan_near_dedup(local_docs, str(tmp_path / "near.parquet"), _cfg(tmp_path))
    assert storage.read_table(remote.outputs[0]).equals(storage.read_table(local.outputs[0]))
    assert storage.parquet_rows(local.outputs[0]) > 300
