"""Input resolution: files, globs, prefixes and Common Crawl path listings -> one shard per file.

A Common Crawl snapshot publishes listings of its files, one path per line relative to the
bucket root, e.g. for CC-MAIN-2024-22:

    s3://commoncrawl/crawl-data/CC-MAIN-2024-22/warc.paths.gz   (WARC: HTML + images)
    s3://commoncrawl/crawl-data/CC-MAIN-2024-22/wet.paths.gz    (WET: extracted text)

An input ending in `.paths.gz` / `.paths` (an S3 object, an https URL or a local copy) expands
to the files it lists, each joined to `ingest.cc_base` (default `s3://commoncrawl/`; the same
files are on https://data.commoncrawl.org/, or point the base at a local mirror). The shorthand
`cc:CC-MAIN-2024-22/wet` means `{cc_base}crawl-data/CC-MAIN-2024-22/wet.paths.gz`. The public
bucket is read with unsigned requests (`ingest.unsigned_s3_buckets`).

Trial builds: `ingest.shard_sample_rate` keeps a deterministic share of the files (by a hash of
the file name, so the same files every time), then `shard_limit` keeps the first N.
"""

from __future__ import annotations

import gzip

import xxhash

from curation import storage
from curation.config import BuildConfig
from curation.errors import BadInputError, ConfigError
from curation.ingest.readers import local_input

LISTING_SUFFIXES = (".paths.gz", ".paths")


def is_listing(uri: str) -> bool:
    return uri.endswith(LISTING_SUFFIXES)


def expand_shorthand(spec: str, cc_base: str) -> str:
    """`cc:CC-MAIN-2024-22/warc` -> `{cc_base}crawl-data/CC-MAIN-2024-22/warc.paths.gz`; other inputs unchanged."""
    if not spec.startswith("cc:"):
        return spec
    crawl, _, kind = spec.removeprefix("cc:").partition("/")
    if not crawl.startswith("CC-MAIN-") or kind not in ("warc", "wet", "wat"):
        raise ConfigError(f"input {spec!r}: expected cc:CC-MAIN-YYYY-WW/warc (or /wet, /wat)")
    return storage.join(cc_base, "crawl-data", crawl, f"{kind}.paths.gz")


def read_listing(uri: str, cfg: BuildConfig) -> list[str]:
    """The files a path listing names, as URIs under `ingest.cc_base`."""
    with local_input(uri, cfg.ingest.unsigned_s3_buckets) as path:
        raw = path.read_bytes()
    try:
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        lines = text.decode("utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BadInputError(f"path listing {uri} is not readable ({exc}); re-fetch it") from exc
    paths = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not paths:
        raise BadInputError(f"path listing {uri} lists no files")
    return [p if "://" in p or p.startswith("/") else storage.join(cfg.ingest.cc_base, p) for p in paths]


def _sampled(uri: str, rate: float) -> bool:
    return xxhash.xxh64_intdigest(storage.name(uri).encode()) < rate * 2**64


def resolve_inputs(patterns: list[str], cfg: BuildConfig) -> list[str]:
    """Input URIs (files, globs, `prefix/`, listings, `cc:` shorthands) -> the shard files, in order."""
    files: list[str] = []
    for pattern in patterns:
        pattern = expand_shorthand(pattern, cfg.ingest.cc_base)
        files += read_listing(pattern, cfg) if is_listing(pattern) else storage.expand_inputs([pattern])
    files = list(dict.fromkeys(files))
    if cfg.ingest.shard_sample_rate < 1.0:
        files = [f for f in files if _sampled(f, cfg.ingest.shard_sample_rate)]
    if cfg.shard_limit:
        files = files[: cfg.shard_limit]
    return files
