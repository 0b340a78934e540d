"""The global near-dup step's memory grows with the duplicate candidates, not with the corpus.

Peak RSS is measured in a fresh process per run (VmHWM), minus its RSS once imports are done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation import storage
from curation.config import load_config
from curation.dedup.lsh import EDGES, find_candidates, lsh_tasks
from curation.dedup.minhash import compute_signatures
from curation.dedup.synthetic import synthetic_corpus

ROOT = Path(__file__).resolve().parent.parent
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking (pytest) process.
_MEASURE = """
import json, sys
from curation.config import load_config
from curation.dedup.lsh import resolve_duplicates
from scipy.sparse.csgraph import connected_components
def status_kib(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])
cfg = load_config()
before = status_kib('VmRSS')
resolve_duplicates(json.loads(sys.argv[1]), sys.argv[2], cfg)
print(json.dumps({"before_kib": before, "peak_kib": status_kib('VmHWM')}))
"""


def resolve_peak_mib(edges: list[str], output: str) -> float:
    """MiB the resolve step added to its process at its peak."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(edges), output],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return max(result["peak_kib"] - result["before_kib"], 0) / 1024


def _edges_for_corpus(tmp_path: Path, n_docs: int, n_dups: int) -> tuple[list[str], int]:
    cfg = load_config(overrides={"work_root": str(tmp_path), "state_root": str(tmp_path / "state")})
    corpus = synthetic_corpus(n_docs, seed=3, dup_fraction=n_dups / n_docs, edit_rates=(0.0, 0.01), mean_words=25)
    signatures = []
    for i in range(4):
        docs = str(tmp_path / "docs" / f"{i}.parquet")
        storage.write_table(docs, corpus.slice(i * n_docs // 4, n_docs // 4))
        signatures.append(str(tmp_path / "sig" / f"{i}.parquet"))
        compute_signatures([docs], signatures[-1], cfg)
    edges = []
    for bands, partition in lsh_tasks(cfg):
        edges.append(str(tmp_path / "lsh" / f"{bands[0]}-{partition}.parquet"))
        find_candidates(signatures, edges[-1], cfg, bands, partition)
    return edges, sum(storage.parquet_rows(e) for e in edges)


def _random_edges(tmp_path: Path, n_edges: int) -> list[str]:
    rng = np.random.default_rng(n_edges)
    ids = np.char.add("doc-", rng.integers(0, 4 * n_edges, (2, n_edges)).astype(str))
    uri = str(tmp_path / f"edges-{n_edges}.parquet")
    storage.write_table(
        uri, pa.table({"doc_id": ids[0], "similar_id": ids[1], "similar_published": np.zeros(n_edges, bool)}, schema=EDGES)
    )
    return [uri]


@pytest.mark.slow
def test_resolve_memory_follows_candidates_not_corpus_size(tmp_path):
    # Same number of duplicates in a corpus 6x larger: the same edges, the same memory.
    small_edges, small_count = _edges_for_corpus(tmp_path / "small", 8_000, 1_500)
    large_edges, large_count = _edges_for_corpus(tmp_path / "large", 48_000, 1_500)
    assert abs(small_count - large_count) <= 0.1 * small_count
    small = resolve_peak_mib(small_edges, str(tmp_path / "small.parquet"))
    large = resolve_peak_mib(large_edges, str(tmp_path / "large.parquet"))
    # 30x more candidate edges: memory grows with them.
    few = resolve_peak_mib(_random_edges(tmp_path, 20_000), str(tmp_path / "few.parquet"))
    many = resolve_peak_mib(_random_edges(tmp_path, 600_000), str(tmp_path / "many.parquet"))
    print(
        f"\nresolve peak above baseline: corpus 8k {small:.1f} MiB, corpus 48k {large:.1f} MiB (~{small_count} edges each);"
        f" 20k edges {few:.1f} MiB, 600k edges {many:.1f} MiB"
    )
    assert abs(large - small) <= 8
    assert many - few >= 40
