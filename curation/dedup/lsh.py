"""Near-duplicate dedup with MinHash LSH, staged so it scales out under Airflow.

    1. signatures   (mapped per documents shard)  minhash.compute_signatures -> signature shard
    2. candidates   (mapped per band group x       find_candidates             -> edge file
                    hash partition)
    3. resolve      (one global task)              resolve_duplicates         -> duplicates table
    4. filter       (mapped per shard)             curation.filtering.filter_shard(duplicates=[...])

A step-2 task owns a group of bands and one hash partition (band hash % band_partitions). For
each of its bands in turn it reads that band's column of every signature shard (and of the
cross-build index) and keeps the rows of its partition: 16 bytes a row. Rows sharing a band hash
with another row are LSH candidates; only for them does it then read doc_id and the sketch (each
file once for all its bands), and only their edges are written. Step 3 reads edges only. So no
step holds every signature of the build, and the global one grows with the duplicates found,
not with the corpus. More partitions: less memory per task; fewer groups: fewer column reads.

Edges: inside a bucket (rows with the same band hash) the leader is the published document
with the smallest doc_id if the bucket has one, else the smallest doc_id. Every other build
document of the bucket gets an edge to the leader when their Jaccard similarity estimated from
the sketches reaches `dedup.threshold` (with `threshold: null`, always, as FineWeb does); one
that is not similar to the leader gets an edge to the first earlier row of the bucket (in that
order) it is similar to, if any.

Keep rule (deterministic whatever the shard order or parallelism): documents connected by edges
(union-find over all bands) form a cluster; the cluster keeps its smallest published doc_id if
it has one (the document is already out: every build document of the cluster is dropped), else
its smallest doc_id. Every other build document is written as (doc_id, kept_doc_id, "dup_near").
Chains are followed (A~B, B~C puts A, B, C in one cluster), as in FineWeb.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.config import BuildConfig, DedupConfig
from curation.dedup.exact import DUPLICATES
from curation.dedup.minhash import band_column, estimate_jaccard
from curation.errors import ConfigError
from curation.stats import StageStats

log = logging.getLogger(__name__)
STAGE = "dedup"
REASON = "dup_near"
_MAX_LOOKBACK = 1_000  # rows of a bucket an unmatched row is compared with (bounds a huge bucket's cost)
# A candidate pair: `doc_id` (of this build) is near `similar_id`, which is published or not.
EDGES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("similar_id", pa.string(), nullable=False),
        pa.field("similar_published", pa.bool_(), nullable=False),
    ]
)


# -- where things live -----------------------------------------------------------------------------


def signatures_uri(cfg: BuildConfig, build_id: str, shard: str) -> str:
    return storage.join(cfg.work_root, build_id, "signatures", f"{shard}.parquet")


def candidates_uri(cfg: BuildConfig, build_id: str, bands: list[int], partition: int = 0) -> str:
    return candidates_path(storage.join(cfg.work_root, build_id), bands, partition)


def candidates_path(root: str, bands: list[int], partition: int) -> str:
    return storage.join(root, "lsh", f"bands-{bands[0]:02d}-{bands[-1]:02d}-p{partition:04d}.parquet")


def near_duplicates_uri(cfg: BuildConfig, build_id: str) -> str:
    return storage.join(cfg.work_root, build_id, "dedup", "near_duplicates.parquet")


def lsh_tasks(cfg: BuildConfig) -> list[tuple[list[int], int]]:
    """The (bands, partition) pairs step 2 is mapped over: band_groups x band_partitions tasks."""
    d = cfg.dedup
    groups = [g.tolist() for g in np.array_split(np.arange(d.bands), min(d.band_groups, d.bands))]
    return [(bands, p) for bands in groups for p in range(d.band_partitions)]


# -- step 2: candidate edges -----------------------------------------------------------------------


def find_candidates(
    inputs: list[str],
    output: str,
    cfg: BuildConfig,
    bands: int | list[int],
    partition: int = 0,
    published: list[str] | None = None,
    within_build: bool = True,
) -> StageStats:
    """Step 2 (mapped per band group x partition): signature shards -> candidate edges at `output`.

    `published` are signature shards of the cross-build index (their documents are never
    dropped, only matched); None looks them up when `dedup.cross_build` is on, leaving out this
    build's own earlier entries. `within_build=False` keeps only edges to published documents.
    """
    started = time.monotonic()
    dedup = cfg.dedup
    bands = [bands] if isinstance(bands, int) else list(bands)
    if not bands or not all(0 <= b < dedup.bands for b in bands) or not 0 <= partition < dedup.band_partitions:
        raise ConfigError(
            f"bands {bands} / partition {partition} outside {dedup.bands} bands x {dedup.band_partitions} partitions"
        )
    if published is None:
        from curation.dedup.index import published_signatures

        published = published_signatures(cfg, exclude_build=cfg.build_id) if dedup.cross_build else []
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    with _local_copies(list(inputs) + list(published)) as sources:
        edges = _find_edges(sources, len(inputs), bands, partition, dedup, within_build, stats)
    stats.bytes_out = storage.write_table(output, edges)
    stats.outputs = [output]
    stats.seconds = time.monotonic() - started
    return stats


@contextlib.contextmanager
def _local_copies(uris: list[str]) -> Iterator[list[str]]:
    """The files to read: S3 objects copied to a local temporary folder first, since a task reads
    each signature shard once per band (one column each time) and once more for candidates."""
    if not any(storage.is_s3(u) for u in uris):
        yield uris
        return
    with tempfile.TemporaryDirectory(prefix="curation-lsh-") as tmp:
        local = []
        for i, uri in enumerate(uris):
            if storage.is_s3(uri):
                path = os.path.join(tmp, f"{i:06d}.parquet")
                with open(path, "wb") as fh:
                    fh.write(storage.read_bytes(uri))
                local.append(path)
            else:
                local.append(uri)
        yield local


def _find_edges(
    sources: list[str], n_build: int, bands: list[int], partition: int, dedup: DedupConfig, within_build: bool, stats: StageStats
) -> pa.Table:
    """The candidate edges of `bands` in `partition` among local `sources` (build shards first)."""
    # Pass 1, one band at a time: that band's hash of every row in the partition (16 bytes a row
    # with where it lives); rows sharing a hash with another row are kept as (bucket, file, row).
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    next_bucket = 0
    for band in bands:
        hashes, files, rows = _band_rows(sources, band_column(band), partition, dedup.band_partitions)
        if band == bands[0]:
            stats.rows_in = stats.rows_out = int((files < n_build).sum())  # build rows in this partition
        bucket, position = _bucket_members(hashes, files, n_build, within_build)
        found.append((bucket + next_bucket, files[position], rows[position]))
        next_bucket += int(bucket.max()) + 1 if len(bucket) else 0
        del hashes, files, rows
    bucket = np.concatenate([f[0] for f in found])
    member_file = np.concatenate([f[1] for f in found])
    member_row = np.concatenate([f[2] for f in found])
    del found

    # Pass 2: doc_id and sketch of each distinct candidate row, each file read once for all bands.
    candidates, member = _read_candidates(sources, n_build, member_file, member_row, dedup.threshold is not None)
    return _bucket_edges(candidates, bucket, member, dedup.threshold, within_build)


def _band_rows(sources: list[str], column: str, partition: int, partitions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(band hash, file number, row number) of every row of `sources` in the partition."""
    hashes, files, rows = [], [], []
    for i, uri in enumerate(sources):
        h = storage.read_table(uri, columns=[column])[column].to_numpy()
        if partitions > 1:
            in_part = np.flatnonzero(h % np.uint64(partitions) == partition)
            hashes.append(h[in_part])
            rows.append(in_part.astype(np.int32))
        else:
            hashes.append(h)
            rows.append(np.arange(len(h), dtype=np.int32))
        files.append(np.full(len(hashes[-1]), i, np.int32))
    if not hashes:
        return np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int32)
    return np.concatenate(hashes), np.concatenate(files), np.concatenate(rows)


