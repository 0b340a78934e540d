"""Takedowns: URLs and normalized-text hashes that must never be published again.

The blocklist lives under `state_root`, outside any build, so every later build's filter stage
drops matching documents (reason `takedown`) whatever crawl they come from again, and publish
applies it once more (a build filtered before the takedown cannot bring the rows back).

`takedown` adds to the blocklist and rewrites every live release holding a matching row into a
new revision (`{build_id}.r{N}`) without it: unchanged files are copied byte for byte, affected
ones rewritten. LATEST follows if it pointed at the old revision, which is then withdrawn: a
`WITHDRAWN.json` tombstone is written, its manifest and files deleted, and rollback refuses it.
The text hashes of documents removed by URL are blocklisted too, so the same text does not come
back under another URL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import layout, release, storage
from curation.config import BuildConfig
from curation.errors import ConfigError
from curation.reshard import ParquetLayout, RowFilter, rewrite_filtered
from curation.transfer import StagedFile, TransferSettings, Uploader, download, stage_file
from curation.webdataset import SIZES, filter_tar

log = logging.getLogger(__name__)

BLOCKLIST = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False, metadata={"doc": "'url' or 'text_hash'"}),
        pa.field("value", pa.string(), nullable=False, metadata={"doc": "the URL or the 32-hex normalized-text hash"}),
        pa.field("ticket", pa.string(), metadata={"doc": "why: request id or reason, for audit"}),
        pa.field("added_at", pa.timestamp("us", tz="UTC"), metadata={"doc": "when it was added"}),
    ]
)
KINDS = ("url", "text_hash")


def blocklist_uri(cfg: BuildConfig) -> str:
    return storage.join(cfg.state_root, "takedown", "blocklist.parquet")


def load_blocklist(cfg: BuildConfig) -> pa.Table:
    uri = blocklist_uri(cfg)
    return storage.read_table(uri) if storage.exists(uri) else BLOCKLIST.empty_table()


def add_to_blocklist(cfg: BuildConfig, kind: str, values: list[str], ticket: str) -> int:
    """Add values (deduplicated) to the blocklist atomically; returns how many were new."""
    if kind not in KINDS:
        raise ConfigError(f"takedown kind must be one of {KINDS}, not {kind!r}")
    current = load_blocklist(cfg)
    known = set(current.filter(pc.equal(current["kind"], kind))["value"].to_pylist())
    new = sorted({v.strip() for v in values if v.strip()} - known)
    if new:
        now = dt.datetime.now(dt.UTC)
        added = pa.table(
            {"kind": [kind] * len(new), "value": new, "ticket": [ticket] * len(new), "added_at": [now] * len(new)},
            schema=BLOCKLIST,
        )
        storage.write_table(blocklist_uri(cfg), pa.concat_tables([current, added]))
    return len(new)


def blocked_mask(batch: pa.Table, blocklist: pa.Table) -> np.ndarray:
    """True for rows of a documents batch whose url or text_hash is on the blocklist."""
    mask = np.zeros(batch.num_rows, dtype=bool)
    for kind, column in (("url", "url"), ("text_hash", "text_hash")):
        values = blocklist.filter(pc.equal(blocklist["kind"], kind))["value"]
        if len(values):
            mask |= pc.is_in(batch[column], value_set=values.combine_chunks()).to_numpy(zero_copy_only=False)
    return mask


def pairs_blocked_mask(batch: pa.Table | pa.RecordBatch, blocklist: pa.Table) -> np.ndarray:
    """True for image-text pairs whose image URL (`image_url` or `url`) or page URL (`page_url`) is on the blocklist."""
    mask = np.zeros(batch.num_rows, dtype=bool)
    urls = blocklist.filter(pc.equal(blocklist["kind"], "url"))["value"].combine_chunks()
    if len(urls):
        for column in ("image_url", "url", "page_url"):
            if column in batch.schema.names:
                mask |= pc.is_in(batch[column], value_set=urls).to_numpy(zero_copy_only=False)
    return mask


def document_filter(blocklist: pa.Table) -> RowFilter | None:
    """The publish-time row filter for documents, or None when the blocklist is empty."""
    if not blocklist.num_rows:
        return None
    return RowFilter(["url", "text_hash"], lambda batch: ~blocked_mask(batch, blocklist))


def read_values(path: str | Path) -> list[str]:
    """One value per line; blank lines and `#` comments ignored."""
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class TakedownResult:
    added: dict[str, int] = field(default_factory=dict)  # new blocklist entries per kind
    revisions: dict[str, str] = field(default_factory=dict)  # old release -> its new revision
    removed: dict[str, int] = field(default_factory=dict)  # rows removed per old release
    latest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "revisions": self.revisions, "removed": self.removed, "latest": self.latest}


def takedown(
    cfg: BuildConfig,
    *,
    urls: list[str] | None = None,
    hashes: list[str] | None = None,
    ticket: str,
    releases: list[str] | None = None,
    purge: bool = True,
) -> TakedownResult:
    """Blocklist `urls` / `hashes` and rewrite the live releases holding them (all, or `releases`).

    With `purge` (the default) each replaced revision is withdrawn: tombstone, manifest and files
    deleted. Returns what was added, which revisions were written and how many rows each lost.
    """
    if not urls and not hashes:
        raise ConfigError("a takedown needs URLs or text hashes")
    if not ticket.strip():
        raise ConfigError("a takedown needs a ticket (request id or reason) for the audit trail")
    result = TakedownResult()
    result.added["url"] = add_to_blocklist(cfg, "url", urls or [], ticket) if urls else 0
    result.added["text_hash"] = add_to_blocklist(cfg, "text_hash", hashes or [], ticket) if hashes else 0
    _finish_withdrawals(cfg)
    live = {r.release_id: r for r in release.list_releases(cfg) if r.state == "live"}
    if releases is not None:
        unknown = sorted(set(releases) - set(live))
        if unknown:
            raise ConfigError(f"not live releases of {cfg.publish.corpus}: {unknown}")
    targets = [rid for rid in live if releases is None or rid in releases]
    settings = TransferSettings.from_config(cfg.publish)
    # Text of documents taken down by URL is blocked too (mirrors, re-crawls under other URLs).
    text_hashes = sorted({h for rid in targets for h in _blocked_text_hashes(cfg, live[rid].manifest or {}, rid, settings)})
    result.added["text_hash"] += add_to_blocklist(cfg, "text_hash", text_hashes, f"{ticket} (text of a taken-down URL)")
    blocklist = load_blocklist(cfg)
    for rid in targets:
        revised = _revise(cfg, rid, blocklist, ticket, settings)
        if revised is None:
            continue
        new_id, removed = revised
        result.revisions[rid], result.removed[rid] = new_id, removed
        if release.latest(cfg) == rid:
            release.set_latest(cfg, new_id)
        if purge:
            withdraw(cfg, rid, superseded_by=new_id, ticket=ticket)
    result.latest = release.latest(cfg)
    release.record_event(cfg, "takedown", {"ticket": ticket, **result.to_dict()})
    return result


def _blocked_text_hashes(cfg: BuildConfig, manifest: dict[str, Any], rid: str, settings: TransferSettings) -> list[str]:
    """text_hash of the documents of a release whose URL is on the blocklist."""
    blocklist = load_blocklist(cfg)
    urls = blocklist.filter(pc.equal(blocklist["kind"], "url"))["value"].combine_chunks()
    if not len(urls):
        return []
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="curation-takedown-") as tmp:
        for entry in manifest.get("files", []):
            local = _local_copy(cfg, rid, entry["path"], Path(tmp), settings)
            table = pq.read_table(local, columns=["url", "text_hash"])
            hit = table.filter(pc.is_in(table["url"], value_set=urls))
            out += [h for h in hit["text_hash"].to_pylist() if h]
    return out


def _local_copy(cfg: BuildConfig, rid: str, path: str, tmp: Path, settings: TransferSettings) -> Path:
    uri = storage.join(layout.release_uri(cfg, rid), path)
    if not storage.is_s3(uri):
        return Path(uri.removeprefix("file://"))
    return download(uri, tmp / "download" / path, settings)


def next_revision(cfg: BuildConfig, rid: str) -> str:
    """The next free revision id of `rid`'s build (live and withdrawn revisions both count)."""
    base, _ = release.parse_release_id(rid)
    revisions = [release.parse_release_id(r.release_id) for r in release.list_releases(cfg)]
    return release.revision_id(base, max((n for b, n in revisions if b == base), default=0) + 1)


