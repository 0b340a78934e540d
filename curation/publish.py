"""Publish a gated build: Parquet shards, gate report and config, then `manifest.json`, then LATEST.

The release exists iff its manifest exists: the manifest is written after every data file, and
LATEST moves only after the manifest. Rerunning with identical content is a no-op; different
content for an existing release is refused unless `force` is set.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation import layout, storage
from curation.config import BuildConfig
from curation.errors import BadInputError, ConfigError, GateFailure
from curation.gates import GateReport
from curation.schema import SCORED_DOCUMENTS, describe
from curation.stats import StageStats

STAGE = "publish"
MANIFEST = "manifest.json"


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


def publish(inputs: list[str], output: str, cfg: BuildConfig, build_id: str, gate_report: str, force: bool = False) -> StageStats:
    """Publish the kept shards `inputs` as release `output` (= layout.release_uri(cfg, build_id))."""
    started = time.monotonic()
    report = GateReport.from_dict(storage.read_json(gate_report))
    if not report.passed:
        raise GateFailure(f"refusing to publish {build_id}: its gate report failed\n{report.failure_message()}", gate_report)

    files: list[dict[str, Any]] = []
    payloads: list[tuple[str, bytes]] = []
    for index, uri in enumerate(inputs):
        data = storage.read_bytes(uri)
        path = f"data/part-{index:05d}.parquet"
        files.append(
            {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "rows": storage.parquet_rows(uri)}
        )
        payloads.append((path, data))
    # The release's identity: its data and the config that made it.
    content_id = hashlib.sha256((cfg.config_hash() + "".join(f["sha256"] for f in files)).encode()).hexdigest()

    manifest_uri = storage.join(output, MANIFEST)
    stats = StageStats(stage=STAGE, shard=build_id, outputs=[manifest_uri])
    stats.rows_in = stats.rows_out = sum(f["rows"] for f in files)
    if storage.exists(manifest_uri):
        existing = storage.read_json(manifest_uri)
        if existing.get("content_id") == content_id:
            stats.seconds = time.monotonic() - started
            return stats  # identical release already published: nothing to do
        if not force:
            raise ConfigError(f"release {output} already exists with different content; pass force to replace it")
        storage.delete(manifest_uri)  # unpublish first, so a crash below leaves no stale manifest

    for path, data in payloads:
        storage.write_bytes(storage.join(output, path), data)
        stats.bytes_out += len(data)
    storage.write_json(storage.join(output, "gate_report.json"), report.to_dict())
    storage.write_bytes(storage.join(output, "config.yaml"), cfg.to_yaml().encode())

    manifest = {
        "corpus": cfg.publish.corpus,
        "build_id": build_id,
        "content_id": content_id,
        "rows": stats.rows_out,
        "files": files,
        "schema": describe(SCORED_DOCUMENTS),
        "config_hash": cfg.config_hash(),
        "code_version": code_version(),
        "inputs": sorted(cfg.inputs),
        "funnel": report.funnel,
        "gate": {"passed": report.passed, "report": "gate_report.json", "work_report": gate_report},
    }
    storage.write_json(manifest_uri, manifest)
    _move_latest(cfg, build_id)
    stats.seconds = time.monotonic() - started
    return stats


def _move_latest(cfg: BuildConfig, build_id: str) -> None:
    """Point LATEST at `build_id` unless it already points at a newer build (backfills don't regress it)."""
    latest = layout.latest_uri(cfg)
    current = storage.read_bytes(latest).decode().strip() if storage.exists(latest) else ""
    if build_id >= current:
        storage.write_bytes(latest, (build_id + "\n").encode())


def read_manifest(cfg: BuildConfig, build_id: str | None = None) -> dict[str, Any]:
    """The manifest of `build_id`, or of the release LATEST points at."""
    if build_id is None:
        build_id = storage.read_bytes(layout.latest_uri(cfg)).decode().strip()
    return storage.read_json(storage.join(layout.release_uri(cfg, build_id), MANIFEST))


def verify_release(cfg: BuildConfig, build_id: str | None = None) -> dict[str, Any]:
    """Re-read every file of a release and check it against the manifest (bytes, sha256, rows).

    Raises BadInputError naming the first file that does not match; returns the manifest.
    """
    manifest = read_manifest(cfg, build_id)
    release = layout.release_uri(cfg, manifest["build_id"])
    rows = 0
    for entry in manifest["files"]:
        uri = storage.join(release, entry["path"])
        data = storage.read_bytes(uri)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BadInputError(f"release file {uri} does not match its manifest entry (bytes, sha256): {entry}")
        file_rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if file_rows != entry["rows"]:
            raise BadInputError(f"release file {uri} holds {file_rows} rows, its manifest entry says {entry['rows']}")
        rows += file_rows
    if rows != manifest["rows"]:
        raise BadInputError(f"release {release}: files hold {rows} rows, manifest says {manifest['rows']}")
    return manifest
