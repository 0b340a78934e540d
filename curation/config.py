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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation.errors import ConfigError
from curation.models import ModelRef


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageCandidatesConfig(_Section):
    """Image-text candidates taken from <img> tags at ingest (DataComp-style basic caption rules)."""

    enabled: bool = True
    # DataComp "basic": captions of more than 2 words and more than 5 characters.
    min_caption_words: int = Field(3, ge=0)
    min_caption_chars: int = Field(6, ge=0)
    max_caption_chars: int = Field(1000, gt=0)
    # Caption languages to keep, by the ingest language id (DataComp: English by fastText); empty keeps all.
    caption_languages: list[str] = []
    min_caption_language_score: float = Field(0.0, ge=0.0, le=1.0)
    max_per_page: int = Field(100, gt=0)


class FetchConfig(_Section):
    """The fetch_images stage (img2dataset-like): politeness, limits and the image rules."""

    # Builds run fetch_images after ingest only when enabled (it downloads from the open web).
    enabled: bool = False
    # http: download each image URL. warc: take the image from the crawl itself (image responses
    # in the input WARCs, kept by ingest in {stage}/images/); nothing is downloaded.
    source: Literal["http", "warc"] = "http"
    concurrency: int = Field(64, gt=0)
    per_host_concurrency: int = Field(4, gt=0)
    per_host_rate: float = Field(10.0, gt=0, description="requests per second per host")
    connect_timeout_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(20.0, gt=0, description="one request, headers and body")
    max_bytes: int = Field(10_000_000, gt=0)
    max_redirects: int = Field(3, ge=0)
    retries: int = Field(2, ge=0, description="extra attempts on timeouts, connection errors, 429 and 5xx")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles per attempt, plus jitter")
    user_agent: str = "curation-image-fetcher/1.0"
    # DataComp basic rules: shorter side >= 200 px, aspect ratio <= 3.
    min_image_size: int = Field(200, ge=0)
    max_aspect_ratio: float = Field(3.0, ge=1.0)
    # Decompression-bomb guard, checked from the image header before any pixel is decoded.
    max_pixels: int = Field(89_478_485, gt=0)
    resize_max_side: int | None = Field(None, gt=0)
    resize_format: Literal["jpeg", "webp", "png"] = "jpeg"
    resize_quality: int = Field(90, ge=1, le=100)
    batch_rows: int = Field(2000, gt=0)
    # Loopback / private / link-local / reserved addresses are refused; True only in tests.
    allow_private_addresses: bool = False


class IngestConfig(_Section):
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    # auto: by file name (.warc[.gz], .wet[.gz], .jsonl[.gz|.zst], .parquet), else by sniffing the bytes.
    format: Literal["auto", "warc", "wet", "jsonl", "parquet"] = "auto"
    # Pages above this many bytes are dropped as `too_large` before parsing (hostile input).
    max_record_bytes: int = Field(2_000_000, gt=0)
    # Language id: None = resiliparse's bundled detector (offline). Or a fastText model, e.g. lid.176
    # (https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin) or GlotLID
    # (hf-hub:cis-lmu/glotlid/model.bin); codes are mapped to ISO 639-1 where one exists.
    language_id: ModelRef | None = None
    # Languages to keep; empty keeps every language. DCLM keeps en with fastText score >= 0.65.
    languages: list[str] = ["en"]
    min_language_score: float = Field(0.0, ge=0.0, le=1.0)
    # Trial builds: share of records kept (deterministic by record id; the rest count as `sampled_out`)
    # and share of input files kept when resolving inputs (deterministic by file name).
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)
    shard_sample_rate: float = Field(1.0, gt=0.0, le=1.0)
    # Common Crawl: path listings (warc.paths.gz, wet.paths.gz) name files relative to this base.
    cc_base: str = "s3://commoncrawl/"
    # Public buckets read with unsigned requests (no credentials needed or sent).
    unsigned_s3_buckets: list[str] = ["commoncrawl"]
    images: ImageCandidatesConfig = ImageCandidatesConfig()
    fetch: FetchConfig = FetchConfig()


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
    # Per-language lexicons (ISO 639-1 -> words) used instead of `toxic_words` for documents in that
    # language, e.g. LDNOOBW's lists as C4 used them; single words, matched case- and punctuation-insensitively.
    toxic_words_by_language: dict[str, list[str]] = {}
    # The thresholds below are datatrove's published defaults; None switches a rule off.
    # Gopher repetition (Rae et al. 2021, table A1; datatrove GopherRepetitionFilter).
    max_dup_para_ratio: float | None = 0.3
    max_dup_para_char_ratio: float | None = 0.2
    max_top_3gram_char_ratio: float | None = 0.18
    max_top_4gram_char_ratio: float | None = 0.16
    max_dup_5gram_char_ratio: float | None = 0.15
    max_dup_6gram_char_ratio: float | None = 0.14
    max_dup_7gram_char_ratio: float | None = 0.13
    max_dup_8gram_char_ratio: float | None = 0.12
    max_dup_9gram_char_ratio: float | None = 0.11
    max_dup_10gram_char_ratio: float | None = 0.10
    # C4 (Raffel et al. 2020; datatrove C4QualityFilter): whole-document rules.
    c4_min_sentences: int | None = 5
    c4_drop_lorem_ipsum: bool = True
    c4_drop_curly_bracket: bool = True
    # FineWeb (Penedo et al. 2024; datatrove FineWebQualityFilter).
    fineweb_min_line_punct_ratio: float | None = 0.12
    fineweb_max_short_line_ratio: float | None = 0.67
    fineweb_max_dup_line_char_ratio: float | None = 0.01
    fineweb_max_list_ratio: float | None = 0.3


