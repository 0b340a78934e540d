"""fetch_images stage (img2dataset-like): download the images of image-text candidates.

Input: PAIRS shards from ingest ({stage}/pairs/{shard}.parquet). Output: the same rows with the
image columns filled and a per-row `status` ("ok", or why not) and `error`; failures are also
counted in StageStats by status and listed in the shard's dropped/ table, and a
`{shard}.fetch.json` report gives the success rate, counts by status and bytes downloaded.

Network: asyncio + aiohttp with a global concurrency, per-host concurrency and a per-host rate
limit; connect and total timeouts; a byte cap while streaming; redirects followed by hand (each
hop re-checked); retries with exponential backoff and jitter on timeouts, connection errors, 429
and 5xx. Only http/https to public addresses: the host is resolved and loopback, private,
link-local, reserved and multicast addresses are refused at connect time (a DNS name cannot
smuggle one in), unless `allow_private_addresses` is set (tests only).

With `source: warc` nothing is downloaded: each image is taken from the crawl's own HTTP 200
image responses, which ingest kept ({stage}/images/, CRAWL_IMAGES), and checked the same way; a
URL the crawl did not fetch is `not_in_crawl`. This is for crawls that archive pages with their
resources (Browsertrix, Heritrix, wget --page-requisites) and for the offline demo.

Images: Pillow, restricted to common web formats (no EPS/PostScript, which would run
Ghostscript); the pixel count is checked from the header before any pixel is decoded
(decompression bombs), then verify() and a full load() catch corrupt data; DataComp's size and
aspect-ratio rules; optional resize; sha256 of the downloaded bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import ipaddress
import logging
import random
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import xxhash

from curation import layout, storage
from curation.config import BuildConfig, FetchConfig
from curation.errors import ConfigError
from curation.schema import DROPPED, PAIRS, conform
from curation.stats import StageStats

log = logging.getLogger(__name__)

STAGE = "fetch_images"
OK = "ok"
_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_CHUNK = 64 << 10


@dataclass
class FetchResult:
    status: str
    error: str | None = None
    http_status: int | None = None
    attempts: int = 0
    data: bytes | None = None
    image: bytes | None = None
    sha256: str | None = None
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    bytes_downloaded: int = 0

    def retryable(self) -> bool:
        return self.status in ("timeout", "connection_error") or (self.status == "http_error" and self.http_status in _RETRY_HTTP)


# --- addresses ----------------------------------------------------------------------------------


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for loopback, private, link-local, reserved, ..."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class RefusedAddress(OSError):
    """The host resolves to an address the fetcher must not contact."""


def _public_only_resolver():
    import aiohttp

    class PublicOnlyResolver(aiohttp.ThreadedResolver):
        """Resolves like the default, then refuses the host if any address is not public."""

        async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
            addresses = await super().resolve(host, port, family)
            for entry in addresses:
                if not is_public_address(entry["host"]):
                    raise RefusedAddress(f"{host} resolves to non-public address {entry['host']}")
            return addresses

    return PublicOnlyResolver()


# --- politeness -----------------------------------------------------------------------------------


class _HostLimits:
    """Per-host concurrency (a semaphore) and request rate (evenly spaced start times)."""

    def __init__(self, concurrency: int, rate: float):
        self.concurrency = concurrency
        self.interval = 1.0 / rate
        self.semaphores: dict[str, asyncio.Semaphore] = {}
        self.next_start: dict[str, float] = {}

    def semaphore(self, host: str) -> asyncio.Semaphore:
        if host not in self.semaphores:
            self.semaphores[host] = asyncio.Semaphore(self.concurrency)
        return self.semaphores[host]

    async def pace(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self.next_start.get(host, now))
        self.next_start[host] = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


# --- one URL ----------------------------------------------------------------------------------------


async def _download(session, url: str, fc: FetchConfig, limits: _HostLimits) -> FetchResult:
    """One attempt: follow up to max_redirects redirects by hand, each hop checked again."""
    import aiohttp

    current, requests, status = url, 0, None
    for _ in range(fc.max_redirects + 1):
        parts = urlsplit(current)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            return FetchResult("bad_url", f"not an http(s) URL: {current[:200]}", status, requests)
        if not fc.allow_private_addresses and _is_ip_literal(host) and not is_public_address(host):
            return FetchResult("refused_address", f"{host} is not a public address", status, requests)
        requests += 1
        try:
            async with limits.semaphore(host):
                await limits.pace(host)
                async with session.get(current, allow_redirects=False) as resp:
                    status = resp.status
                    if status in _REDIRECTS:
                        location = resp.headers.get("Location")
                        if not location:
                            return FetchResult("http_error", f"HTTP {status} without Location", status, requests)
                        current = urljoin(current, location.strip())
                        continue
                    if status != 200:
                        return FetchResult("http_error", f"HTTP {status}", status, requests)
                    if resp.content_length is not None and resp.content_length > fc.max_bytes:
                        error = f"Content-Length {resp.content_length} > {fc.max_bytes}"
                        return FetchResult("too_large", error, status, requests)
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        data += chunk
                        if len(data) > fc.max_bytes:
                            return FetchResult("too_large", f"more than {fc.max_bytes} bytes", status, requests)
                    return FetchResult("downloaded", None, status, requests, data=bytes(data))
        except TimeoutError:
            return FetchResult("timeout", f"no complete response within {fc.timeout_s}s", status, requests)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(getattr(exc, "os_error", None), RefusedAddress) or isinstance(exc.__cause__, RefusedAddress):
                return FetchResult("refused_address", str(exc.__cause__ or exc)[:300], status, requests)
            return FetchResult("connection_error", str(exc)[:300], status, requests)
        except (aiohttp.ClientError, OSError) as exc:
            return FetchResult("connection_error", f"{type(exc).__name__}: {exc}"[:300], status, requests)
    return FetchResult("too_many_redirects", f"more than {fc.max_redirects} redirects", status, requests)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
        return True
    except ValueError:
        return False


async def _fetch(session, url: str, fc: FetchConfig, limits: _HostLimits, rng: random.Random) -> FetchResult:
    """Download with retries: backoff_s, 2x backoff_s, ... each times a random factor in [1, 2)."""
    attempts = 0
    for attempt in range(fc.retries + 1):
        if attempt:
            await asyncio.sleep(fc.backoff_s * 2 ** (attempt - 1) * (1 + rng.random()))
        result = await _download(session, url, fc, limits)
        attempts += result.attempts
        if not result.retryable():
            break
    result.attempts = attempts
    return result


# --- decoding ---------------------------------------------------------------------------------------


def check_image(data: bytes, fc: FetchConfig) -> FetchResult:
    """Decode and check downloaded bytes: bomb guard, verify + load, size / aspect rules, optional resize."""
    from PIL import Image

    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as probe:
            fmt, (width, height) = probe.format, probe.size
            if width * height > fc.max_pixels:
                return FetchResult("too_many_pixels", f"{width}x{height} exceeds {fc.max_pixels} pixels", sha256=sha)
            probe.verify()
        with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
            image.load()  # a full decode: verify() does not catch every truncation
            result = FetchResult(OK, sha256=sha, original_width=width, original_height=height)
            if min(width, height) < fc.min_image_size:
                result.status, result.error = "too_small", f"{width}x{height}: shorter side < {fc.min_image_size}"
                return result
            if max(width, height) > fc.max_aspect_ratio * min(width, height):
                result.status, result.error = "bad_aspect", f"{width}x{height}: aspect ratio > {fc.max_aspect_ratio}"
                return result
            result.image, result.image_format, result.width, result.height = data, fmt, width, height
            if fc.resize_max_side and max(width, height) > fc.resize_max_side:
                result.image, result.width, result.height = _resized(image, fc)
                result.image_format = fc.resize_format.upper()
            return result
    except Image.DecompressionBombError as exc:
        return FetchResult("too_many_pixels", str(exc)[:300], sha256=sha)
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, Image.UnidentifiedImageError) as exc:
        return FetchResult("decode_error", f"{type(exc).__name__}: {exc}"[:300], sha256=sha)


def _resized(image, fc: FetchConfig) -> tuple[bytes, int, int]:
    from PIL import Image

    mode = "RGB" if fc.resize_format == "jpeg" else ("RGBA" if "A" in image.getbands() else "RGB")
    image = image.convert(mode)
    image.thumbnail((fc.resize_max_side, fc.resize_max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    options = {"quality": fc.resize_quality} if fc.resize_format in ("jpeg", "webp") else {"optimize": True}
    image.save(buffer, format=fc.resize_format.upper(), **options)
    return buffer.getvalue(), image.width, image.height


# --- many URLs -------------------------------------------------------------------------------------


async def fetch_urls(urls: list[str], fc: FetchConfig) -> dict[str, FetchResult]:
    """Fetch and check every URL (each once), `concurrency` at a time; url -> result."""
    import aiohttp

    # Spread hosts over the run (URLs of one page share a host): order by a hash, not by input.
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in sorted(set(urls), key=lambda u: xxhash.xxh64_intdigest(u.encode())):
        queue.put_nowait(url)
    results: dict[str, FetchResult] = {}
    limits = _HostLimits(fc.per_host_concurrency, fc.per_host_rate)
    rng = random.Random(0)
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=fc.timeout_s, connect=fc.connect_timeout_s)
    resolver = None if fc.allow_private_addresses else _public_only_resolver()
    connector = aiohttp.TCPConnector(limit=fc.concurrency, limit_per_host=0, resolver=resolver, ttl_dns_cache=300)
    headers = {"User-Agent": fc.user_agent, "Accept": "image/*"}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-decode") as decoders:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers, trust_env=False) as session:

            async def worker() -> None:
                while not queue.empty():
                    url = queue.get_nowait()
                    result = await _fetch(session, url, fc, limits, rng)
                    if result.status == "downloaded":
                        checked = await loop.run_in_executor(decoders, check_image, result.data, fc)
                        checked.http_status, checked.attempts = result.http_status, result.attempts
                        checked.bytes_downloaded = len(result.data or b"")
                        result = checked
                    results[url] = result

            await asyncio.gather(*(worker() for _ in range(min(fc.concurrency, queue.qsize()) or 1)))
    return results


class CrawlImages:
    """The image responses of a crawl (CRAWL_IMAGES tables), looked up by URL.

    Only the URL columns stay in memory; the bytes are read per batch, from the tables that hold
    some of its URLs. The first response for a URL wins (a crawl may fetch an image twice).
    """

    def __init__(self, sources: list[str]):
        self.sources = sources
        self.urls = [storage.read_table(uri, columns=["image_url"])["image_url"] for uri in sources]

    def results(self, urls: list[str], fc: FetchConfig) -> dict[str, FetchResult]:
        """Each URL's crawled image, checked like a download (`check_image`), or `not_in_crawl`."""
        import pyarrow.compute as pc

        wanted = pa.array(sorted(set(urls)), pa.string())
        found: dict[str, bytes] = {}
        for uri, index in zip(self.sources, self.urls, strict=True):
            hits = pc.is_in(index, value_set=wanted)
            if pc.any(hits).as_py():
                rows = storage.read_table(uri, columns=["image_url", "image"]).filter(hits)
                for url, data in zip(rows["image_url"].to_pylist(), rows["image"].to_pylist(), strict=True):
                    found.setdefault(url, data)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-decode") as decoders:
            checked = dict(zip(found, decoders.map(lambda data: _check_crawled(data, fc), found.values()), strict=True))
        missing = FetchResult("not_in_crawl", "no HTTP 200 image response for this URL in the crawl files")
        return {url: checked.get(url, missing) for url in wanted.to_pylist()}


