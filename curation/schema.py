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
        _field("source_offset", pa.int64(), "byte offset of the record in the input file"),
        _field("title", pa.string(), "HTML <title>, if any"),
        _field("text", pa.string(), "main text extracted from the HTML", False),
        _field("language", pa.string(), "ISO 639-1 code from the language detector, or 'unknown'"),
        _field("language_score", pa.float32(), "detector confidence in [0, 1] (1 - rank/1200 for resiliparse)"),
        _field("n_words", pa.int32(), "whitespace-separated words in text"),
        _field("text_hash", pa.string(), "32 hex chars: xxh128 of the normalized text (exact dedup key)"),
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
    ]
)

SCORED_DOCUMENTS = pa.schema(list(DOCUMENTS) + list(HEURISTIC_SIGNALS))

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
