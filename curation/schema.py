"""Arrow schemas of every table the pipeline writes, with a doc string per column.

One flat schema per table (DataComp style): stable ids, provenance, then one column per signal.
Stages add signal columns to `DOCUMENTS` by name; `conform` checks a table against a schema.
"""

from __future__ import annotations

import pyarrow as pa

from curation.errors import ConfigError


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


DOCUMENTS = pa.schema(
    [
        _field("doc_id", pa.string(), "32 hex chars: xxh128 of the WARC record id (stable across reruns)", False),
        _field("url", pa.string(), "WARC-Target-URI of the page", False),
        _field("domain", pa.string(), "host part of the URL, lower case"),
        _field("warc_record_id", pa.string(), "WARC-Record-ID of the response record"),
        _field("fetch_time", pa.timestamp("us", tz="UTC"), "WARC-Date of the response record"),
        _field("source_uri", pa.string(), "input file the record came from"),
        _field("source_offset", pa.int64(), "record offset in the input file: byte (WARC, WET), line (JSONL) or row (Parquet)"),
        _field("title", pa.string(), "HTML <title>, if any"),
        _field("text", pa.string(), "main text extracted from the HTML", False),
        _field("language", pa.string(), "ISO 639-1 code from the language detector, or 'unknown'"),
        _field("language_score", pa.float32(), "detector confidence in [0, 1] (1 - rank/1200 for resiliparse)"),
        _field("n_words", pa.int32(), "whitespace-separated words in text"),
        _field("text_hash", pa.string(), "32 hex chars: xxh128 of the normalized text (exact dedup key)"),
    ]
)

# Image-text pairs: one row per <img> with a usable caption, written by ingest next to each documents
# shard ({stage}/pairs/{shard}.parquet); fetch_images fills the image columns and writes every row
# with its `status` (img2dataset style): downstream stages keep the rows whose status is "ok".
PAIRS = pa.schema(
    [
        _field("pair_id", pa.string(), "32 hex chars: xxh128 of page URL + image URL (stable across reruns)", False),
        _field("doc_id", pa.string(), "doc_id of the page the <img> is on"),
        _field("page_url", pa.string(), "URL of the page", False),
        _field("image_url", pa.string(), "absolute http(s) image URL: src resolved against <base> and the page URL", False),
        _field("caption", pa.string(), "the caption used: alt text, else the title attribute, whitespace collapsed", False),
        _field("alt", pa.string(), "alt attribute as found (null when absent)"),
        _field("img_title", pa.string(), "title attribute as found (null when absent)"),
        _field("width", pa.int32(), "width attribute of the <img> in pixels, when a number"),
        _field("height", pa.int32(), "height attribute of the <img> in pixels, when a number"),
        _field("caption_language", pa.string(), "caption language (ISO 639-1 if any); set when images.caption_languages is"),
        _field("caption_language_score", pa.float32(), "language id confidence in [0, 1]"),
        _field("page_title", pa.string(), "HTML <title> of the page"),
        _field("warc_record_id", pa.string(), "WARC-Record-ID of the page's response record"),
        _field("fetch_time", pa.timestamp("us", tz="UTC"), "when the page was crawled (WARC-Date)"),
        _field("source_uri", pa.string(), "input file the page came from"),
        _field("source_offset", pa.int64(), "offset of the page record in the input file"),
        _field("status", pa.string(), "fetch_images: ok, or why not (timeout, http_error, too_small, ...); null before fetching"),
        _field("error", pa.string(), "fetch_images: what went wrong, for humans; null when ok"),
        _field("image", pa.binary(), "fetch_images: image bytes (resized and re-encoded if configured); null unless ok"),
        _field("image_sha256", pa.string(), "fetch_images: sha256 of the downloaded bytes (before any resize)"),
        _field("image_format", pa.string(), "fetch_images: format of the stored bytes (JPEG, PNG, WEBP, ...)"),
        _field("image_width", pa.int32(), "fetch_images: width of the stored image"),
        _field("image_height", pa.int32(), "fetch_images: height of the stored image"),
        _field("original_width", pa.int32(), "fetch_images: width of the downloaded image"),
        _field("original_height", pa.int32(), "fetch_images: height of the downloaded image"),
        _field("http_status", pa.int32(), "fetch_images: HTTP status of the last response"),
        _field("attempts", pa.int16(), "fetch_images: requests made for this URL, retries and redirects included"),
    ]
)

# Image responses found in the crawl itself, kept by ingest when `ingest.fetch.source` is "warc"
# ({stage}/images/{shard}.parquet); fetch_images takes pairs' images from them instead of the web.
CRAWL_IMAGES = pa.schema(
    [
        _field("image_url", pa.string(), "WARC-Target-URI of the image response", False),
        _field("content_type", pa.string(), "HTTP Content-Type of the response"),
        _field("image", pa.binary(), "the response body as crawled", False),
        _field("warc_record_id", pa.string(), "WARC-Record-ID of the response"),
        _field("source_uri", pa.string(), "input file"),
        _field("source_offset", pa.int64(), "offset of the record in the input file"),
    ]
)

