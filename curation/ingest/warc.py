"""Ingest stage: WARC(.gz) files -> the `documents` table, one output shard per input shard.

Bad input never stops the shard: every record that is not a usable page is counted with a
reason (`http_status`, `not_html`, `too_large`, `invalid_utf8`, `no_text`, `lang`, ...), and a
truncated or corrupt tail is counted as one `truncated_record` / `malformed_record`. Only a file
that yields nothing readable at all fails, with an error that names it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from fastwarc.warc import ArchiveIterator, WarcRecordType

from curation import layout, storage
from curation.config import BuildConfig
from curation.errors import BadInputError
from curation.ingest.extract import DecodeError, decode_html, detect_language, extract, normalized_text_hash, stable_id
from curation.schema import DOCUMENTS, DROPPED
from curation.stats import Progress, StageStats

log = logging.getLogger(__name__)

STAGE = "ingest"
_BATCH_ROWS = 2_000
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_HOST_PATTERN = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"


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


def _add_derived_columns(docs: pa.Table) -> pa.Table:
    """Columns computed for the whole batch at once rather than per record: domain, n_words."""
    host = pc.struct_field(pc.extract_regex(docs["url"], _HOST_PATTERN), "host")
    docs = docs.set_column(docs.schema.get_field_index("domain"), "domain", pc.utf8_lower(host))
    n_words = pc.list_value_length(pc.utf8_split_whitespace(docs["text"])).cast(pa.int32())
    return docs.set_column(docs.schema.get_field_index("n_words"), "n_words", n_words)


@contextlib.contextmanager
def _local_copy(uri: str) -> Iterator[Path]:
    """A local, seekable path for `uri` (S3 objects are spooled to a temp file first)."""
    if not storage.is_s3(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise BadInputError(f"cannot open input {uri}: no such file. Check the input list.")
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix="-" + storage.name(uri)) as tmp:
        with storage.open_input(uri) as src:
            shutil.copyfileobj(src, tmp, 8 * 2**20)
        tmp.flush()
        yield Path(tmp.name)


def _tail_is_complete(path: Path, last_record_pos: int | None) -> bool:
    """True if the bytes from the last parsed record's start to the end of file are whole records.

    fastwarc ends iteration quietly at a truncated record, so we check the tail ourselves: for
    .gz the last member must decompress to its end; for a plain WARC the last record's declared
    Content-Length must fit in the file, and nothing but blank lines may follow it.
    """
    with open(path, "rb") as fh:
        fh.seek(last_record_pos or 0)
        if path.name.endswith(".gz"):
            return _gzip_members_complete(fh)
        tail = fh.read()
    # Walk the records after the last parsed one by their Content-Length.
    pos = 0
    while tail[pos:].strip():
        pos += len(tail[pos:]) - len(tail[pos:].lstrip())  # the blank lines between records
        header_end = tail.find(b"\r\n\r\n", pos)
        length = re.search(rb"(?im)^content-length:\s*(\d+)", tail[pos:header_end]) if header_end >= 0 else None
        if length is None:
            return False
        pos = header_end + 4 + int(length.group(1))
        if pos > len(tail):
            return False
    return True


def _has_warc_records(path: Path) -> bool:
    """Whether the file holds any WARC record at all (a WARC may hold no response record)."""
    try:
        with open(path, "rb") as fh:
            return next(iter(ArchiveIterator(fh)), None) is not None
    except OSError:
        return False


def _gzip_members_complete(fh) -> bool:
    inflater = zlib.decompressobj(wbits=31)
    while chunk := fh.read(1 << 20):
        data = chunk
        while data:
            try:
                inflater.decompress(data)
            except zlib.error:
                return False
            if not inflater.eof:
                break
            data = inflater.unused_data
            if data:
                inflater = zlib.decompressobj(wbits=31)
    return inflater.eof


def ingest(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Read WARC files and write the documents of all of them to the Parquet shard `output`."""
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    progress = Progress(stats)
    docs = _Rows(DOCUMENTS)
    dropped = _Rows(DROPPED)
    allowed = set(cfg.ingest.languages)

    def drop(reason: str, source: str, offset: int | None, url: str | None = None, detail: str = "", doc_id=None):
        stats.rows_in += 1
        stats.drop(reason)
        dropped.add(
            stage=STAGE, reason=reason, doc_id=doc_id, url=url, source_uri=source, source_offset=offset, detail=detail[:500]
        )

    with storage.TableWriter(output, DOCUMENTS) as writer:
        for uri in inputs:
            with _local_copy(uri) as path:
                stats.bytes_in += path.stat().st_size
                last_pos: int | None = None
                seen = 0
                try:
                    with open(path, "rb") as fh:
                        # Only response records carry pages; fastwarc skips the rest without parsing them.
                        for record in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                            last_pos = record.stream_pos
                            seen += 1
                            row = _page_row(record, uri, cfg, drop)
                            if row is None:
                                continue
                            if allowed and (
                                row["language"] not in allowed or row["language_score"] < cfg.ingest.min_language_score
                            ):
                                drop(
                                    "lang",
                                    uri,
                                    row["source_offset"],
                                    row["url"],
                                    f"{row['language']}:{row['language_score']:.2f}",
                                    row["doc_id"],
                                )
                                continue
                            stats.rows_in += 1
                            stats.rows_out += 1
                            docs.add(**row)
                            if len(docs) >= _BATCH_ROWS:
                                writer.write(_add_derived_columns(docs.take()))
                            progress.tick()
                except OSError as exc:  # fastwarc: malformed WARC header / corrupt stream
                    if seen == 0:
                        raise BadInputError(
                            f"input {uri} is not a readable WARC file ({exc}); remove it from the inputs or re-fetch it"
                        ) from exc
                    drop("malformed_record", uri, last_pos, detail=f"{exc}; rest of file skipped")
                    continue
                if seen == 0 and path.stat().st_size > 0 and not _has_warc_records(path):
                    raise BadInputError(f"input {uri} holds no readable WARC record; remove it from the inputs or re-fetch it")
                if not _tail_is_complete(path, last_pos):
                    drop("truncated_record", uri, last_pos, detail="file ends inside a record: truncated download?")
        writer.write(_add_derived_columns(docs.take()))
    stats.rows_out = writer.rows
    stats.bytes_out = writer.bytes
    stats.outputs = [output]
    storage.write_table(layout.dropped_uri(output), dropped.take())
    stats.seconds = time.monotonic() - started
    progress.log()
    return stats


