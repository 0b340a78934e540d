"""Near-dup dedup: signature throughput vs datasketch and datatrove, and the whole fuzzy dedup at scale.

1. `dedup_signatures_vs_datasketch`: documents/s on one core turning texts into MinHash
   signatures (word 5-grams, 14 x 8 = 112 hash functions, 64-bit): ours (`signature_table`:
   tokens, normalization, shingles, signatures, band hashes, similarity sketch) vs datasketch
   used as documented for many documents (`MinHash.generator`, affine64 scheme, the same
   normalized 5-gram shingles made in Python). Target >= 10x.
2. `dedup_signatures_vs_datatrove`: our whole signature stage (`compute_signatures`: read the
   Parquet shard, write the signature shard) vs datatrove's `MinhashDedupSignature` (FineWeb's
   stage 1: normalizes, tokenizes with spaCy, hashes, writes and sorts 14 bucket files), the
   same documents (handed to datatrove as Documents in memory). Target >= 1x.
3. `dedup_scale`: the whole fuzzy dedup (signatures per shard -> LSH tasks -> union-find) on
   `--docs` generated documents (10% near-copies) with `--workers` processes, wall time and
   peak RSS per step (VmHWM of the processes that ran it), plus accuracy against the known copies.

    .venv/bin/python -m bench.bench_dedup                       # all, 1M documents
    .venv/bin/python -m bench.bench_dedup --skip-scale --docs 200000

The machine is shared: timings are best-of-`--repeat`, candidate and baseline interleaved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from bench.harness import RESULTS, compare
from curation import storage
from curation.config import BuildConfig, load_config
from curation.dedup.lsh import find_candidates, lsh_tasks, resolve_duplicates
from curation.dedup.minhash import MinHasher, compute_signatures, signature_schema, signature_table
from curation.dedup.synthetic import synthetic_corpus, synthetic_shards


def _shingles(text: str, n: int = 5) -> list[bytes]:
    """The documented normalization in plain Python, for the datasketch baseline."""
    words = []
    for token in text.split():
        word = re.sub(r"[\W_]+", "", re.sub(r"\d+", "0", unicodedata.normalize("NFKC", token).lower()))
        if word:
            words.append(word)
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)})


def bench_datasketch(docs: pa.Table, cfg: BuildConfig, repeat: int) -> dict:
    from datasketch import MinHash

    hasher, schema = MinHasher.from_config(cfg.dedup), signature_schema(cfg.dedup)
    ids, texts = docs["doc_id"].combine_chunks(), docs["text"].combine_chunks()
    py_texts = texts.to_pylist()
    num_perm = cfg.dedup.bands * cfg.dedup.rows_per_band

    def ours() -> int:
        for lo in range(0, len(texts), 2048):
            signature_table(ids[lo : lo + 2048], texts[lo : lo + 2048], hasher, schema)
        return len(texts)

    def datasketch() -> int:
        shingles = (_shingles(t) for t in py_texts)
        for _ in MinHash.generator(shingles, num_perm=num_perm, seed=cfg.dedup.seed, scheme="affine64"):
            pass
        return len(py_texts)

    # For transparency: datasketch's hashing alone, shingles made beforehand (not timed).
    shingled = [_shingles(t) for t in py_texts]
    started = time.perf_counter()
    for _ in MinHash.generator(shingled, num_perm=num_perm, seed=cfg.dedup.seed, scheme="affine64"):
        pass
    hashing_only = len(shingled) / (time.perf_counter() - started)
    extra = {"docs": len(py_texts), "cores_used": 1, "num_perm": num_perm, "baseline_hashing_only_rate": round(hashing_only, 1)}
    return compare("dedup_signatures_vs_datasketch", "docs/s", ours, datasketch, repeat=repeat, target=10.0, extra=extra)


def _datatrove_minhash():
    """datatrove's pipeline/dedup/minhash.py, loaded by path: the package's __init__ imports its
    exact-substring step, which needs HF `tokenizers` (not installed here, and not used by MinHash)."""
    import importlib.util

    import datatrove

    spec = importlib.util.spec_from_file_location("datatrove_minhash", f"{datatrove.__path__[0]}/pipeline/dedup/minhash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_datatrove(docs: pa.Table, cfg: BuildConfig, repeat: int, tmp: str) -> dict:
    from datatrove.data import Document
    from datatrove.utils.hashing import HashConfig

    minhash = _datatrove_minhash()
    MinhashConfig, MinhashDedupSignature = minhash.MinhashConfig, minhash.MinhashDedupSignature

    d = cfg.dedup
    shard = f"{tmp}/datatrove-docs.parquet"
    storage.write_table(shard, docs.select(["doc_id", "text"]))
    documents = [Document(text=t, id=i) for i, t in zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist(), strict=True)]
    config = MinhashConfig(
        n_grams=d.ngram, num_buckets=d.bands, hashes_per_bucket=d.rows_per_band, seed=d.seed, hash_config=HashConfig(precision=64)
    )

    def ours() -> int:
        return compute_signatures([shard], f"{tmp}/ours-sig.parquet", cfg).rows_in

    def datatrove() -> int:
        step = MinhashDedupSignature(output_folder=f"{tmp}/datatrove-sigs", config=config)
        # datatrove 0.10.1 hands str to xxhash, which the installed xxhash refuses: hash the UTF-8 bytes,
        # as older xxhash releases did for it (the same hash, no extra cost worth counting).
        step._hash_func = lambda text: xxhash.xxh64_intdigest(text.encode())
        step.run(iter(documents), rank=0, world_size=1)
        return len(documents)

    return compare(
        "dedup_signatures_vs_datatrove",
        "docs/s",
        ours,
        datatrove,
        repeat=repeat,
        target=1.0,
        extra={"docs": len(documents), "cores_used": 1},
    )


# -- the whole fuzzy dedup at scale ---------------------------------------------------------------


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def _signature_task(args: tuple) -> tuple[int, float]:
    docs, out, cfg_json = args
    stats = compute_signatures([docs], out, BuildConfig.model_validate_json(cfg_json))
    return stats.rows_in, _peak_rss_mib()


def _candidate_task(args: tuple) -> tuple[int, float]:
    signatures, out, cfg_json, bands, partition = args
    find_candidates(signatures, out, BuildConfig.model_validate_json(cfg_json), bands, partition)
    return storage.parquet_rows(out), _peak_rss_mib()


def _resolve_task(args: tuple) -> tuple[int, float]:
    edges, out, cfg_json = args
    resolve_duplicates(edges, out, BuildConfig.model_validate_json(cfg_json))
    return storage.parquet_rows(out), _peak_rss_mib()


def _texts_of(files: list[str], wanted: set[str]) -> dict[str, str]:
    out = {}
    for uri in files:
        table = storage.read_table(uri, columns=["doc_id", "text"])
        table = table.filter(pc.is_in(table["doc_id"], value_set=pa.array(sorted(wanted))))
        out.update(zip(table["doc_id"].to_pylist(), table["text"].to_pylist(), strict=True))
    return out


def _jaccard(a: str, b: str) -> float:
    sa, sb = set(_shingles(a)), set(_shingles(b))
    return len(sa & sb) / max(len(sa | sb), 1)


def bench_scale(n_docs: int, shards: int, workers: int, tmp: str) -> dict:
    cfg = load_config(overrides={"work_root": tmp, "state_root": f"{tmp}/state", "dedup": {"band_partitions": workers}})
    cfg_json = cfg.model_dump_json()
    started = time.perf_counter()
    doc_files, families, doc_ids, total_words = [], [], [], 0
    for i, table in enumerate(synthetic_shards(n_docs, shards, seed=42, dup_fraction=0.1, edit_rates=(0.0, 0.01, 0.02))):
        doc_files.append(f"{tmp}/docs/{i:05d}.parquet")
        storage.write_table(doc_files[-1], table.select(["doc_id", "url", "text"]))
        families.append(table["family"])
        doc_ids.append(table["doc_id"])
        total_words += int(pc.sum(pc.list_value_length(pc.utf8_split_whitespace(table["text"]))).as_py())
    generated = time.perf_counter() - started
    steps: dict[str, dict] = {}

    def run(name: str, fn, tasks: list) -> list:
        t0 = time.perf_counter()
        # A fresh pool of spawned processes per step, so each step's peak RSS is its own (a forked
        # worker would count the pages it shares with this process).
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(fn, tasks))
        steps[name] = {
            "tasks": len(tasks),
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mib_per_process": round(max(r[1] for r in results), 1),
        }
        return results

    sigs = [f"{tmp}/signatures/{i:05d}.parquet" for i in range(len(doc_files))]
    run("signatures", _signature_task, [(d, s, cfg_json) for d, s in zip(doc_files, sigs, strict=True)])
    tasks = lsh_tasks(cfg)
    edge_files = [f"{tmp}/lsh/{b[0]:02d}-{p}.parquet" for b, p in tasks]
    edges = run("candidates", _candidate_task, [(sigs, e, cfg_json, b, p) for e, (b, p) in zip(edge_files, tasks, strict=True)])
    out = f"{tmp}/near.parquet"
    run("resolve", _resolve_task, [(edge_files, out, cfg_json)])
    wall = sum(s["seconds"] for s in steps.values())

    # Accuracy against exact Jaccard, on a sample of generated copies and of the drops.
    dups = storage.read_table(out)
    ids = pa.chunked_array(doc_ids).to_pylist()
    family = pa.chunked_array(families).to_numpy()
    row_of = {d: i for i, d in enumerate(ids)}
    kept = dict(zip(dups["doc_id"].to_pylist(), dups["kept_doc_id"].to_pylist(), strict=True))
    cluster = lambda doc: kept.get(doc, doc)  # noqa: E731
    copies = np.flatnonzero(family != np.arange(len(family)))
    sample = np.random.default_rng(0).choice(copies, min(2000, len(copies)), replace=False)
    texts = _texts_of(
        doc_files,
        {ids[i] for i in sample}
        | {ids[family[i]] for i in sample}
        | set(list(kept)[:2000])
        | {kept[d] for d in list(kept)[:2000]},
    )
    truth, found = [], []
    for i in sample:
        a, b = ids[i], ids[family[i]]
        truth.append(_jaccard(texts[a], texts[b]) >= cfg.dedup.threshold)
        found.append(cluster(a) == cluster(b))
    truth, found = np.array(truth), np.array(found)
    drop_jaccard = [_jaccard(texts[d], texts[kept[d]]) for d in list(kept)[:2000]]
    same = int(sum(family[row_of[a]] == family[row_of[b]] for a, b in kept.items()))
    result = {
        "benchmark": "dedup_scale",
        "docs": n_docs,
        "words": total_words,
        "shards": len(doc_files),
        "workers": workers,
        "cpus": os.cpu_count(),
        "generate_seconds": round(generated, 1),
        "steps": steps,
        "fuzzy_dedup_wall_seconds": round(wall, 2),
        "docs_per_second": round(n_docs / wall, 1),
        "candidate_edges": int(sum(e[0] for e in edges)),
        "duplicates_found": dups.num_rows,
        "copies_generated": round(n_docs * 0.1),
        "drops_of_a_copy_of_the_same_original": round(same / max(dups.num_rows, 1), 4),
        "sampled_copy_pairs": len(sample),
        "recall_on_copies_with_jaccard_at_threshold": round(float(found[truth].mean()), 4) if truth.any() else None,
        "copies_below_threshold_joined": round(float(found[~truth].mean()), 4) if (~truth).any() else None,
        "sampled_drops_with_jaccard_at_threshold": round(float(np.mean(np.array(drop_jaccard) >= cfg.dedup.threshold)), 4),
        "sampled_drops_min_jaccard": round(float(min(drop_jaccard, default=1.0)), 3),
        "peak_rss_mib_max": max(s["peak_rss_mib_per_process"] for s in steps.values()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dedup_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-docs", type=int, default=4000, help="documents for the two signature comparisons")
    parser.add_argument("--docs", type=int, default=1_000_000, help="documents for the whole fuzzy dedup")
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-datatrove", action="store_true", help="datatrove's stage is slow (spaCy): ~1 min per 2000 docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        if not args.skip_compare:
            cfg = load_config(overrides={"work_root": tmp})
            docs = synthetic_corpus(args.compare_docs, seed=7, dup_fraction=0.1)
            bench_datasketch(docs, cfg, args.repeat)
            if not args.skip_datatrove:
                bench_datatrove(docs, cfg, args.repeat, tmp)
        if not args.skip_scale:
            bench_scale(args.docs, args.shards, args.workers, tmp)


if __name__ == "__main__":
    main()
