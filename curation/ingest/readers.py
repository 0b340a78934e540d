"""Input readers behind one interface: WARC / WET (gz or plain), JSONL (.gz / .zst) and Parquet.

`read_records(path, uri, fmt, max_bytes)` yields, in file order, either a `SourceRecord` (a page
to process) or a `Skip` (a record that is not usable, with the drop reason). A file that cannot
be read at all raises BadInputError naming it; damage inside a file costs only the damaged part:

- WARC/WET: fastwarc stops at the first corrupt gzip member or malformed header (sometimes
  quietly). We then walk the records from the last good one to find the bad spot, count it
  (`malformed_record`, or `truncated_record` when the file ends inside a record) and resume
  at the next gzip member / `WARC/1.x` line, so the rest of the file is still read.
- JSONL: a bad line is `bad_json` / `invalid_utf8`; a corrupt or cut compressed stream ends the
  file with one `truncated_record`.

`local_input` makes any input URI a local seekable file: local paths as they are, `s3://`
objects spooled to a temp file (public buckets such as `commoncrawl` with unsigned requests),
`http(s)://` downloads likewise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gzip
import json
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastwarc.warc import ArchiveIterator, WarcRecordType

from curation import storage
from curation.errors import BadInputError, TransientError

HTML_TYPES = ("text/html", "application/xhtml+xml")
FORMATS = ("warc", "jsonl", "parquet")
_TEXT_FIELDS = ("text", "content", "raw_content")
_HTML_FIELDS = ("html", "raw_html", "content_html")
_ID_FIELDS = ("id", "doc_id", "warc_record_id", "record_id")
_TIME_FIELDS = ("fetch_time", "date", "timestamp", "crawl_date", "created")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_HEADER_SCAN = 64 << 10  # a WARC header longer than this is malformed
_VERSION_LINES = (b"WARC/1.0\r\n", b"WARC/1.1\r\n", b"WARC/0.18\r\n", b"WARC/0.17\r\n")
_CHUNK = 1 << 20


@dataclass(slots=True)
class SourceRecord:
    """One page from an input: raw HTML to decode and extract, or text that was extracted already."""

    offset: int | None
    url: str
    record_id: str
    fetch_time: dt.datetime | None
    html: bytes | str | None = None
    charset: str | None = None
    text: str | None = None
    title: str | None = None


@dataclass(slots=True)
class ImageRecord:
    """An HTTP 200 image response (Content-Type image/*), yielded only when images are asked for."""

    offset: int | None
    url: str
    record_id: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Skip:
    """A record that is not usable, counted under `reason`."""

    reason: str
    offset: int | None
    url: str | None = None
    detail: str = ""


# --- inputs as local files ---------------------------------------------------------------------


@contextlib.contextmanager
def local_input(uri: str, unsigned_buckets: tuple[str, ...] | list[str] = ()) -> Iterator[Path]:
    """A local, seekable path for `uri`; remote objects are spooled to a temporary file."""
    if uri.startswith(("http://", "https://")):
        with _spooled(uri) as (tmp, fh):
            _download(uri, fh)
            fh.flush()
            yield tmp
        return
    if storage.is_s3(uri):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        with _spooled(uri) as (tmp, fh):
            if bucket in unsigned_buckets:
                try:
                    _unsigned_s3().download_fileobj(bucket, key, fh)
                except Exception as exc:  # botocore's errors: missing key, throttling, network
                    raise _s3_error(uri, exc) from exc
            else:
                with storage.open_input(uri) as src:
                    shutil.copyfileobj(src, fh, 8 << 20)
            fh.flush()
            yield tmp
        return
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise BadInputError(f"cannot open input {uri}: no such file. Check the input list.")
    yield path


@contextlib.contextmanager
def _spooled(uri: str) -> Iterator[tuple[Path, IO[bytes]]]:
    with tempfile.NamedTemporaryFile(suffix="-" + storage.name(uri).split("?")[0]) as tmp:
        yield Path(tmp.name), tmp


@functools.lru_cache(maxsize=1)
def _unsigned_s3():
    """S3 client that sends no credentials: for public buckets (Common Crawl lives in us-east-1)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(signature_version=UNSIGNED, retries={"max_attempts": 5, "mode": "standard"})
    # An explicit AWS endpoint: AWS_ENDPOINT_URL (set for S3-compatible servers) must not redirect public reads.
    return boto3.session.Session().client(
        "s3", region_name="us-east-1", endpoint_url="https://s3.us-east-1.amazonaws.com", config=config
    )


def _s3_error(uri: str, exc: Exception) -> Exception:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in {"NoSuchKey", "404", "NotFound", "403", "AccessDenied"}:
        return BadInputError(f"cannot open input {uri}: {code}. Check the path (public buckets are read unsigned).")
    return TransientError(f"reading {uri} failed ({exc}); retry later")


def _download(url: str, fh: IO[bytes]) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, fh, 8 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 403, 410):
            raise BadInputError(f"cannot open input {url}: HTTP {exc.code}. Check the URL.") from exc
        raise TransientError(f"downloading {url} failed: HTTP {exc.code}; retry later") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"downloading {url} failed: {exc}; retry later") from exc


# --- format -------------------------------------------------------------------------------------


def detect_format(uri: str, path: Path, configured: str = "auto") -> str:
    """warc (also WET), jsonl or parquet: as configured, else by file name, else by the first bytes."""
    if configured != "auto":
        return "warc" if configured == "wet" else configured
    name = storage.name(uri).lower().split("?")[0]
    name = re.sub(r"\.(gz|zst|zstd)$", "", name)
    if name.endswith((".warc", ".wet", ".arc")):
        return "warc"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    head = _head(path)
    if head.startswith(b"WARC/"):
        return "warc"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    raise BadInputError(f"cannot tell the format of input {uri} (not WARC, JSONL or Parquet); set ingest.format")


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"\x1f\x8b"):
        with contextlib.suppress(zlib.error):
            return zlib.decompressobj(wbits=31).decompress(head)[:64]
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        with contextlib.suppress(zstandard.ZstdError):
            return zstandard.ZstdDecompressor().decompressobj().decompress(head)[:64]
    return head[:64]


def read_records(
    path: Path, uri: str, fmt: str, max_bytes: int, images: bool = False
) -> Iterator[SourceRecord | ImageRecord | Skip]:
    """The records of one input file; image responses (WARC only) as ImageRecords when `images`."""
    if fmt == "warc":
        return warc_records(path, uri, max_bytes, images)
    if fmt == "jsonl":
        return jsonl_records(path, uri, max_bytes)
    if fmt == "parquet":
        return parquet_records(path, uri, max_bytes)
    raise BadInputError(f"unknown input format {fmt!r} for {uri}; use one of {FORMATS}")


# --- WARC / WET -----------------------------------------------------------------------------------


def warc_records(path: Path, uri: str, max_bytes: int, images: bool = False) -> Iterator[SourceRecord | ImageRecord | Skip]:
    """Response records (HTTP 200 HTML; images too when `images`) and WET conversion records,
    resuming after damaged spots."""
    size = path.stat().st_size
    gz = _is_gzip(path)
    start: int | None = 0
    usable = False  # whether any well-formed record was found at all
    with open(path, "rb") as fh:
        while start is not None and start < size:
            fh.seek(start)
            held: SourceRecord | ImageRecord | Skip | None = None  # one record of look-ahead: the last may be cut off
            error = None
            try:
                for record in ArchiveIterator(
                    fh,
                    record_types=WarcRecordType.response | WarcRecordType.conversion,
                    parse_http=True,
                    inplace=True,
                ):
                    usable = True
                    if held is not None:
                        yield held
                    held = _warc_item(record, max_bytes, images)
            except OSError as exc:
                error = str(exc)
            walk_from = held.offset if held is not None and held.offset is not None else start
            if gz and held is not None and not _starts_record(fh, walk_from, gz):
                # Not one record per gzip member (a whole file gzipped at once): no walking, no resync.
                if held is not None:
                    yield held
                if error:
                    yield Skip("malformed_record", walk_from, None, f"{error}; rest of file skipped")
                break
            bad, why = _first_bad_record(fh, walk_from, size, gz)
            url = None
            if held is not None and bad == held.offset:
                url, held = held.url, None  # the last record read is the damaged one: count it once, as damaged
            if held is not None:
                yield held
            if bad is None:
                if error:  # fastwarc refused something our walk accepts: cannot resync safely
                    yield Skip("malformed_record", walk_from, None, f"{error}; rest of file skipped")
                break
            resume = _next_record_start(fh, bad + 1, size, gz)
            if not usable and resume is None and bad == 0:
                raise BadInputError(f"input {uri} is not a readable WARC file ({why}); remove it from the inputs or re-fetch it")
            usable = usable or resume is not None
            if why == "truncated" and resume is None:
                yield Skip("truncated_record", bad, url, "file ends inside a record: truncated download?")
            else:
                skipped = f"resumed at byte {resume}" if resume is not None else "rest of file skipped"
                yield Skip("malformed_record", bad, url, f"{why}; {skipped}")
            start = resume


def _warc_item(record, max_bytes: int, images: bool = False) -> SourceRecord | ImageRecord | Skip:
    offset = record.stream_pos
    headers = record.headers
    url = headers.get("WARC-Target-URI") or ""
    if record.record_type == WarcRecordType.conversion:  # WET: text extracted by the crawler
        if record.content_length > max_bytes:
            return Skip("too_large", offset, url, f"{record.content_length} bytes")
        try:
            text = record.reader.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            return Skip("invalid_utf8", offset, url, f"utf-8: {exc.reason} at byte {exc.start}")
        record_id = headers.get("WARC-Refers-To") or record.record_id or ""  # the response's id, as in the WARC
        return SourceRecord(offset, url, record_id, _utc(record.record_date), text=text)
    http = record.http_headers
    if http is None or not record.is_http:
        return Skip("not_http", offset, url, "response record without HTTP headers")
    if http.status_code != 200:
        return Skip("http_status", offset, url, str(http.status_code))
    content_type = (record.http_content_type or "").lower()
    wanted = content_type.startswith(HTML_TYPES) or (images and content_type.startswith("image/"))
    if not wanted:
        return Skip("not_html", offset, url, content_type or "no content type")
    if record.content_length > max_bytes:
        return Skip("too_large", offset, url, f"{record.content_length} bytes")
    if not content_type.startswith(HTML_TYPES):
        return ImageRecord(offset, url, record.record_id or "", content_type, record.reader.read())
    return SourceRecord(
        offset, url, record.record_id or "", _utc(record.record_date), html=record.reader.read(), charset=record.http_charset
    )


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _first_bad_record(fh: IO[bytes], start: int, size: int, gz: bool) -> tuple[int | None, str]:
    """Walk the records from `start` (a record start) to the end of file; the first bad one and why.

    (None, "") when every record from `start` on is whole. `why` is "truncated" when the file ends
    inside the record, else what is wrong with it (bad gzip member, invalid WARC header).
    """
    pos = start
    while pos < size:
        fh.seek(pos)
        length, why = _gzip_member(fh) if gz else _plain_record(fh, size - pos)
        if length is None:
            return pos, why
        pos += length
        if not gz:  # records are followed by CRLF CRLF; tolerate any blank bytes
            fh.seek(pos)
            pad = fh.read(64)
            pos += len(pad) - len(pad.lstrip(b"\r\n"))
    return None, ""


def _gzip_member(fh: IO[bytes]) -> tuple[int | None, str]:
    """(compressed length, "") of the gzip member at the file position holding a valid WARC record."""
    inflater = zlib.decompressobj(wbits=31)
    consumed, head, total = 0, b"", 0
    while not inflater.eof:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return None, "truncated"
        try:
            out = inflater.decompress(chunk)
        except zlib.error as exc:
            return None, f"bad gzip member ({exc})"
        total += len(out)
        if len(head) < _HEADER_SCAN:
            head += out[: _HEADER_SCAN - len(head)]
        consumed += len(chunk) - len(inflater.unused_data)
    problem = _header_problem(head, total)
    return (None, problem) if problem else (consumed, "")


def _plain_record(fh: IO[bytes], remaining: int) -> tuple[int | None, str]:
    head = fh.read(min(_HEADER_SCAN, remaining))
    end = head.find(b"\r\n\r\n")
    if not head.startswith(_VERSION_LINES) or end < 0:
        return None, "truncated" if len(head) == remaining and head.startswith(_VERSION_LINES) else "invalid WARC header"
    length = _CONTENT_LENGTH.search(head, 0, end + 2)
    if length is None:
        return None, "invalid WARC header (no Content-Length)"
    total = end + 4 + int(length.group(1))
    return (total, "") if total <= remaining else (None, "truncated")


def _header_problem(record: bytes, total: int) -> str:
    end = record.find(b"\r\n\r\n")
    if not record.startswith(_VERSION_LINES) or end < 0:
        return "invalid WARC header"
    length = _CONTENT_LENGTH.search(record, 0, end + 2)
    if length is None:
        return "invalid WARC header (no Content-Length)"
    if end + 4 + int(length.group(1)) > total:
        return "record shorter than its Content-Length"
    return ""


def _next_record_start(fh: IO[bytes], after: int, size: int, gz: bool) -> int | None:
    """Offset of the next plausible record start after `after`: a gzip member holding `WARC/`, or a `WARC/1.` line."""
    needle = b"\x1f\x8b\x08" if gz else b"\nWARC/1."
    pos = after
    while pos < size:
        fh.seek(pos)
        block = fh.read(_CHUNK + len(needle))
        if not block:
            return None
        i = block.find(needle)
        while i >= 0:
            candidate = pos + i + (0 if gz else 1)
            if candidate > after - 1 and _starts_record(fh, candidate, gz):
                return candidate
            i = block.find(needle, i + 1)
        pos += _CHUNK
    return None


def _starts_record(fh: IO[bytes], offset: int, gz: bool) -> bool:
    fh.seek(offset)
    data = fh.read(4096)
    if gz:
        try:
            data = zlib.decompressobj(wbits=31).decompress(data)
        except zlib.error:
            return False
    return data.startswith(_VERSION_LINES)


# --- JSONL and Parquet ----------------------------------------------------------------------------


def _open_text_stream(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        magic = probe.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"\x28\xb5\x2f\xfd":
        import io

        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True))
    return open(path, "rb")


def jsonl_records(path: Path, uri: str, max_bytes: int) -> Iterator[SourceRecord | Skip]:
    """One JSON object per line, plain or .gz / .zst; `source_offset` is the line number (1-based)."""
    import zstandard

    line_no = 0
    with _open_text_stream(path) as fh:
        try:
            while line := fh.readline(max_bytes + 1):
                line_no += 1
                if len(line) > max_bytes and not line.endswith(b"\n"):
                    while (rest := fh.readline(_CHUNK)) and not rest.endswith(b"\n"):
                        pass  # skip the rest of a giant line without holding it
                    yield Skip("too_large", line_no, None, f"line longer than {max_bytes} bytes")
                    continue
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except UnicodeDecodeError as exc:
                    yield Skip("invalid_utf8", line_no, None, f"utf-8: {exc.reason} at byte {exc.start}")
                    continue
                except ValueError as exc:
                    yield Skip("bad_json", line_no, None, str(exc)[:200])
                    continue
                yield _mapping_record(obj, line_no)
        except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
            if line_no == 0:
                raise BadInputError(f"input {uri} is not readable ({exc}); remove it from the inputs or re-fetch it") from exc
            yield Skip("truncated_record", line_no + 1, None, f"compressed stream broken after line {line_no}: {exc}")


def parquet_records(path: Path, uri: str, max_bytes: int) -> Iterator[SourceRecord | Skip]:
    """Rows of a Parquet dump (FineWeb / Dolma style columns); `source_offset` is the row number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(f"input {uri} is not a readable Parquet file ({exc}); remove it or re-fetch it") from exc
    wanted = {*_TEXT_FIELDS, *_HTML_FIELDS, *_ID_FIELDS, *_TIME_FIELDS, "url", "title", "metadata"}
    columns = [name for name in pf.schema_arrow.names if name in wanted]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            for obj in batch.to_pylist():
                row += 1
                yield _mapping_record(obj, row)
    except (pa.ArrowException, OSError) as exc:
        yield Skip("truncated_record", row + 1, None, f"Parquet data unreadable after row {row}: {exc}")


def _mapping_record(obj: object, offset: int) -> SourceRecord | Skip:
    if not isinstance(obj, dict):
        return Skip("bad_json", offset, None, f"a line holds {type(obj).__name__}, not an object")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    url = obj.get("url") or meta.get("url") or ""
    url = url if isinstance(url, str) else str(url)
    text = next((v for k in _TEXT_FIELDS if isinstance(v := obj.get(k), str)), None)
    html = next((v for k in _HTML_FIELDS if isinstance(v := obj.get(k), str)), None)
    if text is None and html is None:
        return Skip("no_text", offset, url, f"no text field (one of {_TEXT_FIELDS + _HTML_FIELDS})")
    record_id = next((str(v) for k in _ID_FIELDS if (v := obj.get(k)) not in (None, "")), "")
    fetch_time = next((t for k in _TIME_FIELDS if (t := _as_time(obj.get(k))) is not None), None)
    title = obj.get("title") if isinstance(obj.get("title"), str) else None
    return SourceRecord(offset, url, record_id, fetch_time, html=html, text=None if html else text, title=title)


def _as_time(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return _utc(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds or seconds
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        return None
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return _utc(dt.datetime.fromisoformat(value))
    return None