Severity = Literal["critical", "warning"]


class RatioBand(_Section):
    """Allowed range of a ratio in [0, 1], e.g. the share of rows a stage keeps."""

    min: float = Field(0.0, ge=0.0, le=1.0)
    max: float = Field(1.0, ge=0.0, le=1.0)


class DriftConfig(_Section):
    """Build-over-build drift against the release LATEST points at (skipped when there is none)."""

    enabled: bool = True
    max_kept_rows_change: float = Field(0.5, ge=0.0)  # |kept - previous| / previous
    max_language_mix_shift: float = Field(0.05, ge=0.0, le=1.0)  # total variation distance of language shares
    max_score_mean_shift: float = Field(0.5, ge=0.0)  # |mean - previous mean| / pooled std, per score column
    max_toxicity_rate_change: float = Field(0.05, ge=0.0, le=1.0)  # absolute
    max_dedup_ratio_change: float = Field(0.1, ge=0.0, le=1.0)  # absolute


class NotifyConfig(_Section):
    """Who hears about a gate outcome. Secrets (webhook tokens, SMTP passwords) come from env vars named here."""

    enabled: bool = True  # False when the Airflow notifier (dags/notifiers.py) sends instead
    on: list[Literal["failed", "overridden", "warning"]] = ["failed", "overridden", "warning"]
    log: bool = True
    webhook_url: str | None = None
    webhook_url_env: str | None = None  # e.g. a Slack incoming-webhook URL kept in the environment
    webhook_timeout_s: float = Field(5.0, gt=0)
    email_to: list[str] = []
    email_from: str = "curation@localhost"
    smtp_host: str | None = None
    smtp_port: int = Field(25, gt=0)
    smtp_starttls: bool = False
    smtp_timeout_s: float = Field(10.0, gt=0)
    smtp_user_env: str | None = None
    smtp_password_env: str | None = None


class MetricsConfig(_Section):
    """Gate gauges (pass/fail, kept ratios) to StatsD over UDP and/or the OpenTelemetry meter provider."""

    statsd_host: str | None = None
    statsd_port: int = Field(8125, gt=0)
    prefix: str = "curation"
    otel: bool = True  # no-op unless the process configured an OpenTelemetry MeterProvider


class GateOverride(_Section):
    """Publish despite failed critical checks. Takes effect only with a non-empty reason; recorded in the manifest."""

    reason: str = ""
    by: str | None = None


