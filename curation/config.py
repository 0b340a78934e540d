"""BuildConfig: every knob of a build, resolved as defaults < YAML file < overrides.

The resolved config is written next to every build and its hash goes into the release
manifest, so a release can always be traced to the exact parameters that made it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curation.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestConfig(_Section):
    extractor: Literal["resiliparse"] = "resiliparse"
    # Pages above this many bytes are dropped as `too_large` before parsing (hostile input).
    max_record_bytes: int = Field(2_000_000, gt=0)
    # Languages to keep, by resiliparse's bundled detector; empty keeps every language.
    languages: list[str] = ["en"]
    min_language_score: float = Field(0.0, ge=0.0, le=1.0)


class HeuristicsConfig(_Section):
    """Gopher quality / repetition and C4-style rules (Rae et al. 2021; Raffel et al. 2020)."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    max_dup_line_ratio: float = 0.3
    max_dup_line_char_ratio: float = 0.2
    max_top_2gram_char_ratio: float = 0.2
    # C4-style lexicon: a document with more hits than this is dropped as `toxicity`.
    toxic_words: list[str] = ["fuck", "shit", "bastard", "asshole", "bitch"]
    max_toxic_words: int = 0


class GateConfig(_Section):
    documents_suite: str = "expectations/documents.json"
    min_rows: int = 1
    max_rows: int = 10_000_000_000
    min_words: int = 1
    # Languages the published table may hold; None means the ingest allowlist.
    languages: list[str] | None = None


class PublishConfig(_Section):
    enabled: bool = True
    corpus: str = "web-en"


class BuildConfig(_Section):
    build_id: str | None = None
    inputs: list[str] = []
    shard_limit: int | None = Field(None, gt=0)
    work_root: str = "var/work"
    release_root: str = "var/releases"
    state_root: str = "var/state"
    ingest: IngestConfig = IngestConfig()
    heuristics: HeuristicsConfig = HeuristicsConfig()
    gate: GateConfig = GateConfig()
    publish: PublishConfig = PublishConfig()

    @field_validator("build_id")
    @classmethod
    def _safe_build_id(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError(f"build_id {value!r} must be a plain name without '/'")
        return value

    def resolved_build_id(self, when: dt.date | None = None) -> str:
        """The build id, or the ISO week of `when` (today by default), e.g. `2026-W48`."""
        return self.build_id or iso_week_id(when or dt.datetime.now(dt.UTC).date())

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the config: the identity of its parameters."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True)


def iso_week_id(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> BuildConfig:
    """Build a config from defaults, then a YAML file, then overrides.

    Overrides are a nested dict or `dotted.key=value` strings whose values are parsed as YAML
    (`heuristics.min_words=30`, `inputs=[a.warc.gz, b.warc.gz]`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        data = loaded or {}
    if isinstance(overrides, list):
        overrides = parse_dotted(overrides)
    _deep_merge(data, overrides or {})
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config{f' in {path}' if path else ''}:\n{exc}") from exc


def parse_dotted(pairs: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
