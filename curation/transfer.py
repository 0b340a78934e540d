"""Put release files in place, verified: S3 multipart uploads with SHA256 checksums, or local atomic copies.

Every file is checked after it lands (S3: the checksum the server computed over what it stored,
against the one computed here from the local bytes; local: a re-hash of the copy), retried with
exponential backoff and jitter on transient failures, and skipped when an identical copy is
already there, so a publish that was killed halfway resumes where it stopped.

S3 checksums: a single-part upload carries the SHA256 of the whole object; a multipart upload
carries one SHA256 per part and S3 reports the composite `base64(sha256(part digests))-N`. The part
size is the one s3transfer uses for the file, so the composite can be predicted exactly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import random
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation import storage
from curation.config import PublishConfig
from curation.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
# Error codes worth another attempt: throttling, server trouble, and bytes damaged in transit
# (the server refused a part whose checksum did not match what it received).
_RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "500",
    "502",
    "503",
    "504",
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
}
_FATAL_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_CONTENT_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".tar": "application/x-tar",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".png": "image/png",
    ".yaml": "application/yaml",
}


class ChecksumMismatch(TransientError):
    """What landed is not what was sent (size or checksum differs): upload it again."""


@dataclass(frozen=True)
class TransferSettings:
    multipart_threshold: int = 64 * 2**20
    multipart_chunksize: int = 16 * 2**20
    max_concurrency: int = 8
    file_concurrency: int = 4
    attempts: int = 5
    backoff_s: float = 1.0
    request_attempts: int = 5

    @classmethod
    def from_config(cls, publish: PublishConfig) -> TransferSettings:
        return cls(
            multipart_threshold=publish.multipart_threshold,
            multipart_chunksize=publish.multipart_chunksize,
            max_concurrency=publish.max_concurrency,
            file_concurrency=publish.file_concurrency,
            attempts=publish.upload_attempts,
            backoff_s=publish.retry_backoff_s,
            request_attempts=publish.request_attempts,
        )

    def transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            use_threads=True,
        )

    def part_size(self, size: int) -> int | None:
        """The part size s3transfer uses for a file of `size` bytes; None for a single-part upload."""
        if size < self.multipart_threshold:
            return None
        from s3transfer.utils import ChunksizeAdjuster

        return ChunksizeAdjuster().adjust_chunksize(self.multipart_chunksize, size)


@dataclass(frozen=True)
class StagedFile:
    """A finished local file on its way to `path` inside a release."""

    path: str  # relative to the release root, e.g. data/part-00000.parquet
    local: Path
    kind: str  # "parquet", "webdataset" or "attachment"
    bytes: int
    sha256: str  # hex, of the whole file
    s3_checksum: str  # what S3 reports as ChecksumSHA256 once uploaded with our part size
    rows: int | None = None

    def entry(self) -> dict[str, Any]:
        """The file's line in manifest.json."""
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "bytes": self.bytes, "sha256": self.sha256}
        if self.rows is not None:
            out["rows"] = self.rows
        return out


def stage_file(
    local: Path, path: str, kind: str, settings: TransferSettings, rows: int | None = None, sha256: str | None = None
) -> StagedFile:
    """Hash a finished local file in one pass: its SHA256 (unless known) and the S3 checksum for its part size."""
    size = local.stat().st_size
    part = settings.part_size(size)
    whole = hashlib.sha256() if sha256 is None or part is None else None
    parts: list[bytes] = []
    with open(local, "rb") as fh:
        while chunk := fh.read(part or _BLOCK):
            if whole is not None:
                whole.update(chunk)
            if part is not None:
                parts.append(hashlib.sha256(chunk).digest())
    if part is None:
        assert whole is not None
        s3_checksum = base64.b64encode(whole.digest()).decode()
    else:
        s3_checksum = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode() + f"-{len(parts)}"
    return StagedFile(path, local, kind, size, whole.hexdigest() if whole is not None else str(sha256), s3_checksum, rows)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@functools.lru_cache(maxsize=8)
def _client_for(endpoint: str | None, _access_key: str | None, pool: int, attempts: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        max_pool_connections=pool,
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_client(settings: TransferSettings) -> Any:
    """A boto3 client with a connection pool as wide as the transfers in flight (cached per process)."""
    pool = settings.file_concurrency * settings.max_concurrency + 4
    endpoint, key = os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID")
    return _client_for(endpoint, key, pool, settings.request_attempts)


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind `exc`, looking through s3transfer's S3UploadFailedError wrapper."""
    from botocore.exceptions import ClientError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return str(seen.response.get("Error", {}).get("Code", ""))
        seen = seen.__cause__ or seen.__context__
    return None


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError, ReadTimeoutError, ResponseStreamingError

    if isinstance(exc, TransientError | ConnectionError | ReadTimeoutError | ResponseStreamingError):
        return True
    code = _error_code(exc)
    return code in _RETRYABLE_CODES if code is not None else False


@dataclass
class TransferReport:
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    retries: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "uploaded": len(self.uploaded),
            "reused": len(self.reused),
            "bytes_uploaded": self.bytes_uploaded,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
        }