class GateConfig(_Section):
    documents_suite: str = "expectations/documents.json"
    min_rows: int = 1
    max_rows: int = 10_000_000_000
    min_words: int = 1
    min_text_chars: int = Field(1, ge=0)
    max_text_chars: int = Field(10_000_000, gt=0)
    # Languages the published table may hold; None means the ingest allowlist.
    languages: list[str] | None = None
    # Kept share per stage (rows_out / rows_in): the lower bound catches a stage removing almost everything.
    stage_kept_ratio: RatioBand = RatioBand(min=0.05)
    stage_kept_ratio_by_stage: dict[str, RatioBand] = {}
    # End to end, per input file (records read -> documents kept) and per domain (extracted -> kept).
    source_kept_ratio: RatioBand = RatioBand(min=0.05)
    domain_kept_ratio: RatioBand = RatioBand(min=0.05)
    domain_kept_ratio_by_domain: dict[str, RatioBand] = {}
    domain_min_documents: int = Field(20, ge=1)  # smaller domains are too noisy for the default band
    # Shares of the extracted documents removed as duplicates (reasons dup_*) / as toxic (reason toxicity).
    max_dedup_ratio: float = Field(0.5, ge=0.0, le=1.0)
    max_toxicity_rate: float = Field(0.25, ge=0.0, le=1.0)
    drift: DriftConfig = DriftConfig()
    # Numeric columns profiled (mean, histogram) and drift-checked; None: every numeric column but offsets.
    score_columns: list[str] | None = None
    histogram_bins: int = Field(20, ge=2, le=200)
    validation_batch_rows: int = Field(100_000, gt=0)  # GX validates at most this many rows at a time (memory bound)
    # Severity per check kind (e.g. "drift.kept_rows") or per full check name; overrides the defaults.
    severity: dict[str, Severity] = {}
    notify: NotifyConfig = NotifyConfig()
    metrics: MetricsConfig = MetricsConfig()
    override: GateOverride | None = None
    # Image-text pairs (validated when the build passes pair shards to the gate).
    pairs_suite: str = "expectations/pairs.json"
    pairs_min_rows: int = Field(0, ge=0)
    max_image_side: int = Field(100_000, gt=0)


class PublishConfig(_Section):
    """Release layout and upload (curation/publish.py, reshard.py, webdataset.py, transfer.py)."""

    enabled: bool = True
    corpus: str = "web-en"
    # Documents are resharded into zstd Parquet files of about `shard_bytes`, or of exactly
    # `shard_rows` rows when set. As in Iceberg's compaction, an input shard already laid out as
    # below and within [min_ratio, max_ratio] x shard_bytes is published byte for byte.
    shard_bytes: int = Field(256 * 2**20, gt=0)
    shard_rows: int | None = Field(None, gt=0)
    passthrough_min_ratio: float = Field(0.75, ge=0.0)
    passthrough_max_ratio: float = Field(1.8, ge=1.0)
    # Row groups: at most this many rows and uncompressed bytes (readers load one row group at a time).
    row_group_rows: int = Field(100_000, gt=0)
    row_group_bytes: int = Field(128 * 2**20, gt=0)
    zstd_level: int = Field(3, ge=1, le=22)
    # Image-text pairs: WebDataset tar shards (img2dataset's default: 10k samples per shard).
    wds_shard_rows: int = Field(10_000, gt=0)
    wds_shard_bytes: int = Field(2**30, gt=0)
    # Decompression-bomb guard on published images, checked from the header (PIL's default limit).
    max_image_pixels: int = Field(89_478_485, gt=0)
    data_card: bool = True
    # Upload: boto3 TransferConfig (multipart), SHA256 checksums sent and verified after upload,
    # whole-file retries with exponential backoff on top of botocore's own request retries.
    multipart_threshold: int = Field(64 * 2**20, ge=5 * 2**20)
    multipart_chunksize: int = Field(16 * 2**20, ge=5 * 2**20)
    max_concurrency: int = Field(8, gt=0, description="parts of one file in flight")
    file_concurrency: int = Field(4, gt=0, description="files in flight")
    upload_attempts: int = Field(5, gt=0, description="whole-file attempts")
    request_attempts: int = Field(5, gt=0, description="botocore attempts per request (standard retry mode)")
    retry_backoff_s: float = Field(1.0, ge=0.0, description="first retry delay; doubles per attempt, plus jitter")


