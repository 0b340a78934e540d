"""Releases of a corpus: read, verify, list, roll back; LATEST; revision ids.

    {release_root}/{corpus}/{release_id}/manifest.json    the release exists iff this exists
    {release_root}/{corpus}/{release_id}/WITHDRAWN.json   tombstone of a release replaced by a takedown revision
    {release_root}/{corpus}/LATEST                        the release id training jobs should read
    {release_root}/{corpus}/_events/*.json                one record per rollback and takedown (audit)

A release id is a build id, or `{build_id}.r{N}` for the N-th revision of that build (a takedown
rewrites a release into a new revision). Ids order by build id, then revision.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from curation import layout, storage
from curation.config import BuildConfig
from curation.errors import BadInputError, ConfigError

MANIFEST = "manifest.json"
WITHDRAWN = "WITHDRAWN.json"
_REVISION = re.compile(r"^(?P<base>.+)\.r(?P<rev>\d+)$")


def parse_release_id(release_id: str) -> tuple[str, int]:
    """`2026-W48.r2` -> (`2026-W48`, 2); a plain build id is revision 0."""
    match = _REVISION.match(release_id)
    return (match["base"], int(match["rev"])) if match else (release_id, 0)


def revision_id(base: str, revision: int) -> str:
    return base if revision == 0 else f"{base}.r{revision}"


def corpus_root(cfg: BuildConfig) -> str:
    return storage.join(cfg.release_root, cfg.publish.corpus)


def manifest_uri(cfg: BuildConfig, release_id: str) -> str:
    return storage.join(layout.release_uri(cfg, release_id), MANIFEST)


# --- LATEST ------------------------------------------------------------------------------------


def latest(cfg: BuildConfig) -> str | None:
    uri = layout.latest_uri(cfg)
    return storage.read_bytes(uri).decode().strip() if storage.exists(uri) else None


def set_latest(cfg: BuildConfig, release_id: str) -> None:
    """Point LATEST at `release_id`, which must exist (its manifest is there)."""
    if not storage.exists(manifest_uri(cfg, release_id)):
        raise ConfigError(f"cannot point LATEST at {release_id}: it has no manifest, so it is not a release")
    storage.write_bytes(layout.latest_uri(cfg), (release_id + "\n").encode())


def move_latest_forward(cfg: BuildConfig, release_id: str) -> bool:
    """Point LATEST at `release_id` unless it points at a newer release (a backfill never moves it back)."""
    current = latest(cfg)
    if current is not None and parse_release_id(release_id) < parse_release_id(current):
        return False
    set_latest(cfg, release_id)
    return True


# --- manifests ---------------------------------------------------------------------------------


def read_manifest(cfg: BuildConfig, build_id: str | None = None) -> dict[str, Any]:
    """The manifest of release `build_id`, or of the release LATEST points at."""
    if build_id is None:
        build_id = latest(cfg)
        if build_id is None:
            raise ConfigError(f"{layout.latest_uri(cfg)} does not exist: nothing has been published to this corpus yet")
    uri = manifest_uri(cfg, build_id)
    try:
        return storage.read_json(uri)
    except FileNotFoundError as exc:
        raise ConfigError(f"release {build_id} does not exist: no {uri}") from exc


def content_id(manifest: dict[str, Any]) -> str:
    """Identity of a release's data: its config and the SHA256 of every data file."""
    data = [*manifest.get("files", []), *(manifest.get("pairs") or {}).get("files", [])]
    return hashlib.sha256((manifest["config_hash"] + "".join(f["sha256"] for f in data)).encode()).hexdigest()