def _page_row(record, uri: str, cfg: BuildConfig, drop) -> dict | None:
    """One documents row from a response record, or None after counting why it was dropped."""
    offset = record.stream_pos
    url = record.headers.get("WARC-Target-URI") or ""
    record_id = record.headers.get("WARC-Record-ID") or ""
    http = record.http_headers
    if http is None:
        drop("not_http", uri, offset, url, "response record without HTTP headers")
        return None
    if http.status_code != 200:
        drop("http_status", uri, offset, url, str(http.status_code))
        return None
    content_type = (record.http_content_type or "").lower()
    if not content_type.startswith(_HTML_TYPES):
        drop("not_html", uri, offset, url, content_type or "no content type")
        return None
    if record.content_length > cfg.ingest.max_record_bytes:
        drop("too_large", uri, offset, url, f"{record.content_length} bytes")
        return None
    payload = record.reader.read()
    try:
        html = decode_html(payload, record.http_charset)
    except DecodeError as exc:
        drop(exc.reason, uri, offset, url, str(exc))
        return None
    title, text = extract(html)
    doc_id = stable_id(record_id or f"{url}|{record.record_date}")
    if not text:
        drop("no_text", uri, offset, url, "", doc_id)
        return None
    language, language_score = detect_language(text)
    fetch_time = record.record_date
    if fetch_time is not None and fetch_time.tzinfo is None:
        fetch_time = fetch_time.replace(tzinfo=dt.UTC)
    return {
        "doc_id": doc_id,
        "url": url,
        "warc_record_id": record_id,
        "fetch_time": fetch_time,
        "source_uri": uri,
        "source_offset": offset,
        "title": title,
        "text": text,
        "language": language,
        "language_score": language_score,
        "text_hash": normalized_text_hash(text),
    }
