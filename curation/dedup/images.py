"""Image dedup for image-text pairs: exact bytes, perceptual hash, and SemDeDup on CLIP embeddings.

Input: pairs tables with `pair_id` (string), `image` (binary: the image bytes; rows without
bytes are not fetched images and are left alone) and, for SemDeDup, `clip_embedding`
(list<float32>). Two steps:

1. `compute_image_keys` (mapped per shard): sha256 of the bytes, 64-bit pHash (imagehash.phash
   of the decoded image) and the embedding, per pair; the bytes are not carried further. An
   image is decoded only if its header says it has at most `dedup.image_max_pixels` pixels
   (decompression bombs: `image_too_large`); bytes Pillow cannot decode are `image_undecodable`.
2. `plan_image_dedup` (global, over keys only): the table of pairs to drop,
   (pair_id, kept_pair_id, reason), with reasons:
   - dup_image_exact: same sha256 as a kept pair;
   - dup_image_phash: pHash within `image_phash_distance` bits of a kept pair's (clusters by
     union-find; candidates by the pigeonhole rule: two hashes within d bits agree exactly on
     at least one of d + 1 bit slices);
   - dup_semantic (`dedup.semdedup`): SemDeDup (Abbas et al. 2023): k-means on the normalized
     embeddings, then inside a cluster a pair is dropped if an earlier pair has cosine
     similarity > 1 - eps;
   - image_undecodable / image_too_large (kept_pair_id null).

Keep rule (deterministic whatever the shard order): pairs are processed in pair_id order; the
smallest pair_id of a group is kept, and kept_pair_id always names a pair that is kept.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import layout, storage
from curation.config import BuildConfig
from curation.stats import Progress, StageStats

STAGE = "dedup-images"
IMAGE_DUPLICATES = pa.schema([("pair_id", pa.string()), ("kept_pair_id", pa.string()), ("reason", pa.string())])
IMAGE_KEYS = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("sha256", pa.binary(32)),
        pa.field("phash", pa.uint64()),
        pa.field("problem", pa.string()),  # image_undecodable / image_too_large, else null
        pa.field("clip_embedding", pa.list_(pa.float32())),
    ]
)
_BATCH_ROWS = 1_024


@contextmanager
def _pixel_limit(max_pixels: int):
    """Pillow's decompression-bomb limit set to ours, and its warning made an error, for a block."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def image_key(data: bytes, max_pixels: int) -> tuple[int | None, str | None]:
    """(64-bit pHash, None) of an image, or (None, the reason it cannot be hashed)."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                return None, "image_too_large"
            image.draft("L", (64, 64))  # JPEG: decode at a reduced DCT scale; pHash works on 32x32
            bits = imagehash.phash(image).hash.reshape(-1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "image_too_large"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None, "image_undecodable"
    return int.from_bytes(np.packbits(bits).tobytes(), "big"), None


def image_keys(table: pa.Table, cfg: BuildConfig) -> pa.Table:
    """IMAGE_KEYS rows for the pairs of `table` that have image bytes."""
    has_image = pc.is_valid(table["image"])
    table = table.filter(has_image)
    sha, phash, problem = [], [], []
    with _pixel_limit(cfg.dedup.image_max_pixels):
        for data in table["image"].to_pylist():
            sha.append(hashlib.sha256(data).digest())
            value, why = image_key(data, cfg.dedup.image_max_pixels)
            phash.append(value)
            problem.append(why)
    embedding = (
        table["clip_embedding"].cast(pa.list_(pa.float32()))
        if "clip_embedding" in table.column_names
        else pa.nulls(table.num_rows, pa.list_(pa.float32()))
    )
    return pa.table(
        {
            "pair_id": table["pair_id"],
            "sha256": pa.array(sha, pa.binary(32)),
            "phash": pa.array(phash, pa.uint64()),
            "problem": pa.array(problem, pa.string()),
            "clip_embedding": embedding,
        },
        schema=IMAGE_KEYS,
    )


def compute_image_keys(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Step 1 (mapped per shard): pairs shards -> one keys shard (no image bytes)."""
    started = time.monotonic()
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    progress = Progress(stats)
    with storage.TableWriter(output, IMAGE_KEYS) as writer:
        for uri in inputs:
            table = storage.read_table(uri)
            stats.bytes_in += storage.size(uri)
            columns = [c for c in ("pair_id", "image", "clip_embedding") if c in table.column_names]
            for batch in table.select(columns).to_batches(max_chunksize=_BATCH_ROWS):
                writer.write(image_keys(pa.Table.from_batches([batch]), cfg))
                stats.rows_in += batch.num_rows
                progress.tick()
    layout.finish_shard(stats, writer, output, started)
    return stats