def _bucket_members(hashes: np.ndarray, files: np.ndarray, n_build: int, within_build: bool) -> tuple[np.ndarray, np.ndarray]:
    """(bucket number, row position) of every row in a bucket that can yield an edge."""
    if not len(hashes):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_hashes[1:] != sorted_hashes[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(order)]]))
    is_build = files[order] < n_build
    build_count = np.add.reduceat(is_build.astype(np.int64), starts)
    published_count = sizes - build_count
    # A bucket matters if it holds a build document and anything else (within the build, or published).
    useful = (build_count >= 1) & ((published_count >= 1) | ((build_count >= 2) & within_build))
    bucket_of = np.repeat(np.cumsum(useful) - 1, sizes)
    keep = np.repeat(useful, sizes)
    return bucket_of[keep], order[keep]


def _read_candidates(
    sources: list[str], n_build: int, files: np.ndarray, rows: np.ndarray, need_sketch: bool
) -> tuple[dict, np.ndarray]:
    """The distinct candidate rows ({"doc_id", "published", "sketch"}), and for each bucket
    membership the number of its candidate row."""
    key = (files.astype(np.int64) << 32) | rows.astype(np.int64)
    unique_key, member = np.unique(key, return_inverse=True)
    unique_file, unique_row = (unique_key >> 32).astype(np.int64), unique_key & 0xFFFFFFFF
    columns = ["doc_id", "sketch"] if need_sketch else ["doc_id"]
    doc_ids, sketches, published = [], [], []
    for i in np.unique(unique_file):
        pick = unique_row[unique_file == i]  # ascending, like the unique keys
        table = storage.read_table(sources[i], columns=columns).take(pa.array(pick))
        if table.column("doc_id").null_count:
            raise ConfigError(f"{sources[i]} holds a null doc_id: it was not written by compute_signatures")
        doc_ids.append(table.column("doc_id").combine_chunks())
        if need_sketch:
            sketches.append(_fixed_size_list_numpy(table.column("sketch")))
        published.append(np.full(len(pick), i >= n_build))
    candidates = {
        "doc_id": pa.concat_arrays(doc_ids) if doc_ids else pa.array([], pa.string()),
        "published": np.concatenate(published) if published else np.empty(0, bool),
        "sketch": np.concatenate(sketches) if sketches else None,
    }
    return candidates, member


