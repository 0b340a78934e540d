"""Ingest stage: crawl files (WARC, WET, JSONL, Parquet) -> the `documents` table, plus the
image-text candidates of the same pages as a second table ({stage}/pairs/{shard}.parquet).

Per record (Python, HTML parsing has no vector form): filter HTTP 200 HTML, sniff binary bodies,
decode the charset, parse once, take the <img> candidates and the main text. Per batch (Arrow):
language id, the language allowlist, domain, caption rules, Parquet.

Bad input never stops the shard: every record that is not a usable page is counted with a
reason (`http_status`, `not_html`, `too_large`, `binary_content`, `invalid_utf8`, `no_text`,
`lang`, `malformed_record`, `truncated_record`, `bad_json`, ...). Only a file that yields nothing
readable at all fails, with a BadInputError that names it.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from curation import layout, storage
from curation.config import BuildConfig
from curation.ingest.extract import (
    DecodeError,
    binary_content,
    decode_html,
    main_text,
    parse_html,
    stable_id,
    text_hash_and_words,
    title_of,
)
from curation.ingest.images import caption_rules, page_images
from curation.ingest.langid import LanguageIdentifier, language_identifier
from curation.ingest.readers import ImageRecord, Skip, SourceRecord, detect_format, local_input, read_records
from curation.schema import CRAWL_IMAGES, DOCUMENTS, DROPPED, PAIRS
from curation.stats import Progress, StageStats

log = logging.getLogger(__name__)

STAGE = "ingest"
PAIRS_STAGE = "ingest_pairs"
_BATCH_ROWS = 2_000
_IMAGE_BATCH_ROWS = 256  # crawl images are held in memory until written: keep the batch small
_HOST_PATTERN = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"
# Columns filled per record, in this order; the others are computed per batch.
_DOC_COLUMNS = (
    "doc_id",
    "url",
    "warc_record_id",
    "fetch_time",
    "source_uri",
    "source_offset",
    "title",
    "text",
    "n_words",
    "text_hash",
)
_PAIR_COLUMNS = (
    "pair_id",
    "doc_id",
    "page_url",
    "image_url",
    "caption",
    "alt",
    "img_title",
    "width",
    "height",
    "page_title",
    "warc_record_id",
    "fetch_time",
    "source_uri",
    "source_offset",
)


class _Rows:
    """Column buffers for one table; flushed to Arrow every `_BATCH_ROWS` rows."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.columns: dict[str, list] = {name: [] for name in schema.names}

    def add(self, **values: object) -> None:
        for name, column in self.columns.items():
            column.append(values.get(name))

    def __len__(self) -> int:
        return len(self.columns[self.schema.names[0]])

    def take(self) -> pa.Table:
        table = pa.table(self.columns, schema=self.schema)
        self.columns = {name: [] for name in self.schema.names}
        return table