def _revise(cfg: BuildConfig, rid: str, blocklist: pa.Table, ticket: str, settings: TransferSettings) -> tuple[str, int] | None:
    """Write a new revision of `rid` without blocked rows; None if nothing in it is blocked."""
    from curation.publish import remove_stale_files, stage_data_card, write_manifest

    manifest = release.read_manifest(cfg, rid)
    parquet_layout = ParquetLayout.from_config(cfg.publish)
    with tempfile.TemporaryDirectory(prefix="curation-takedown-") as tmp:
        work = Path(tmp)
        out = work / "out"
        removed = 0
        doc_files: list[StagedFile] = []
        for entry in manifest.get("files", []):
            local = _local_copy(cfg, rid, entry["path"], work, settings)
            table = pq.read_table(local, columns=["url", "text_hash"])
            blocked = blocked_mask(table, blocklist)
            if blocked.any():
                target = out / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                rows = rewrite_filtered(local, target, parquet_layout, lambda b: ~blocked_mask(b, blocklist))
                removed += int(blocked.sum())
                doc_files.append(stage_file(target, entry["path"], "parquet", settings, rows))
            else:
                doc_files.append(stage_file(local, entry["path"], "parquet", settings, entry["rows"]))
        pair_files, pairs_removed, sizes = _revise_pairs(cfg, rid, manifest, blocklist, work, settings, parquet_layout)
        if removed == 0 and pairs_removed == 0:
            return None
        new_id = next_revision(cfg, rid)
        base, revision = release.parse_release_id(new_id)
        output = layout.release_uri(cfg, new_id)
        stage = {
            "stage": "takedown",
            "shard": new_id,
            "rows_in": manifest["rows"],
            "rows_out": manifest["rows"] - removed,
            "dropped": {"takedown": removed} if removed else {},
            "bytes_in": manifest.get("bytes", 0),
            "bytes_out": 0,
            "seconds": 0.0,
            "outputs": 1,
        }
        new = {
            **manifest,
            "build_id": new_id,
            "base_build_id": base,
            "revision": revision,
            "parent": rid,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "rows": manifest["rows"] - removed,
            "files": [f.entry() for f in doc_files],
            "funnel": {**manifest.get("funnel", {}), "takedown": stage},
            "takedown": {"ticket": ticket, "rows_removed": removed, "pairs_removed": pairs_removed, "parent": rid},
        }
        if manifest.get("pairs"):
            new["pairs"] = {**manifest["pairs"], "rows": manifest["pairs"]["rows"] - pairs_removed}
            new["pairs"]["files"] = [f.entry() for f in pair_files]
        new["bytes"] = sum(f.bytes for f in doc_files + pair_files)
        stage["bytes_out"] = new["bytes"]
        new["content_id"] = release.content_id(new)
        attachments = [
            stage_file(_local_copy(cfg, rid, a["path"], work, settings), a["path"], "attachment", settings)
            for a in manifest.get("attachments", [])
            if a["path"] in ("config.yaml", "gate_report.json")
        ]
        if sizes is not None:
            attachments.append(stage_file(sizes, f"pairs/{SIZES}", "attachment", settings))
        if cfg.publish.data_card:
            attachments += stage_data_card(out, new, output, doc_files, pair_files, settings)
        new["attachments"] = [f.entry() for f in sorted(attachments, key=lambda f: f.path)]
        with Uploader(output, settings) as uploader:
            new["upload"] = uploader.put_all(doc_files + pair_files + attachments).to_dict()
        remove_stale_files(output, {f.path for f in doc_files + pair_files + attachments} | {release.MANIFEST})
        write_manifest(output, new, work, settings)
    log.info("takedown %s: %s -> %s without %d document(s), %d pair(s)", ticket, rid, new_id, removed, pairs_removed)
    return new_id, removed + pairs_removed