def _bucket_edges(
    candidates: dict, bucket: np.ndarray, member: np.ndarray, threshold: float | None, within_build: bool
) -> pa.Table:
    if not len(member):
        return EDGES.empty_table()
    doc_ids, published, sketch = candidates["doc_id"], candidates["published"], candidates["sketch"]
    # Leader order inside a bucket: published first, then by doc_id.
    keys = pa.table({"later": pa.array(~published), "doc_id": doc_ids})
    rank = np.empty(len(published), np.int64)
    rank[pc.sort_indices(keys, sort_keys=[("later", "ascending"), ("doc_id", "ascending")]).to_numpy()] = np.arange(
        len(published)
    )
    order = np.lexsort((rank[member], bucket))
    bucket, member = bucket[order], member[order]
    n = len(member)
    first = np.concatenate([[True], bucket[1:] != bucket[:-1]])
    leader = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    is_published = published[member]
    # Build documents other than the leader; within_build=False wants published leaders only.
    wants = ~first & ~is_published & (is_published[leader] | within_build)
    src, dst = member[wants], member[leader[wants]]
    if threshold is None:
        pairs = np.unique((src << 32) | dst)
        return _edge_table(doc_ids, published, pairs >> 32, pairs & 0xFFFFFFFF)
    # Each distinct (document, leader) pair is compared once, however many bands it shares.
    pairs, back = np.unique((src << 32) | dst, return_inverse=True)
    similar = _similar(sketch, pairs >> 32, pairs & 0xFFFFFFFF, threshold)
    matched = np.flatnonzero(wants)[similar[back]]
    unmatched = np.zeros(n, bool)
    unmatched[np.flatnonzero(wants)[~similar[back]]] = True
    extra_src, extra_dst = _earlier_matches(first, is_published, unmatched, member, sketch, threshold, within_build)
    src = np.concatenate([member[matched], extra_src])
    dst = np.concatenate([member[leader[matched]], extra_dst])
    return _edge_table(doc_ids, published, src, dst)


def _similar(sketch: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float, chunk: int = 65_536) -> np.ndarray:
    """estimate_jaccard(sketch[a], sketch[b]) >= threshold, a chunk at a time (bounded memory)."""
    out = np.zeros(len(a), bool)
    for lo in range(0, len(a), chunk):
        out[lo : lo + chunk] = estimate_jaccard(sketch[a[lo : lo + chunk]], sketch[b[lo : lo + chunk]]) >= threshold
    return out


def _edge_table(doc_ids: pa.Array, published: np.ndarray, src: np.ndarray, dst: np.ndarray) -> pa.Table:
    pairs = np.unique((src.astype(np.int64) << 32) | dst.astype(np.int64))  # one edge per pair
    src, dst = pairs >> 32, pairs & 0xFFFFFFFF
    edges = pa.table(
        {
            "doc_id": doc_ids.take(pa.array(src)),
            "similar_id": doc_ids.take(pa.array(dst)),
            "similar_published": pa.array(published[dst], pa.bool_()),
        },
        schema=EDGES,
    )
    # A document is never its own duplicate (the same doc_id in two shards), unless published.
    edges = edges.filter(pc.or_(pc.not_equal(edges["doc_id"], edges["similar_id"]), edges["similar_published"]))
    return edges.sort_by([("doc_id", "ascending"), ("similar_id", "ascending"), ("similar_published", "ascending")])