def _table(rows: list[tuple], names: tuple[str, ...], schema: pa.Schema) -> pa.Table:
    """A `schema` table from row tuples holding `names` in order; other columns null."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    given = dict(zip(names, columns, strict=True))
    arrays = [pa.array(given[f.name], f.type) if f.name in given else pa.nulls(len(rows), f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


class _Shard:
    """The state of one ingest call: buffers, writers, stats."""

    def __init__(self, output: str, cfg: BuildConfig, lid: LanguageIdentifier):
        self.cfg = cfg
        self.ingest_cfg = cfg.ingest
        self.lid = lid
        shard = storage.name(output).removesuffix(".parquet")
        self.stats = StageStats(stage=STAGE, shard=shard)
        self.pair_stats = StageStats(stage=PAIRS_STAGE, shard=shard)
        self.progress = Progress(self.stats)
        self.docs: list[tuple] = []
        self.pairs: list[tuple] = []
        self.dropped = _Rows(DROPPED)
        self.lang_dropped: list[pa.Table] = []
        self.allowed = pa.array(sorted(set(self.ingest_cfg.languages)), pa.string())
        self.images = self.ingest_cfg.images.enabled
        fetch = self.ingest_cfg.fetch
        # Image responses of the crawl are kept for fetch_images only when it will read them.
        self.keep_images = self.images and fetch.enabled and fetch.source == "warc"
        self.crawl_images: list[ImageRecord] = []
        self.crawl_image_sources: list[str] = []
        # Records kept when sampling: doc_id (uniform hex) below this 64-bit threshold.
        self.sample_below = int(self.ingest_cfg.sample_rate * 2**64)

    def drop(self, reason: str, source: str, offset: int | None, url: str | None = None, detail: str = "", doc_id=None):
        self.stats.rows_in += 1
        self.stats.drop(reason)
        self.dropped.add(
            stage=STAGE, reason=reason, doc_id=doc_id, url=url, source_uri=source, source_offset=offset, detail=detail[:500]
        )

    def record(self, rec: SourceRecord, uri: str) -> None:
        """One page: decode, parse, candidates, text; appended to the batch or dropped with its reason."""
        url = rec.url
        doc_id = stable_id(rec.record_id or (f"{url}|{rec.fetch_time}" if url else f"{uri}#{rec.offset}"))
        if self.sample_below < 2**64 and int(doc_id[:16], 16) >= self.sample_below:
            self.stats.rows_in += 1  # counted, not written: a 1% trial would otherwise log 99% of the crawl
            self.stats.drop("sampled_out")
            return
        title, text = rec.title, rec.text
        html = rec.html
        if html is not None:
            if isinstance(html, bytes):
                if why := binary_content(html, rec.charset):
                    self.drop("binary_content", uri, rec.offset, url, why, doc_id)
                    return
                try:
                    html = decode_html(html, rec.charset)
                except DecodeError as exc:
                    self.drop(exc.reason, uri, rec.offset, url, str(exc), doc_id)
                    return
            tree = parse_html(html)
            title = title_of(tree) or title
            if self.images and url:
                self._candidates(html, rec, url, doc_id, title, uri)
            text = main_text(tree, html, self.ingest_cfg.extractor)
        else:
            text = text.strip() if text else ""
        if not text:
            self.drop("no_text", uri, rec.offset, url, "", doc_id)
            return
        text_hash, n_words = text_hash_and_words(text)
        self.docs.append((doc_id, url, rec.record_id, rec.fetch_time, uri, rec.offset, title, text, n_words, text_hash))

    def image(self, rec: ImageRecord, uri: str) -> None:
        """An image response: not a document (counted as `image_record`), kept for fetch_images."""
        self.stats.rows_in += 1
        self.stats.drop("image_record")
        self.crawl_images.append(rec)
        self.crawl_image_sources.append(uri)

    def flush_images(self, writer: storage.TableWriter) -> None:
        recs, self.crawl_images = self.crawl_images, []
        columns = {
            "image_url": [r.url for r in recs],
            "content_type": [r.content_type for r in recs],
            "image": [r.data for r in recs],
            "warc_record_id": [r.record_id for r in recs],
            "source_uri": self.crawl_image_sources,
            "source_offset": [r.offset for r in recs],
        }
        self.crawl_image_sources = []
        writer.write(pa.table(columns, schema=CRAWL_IMAGES))

    def _candidates(self, html: str, rec: SourceRecord, url: str, doc_id: str, title: str | None, uri: str) -> None:
        found = page_images(html, url, self.ingest_cfg.images.max_per_page, self.pair_stats.dropped)
        if found:
            provenance = (title, rec.record_id, rec.fetch_time, uri, rec.offset)
            for image_url, *tag in found:
                self.pairs.append((stable_id(url, image_url), doc_id, url, image_url, *tag, *provenance))

    def flush(self, writer: storage.TableWriter, pair_writer: storage.TableWriter | None) -> None:
        if self.docs:
            self._flush_docs(writer)
        if self.pairs and pair_writer is not None:
            pairs = _table(self.pairs, _PAIR_COLUMNS, PAIRS)
            self.pairs = []
            kept, counts = caption_rules(pairs, self.ingest_cfg.images, self.lid)
            self.pair_stats.dropped.update(counts)
            pair_writer.write(kept)

    def _flush_docs(self, writer: storage.TableWriter) -> None:
        docs = _table(self.docs, _DOC_COLUMNS, DOCUMENTS)
        self.docs = []
        langs, scores = self.lid.predict(docs["text"].to_pylist())
        docs = _set(docs, "language", pa.array(langs, pa.string()))
        docs = _set(docs, "language_score", pa.array(scores, pa.float32()))
        host = pc.struct_field(pc.extract_regex(docs["url"], _HOST_PATTERN), "host")
        docs = _set(docs, "domain", pc.utf8_lower(host))
        self.stats.rows_in += docs.num_rows
        if len(self.allowed):
            ok = pc.and_(
                pc.is_in(docs["language"], self.allowed),
                pc.greater_equal(docs["language_score"], self.ingest_cfg.min_language_score),
            )
            rejected = docs.filter(pc.invert(ok))
            if rejected.num_rows:
                self.stats.drop("lang", rejected.num_rows)
                self.lang_dropped.append(_lang_drops(rejected))
                docs = docs.filter(ok)
        self.stats.rows_out += docs.num_rows
        writer.write(docs)

    def dropped_table(self) -> pa.Table:
        return pa.concat_tables([self.dropped.take(), *self.lang_dropped]).combine_chunks()


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _lang_drops(rejected: pa.Table) -> pa.Table:
    """DROPPED rows for pages outside the language allowlist, built column-wise."""
    n = rejected.num_rows
    score = pc.cast(pc.round(pc.cast(rejected["language_score"], pa.float64()), 2), pa.string())
    detail = pc.binary_join_element_wise(pc.fill_null(rejected["language"], "unknown"), score, ":")
    columns = {
        "stage": pa.array([STAGE] * n, pa.string()),
        "reason": pa.array(["lang"] * n, pa.string()),
        "doc_id": rejected["doc_id"],
        "url": rejected["url"],
        "source_uri": rejected["source_uri"],
        "source_offset": rejected["source_offset"],
        "detail": detail,
    }
    return pa.table(columns).cast(DROPPED)


def ingest(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Read crawl files and write the documents of all of them to the Parquet shard `output`.

    Also writes the shard's dropped rows (`layout.dropped_uri`) and, unless images are disabled,
    its image-text candidates (`layout.pairs_uri`, PAIRS schema) with their own stats file; when
    fetch_images takes images from the crawl (`ingest.fetch.source: warc`), the shard's image
    responses too (`layout.crawl_images_uri`, CRAWL_IMAGES schema).
    """
    started = time.monotonic()
    ingest_cfg = cfg.ingest
    shard = _Shard(output, cfg, language_identifier(ingest_cfg.language_id))
    stats = shard.stats
    pairs_output = layout.pairs_uri(output)
    with storage.TableWriter(output, DOCUMENTS) as writer:
        pair_writer = storage.TableWriter(pairs_output, PAIRS) if shard.images else None
        image_writer = storage.TableWriter(layout.crawl_images_uri(output), CRAWL_IMAGES) if shard.keep_images else None
        side_writers = [w for w in (pair_writer, image_writer) if w is not None]
        try:
            for uri in inputs:
                with local_input(uri, ingest_cfg.unsigned_s3_buckets) as path:
                    stats.bytes_in += path.stat().st_size
                    fmt = detect_format(uri, path, ingest_cfg.format)
                    for item in read_records(path, uri, fmt, ingest_cfg.max_record_bytes, shard.keep_images):
                        if type(item) is Skip:
                            shard.drop(item.reason, uri, item.offset, item.url, item.detail)
                            continue
                        if type(item) is ImageRecord:
                            shard.image(item, uri)
                            if len(shard.crawl_images) >= _IMAGE_BATCH_ROWS:
                                shard.flush_images(image_writer)
                            continue
                        shard.record(item, uri)
                        if len(shard.docs) >= _BATCH_ROWS or len(shard.pairs) >= _BATCH_ROWS:
                            shard.flush(writer, pair_writer)
                        shard.progress.tick()
            shard.flush(writer, pair_writer)
            if image_writer is not None:
                shard.flush_images(image_writer)
        except BaseException:
            for side in side_writers:
                side.__exit__(RuntimeError, None, None)  # discard: never leave a half shard
            raise
        for side in side_writers:
            side.__exit__(None, None, None)
    stats.bytes_out = writer.bytes
    stats.outputs = [output]
    storage.write_table(layout.dropped_uri(output), shard.dropped_table())
    if pair_writer is not None:
        shard.pair_stats.rows_out = pair_writer.rows
        # Every <img> either became a pair or was counted under a reason (no_caption, caption_short, ...).
        shard.pair_stats.rows_in = pair_writer.rows + shard.pair_stats.rows_dropped
        shard.pair_stats.bytes_out = pair_writer.bytes
        shard.pair_stats.outputs = [pairs_output]
        shard.pair_stats.seconds = time.monotonic() - started
        layout.write_stats(shard.pair_stats, pairs_output)
    stats.seconds = time.monotonic() - started
    shard.progress.log()
    return stats