# Signal columns the heuristic filter stage appends to DOCUMENTS (one column per score).
HEURISTIC_SIGNALS = pa.schema(
    [
        _field("mean_word_length", pa.float32(), "Gopher: mean characters per word"),
        _field("symbol_word_ratio", pa.float32(), "Gopher: ('#' + '...') per word"),
        _field("alpha_words_ratio", pa.float32(), "Gopher: share of words with an alphabetic character"),
        _field("stop_words", pa.int32(), "Gopher: English stop words present"),
        _field("bullet_lines_ratio", pa.float32(), "Gopher: share of lines starting with a bullet"),
        _field("ellipsis_lines_ratio", pa.float32(), "Gopher: share of lines ending with an ellipsis"),
        _field("dup_line_ratio", pa.float32(), "Gopher repetition: share of lines that repeat an earlier line"),
        _field("dup_line_char_ratio", pa.float32(), "Gopher repetition: share of characters in repeated lines"),
        _field("top_2gram_char_ratio", pa.float32(), "Gopher repetition: characters in the most common word 2-gram"),
        _field("toxic_words", pa.int32(), "C4-style lexicon hits"),
        _field("dup_para_ratio", pa.float32(), "Gopher repetition: share of paragraphs that repeat an earlier one"),
        _field("dup_para_char_ratio", pa.float32(), "Gopher repetition: characters in repeated paragraphs over text length"),
        _field("top_3gram_char_ratio", pa.float32(), "Gopher repetition: characters in the most common word 3-gram"),
        _field("top_4gram_char_ratio", pa.float32(), "Gopher repetition: characters in the most common word 4-gram"),
        *[
            _field(f"dup_{n}gram_char_ratio", pa.float32(), f"Gopher repetition: characters in repeated word {n}-grams")
            for n in range(5, 11)
        ],
        _field("c4_sentences", pa.int32(), "C4: sentences in the lines C4 keeps"),
        _field("c4_lorem_ipsum", pa.bool_(), "C4: a kept-candidate line contains 'lorem ipsum'"),
        _field("c4_curly_bracket", pa.bool_(), "C4: a kept-candidate line contains '{'"),
        _field("c4_javascript_lines", pa.int32(), "C4: lines removed for mentioning javascript"),
        _field("c4_policy_lines", pa.int32(), "C4: lines removed for cookie / terms-of-use / privacy-policy phrases"),
        _field("c4_kept_lines_ratio", pa.float32(), "C4: share of non-empty lines the C4 line filter keeps"),
        _field("fineweb_line_punct_ratio", pa.float32(), "FineWeb: share of lines ending in terminal punctuation"),
        _field("fineweb_short_line_ratio", pa.float32(), "FineWeb: share of lines of at most 30 characters"),
        _field("fineweb_dup_line_char_ratio", pa.float32(), "FineWeb: characters in repeated lines over non-newline characters"),
        _field("fineweb_list_ratio", pa.float32(), "FineWeb: newlines per word"),
    ]
)

SCORED_DOCUMENTS = pa.schema(list(DOCUMENTS) + list(HEURISTIC_SIGNALS))

# Columns the document scoring stage appends (curation/scoring/documents.py): fastText classifier
# probabilities (null when that model is not configured) and PII counts (Dolma-style regexes).
TEXT_SCORES = pa.schema(
    [
        _field("quality_score", pa.float32(), "fastText quality classifier: probability of the high-quality label"),
        _field("toxicity_score", pa.float32(), "fastText toxicity classifier: probability of the toxic label"),
        _field("pii_emails", pa.int32(), "e-mail addresses found (masked in text when masking is on)"),
        _field("pii_phones", pa.int32(), "phone numbers found (masked in text when masking is on)"),
        _field("pii_ips", pa.int32(), "IP addresses found (masked in text when masking is on)"),
        _field("pii_count", pa.int32(), "pii_emails + pii_phones + pii_ips"),
    ]
)

CLASSIFIED_DOCUMENTS = pa.schema(list(SCORED_DOCUMENTS) + list(TEXT_SCORES))

# Signal columns CLIP scoring appends to the image-text pairs table (curation/scoring/clip.py).
# Null where the image could not be used; the scoring stage drops those rows with the reason.
PAIR_SCORES = pa.schema(
    [
        _field("clip_score", pa.float32(), "cosine of the L2-normalized CLIP image and caption embeddings, in [-1, 1]"),
        _field("clip_embedding", pa.list_(pa.float32()), "L2-normalized CLIP image embedding (kept for semantic / image dedup)"),
        _field("nsfw_score", pa.float32(), "image safety head on clip_embedding, in [0, 1] (1 = unsafe); null if no head"),
    ]
)

# Rows a stage removed, for audit: the id, where it came from, and why.
DROPPED = pa.schema(
    [
        _field("stage", pa.string(), "stage that dropped the row", False),
        _field("reason", pa.string(), "drop reason, e.g. dup_exact, lang, gopher_quality", False),
        _field("doc_id", pa.string(), "doc_id when the row got that far, else null"),
        _field("url", pa.string(), "page URL when known"),
        _field("source_uri", pa.string(), "input file"),
        _field("source_offset", pa.int64(), "byte offset of the record in the input file"),
        _field("detail", pa.string(), "short human-readable detail (error text, failing value)"),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema, *, where: str) -> pa.Table:
    """Return `table` with exactly `schema`'s columns in order; raise ConfigError on a mismatch.

    A missing column or an incompatible type is a contract error between stages, never bad input.
    """
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ConfigError(f"{where}: table lacks columns {missing}; expected schema {schema.names}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"{where}: table does not fit schema: {exc}") from exc


def describe(schema: pa.Schema) -> list[dict[str, str]]:
    """Column docs as plain dicts (used in data cards and the manifest)."""
    return [{"name": f.name, "type": str(f.type), "doc": (f.metadata or {}).get(b"doc", b"").decode()} for f in schema]
