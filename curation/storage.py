"""Every read and write of the pipeline, by URI: local paths, `file://` and `s3://`.

Writes are atomic: a local file is written under a temporary name and renamed; an S3 object
only appears when its upload completes. So a killed task never leaves a file that looks
finished. S3 credentials and endpoint come from the standard AWS chain (environment variables
such as AWS_ACCESS_KEY_ID / AWS_ENDPOINT_URL, profiles, instance roles), never from config.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import BadInputError, TransientError

PARQUET_OPTIONS = {"compression": "zstd", "row_group_size": 64 * 1024}
_TRANSIENT_S3_CODES = {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500"}


# --- URIs -------------------------------------------------------------------------------------


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/', whatever the scheme."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def name(uri: str) -> str:
    """Last path component: `s3://b/x/shard-1.warc.gz` -> `shard-1.warc.gz`."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


# --- S3 client ---------------------------------------------------------------------------------


def s3_client() -> Any:
    """A boto3 S3 client for the current AWS environment, cached per process and endpoint."""
    return _s3_client_for(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID"))


@functools.lru_cache(maxsize=8)
def _s3_client_for(endpoint: str | None, _access_key: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})  # 5 tries in all
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Translate botocore errors: missing -> FileNotFoundError, throttling/network -> TransientError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

    try:
        yield
    except S3UploadFailedError as exc:  # upload_file wraps the last ClientError of its retries
        cause = exc.__cause__ or exc.__context__
        code = str(cause.response.get("Error", {}).get("Code", "")) if isinstance(cause, ClientError) else ""
        if code in _TRANSIENT_S3_CODES or any(c in str(exc) for c in _TRANSIENT_S3_CODES if len(c) > 3):
            raise TransientError(f"S3 upload to {uri} failed after retries ({exc}); retry later") from exc
        raise
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise FileNotFoundError(uri) from exc
        if code in _TRANSIENT_S3_CODES:
            raise TransientError(f"S3 {code} on {uri}; retry later") from exc
        raise
    except (ConnectionError, ReadTimeoutError) as exc:
        raise TransientError(f"S3 connection failed on {uri}: {exc}") from exc


# --- bytes ------------------------------------------------------------------------------------


def write_bytes(uri: str, data: bytes) -> None:
    """Write `data` atomically (temp file + rename, or a single completed S3 upload)."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        with _s3_errors(uri):
            s3_client().upload_fileobj(io.BytesIO(data), bucket, key)
        return
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        with _s3_errors(uri):
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return _local(uri).read_bytes()


@contextlib.contextmanager
def open_input(uri: str) -> Iterator[IO[bytes]]:
    """A streaming binary reader; a missing or unreadable file raises BadInputError naming it."""
    try:
        if is_s3(uri):
            bucket, key = _bucket_key(uri)
            with _s3_errors(uri):
                body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
            try:
                yield body
            finally:
                body.close()
        else:
            with open(_local(uri), "rb") as fh:
                yield fh
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise BadInputError(f"cannot open input {uri}: {exc}. Check the path and permissions.") from exc


def upload_file(local_path: str | Path, uri: str) -> None:
    """Copy a local file to `uri` (multipart on S3, so large files stream)."""
    if is_s3(uri):
        from boto3.s3.transfer import TransferConfig

        bucket, key = _bucket_key(uri)
        transfer = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)
        with _s3_errors(uri):
            s3_client().upload_file(str(local_path), bucket, key, Config=transfer)
        return
    write_bytes(uri, Path(local_path).read_bytes())


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        try:
            with _s3_errors(uri):
                s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except FileNotFoundError:
            return False
    return _local(uri).exists()


def size(uri: str) -> int:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        with _s3_errors(uri):
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    return _local(uri).stat().st_size


def delete(uri: str) -> None:
    """Delete one file; a missing file is fine."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        with _s3_errors(uri):
            s3_client().delete_object(Bucket=bucket, Key=key)
        return
    _local(uri).unlink(missing_ok=True)


def list_files(prefix: str, suffix: str = "") -> list[str]:
    """Every file under the folder `prefix` (recursively) whose name ends in `suffix`, sorted."""
    if is_s3(prefix):
        bucket, key = _bucket_key(prefix)
        key = key.rstrip("/") + "/" if key else ""
        out: list[str] = []
        with _s3_errors(prefix):
            for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out += [f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", [])]
        return sorted(u for u in out if u.endswith(suffix))
    root = _local(prefix)
    if not root.is_dir():
        return []
    # Hidden names are in-flight temporary files of an atomic write: never list them.
    return sorted(
        str(p) for p in root.rglob(f"*{suffix}") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
    )


def expand_inputs(patterns: list[str]) -> list[str]:
    """Resolve input URIs: a file, a local glob (`crawl/*.warc.gz`), or a folder/S3 prefix ending in '/'."""
    out: list[str] = []
    for pattern in patterns:
        if pattern.endswith("/"):
            out += list_files(pattern)
        elif not is_s3(pattern) and any(ch in pattern for ch in "*?["):
            base = Path(pattern.removeprefix("file://"))
            anchor = Path(base.anchor or ".")
            out += sorted(str(p) for p in anchor.glob(str(base.relative_to(anchor))) if p.is_file())
        else:
            out.append(pattern)
    return list(dict.fromkeys(out))


# --- tables and JSON --------------------------------------------------------------------------


def write_table(uri: str, table: pa.Table) -> int:
    """Write a Parquet file (zstd) atomically; returns its size in bytes."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, **PARQUET_OPTIONS)
    data = buffer.getvalue().to_pybytes()
    write_bytes(uri, data)
    return len(data)


class TableWriter:
    """Stream record batches into one Parquet file at `uri`, committed atomically on close.

    Batches go to a local temporary file first, so memory stays bounded by one batch; the file
    is renamed into place (or uploaded to S3) only if the `with` block ends without an error.
    """

    def __init__(self, uri: str, schema: pa.Schema):
        self.uri = uri
        self.schema = schema
        self.rows = 0
        self.bytes = 0
        if is_s3(uri):
            import tempfile

            fd, tmp = tempfile.mkstemp(suffix=".parquet")
            os.close(fd)
            self._tmp = Path(tmp)
        else:
            target = _local(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self._writer = pq.ParquetWriter(self._tmp, schema, **{k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"})

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if table.num_rows:
            self._writer.write(
                table.cast(self.schema) if table.schema != self.schema else table,
                row_group_size=PARQUET_OPTIONS["row_group_size"],
            )
            self.rows += table.num_rows

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._writer.close()
        try:
            if exc_type is None:
                self.bytes = self._tmp.stat().st_size
                if is_s3(self.uri):
                    upload_file(self._tmp, self.uri)
                else:
                    os.replace(self._tmp, _local(self.uri))
        finally:
            self._tmp.unlink(missing_ok=True)


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    if is_s3(uri):
        return pq.read_table(io.BytesIO(read_bytes(uri)), columns=columns)
    return pq.read_table(_local(uri), columns=columns)


def parquet_rows(uri: str) -> int:
    if is_s3(uri):
        return pq.ParquetFile(io.BytesIO(read_bytes(uri))).metadata.num_rows
    return pq.ParquetFile(_local(uri)).metadata.num_rows


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))