class ClipConfig(_Section):
    """CLIP scoring of image-text pairs with open_clip (curation/scoring/clip.py).

    The model is one of: an open_clip architecture + pretrained tag (`ViT-B-32` /
    `laion2b_s34b_b79k`, the LAION-style 0.28 cosine threshold); an `hf-hub:` id
    (`hf-hub:apple/DFN2B-CLIP-ViT-L-14`, `hf-hub:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K`);
    or `checkpoint`, a local / s3:// file checked against its sha256: what
    `curation train-filter-network` writes, or a plain open_clip state dict, built as `model`
    with the preprocessing of the tag `pretrained` names (e.g. ViT-L-14-quickgelu / dfn2b).
    """

    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    checkpoint: ModelRef | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Autocast dtype on CUDA; CPU always computes in fp32.
    precision: Literal["fp32", "fp16", "bf16"] = "bf16"
    batch_size: int = Field(256, gt=0)
    # Threads decoding the next batches while the model runs the current one (0: decode inline).
    decode_workers: int = Field(4, ge=0)
    # "threads" work everywhere (also in daemonic Celery workers); "processes" (a torch DataLoader)
    # keep Python-heavy decoding off the GIL of the thread that feeds a fast GPU.
    decode_backend: Literal["threads", "processes"] = "threads"
    # torch intra-op threads when scoring on CPU (None: torch's default, one per core). Set it to
    # cores / concurrent tasks where several tasks share a machine: oversubscribed threads crawl.
    cpu_threads: int | None = Field(None, gt=0)
    # Images with more pixels (read from the header, before decoding) are dropped as image_too_large.
    max_image_pixels: int = Field(89_478_485, gt=0)
    # Decode JPEGs at a reduced DCT scale when >= 2x the model input: a 1024x768 photo for a
    # 224 px model decodes 2x faster, pixels change by about a grey level.
    jpeg_draft: bool = True
    # Head on CLIP image embeddings that gives nsfw_score (scoring/image_safety.py); None: no score.
    nsfw_head: ModelRef | None = None


class DedupConfig(_Section):
    """Exact, URL, MinHash LSH near-duplicate, cross-build and image dedup (curation/dedup/).

    MinHash defaults are FineWeb's: word 5-grams, 14 bands x 8 rows, 64-bit hashes.
    """

    exact: bool = True
    url: bool = True
    near: bool = True
    ngram: int = Field(5, ge=1)
    bands: int = Field(14, ge=1)
    rows_per_band: int = Field(8, ge=1)
    hash_bits: Literal[32, 64] = 64
    seed: int = Field(1, ge=0)
    # Documents in one LSH bucket count as near-duplicates only if their Jaccard similarity,
    # estimated from the whole signature, reaches this. None: every bucket collision (FineWeb).
    threshold: float | None = Field(0.8, gt=0.0, le=1.0)
    # The similarity estimate: one-permutation hashing into this many bins (16 bits each).
    sketch_bins: Literal[64, 128, 256, 512, 1024] = 256
    # LSH tasks = band_groups x band_partitions; each holds its bands' rows whose hash % partitions
    # is its partition, and reads the doc_id and sketch columns once.
    band_groups: int = Field(1, ge=1)
    band_partitions: int = Field(2, ge=1)
    # Drop documents that near-duplicate anything already published ({state_root}/dedup-index).
    cross_build: bool = True
    # Image-text pairs: images above this many pixels are not decoded (decompression bombs).
    image_max_pixels: int = Field(89_478_485, gt=0)
    # Perceptual hashes (64-bit imagehash.phash) within this Hamming distance are duplicates.
    image_phash_distance: int = Field(4, ge=0, le=16)
    # SemDeDup on CLIP image embeddings: k-means, then drop neighbours with cosine > 1 - eps in a cluster.
    semdedup: bool = False
    semdedup_eps: float = Field(0.05, gt=0.0, lt=1.0)
    semdedup_clusters: int = Field(100, ge=1)


