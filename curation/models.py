"""Model artifacts by URI: local path, file://, s3:// or hf-hub:, checked against a sha256.

Every model the pipeline uses (fastText classifiers, language id, CLIP checkpoints) is named in
the config by a `ModelRef`. `resolve` turns it into a local file, downloading S3 objects into a
per-process cache and verifying the checksum when one is configured; loaders cache the loaded
model per process, so each model is read once however many shards a worker scores.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from curation import storage
from curation.errors import ConfigError

_CACHE_DIR = Path(os.environ.get("CURATION_MODEL_CACHE", Path(tempfile.gettempdir()) / "curation-models"))


class ModelRef(BaseModel):
    """Where a model lives and what its bytes must hash to."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="local path, file://, s3://bucket/key, or hf-hub:org/repo/filename")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="checked on load when set")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(ref: ModelRef) -> Path:
    """A local path holding the model's bytes, verified against `ref.sha256` when set."""
    uri = ref.uri
    if storage.is_s3(uri):
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        local = _CACHE_DIR / f"{key}-{storage.name(uri)}"
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            storage.write_bytes(str(local), storage.read_bytes(uri))
    elif uri.startswith("hf-hub:"):
        local = _hf_hub_file(uri.removeprefix("hf-hub:"))
    else:
        local = Path(uri.removeprefix("file://"))
        if not local.is_file():
            raise ConfigError(f"model file {uri} does not exist; check the model URI in the config")
    if ref.sha256:
        actual = sha256_file(local)
        if actual != ref.sha256:
            raise ConfigError(
                f"model {uri} has sha256 {actual}, but the config expects {ref.sha256}: "
                "the file is corrupt or a different version; fix the file or the configured checksum"
            )
    return local


def _hf_hub_file(spec: str) -> Path:
    """`org/repo/path/in/repo` from the Hugging Face Hub (honours HF_HUB_OFFLINE and its cache)."""
    parts = spec.split("/")
    if len(parts) < 3:
        raise ConfigError(f"hf-hub model URI must be hf-hub:org/repo/filename, got hf-hub:{spec}")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id="/".join(parts[:2]), filename="/".join(parts[2:])))
    except Exception as exc:  # offline, missing file, no network: all mean the model is unavailable
        raise ConfigError(f"cannot fetch hf-hub:{spec}: {exc}") from exc