def _revise_pairs(
    cfg: BuildConfig,
    rid: str,
    manifest: dict[str, Any],
    blocklist: pa.Table,
    work: Path,
    settings: TransferSettings,
    parquet_layout: ParquetLayout,
) -> tuple[list[StagedFile], int, Path | None]:
    """The pair shards of a new revision: tar + metadata rewritten where a sample is blocked."""
    pairs = manifest.get("pairs") or {}
    if not pairs:
        return [], 0, None
    entries = {e["path"]: e for e in pairs.get("files", [])}
    sizes: dict[str, int] = {}
    staged: list[StagedFile] = []
    removed = 0
    for path, entry in sorted(entries.items()):
        if entry["kind"] != "parquet":
            continue
        tar_path = path.removesuffix(".parquet") + ".tar"
        meta_local = _local_copy(cfg, rid, path, work, settings)
        tar_local = _local_copy(cfg, rid, tar_path, work, settings)
        meta = pq.read_table(meta_local)
        blocked = pairs_blocked_mask(meta, blocklist)
        if blocked.any():
            drop = set(meta.filter(pa.array(blocked))["key"].to_pylist())
            out_tar, out_meta = work / "out" / tar_path, work / "out" / path
            out_tar.parent.mkdir(parents=True, exist_ok=True)
            rows = filter_tar(tar_local, out_tar, drop)
            rewrite_filtered(meta_local, out_meta, parquet_layout, lambda b: ~pairs_blocked_mask(b, blocklist))
            removed += len(drop)
            tar_local, meta_local = out_tar, out_meta
        else:
            rows = entry["rows"]
        sizes[Path(tar_path).name] = rows
        staged += [
            stage_file(tar_local, tar_path, "webdataset", settings, rows),
            stage_file(meta_local, path, "parquet", settings, rows),
        ]
    sizes_path = work / "out" / "pairs" / SIZES
    sizes_path.parent.mkdir(parents=True, exist_ok=True)
    sizes_path.write_text(json.dumps(sizes, indent=2, sort_keys=True) + "\n")
    return staged, removed, sizes_path


def withdraw(cfg: BuildConfig, rid: str, *, superseded_by: str, ticket: str) -> None:
    """Take release `rid` down: tombstone first, then its manifest (it stops existing), then its files."""
    root = layout.release_uri(cfg, rid)
    tombstone = storage.join(root, release.WITHDRAWN)
    if not storage.exists(tombstone):
        storage.write_json(
            tombstone, {"superseded_by": superseded_by, "ticket": ticket, "at": dt.datetime.now(dt.UTC).isoformat()}
        )
    storage.delete(storage.join(root, release.MANIFEST))
    for uri in storage.list_files(root):
        if storage.name(uri) != release.WITHDRAWN:
            storage.delete(uri)


def _finish_withdrawals(cfg: BuildConfig) -> None:
    """Complete withdrawals a crash interrupted (tombstone written, files not yet deleted)."""
    root = release.corpus_root(cfg)
    for uri in storage.list_files(root, release.WITHDRAWN):
        rid = uri[len(root) :].strip("/").split("/")[0]
        info = storage.read_json(uri)
        withdraw(cfg, rid, superseded_by=info.get("superseded_by", ""), ticket=info.get("ticket", ""))
