"""Cross-build (incremental) dedup index: the MinHash signatures of everything published.

    {state_root}/dedup-index/{params}/CURRENT                         pointer, written last
    {state_root}/dedup-index/{params}/versions/{version}.json         manifest: build -> files
    {state_root}/dedup-index/{params}/builds/{build_id}/v{version}/{shard}.parquet

`params` is `minhash.params_key` (normalization version, n-gram size, bands x rows, hash bits,
seed): signatures made with other parameters are never compared. Index shards have the schema
of signature shards, so `lsh.find_candidates` reads them like the build's own, as documents
that can be matched but never dropped.

`add_to_index` runs only after a release is published. It writes the new shards into a folder
of their own, then a new manifest, then CURRENT: a reader sees the old index or the new one,
never half of it, and a killed update leaves CURRENT on the old version. Re-adding a build
replaces its entry. One writer at a time (the publish step); a CURRENT that moved meanwhile
is refused as a transient error, so the task retries on top of the new version.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.config import BuildConfig
from curation.dedup.lsh import EDGES, candidates_path, find_candidates, lsh_tasks, resolve_duplicates
from curation.dedup.minhash import params_key
from curation.errors import TransientError
from curation.stats import StageStats

STAGE = "dedup-index"


def index_root(cfg: BuildConfig) -> str:
    return storage.join(cfg.state_root, "dedup-index", params_key(cfg.dedup))


def _current_uri(cfg: BuildConfig) -> str:
    return storage.join(index_root(cfg), "CURRENT")


def current_manifest(cfg: BuildConfig) -> dict:
    """The manifest CURRENT points at: {"version": n, "builds": {build_id: [uri, ...]}}."""
    pointer = _current_uri(cfg)
    if not storage.exists(pointer):
        return {"version": 0, "builds": {}}
    current = storage.read_json(pointer)
    return storage.read_json(storage.join(index_root(cfg), current["manifest"]))


def published_signatures(cfg: BuildConfig, exclude_build: str | None = None) -> list[str]:
    """Signature shards of every published build in the index (but `exclude_build`), sorted."""
    builds = current_manifest(cfg)["builds"]
    return sorted(uri for build, uris in builds.items() if build != exclude_build for uri in uris)


def add_to_index(signatures: list[str], published: list[str], cfg: BuildConfig, build_id: str) -> StageStats:
    """Add a published build: the rows of its signature shards whose doc_id is in `published`
    (the release's data files, read for doc_id only). Call only after the release is published."""
    started = time.monotonic()
    manifest = current_manifest(cfg)
    version = manifest["version"] + 1
    ids = [storage.read_table(uri, columns=["doc_id"])["doc_id"] for uri in published]
    published_ids = pc.unique(pa.chunked_array([c for col in ids for c in col.chunks], pa.string()))
    stats = StageStats(stage=STAGE, shard=build_id)
    folder = storage.join(index_root(cfg), "builds", build_id, f"v{version:06d}")
    written = []
    for i, uri in enumerate(signatures):
        table = storage.read_table(uri)
        stats.rows_in += table.num_rows
        kept = table.filter(pc.is_in(table["doc_id"], value_set=published_ids))
        if kept.num_rows:
            out = storage.join(folder, f"{i:05d}.parquet")
            stats.bytes_out += storage.write_table(out, kept)
            written.append(out)
            stats.rows_out += kept.num_rows
    # Rows of the build that were not published (dropped by dedup or the filters) are not indexed.
    stats.drop("not_published", stats.rows_in - stats.rows_out)
    builds = {**manifest["builds"], build_id: written}
    name = f"versions/{version:06d}-{build_id}.json"
    storage.write_json(
        storage.join(index_root(cfg), name),
        {"version": version, "builds": builds, "params": params_key(cfg.dedup), "updated": dt.datetime.now(dt.UTC).isoformat()},
    )
    if current_manifest(cfg)["version"] != manifest["version"]:
        raise TransientError(f"the dedup index {index_root(cfg)} was updated meanwhile; retry to add {build_id} on top")
    storage.write_json(_current_uri(cfg), {"version": version, "manifest": name})
    stats.outputs = written
    stats.seconds = time.monotonic() - started
    return stats


def check_against_index(signatures: list[str], output: str, cfg: BuildConfig, work: str | None = None) -> StageStats:
    """This build's documents that near-duplicate a published one, as a duplicates table
    (doc_id, kept_doc_id = the published doc, dup_near). The build pipeline gets the same rows
    from `lsh.find_candidates` (cross_build on); this runs the index check alone."""
    started = time.monotonic()
    work = work or output.rsplit("/", 1)[0]
    published = published_signatures(cfg, exclude_build=cfg.build_id)
    edges = []
    for bands, partition in lsh_tasks(cfg):
        out = candidates_path(storage.join(work, "index-check"), bands, partition)
        if published:
            find_candidates(signatures, out, cfg, bands, partition, published=published, within_build=False)
        else:
            storage.write_table(out, EDGES.empty_table())
        edges.append(out)
    stats = resolve_duplicates(edges, output, cfg)
    stats.seconds = time.monotonic() - started
    return stats