class Uploader:
    """Puts staged files under a release root (local folder or s3:// prefix), in parallel, verified.

    `submit` returns at once (the file goes to a pool of `file_concurrency` workers); `wait`
    re-raises the first failure. Use as a context manager so the pool always shuts down.
    """

    def __init__(self, root: str, settings: TransferSettings, sleep: Callable[[float], None] = time.sleep):
        self.root = root
        self.settings = settings
        self.report = TransferReport()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.file_concurrency, thread_name_prefix="upload")
        self._futures: list[Future[None]] = []
        self._started = time.monotonic()

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def uri(self, path: str) -> str:
        return storage.join(self.root, path)

    def submit(self, file: StagedFile) -> None:
        self._futures.append(self._pool.submit(self.put, file))

    def wait(self) -> TransferReport:
        futures, self._futures = self._futures, []
        for future in futures:
            future.result()
        self.report.seconds = time.monotonic() - self._started
        return self.report

    def put_all(self, files: Iterable[StagedFile]) -> TransferReport:
        for file in files:
            self.submit(file)
        return self.wait()

    def put(self, file: StagedFile) -> None:
        """Upload one file unless an identical copy is there; verify; retry transient failures."""
        uri = self.uri(file.path)
        if self.matches(file, uri):
            with self._lock:
                self.report.reused.append(file.path)
            return
        for attempt in range(1, self.settings.attempts + 1):
            try:
                self._put_once(file, uri)
                self._verify(file, uri)
                break
            except Exception as exc:
                if not _is_transient(exc):
                    code = _error_code(exc)
                    if code in _FATAL_CODES:
                        raise ConfigError(f"cannot write {uri}: S3 {code}. Check the bucket name and credentials.") from exc
                    raise
                if attempt == self.settings.attempts:
                    raise TransientError(f"upload of {uri} failed {attempt} times, last: {exc}; retry the publish") from exc
                delay = self.settings.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
                log.warning("upload of %s failed (attempt %d): %s; retrying in %.1fs", uri, attempt, exc, delay)
                with self._lock:
                    self.report.retries += 1
                self._sleep(delay)
        with self._lock:
            self.report.uploaded.append(file.path)
            self.report.bytes_uploaded += file.bytes

    # --- one attempt -----------------------------------------------------------------------

    def _put_once(self, file: StagedFile, uri: str) -> None:
        if storage.is_s3(uri):
            bucket, key = _split(uri)
            extra = {
                "ChecksumAlgorithm": "SHA256",
                "Metadata": {"sha256": file.sha256},
                "ContentType": _CONTENT_TYPES.get(Path(file.path).suffix, "application/octet-stream"),
            }
            s3_client(self.settings).upload_file(
                str(file.local), bucket, key, ExtraArgs=extra, Config=self.settings.transfer_config()
            )
            return
        target = Path(uri.removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with open(file.local, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _BLOCK)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _verify(self, file: StagedFile, uri: str) -> None:
        if not self.matches(file, uri):
            raise ChecksumMismatch(f"{uri} does not match what was uploaded (bytes {file.bytes}, sha256 {file.sha256})")

    def matches(self, file: StagedFile, uri: str) -> bool:
        """True if `uri` holds exactly the bytes of `file` (S3: size, metadata and the server's checksum)."""
        if not storage.is_s3(uri):
            path = Path(uri.removeprefix("file://"))
            return path.is_file() and path.stat().st_size == file.bytes and sha256_file(path) == file.sha256
        from botocore.exceptions import ClientError

        bucket, key = _split(uri)
        try:
            head = s3_client(self.settings).head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        if head["ContentLength"] != file.bytes or head.get("Metadata", {}).get("sha256") != file.sha256:
            return False
        reported = head.get("ChecksumSHA256")
        if reported is None:
            # A store that keeps no checksums: read the object back and hash it (slow, but certain).
            log.warning("%s reports no SHA256 checksum; verifying by download", uri)
            return hashlib.sha256(storage.read_bytes(uri)).hexdigest() == file.sha256
        return _normalize(reported) == _normalize(file.s3_checksum)


def _normalize(checksum: str) -> str:
    """S3 writes composite checksums as `b64-N` (AWS) or `b64=-N` (padding kept): compare the digest and N."""
    digest, _, parts = checksum.partition("-")
    return digest.rstrip("=") + (f"-{parts}" if parts else "")


def abort_incomplete_uploads(prefix: str, settings: TransferSettings) -> int:
    """Abort multipart uploads a killed publish left under `prefix` (their parts cost storage)."""
    if not storage.is_s3(prefix):
        return 0
    from botocore.exceptions import ClientError

    bucket, key = _split(prefix.rstrip("/") + "/")
    client = s3_client(settings)
    aborted = 0
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
    except ClientError as exc:  # housekeeping only: a bucket lifecycle rule may do it instead
        log.warning("cannot abort incomplete multipart uploads under %s: %s", prefix, exc)
    if aborted:
        log.info("aborted %d incomplete multipart upload(s) under %s", aborted, prefix)
    return aborted


def download(uri: str, local: Path, settings: TransferSettings) -> Path:
    """Copy `uri` to the local file `local` (multipart-parallel on S3); returns `local`."""
    local.parent.mkdir(parents=True, exist_ok=True)
    if storage.is_s3(uri):
        bucket, key = _split(uri)
        s3_client(settings).download_file(bucket, key, str(local), Config=settings.transfer_config())
    else:
        shutil.copyfile(uri.removeprefix("file://"), local)
    return local