def plan_image_dedup(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Step 2 (global): keys shards -> the image duplicates table at `output`."""
    started = time.monotonic()
    keys = pa.concat_tables([storage.read_table(uri) for uri in inputs]) if inputs else IMAGE_KEYS.empty_table()
    dups = image_duplicates(keys, cfg)
    size = storage.write_table(output, dups)
    stats = StageStats(stage=STAGE, shard="plan", rows_in=keys.num_rows, rows_out=keys.num_rows, bytes_out=size, outputs=[output])
    stats.seconds = time.monotonic() - started
    return stats


def dedup_images(table: pa.Table, cfg: BuildConfig) -> pa.Table:
    """Both steps on an in-memory pairs table: its IMAGE_DUPLICATES rows."""
    return image_duplicates(image_keys(table, cfg), cfg)


# -- the plan -----------------------------------------------------------------------------------


def image_duplicates(keys: pa.Table, cfg: BuildConfig) -> pa.Table:
    keys = keys.sort_by("pair_id")
    n = keys.num_rows
    ids = keys["pair_id"].combine_chunks()
    problem = keys["problem"].to_numpy(zero_copy_only=False)
    ok = pc.is_null(keys["problem"]).to_numpy(zero_copy_only=False)
    reason = np.where(ok, "", problem).astype(object)
    kept = np.arange(n)

    # Exact: the first (smallest pair_id) of each sha256 group.
    sha = keys["sha256"].combine_chunks()
    first_of = _first_index(pc.dictionary_encode(sha).indices.to_numpy(), ok)
    exact = ok & (first_of != np.arange(n))
    kept[exact] = first_of[exact]
    reason[exact] = "dup_image_exact"

    # Perceptual: union-find over pHash pairs within the distance, among the exact keepers.
    alive = ok & ~exact
    live = np.flatnonzero(alive)
    phash = keys["phash"].to_numpy(zero_copy_only=False)[live].astype(np.uint64) if len(live) else np.empty(0, np.uint64)
    root = _phash_clusters(phash, cfg.dedup.image_phash_distance)
    near = live[root] != live
    kept[live[near]] = live[root[near]]
    reason[live[near]] = "dup_image_phash"
    alive[live[near]] = False

    if cfg.dedup.semdedup:
        live = np.flatnonzero(alive & pc.is_valid(keys["clip_embedding"]).to_numpy(zero_copy_only=False))
        if len(live) > 1:
            emb = _embedding_matrix(keys["clip_embedding"].take(pa.array(live)))
            parent = _semdedup(emb, cfg.dedup.semdedup_clusters, cfg.dedup.semdedup_eps, cfg.dedup.seed)
            semantic = parent != np.arange(len(live))
            kept[live[semantic]] = live[parent[semantic]]
            reason[live[semantic]] = "dup_semantic"

    # Follow kept links to a pair that is kept itself (an exact copy of a pHash duplicate, ...).
    while not np.array_equal(kept[kept], kept):
        kept = kept[kept]
    drop = reason != ""
    kept_ids = ids.take(pa.array(kept[drop]))
    kept_ids = pc.if_else(pa.array(ok[drop]), kept_ids, pa.nulls(int(drop.sum()), pa.string()))
    return pa.table(
        {"pair_id": ids.filter(pa.array(drop)), "kept_pair_id": kept_ids, "reason": pa.array(reason[drop].tolist(), pa.string())},
        schema=IMAGE_DUPLICATES,
    )


def _first_index(group: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """For each `ok` row, the first row (in order) of its group among `ok` rows; else itself."""
    n = len(group)
    if not n:
        return np.empty(0, np.int64)
    rows = np.flatnonzero(ok)
    first = np.full(group.max() + 1, n, np.int64)
    np.minimum.at(first, group[rows], rows)
    return np.where(ok, first[group], np.arange(n))


def _phash_clusters(phash: np.ndarray, distance: int, max_pairs: int = 4_000_000) -> np.ndarray:
    """For each hash, the index of the first hash of its cluster (pairs within `distance` bits).

    Equal hashes are grouped first (blank and near-blank images share one); the distinct values
    are then compared in candidate groups (equal on one of distance + 1 bit slices), at most
    `max_pairs` pairs at a time.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(phash)
    if n < 2:
        return np.arange(n)
    values, value_of = np.unique(phash, return_inverse=True)
    m = len(values)
    src, dst = [np.arange(n)], [n + value_of]  # every image joined to its hash value's node
    for lo, hi in _slices(64, distance + 1):
        part = (values >> np.uint64(64 - hi)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(part, kind="stable")
        sorted_part = part[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_part[1:] != sorted_part[:-1]]))
        sizes = np.diff(np.concatenate([starts, [m]]))
        for size in np.unique(sizes[sizes > 1]):
            i, j = np.triu_indices(size, 1)
            group_starts = starts[sizes == size]
            step = max(1, max_pairs // len(i))
            for g in range(0, len(group_starts), step):
                groups = order[group_starts[g : g + step, None] + np.arange(size)]  # (groups, size)
                a, b = groups[:, i].ravel(), groups[:, j].ravel()
                close = _popcount(values[a] ^ values[b]) <= distance
                src.append(n + a[close])
                dst.append(n + b[close])
    # Nodes: images 0..n-1, then hash values n..n+m-1.
    a, b = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n + m, n + m))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(first, labels[:n], np.arange(n))
    return first[labels[:n]]


def _slices(bits: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, bits, parts + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(edges) if hi > lo]


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def _embedding_matrix(column: pa.ChunkedArray) -> np.ndarray:
    rows = column.to_pylist()
    matrix = np.asarray(rows, np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    """Cluster labels by Lloyd's algorithm on the unit sphere (spherical k-means), seeded."""
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        new = np.argmax(x @ centroids.T, axis=1)
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        for c in range(k):
            members = x[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                centroids[c] = mean / max(np.linalg.norm(mean), 1e-12)
    return labels


def _semdedup(emb: np.ndarray, clusters: int, eps: float, seed: int, block: int = 1024) -> np.ndarray:
    """For each row, the kept row it duplicates (itself if kept). Rows are in pair_id order."""
    labels = _kmeans(emb, min(clusters, len(emb)), seed)
    parent = np.arange(len(emb))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # ascending: pair_id order
        for lo in range(0, len(members), block):
            rows = members[lo : lo + block]
            sim = emb[rows] @ emb[members[: lo + len(rows)]].T
            # Only earlier members count: mask the diagonal and everything after it.
            sim[np.arange(len(rows))[:, None] <= np.arange(sim.shape[1])[None, :] - lo] = -np.inf
            close = sim > 1.0 - eps
            has = close.any(axis=1)
            parent[rows[has]] = members[np.argmax(close[has], axis=1)]
    # The earlier similar row may be dropped itself: follow the chain to a kept one.
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt
