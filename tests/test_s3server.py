"""Tests for the SeaweedFS-backed S3 test server (tests/s3server.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.netcheck import listening_addresses
from tests.s3server import HOST, S3Server

pytest_plugins = ["tests.conftest_s3"]
pytestmark = pytest.mark.slow  # every test here starts or uses a real server

MiB = 1024 * 1024


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def test_put_get_roundtrip(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="dir/hello.txt", Body=b"hello s3")
    body = client.get_object(Bucket=s3_bucket, Key="dir/hello.txt")["Body"].read()
    assert body == b"hello s3"
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="dir/")
    assert [obj["Key"] for obj in listed["Contents"]] == ["dir/hello.txt"]


def test_fixture_sets_env(s3_server: S3Server, s3_bucket: str) -> None:
    for key, value in s3_server.env().items():
        assert os.environ[key] == value
    # A default boto3 client configured purely from the environment works.
    import boto3

    client = boto3.client("s3")
    names = [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert s3_bucket in names


def test_credentials_are_required(s3_server: S3Server, s3_bucket: str) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    anonymous = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError):
        anonymous.put_object(Bucket=s3_bucket, Key="nope", Body=b"x")
    wrong = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        config=Config(s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError):
        wrong.list_buckets()


def test_multipart_upload_roundtrip(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MiB))
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    client = s3_server.client()
    client.upload_file(str(source), s3_bucket, "big.bin", Config=config)

    head = client.head_object(Bucket=s3_bucket, Key="big.bin")
    assert head["ContentLength"] == 12 * MiB
    assert head["ETag"].strip('"').endswith("-3")  # really went multipart

    target = tmp_path / "big.out"
    client.download_file(s3_bucket, "big.bin", str(target), Config=config)
    assert _sha256(target) == _sha256(source)


def test_pyarrow_parquet_roundtrip(s3_server: S3Server, s3_bucket: str) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        endpoint_override=s3_server.host_port,
        scheme="http",
        region="us-east-1",
    )
    table = pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"]})
    path = f"{s3_bucket}/parquet/part-0.parquet"
    pq.write_table(table, path, filesystem=s3)
    assert s3.get_file_info(path).size > 0
    assert pq.read_table(path, filesystem=s3).equals(table)


def test_every_listener_is_loopback(s3_server: S3Server) -> None:
    assert s3_server.pid is not None
    listeners = listening_addresses(s3_server.pid)
    assert listeners, "weed has no listening TCP sockets?"
    assert all(addr == HOST for addr, _ in listeners), listeners
    # ... and only on the ports we chose.
    assert {port for _, port in listeners} <= set(s3_server.ports.values()), (
        listeners,
        s3_server.ports,
    )
    assert s3_server.port in {port for _, port in listeners}


def test_server_stops_on_exit() -> None:
    server = S3Server()
    with server:
        pid = server.pid
        tmp_dir = server.tmp_dir
        assert pid is not None
        assert tmp_dir is not None
        assert server.startup_seconds is not None
        print(f"S3 server startup took {server.startup_seconds:.2f} s")
        server.create_bucket("exit-check")
        ports = dict(server.ports)
    assert server.pid is None
    # The PID is gone: reaped by Popen.wait, so not even a zombie remains.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not tmp_dir.exists()
    for name in ("master", "volume", "filer", "s3", "admin"):
        assert not Path(f"/tmp/seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock").exists()
    # Nothing listens on the S3 port any more.
    time.sleep(0.1)
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{ports['s3']}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode == 0:
        assert out.stdout.strip() == ""