def _fixed_size_list_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list<uint16> column as an (n, size) array (respecting slice offsets)."""
    array = column.combine_chunks()
    size = array.type.list_size
    values = array.values.slice(array.offset * size, len(array) * size)
    return values.to_numpy().reshape(len(array), size)


def _earlier_matches(
    first: np.ndarray,
    is_published: np.ndarray,
    unmatched: np.ndarray,
    member: np.ndarray,
    sketch: np.ndarray,
    threshold: float,
    within_build: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Edges for memberships not similar to their bucket's leader: to the first earlier member of
    the bucket they are similar to (at most _MAX_LOOKBACK back), if any. (candidate numbers)"""
    src: list[int] = []
    dst: list[int] = []
    bucket_start = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    for row in np.flatnonzero(unmatched):
        earlier = np.arange(max(bucket_start[row] + 1, row - _MAX_LOOKBACK), row)
        if not within_build:
            earlier = earlier[is_published[earlier]]
        if len(earlier):
            similar = np.flatnonzero(estimate_jaccard(sketch[member[row]], sketch[member[earlier]]) >= threshold)
            if len(similar):
                src.append(int(member[row]))
                dst.append(int(member[earlier[similar[0]]]))
    return np.array(src, np.int64), np.array(dst, np.int64)


# -- step 3: clusters -> duplicates ----------------------------------------------------------------


def resolve_duplicates(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Step 3 (global): candidate edge files -> duplicates table (doc_id, kept_doc_id, dup_near)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    started = time.monotonic()
    edges = pa.concat_tables([storage.read_table(uri) for uri in inputs]) if inputs else EDGES.empty_table()
    # Node keys: "0"+id for published documents, "1"+id for build ones, so the smallest key of a
    # cluster is its smallest published doc_id if it has one, else its smallest doc_id.
    src = pc.binary_join_element_wise("1", edges["doc_id"], "")
    dst = pc.binary_join_element_wise(pc.if_else(edges["similar_published"], "0", "1"), edges["similar_id"], "")
    del edges
    keys = pa.concat_arrays([src.combine_chunks(), dst.combine_chunks()]) if len(src) else pa.array([], pa.string())
    del src, dst
    encoded = pc.dictionary_encode(keys)
    del keys
    if len(encoded) == 0:
        size = storage.write_table(output, DUPLICATES.empty_table())
        return StageStats(stage=STAGE, shard="near", bytes_out=size, outputs=[output], seconds=time.monotonic() - started)
    # Number nodes in key order, so "smallest node number" is "smallest key".
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    nodes = encoded.dictionary.take(pa.array(order))
    ends = rank[encoded.indices.to_numpy()]
    n_edges = len(ends) // 2
    n_nodes = len(order)
    graph = coo_matrix((np.ones(n_edges, np.int8), (ends[:n_edges], ends[n_edges:])), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, n_nodes, np.int64)
    np.minimum.at(smallest, labels, np.arange(n_nodes))
    kept = smallest[labels]
    is_build = pc.starts_with(nodes, "1").to_numpy(zero_copy_only=False)
    dropped = np.flatnonzero(is_build & (kept != np.arange(n_nodes)))
    # A build node whose own published twin is the keeper has the same doc_id: it is already out.
    dups = pa.table(
        {
            "doc_id": pc.utf8_slice_codeunits(nodes.take(pa.array(dropped)), 1),
            "kept_doc_id": pc.utf8_slice_codeunits(nodes.take(pa.array(kept[dropped])), 1),
            "reason": pa.array([REASON] * len(dropped), pa.string()),
        },
        schema=DUPLICATES,
    )
    size = storage.write_table(output, dups)
    build_nodes = int(is_build.sum())
    log.info("near-dup: %d build documents in %d candidate edges, %d to drop", build_nodes, n_edges, len(dropped))
    stats = StageStats(stage=STAGE, shard="near", rows_in=build_nodes, rows_out=build_nodes, bytes_out=size, outputs=[output])
    stats.seconds = time.monotonic() - started
    return stats


# -- everything in one process ---------------------------------------------------------------------


def plan_near_dedup(inputs: list[str], output: str, cfg: BuildConfig, work: str | None = None) -> StageStats:
    """Steps 1-3 in this process (CLI, tests, small builds): documents shards -> duplicates table.

    Intermediate files go under `work` (default: `signatures/` and `lsh/` next to `output`).
    """
    from curation.dedup.minhash import compute_signatures

    started = time.monotonic()
    work = work or output.rsplit("/", 1)[0]
    signatures = []
    for i, uri in enumerate(inputs):
        sig = storage.join(work, "signatures", f"{i:05d}.parquet")
        compute_signatures([uri], sig, cfg)
        signatures.append(sig)
    edges = []
    for bands, partition in lsh_tasks(cfg):
        out = candidates_path(work, bands, partition)
        find_candidates(signatures, out, cfg, bands, partition)
        edges.append(out)
    stats = resolve_duplicates(edges, output, cfg)
    stats.seconds = time.monotonic() - started
    return stats