class FastTextModelConfig(_Section):
    """A fastText classifier (curation/scoring/fasttext_classifier.py): the model, and which label is the score.

    Public checkpoints load through the same ModelRef path, e.g. DCLM's quality classifier:
    `{model: {uri: "hf-hub:mlfoundations/fasttext-oh-eli5/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin"},
    label: __label__hq, preprocess: newlines}`; Dolma's Jigsaw taggers (labels `__label__toxic` /
    `__label__nsfw`, preprocess: newlines) from a copy on S3 (see the module doc).
    """

    model: ModelRef
    # The label whose probability becomes the score, e.g. __label__hq (DCLM), __label__toxic (Dolma).
    label: str = Field(pattern=r"^__label__\S+$")
    # normalize: lower-case, punctuation removed, whitespace collapsed (models `curation train-classifier`
    # writes, DCLM / Ultra-FineWeb style); newlines: only newlines become spaces (how DCLM and Dolma score).
    preprocess: Literal["normalize", "newlines"] = "normalize"


class ScoringConfig(_Section):
    """Document scores (curation/scoring/documents.py): fastText quality and toxicity, PII (Dolma-style)."""

    quality: FastTextModelConfig | None = None
    toxicity: FastTextModelConfig | None = None
    # Replace e-mails, phone numbers and IPs in the text by |||EMAIL_ADDRESS||| etc. (always counted).
    pii_mask: bool = True
    batch_rows: int = Field(4096, gt=0)


class SelectRule(_Section):
    """Keep rows whose `column` is on the `keep` side of a cut: an absolute threshold, or the value
    that keeps `top_fraction` of the rows reaching this rule, computed over the whole build."""

    column: str
    keep: Literal["above", "below"]
    threshold: float | None = None
    top_fraction: float | None = Field(None, gt=0.0, le=1.0)
    reason: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # Rows where the column is null (e.g. a model that could not score them).
    if_missing: Literal["keep", "drop"] = "keep"

    @model_validator(mode="after")
    def _one_cut(self) -> SelectRule:
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError(f"select rule on {self.column!r}: set exactly one of threshold and top_fraction")
        return self


class SelectBudget(_Section):
    """Budget-aware cut ("Scaling Laws for Data Filtering", Goyal et al. 2024): keep the best-ranked
    rows until the pool, repeated at most `max_repetitions` times, covers the training budget."""

    unit: Literal["tokens", "samples"] = "tokens"
    amount: float = Field(gt=0)
    max_repetitions: float = Field(4.0, ge=1.0)
    rank_by: str = "quality_score"
    # Tokens of a row = tokens_column * tokens_per_unit (an estimate from word counts by default).
    tokens_column: str = "n_words"
    tokens_per_unit: float = Field(1.3, gt=0)


class SelectConfig(_Section):
    """Selection (curation/select.py): rules applied in order, then the optional budget cut."""

    enabled: bool = True
    id_column: str = "doc_id"
    rules: list[SelectRule] = [
        # Dolma v1 removed text its Jigsaw toxicity taggers scored above 0.4.
        SelectRule(column="toxicity_score", keep="below", threshold=0.4, reason="toxicity"),
        # Dolma: documents with more than 5 PII items are removed (fewer are masked).
        SelectRule(column="pii_count", keep="below", threshold=5, reason="pii"),
        # DCLM keeps the top 10% by its fastText quality score.
        SelectRule(column="quality_score", keep="above", top_fraction=0.1, reason="quality"),
    ]
    budget: SelectBudget | None = None


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
    clip: ClipConfig = ClipConfig()
    dedup: DedupConfig = DedupConfig()
    scoring: ScoringConfig = ScoringConfig()
    select: SelectConfig = SelectConfig()
    # Image-text pairs (when images are fetched): DataComp's CLIP-score top 30%, and the NSFW head's
    # score when one is configured (a rule over a column with no values is inactive).
    select_pairs: SelectConfig = SelectConfig(
        id_column="pair_id",
        rules=[
            SelectRule(column="nsfw_score", keep="below", threshold=0.5, reason="nsfw"),
            SelectRule(column="clip_score", keep="above", top_fraction=0.3, reason="clip_score"),
        ],
    )

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