def _check_crawled(data: bytes, fc: FetchConfig) -> FetchResult:
    if len(data) > fc.max_bytes:
        return FetchResult("too_large", f"{len(data)} bytes > {fc.max_bytes}", 200)
    result = check_image(data, fc)
    result.http_status = 200
    return result


def _result_columns(urls: list[str], results: dict[str, FetchResult]) -> dict[str, pa.Array]:
    rows = [results[u] for u in urls]
    return {
        "status": pa.array([r.status for r in rows], pa.string()),
        "error": pa.array([r.error for r in rows], pa.string()),
        "image": pa.array([r.image if r.status == OK else None for r in rows], pa.binary()),
        "image_sha256": pa.array([r.sha256 for r in rows], pa.string()),
        "image_format": pa.array([r.image_format for r in rows], pa.string()),
        "image_width": pa.array([r.width for r in rows], pa.int32()),
        "image_height": pa.array([r.height for r in rows], pa.int32()),
        "original_width": pa.array([r.original_width for r in rows], pa.int32()),
        "original_height": pa.array([r.original_height for r in rows], pa.int32()),
        "http_status": pa.array([r.http_status for r in rows], pa.int32()),
        "attempts": pa.array([r.attempts for r in rows], pa.int16()),
    }


def fetch_images(inputs: list[str], output: str, cfg: BuildConfig, crawl_images: list[str] | None = None) -> StageStats:
    """Fetch the images of the PAIRS shards `inputs` into the PAIRS shard `output` (every row, with its status).

    With `ingest.fetch.source: warc` the images come from `crawl_images` (the build's CRAWL_IMAGES
    tables, `layout.crawl_images`) instead of the web.
    """
    fc = cfg.ingest.fetch
    crawl = None
    if fc.source == "warc":
        if crawl_images is None:
            raise ConfigError("ingest.fetch.source is 'warc' but no crawl images tables were given to fetch_images")
        crawl = CrawlImages(crawl_images)
    shard = storage.name(output).removesuffix(".parquet")
    stats = StageStats(stage=STAGE, shard=shard)
    started = time.monotonic()
    by_status: Counter = Counter()
    downloaded = 0
    dropped: list[pa.Table] = []
    with storage.TableWriter(output, PAIRS) as writer:
        for uri in inputs:
            pairs = conform(storage.read_table(uri), PAIRS, where=f"fetch_images input {uri}")
            stats.bytes_in += pairs.nbytes
            for offset in range(0, pairs.num_rows, fc.batch_rows):
                batch = pairs.slice(offset, fc.batch_rows)
                urls = batch["image_url"].to_pylist()
                results = crawl.results(urls, fc) if crawl is not None else asyncio.run(fetch_urls(urls, fc))
                for name, values in _result_columns(urls, results).items():
                    batch = batch.set_column(batch.schema.get_field_index(name), name, values)
                statuses = Counter(batch["status"].to_pylist())
                by_status.update(statuses)
                downloaded += sum(r.bytes_downloaded for r in results.values())
                stats.rows_in += batch.num_rows
                stats.rows_out += statuses.get(OK, 0)
                for status, count in statuses.items():
                    if status != OK:
                        stats.drop(status, count)
                dropped.append(_failures(batch, uri, offset))
                writer.write(batch)
    stats.bytes_out = writer.bytes
    stats.outputs = [output]
    stats.seconds = time.monotonic() - started
    storage.write_table(layout.dropped_uri(output), pa.concat_tables([DROPPED.empty_table(), *dropped]))
    report = {
        "shard": shard,
        "source": fc.source,
        "rows": stats.rows_in,
        "ok": stats.rows_out,
        "success_rate": round(stats.rows_out / stats.rows_in, 4) if stats.rows_in else None,
        "by_status": dict(sorted(by_status.items())),
        "bytes_downloaded": downloaded,
        "seconds": round(stats.seconds, 3),
    }
    storage.write_json(layout.fetch_report_uri(output), report)
    log.info("%s[%s]: %d of %d images ok (%.1f%%), %s", STAGE, shard, stats.rows_out, stats.rows_in,
             100 * (report["success_rate"] or 0), report["by_status"])  # fmt: skip
    return stats


def _failures(batch: pa.Table, uri: str, offset: int) -> pa.Table:
    """DROPPED rows for the failed fetches of a batch (reason = status, detail = error)."""
    import pyarrow.compute as pc

    failed = pc.not_equal(batch["status"], OK)
    rows = batch.filter(failed)
    index = pa.array(range(offset, offset + batch.num_rows), pa.int64()).filter(failed)
    detail = pc.binary_join_element_wise(pc.fill_null(rows["error"], ""), rows["pair_id"], "; pair_id=")
    return pa.table(
        {
            "stage": pa.array([STAGE] * rows.num_rows, pa.string()),
            "reason": rows["status"],
            "doc_id": rows["doc_id"],
            "url": rows["image_url"],
            "source_uri": pa.array([uri] * rows.num_rows, pa.string()),
            "source_offset": index,
            "detail": detail,
        }
    ).cast(DROPPED)