def manifest_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file a manifest lists: documents, pairs and attachments."""
    pairs = manifest.get("pairs") or {}
    return [*manifest.get("files", []), *pairs.get("files", []), *manifest.get("attachments", [])]


def _rows_in(entry: dict[str, Any], data: bytes) -> int | None:
    kind = entry.get("kind", "parquet")
    if kind == "parquet":
        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    if kind == "webdataset":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return len({m.name.rsplit("/", 1)[-1].split(".", 1)[0] for m in tar})
    return None


def verify_release(cfg: BuildConfig, build_id: str | None = None) -> dict[str, Any]:
    """Re-read every file of a release and check it against the manifest (bytes, sha256, rows).

    Raises BadInputError naming the first file that does not match; returns the manifest.
    """
    manifest = read_manifest(cfg, build_id)
    release = layout.release_uri(cfg, manifest["build_id"])
    documents = {id(entry) for entry in manifest.get("files", [])}
    totals = {"documents": 0, "pairs": 0}
    for entry in manifest_files(manifest):
        uri = storage.join(release, entry["path"])
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError as exc:
            raise BadInputError(f"release file {uri} is missing (listed in the manifest)") from exc
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BadInputError(f"release file {uri} does not match its manifest entry (bytes, sha256): {entry}")
        if "rows" in entry:
            rows = _rows_in(entry, data)
            if rows != entry["rows"]:
                raise BadInputError(f"release file {uri} holds {rows} rows, its manifest entry says {entry['rows']}")
            if id(entry) in documents:
                totals["documents"] += rows
            elif entry.get("kind") == "webdataset":
                totals["pairs"] += rows
    if totals["documents"] != manifest["rows"]:
        raise BadInputError(f"release {release}: files hold {totals['documents']} rows, manifest says {manifest['rows']}")
    pairs = manifest.get("pairs") or {}
    if pairs and totals["pairs"] != pairs["rows"]:
        raise BadInputError(f"release {release}: tar shards hold {totals['pairs']} samples, manifest says {pairs['rows']}")
    return manifest


# --- listing and rollback ----------------------------------------------------------------------


@dataclass
class ReleaseInfo:
    release_id: str
    state: str  # "live" or "withdrawn"
    latest: bool
    manifest: dict[str, Any] | None = None
    withdrawn: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest or {}
        return {
            "release_id": self.release_id,
            "state": self.state,
            "latest": self.latest,
            "rows": m.get("rows"),
            "pairs": (m.get("pairs") or {}).get("rows"),
            "files": len(manifest_files(m)) if m else None,
            "bytes": m.get("bytes"),
            "created_at": m.get("created_at"),
            "parent": m.get("parent"),
            "gate_passed": (m.get("gate") or {}).get("passed"),
            "override": bool((m.get("gate") or {}).get("override")),
            "withdrawn": self.withdrawn,
        }


def list_releases(cfg: BuildConfig) -> list[ReleaseInfo]:
    """Every release of the corpus, live or withdrawn, oldest first."""
    root = corpus_root(cfg)
    current = latest(cfg)
    found: dict[str, set[str]] = {}
    for uri in storage.list_files(root):
        parts = uri[len(root) :].strip("/").split("/")
        if len(parts) == 2 and parts[1] in (MANIFEST, WITHDRAWN):
            found.setdefault(parts[0], set()).add(parts[1])
    out = []
    for release_id in sorted(found, key=parse_release_id):
        base = layout.release_uri(cfg, release_id)
        if WITHDRAWN in found[release_id]:
            out.append(ReleaseInfo(release_id, "withdrawn", False, withdrawn=storage.read_json(storage.join(base, WITHDRAWN))))
        else:
            manifest = storage.read_json(storage.join(base, MANIFEST))
            out.append(ReleaseInfo(release_id, "live", release_id == current, manifest=manifest))
    return out


def record_event(cfg: BuildConfig, action: str, details: dict[str, Any]) -> str:
    """Write one audit record under `{corpus}/_events/` (one object per event: no append races)."""
    now = dt.datetime.now(dt.UTC)
    uri = storage.join(corpus_root(cfg), "_events", f"{now:%Y%m%dT%H%M%S.%fZ}-{action}.json")
    storage.write_json(uri, {"action": action, "at": now.isoformat(), "by": _user(), **details})
    return uri


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def rollback(cfg: BuildConfig, to: str | None = None, reason: str = "") -> tuple[str, str]:
    """Move LATEST back to `to` (default: the newest live release older than LATEST); returns (from, to).

    The target must be live (not withdrawn by a takedown) and every file of it must be present
    with the size its manifest says, so LATEST never points at a broken release.
    """
    current = latest(cfg)
    if current is None:
        raise ConfigError("nothing to roll back: LATEST does not exist")
    live = [r for r in list_releases(cfg) if r.state == "live"]
    if to is None:
        older = [r.release_id for r in live if parse_release_id(r.release_id) < parse_release_id(current)]
        if not older:
            raise ConfigError(f"no live release older than {current} to roll back to")
        to = older[-1]
    target = next((r for r in live if r.release_id == to), None)
    if target is None:
        withdrawn = any(r.release_id == to for r in list_releases(cfg))
        why = "it was withdrawn by a takedown" if withdrawn else "it does not exist"
        raise ConfigError(f"cannot roll back to {to}: {why}")
    if to == current:
        raise ConfigError(f"LATEST already points at {to}")
    release = layout.release_uri(cfg, to)
    assert target.manifest is not None
    for entry in manifest_files(target.manifest):
        uri = storage.join(release, entry["path"])
        if not storage.exists(uri) or storage.size(uri) != entry["bytes"]:
            raise BadInputError(f"cannot roll back to {to}: {uri} is missing or has the wrong size")
    set_latest(cfg, to)
    record_event(cfg, "rollback", {"from": current, "to": to, "reason": reason})
    return current, to
