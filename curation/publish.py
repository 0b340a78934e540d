"""Publish a gated build as a release: resharded Parquet (+ WebDataset pairs), data card, manifest, LATEST.

    {release}/data/part-NNNNN.parquet      documents, resharded to the target size (reshard.py)
    {release}/pairs/NNNNN.tar              image-text pairs as WebDataset shards (webdataset.py)
    {release}/pairs/NNNNN.parquet          their metadata (every column but the image bytes)
    {release}/pairs/sizes.json             samples per shard (open_clip)
    {release}/README.md, card/*.png        the data card (datacard.py)
    {release}/config.yaml, gate_report.json
    {release}/manifest.json                written last: the release exists iff it exists

Every file is staged locally, hashed once, uploaded (multipart, SHA256 checksums, retries) and
verified (transfer.py); uploads start while later files are still being written. Only then is
the manifest written, and only after it LATEST moves. A publish killed at any point leaves no
manifest; rerunning it skips the files already uploaded intact and finishes the release.

Identity: the release's `inputs_digest` (its input shards' SHA256, the config hash and the
layout version). Rerunning with the same digest is a no-op; a different digest for an existing
release is refused unless `force`, which first deletes the old manifest (unpublishes), then
replaces the files and removes the ones the new release does not have.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import release, storage
from curation.config import BuildConfig
from curation.datacard import profile_parquet, write_data_card
from curation.errors import ConfigError, GateFailure
from curation.gates import GateReport
from curation.release import MANIFEST, parse_release_id, read_manifest, verify_release
from curation.reshard import ParquetLayout, reshard
from curation.schema import describe
from curation.stats import StageStats
from curation.takedown import blocked_mask, document_filter, load_blocklist, pairs_blocked_mask
from curation.transfer import StagedFile, TransferSettings, Uploader, abort_incomplete_uploads, download, sha256_file, stage_file
from curation.webdataset import SIZES, WdsLayout, WdsShard, WebDatasetWriter

__all__ = ["MANIFEST", "code_version", "publish", "read_manifest", "verify_release"]

log = logging.getLogger(__name__)

STAGE = "publish"
# Bumped whenever the same inputs would give different release bytes (layout, writer settings).
LAYOUT_VERSION = 2


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    version = metadata.version("curation") if _installed() else "0+unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+g{sha}" if sha else version


def _installed() -> bool:
    try:
        metadata.version("curation")
        return True
    except metadata.PackageNotFoundError:
        return False


# --- inputs and identity -------------------------------------------------------------------------


@dataclass(frozen=True)
class InputShard:
    uri: str
    local: Path
    sha256: str
    bytes: int
    rows: int

    def entry(self, table: str) -> dict[str, Any]:
        return {"uri": self.uri, "table": table, "sha256": self.sha256, "bytes": self.bytes, "rows": self.rows}


def localize(uris: list[str], folder: Path, settings: TransferSettings) -> list[InputShard]:
    """Input shards as local files (S3 ones downloaded), hashed, in URI order.

    Files are fetched and hashed `file_concurrency` at a time (hashlib and downloads release the GIL).
    """

    def one(index: int, uri: str) -> InputShard:
        if storage.is_s3(uri):
            local = download(uri, folder / f"{index:05d}-{storage.name(uri)}", settings)
        else:
            local = Path(uri.removeprefix("file://"))
            if not local.is_file():
                raise ConfigError(f"input shard {uri} does not exist; run the stages before publish")
        return InputShard(uri, local, sha256_file(local), local.stat().st_size, pq.ParquetFile(local).metadata.num_rows)

    with ThreadPoolExecutor(max_workers=settings.file_concurrency, thread_name_prefix="localize") as pool:
        return list(pool.map(one, range(len(uris)), sorted(uris)))


def inputs_digest(cfg: BuildConfig, documents: list[InputShard], pairs: list[InputShard], blocked: list[str]) -> str:
    """What a release is made from: config, layout version, the bytes of every input shard and the
    ids of the rows the takedown blocklist removes from them (other takedowns don't change it)."""
    parts = [f"layout={LAYOUT_VERSION}", f"config={cfg.config_hash()}"]
    parts += [f"documents={s.sha256}" for s in documents] + [f"pairs={s.sha256}" for s in pairs]
    parts += [f"blocked={row_id}" for row_id in blocked]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def blocked_ids(documents: list[InputShard], pairs: list[InputShard], blocklist: pa.Table) -> list[str]:
    """doc_id / pair_id of the input rows on the takedown blocklist (reads only the id and match columns)."""
    if not blocklist.num_rows:
        return []
    out: list[str] = []
    for shard in documents:
        table = pq.read_table(shard.local, columns=["doc_id", "url", "text_hash"])
        out += table.filter(pa.array(blocked_mask(table, blocklist)))["doc_id"].to_pylist()
    for shard in pairs:
        names = pq.read_schema(shard.local).names
        table = pq.read_table(shard.local, columns=[c for c in ("pair_id", "image_url", "url", "page_url") if c in names])
        out += [f"pair:{p}" for p in table.filter(pa.array(pairs_blocked_mask(table, blocklist)))["pair_id"].to_pylist()]
    return sorted(out)


def load_gate_report(uri: str) -> tuple[GateReport, dict[str, Any], dict[str, Any] | None]:
    """The gate report, its raw JSON and its override: `{"reason", "by"}` when a person made a failed
    build publishable (gates.py's rule: an override counts only with a non-empty reason), else None."""
    raw = storage.read_json(uri)
    known = {f.name for f in dataclasses.fields(GateReport)}
    report = GateReport.from_dict({k: v for k, v in raw.items() if k in known or k == "passed"})
    override = raw.get("override") or None
    if override is not None and not str(override.get("reason") or "").strip():
        override = None
    return report, raw, override


def models_in(cfg: BuildConfig) -> list[dict[str, Any]]:
    """Every model the config names: ModelRefs (uri + sha256) and open_clip name + pretrained tag."""
    found: list[dict[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("uri"), str) and set(node) <= {"uri", "sha256"}:
                found.append({"config": path, "uri": node["uri"], "sha256": node.get("sha256")})
                return
            if "model" in node and "pretrained" in node and isinstance(node["model"], str):
                found.append({"config": path, "open_clip": node["model"], "pretrained": node["pretrained"]})
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(cfg.model_dump(mode="json"), "")
    return found


# --- publish -------------------------------------------------------------------------------------


def publish(
    inputs: list[str],
    output: str,
    cfg: BuildConfig,
    build_id: str,
    gate_report: str,
    force: bool = False,
    *,
    pairs: list[str] | None = None,
) -> StageStats:
    """Publish the kept document shards `inputs` (and image-text pair shards `pairs`) as release `output`.

    `output` is layout.release_uri(cfg, build_id). Returns the documents' StageStats; its
    `outputs` holds the manifest URI. Raises GateFailure if the gate report failed without an
    override, ConfigError if a different release already exists there and `force` is off.
    """
    started = time.monotonic()
    report, raw_report, override = load_gate_report(gate_report)
    if not report.passed and not override:
        raise GateFailure(f"refusing to publish {build_id}: its gate report failed\n{report.failure_message()}", gate_report)
    settings = TransferSettings.from_config(cfg.publish)
    manifest_uri = storage.join(output, MANIFEST)
    stats = StageStats(stage=STAGE, shard=build_id, outputs=[manifest_uri])
    if storage.exists(storage.join(output, release.WITHDRAWN)):
        tombstone = storage.read_json(storage.join(output, release.WITHDRAWN))
        raise ConfigError(
            f"release {output} was withdrawn by takedown {tombstone.get('ticket')!r} and replaced by "
            f"{tombstone.get('superseded_by')}; publish under a new build id"
        )

    with tempfile.TemporaryDirectory(prefix="curation-publish-") as tmp:
        work = Path(tmp)
        documents = localize(inputs, work / "in" / "documents", settings)
        pair_inputs = localize(pairs or [], work / "in" / "pairs", settings)
        if not documents and not pair_inputs:
            raise ConfigError(f"nothing to publish for {build_id}: no document or pair shards")
        blocklist = load_blocklist(cfg)
        digest = inputs_digest(cfg, documents, pair_inputs, blocked_ids(documents, pair_inputs, blocklist))
        existing = storage.read_json(manifest_uri) if storage.exists(manifest_uri) else None
        if existing is not None:
            if existing.get("inputs_digest") == digest or _same_legacy_release(existing, cfg, documents, pair_inputs):
                log.info("release %s already holds exactly these inputs: nothing to do", output)
                stats.rows_in = stats.rows_out = existing["rows"]
                stats.seconds = time.monotonic() - started
                return stats
            if not force:
                raise ConfigError(f"release {output} already exists with different content; pass force to replace it")
            storage.delete(manifest_uri)  # unpublish first, so a crash below leaves no stale manifest
        current = release.latest(cfg)
        abort_incomplete_uploads(output, settings)

        job = _Publication(cfg, build_id, output, work, settings, blocklist, stats, started)
        header = {
            "inputs_digest": digest,
            "parent": (existing or {}).get("parent") if current == build_id else current,
            "gate": {
                "passed": report.passed,
                "report": "gate_report.json",
                "work_report": gate_report,
                "override": override,
                "failed": [c.name for c in report.failed()],
            },
        }
        manifest = job.run(documents, pair_inputs, report, raw_report, header)
        write_manifest(output, manifest, work, settings)
    release.move_latest_forward(cfg, build_id)
    stats.seconds = time.monotonic() - started
    log.info("published %s: %d documents, %d bytes in %.1fs", output, stats.rows_out, stats.bytes_out, stats.seconds)
    return stats


def _same_legacy_release(
    existing: dict[str, Any], cfg: BuildConfig, documents: list[InputShard], pairs: list[InputShard]
) -> bool:
    """A release by the first publisher (inputs copied as they were) has the content id of these inputs."""
    if "inputs_digest" in existing or pairs:
        return False
    legacy = hashlib.sha256((cfg.config_hash() + "".join(s.sha256 for s in documents)).encode()).hexdigest()
    return existing.get("content_id") == legacy


@dataclass
class _Publication:
    """One publish in progress: stages the release files under `work/out` and uploads them as they finish."""

    cfg: BuildConfig
    build_id: str
    output: str
    work: Path
    settings: TransferSettings
    blocklist: pa.Table
    stats: StageStats
    started: float

    def __post_init__(self) -> None:
        self.out = self.work / "out"
        self.layout = ParquetLayout.from_config(self.cfg.publish)
        self.pair_stats = StageStats(stage="publish_pairs", shard=self.build_id)
        self.documents: list[StagedFile] = []
        self.pairs: list[StagedFile] = []
        self.attachments: list[StagedFile] = []

    def run(
        self,
        documents: list[InputShard],
        pair_inputs: list[InputShard],
        report: GateReport,
        raw_report: dict[str, Any],
        header: dict[str, Any],
    ) -> dict[str, Any]:
        """Stage and upload every file but the manifest; returns the manifest (`header` merged in)."""
        with Uploader(self.output, self.settings) as uploader:
            schema, reshard_info = self._documents(uploader, documents) if documents else (None, {})
            pairs_entry = self._pairs(uploader, pair_inputs) if pair_inputs else None
            manifest = self._manifest(documents, pair_inputs, report, schema, reshard_info, pairs_entry) | header
            self._attachments(manifest, raw_report)
            for staged in self.attachments:
                uploader.submit(staged)
            manifest["attachments"] = [f.entry() for f in sorted(self.attachments, key=lambda f: f.path)]
            manifest["upload"] = uploader.wait().to_dict()
        remove_stale_files(self.output, {f.path for f in self.documents + self.pairs + self.attachments} | {MANIFEST})
        return manifest

    def _documents(self, uploader: Uploader, documents: list[InputShard]) -> tuple[pa.Schema, dict[str, Any]]:
        known = {s.local: s.sha256 for s in documents}  # a passed-through input is not hashed twice

        def on_file(index: int, path: Path, rows: int) -> None:
            staged = stage_file(path, f"data/part-{index:05d}.parquet", "parquet", self.settings, rows, known.get(path))
            self.documents.append(staged)
            uploader.submit(staged)

        result = reshard(
            [s.local for s in documents], self.out / "data", self.layout, on_file, row_filter=document_filter(self.blocklist)
        )
        self.documents.sort(key=lambda f: f.path)
        self.stats.drop("takedown", result.removed)
        self.stats.rows_in = sum(s.rows for s in documents)
        self.stats.rows_out = result.rows
        self.stats.bytes_in = sum(s.bytes for s in documents)
        self.stats.bytes_out = sum(f.bytes for f in self.documents)
        return result.schema, {"passthrough_files": result.passthrough, "rewritten_inputs": result.rewritten_inputs}

    def _pairs(self, uploader: Uploader, pair_inputs: list[InputShard]) -> dict[str, Any]:
        def on_shard(shard: WdsShard) -> None:
            for path, kind in ((shard.tar, "webdataset"), (shard.meta, "parquet")):
                staged = stage_file(path, f"pairs/{path.name}", kind, self.settings, shard.rows)
                self.pairs.append(staged)
                uploader.submit(staged)

        stats = self.pair_stats
        writer = WebDatasetWriter(self.out / "pairs", WdsLayout.from_config(self.cfg.publish), self.layout, stats, on_shard)
        for shard_in in pair_inputs:
            for batch in pq.ParquetFile(shard_in.local).iter_batches(batch_size=1024):
                blocked = pairs_blocked_mask(batch, self.blocklist)
                if blocked.any():  # taken down after the build filtered them
                    stats.rows_in += int(blocked.sum())
                    stats.drop("takedown", int(blocked.sum()))
                    batch = batch.filter(pa.array(~blocked))
                writer.write(batch)
        shards = writer.close()
        self.pairs.sort(key=lambda f: f.path)
        self.attachments.append(stage_file(self.out / "pairs" / SIZES, f"pairs/{SIZES}", "attachment", self.settings))
        stats.bytes_in = sum(s.bytes for s in pair_inputs)
        stats.bytes_out = sum(f.bytes for f in self.pairs)
        metas = [f.local for f in self.pairs if f.kind == "parquet"]
        return {
            "rows": stats.rows_out,
            "shard_count": len(shards),
            # Brace pattern for webdataset / open_clip's --train-data.
            "shards": f"pairs/{{00000..{len(shards) - 1:05d}}}.tar" if shards else None,
            "sizes": f"pairs/{SIZES}",
            "files": [f.entry() for f in self.pairs],
            "schema": describe(pq.read_schema(metas[0])) if metas else [],
        }

    def _manifest(
        self,
        documents: list[InputShard],
        pair_inputs: list[InputShard],
        report: GateReport,
        schema: pa.Schema | None,
        reshard_info: dict[str, Any],
        pairs_entry: dict[str, Any] | None,
    ) -> dict[str, Any]:
        cfg = self.cfg
        base, revision = parse_release_id(self.build_id)
        manifest: dict[str, Any] = {
            "format": LAYOUT_VERSION,
            "corpus": cfg.publish.corpus,
            "build_id": self.build_id,
            "base_build_id": base,
            "revision": revision,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "rows": self.stats.rows_out,
            "bytes": sum(f.bytes for f in self.documents + self.pairs),
            "files": [f.entry() for f in self.documents],
            "pairs": pairs_entry,
            "schema": describe(schema) if schema is not None else [],
            "config_hash": cfg.config_hash(),
            "config": "config.yaml",
            "code_version": code_version(),
            "models": models_in(cfg),
            "inputs": sorted(cfg.inputs),
            "shards_in": [s.entry("documents") for s in documents] + [s.entry("pairs") for s in pair_inputs],
            "funnel": dict(report.funnel),
            "layout": {**dataclasses.asdict(self.layout), **reshard_info},
        }
        manifest["content_id"] = release.content_id(manifest)
        self.stats.seconds = time.monotonic() - self.started
        manifest["funnel"][STAGE] = self.stats.to_dict() | {"outputs": len(self.documents)}
        if pairs_entry is not None:
            manifest["funnel"]["publish_pairs"] = self.pair_stats.to_dict() | {"outputs": len(self.pairs)}
        return manifest

    def _attachments(self, manifest: dict[str, Any], raw_report: dict[str, Any]) -> None:
        (self.out / "config.yaml").write_text(self.cfg.to_yaml())
        (self.out / "gate_report.json").write_text(json.dumps(raw_report, indent=2, sort_keys=True, default=str) + "\n")
        self.attachments += [
            stage_file(self.out / "config.yaml", "config.yaml", "attachment", self.settings),
            stage_file(self.out / "gate_report.json", "gate_report.json", "attachment", self.settings),
        ]
        if self.cfg.publish.data_card:
            self.attachments += stage_data_card(self.out, manifest, self.output, self.documents, self.pairs, self.settings)


def stage_data_card(
    out: Path,
    manifest: dict[str, Any],
    output: str,
    doc_files: list[StagedFile],
    pair_files: list[StagedFile],
    settings: TransferSettings,
) -> list[StagedFile]:
    """README.md and card/*.png for the release, from its staged files."""
    doc_profile = profile_parquet([f.local for f in doc_files])
    pair_metas = [f.local for f in pair_files if f.kind == "parquet"]
    pair_profile = profile_parquet(pair_metas, categories=("image_format",), derived_lengths=("caption",)) if pair_metas else None
    card = write_data_card(out, manifest, output, doc_profile, pair_profile)
    return [stage_file(path, path.relative_to(out).as_posix(), "attachment", settings) for path in card]


def remove_stale_files(output: str, keep: set[str]) -> int:
    """Delete files under `output` that the release being committed does not list (a replaced release's)."""
    removed = 0
    for uri in storage.list_files(output):
        if uri[len(output) :].lstrip("/") not in keep:
            storage.delete(uri)
            removed += 1
    return removed


def write_manifest(output: str, manifest: dict[str, Any], work: Path, settings: TransferSettings) -> None:
    """The manifest, last, through the same verified upload as the data."""
    path = work / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    with Uploader(output, settings) as uploader:
        uploader.put(stage_file(path, MANIFEST, "manifest", settings))
