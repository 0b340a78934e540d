"""Publishing to S3 (SeaweedFS on 127.0.0.1): checksums, retries, a killed publish, consumers, takedown."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation import layout, release, storage, transfer
from curation.cli import app
from curation.config import load_config
from curation.errors import BadInputError, TransientError
from curation.pipeline import run_build
from curation.publish import publish, read_manifest, verify_release
from tests.faulty_proxy import SLOW_DOWN
from tests.test_publish_release import ROOT, Gated, gated_build
from tests.test_publish_webdataset import make_pairs

pytestmark = pytest.mark.slow
MiB = 2**20
runner = CliRunner()


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, sample_crawl: list[str]) -> Gated:
    return gated_build(tmp_path_factory.mktemp("gated-s3"), sample_crawl, "g1")


@pytest.fixture(scope="module")
def big_pairs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """16 pairs of noise images (~9 MiB of PNG): their one tar shard needs a multipart upload."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.parquet"
    pq.write_table(make_pairs(16, noise=True, size=(512, 384)), path)
    return str(path)


def _s3_config(gated: Gated, bucket: str, tmp_path: Path, **publish_settings: object):
    cfg = gated.config(tmp_path, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, **publish_settings)
    return cfg.model_copy(update={"release_root": f"s3://{bucket}/releases"})


def _composite_sha256(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part))
    return base64.b64encode(hashlib.sha256(digests).digest()).decode() + f"-{-(-len(data) // part)}"


def test_release_on_s3_is_checksummed_verified_and_read_by_consumers(gated, big_pairs, s3_bucket, s3_server, tmp_path):
    import pyarrow.fs
    import webdataset as wds

    cfg = _s3_config(gated, s3_bucket, tmp_path, shard_rows=80)
    publish(gated.filtered, layout.release_uri(cfg, "2026-W05"), cfg, "2026-W05", gated.report, pairs=[big_pairs])
    manifest = verify_release(cfg)  # through LATEST: every object re-read against the manifest
    client = s3_server.client()
    prefix = "releases/web-en/2026-W05"

    # The tar went up in 5 MiB parts with a SHA256 each; S3 reports the composite of what it stored.
    tar_entry = next(f for f in manifest["pairs"]["files"] if f["kind"] == "webdataset")
    assert tar_entry["bytes"] > 5 * MiB
    head = client.head_object(Bucket=s3_bucket, Key=f"{prefix}/{tar_entry['path']}", ChecksumMode="ENABLED")
    body = client.get_object(Bucket=s3_bucket, Key=f"{prefix}/{tar_entry['path']}")["Body"].read()
    assert head["ChecksumSHA256"].replace("=-", "-").rstrip("=") == _composite_sha256(body, 5 * MiB).replace("=-", "-")
    assert head["ChecksumSHA256"].endswith("-2") and head["Metadata"]["sha256"] == tar_entry["sha256"]
    # A small file went up whole: its checksum is the plain SHA256 of the object.
    part = manifest["files"][0]
    head = client.head_object(Bucket=s3_bucket, Key=f"{prefix}/{part['path']}", ChecksumMode="ENABLED")
    data = client.get_object(Bucket=s3_bucket, Key=f"{prefix}/{part['path']}")["Body"].read()
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert manifest["upload"]["uploaded"] == len(release.manifest_files(manifest)) and manifest["upload"]["reused"] == 0

    # Consumer 1: pyarrow straight from S3.
    fs = pyarrow.fs.S3FileSystem(
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        endpoint_override=s3_server.host_port,
        scheme="http",
        region="us-east-1",
    )
    table = pq.read_table(f"{s3_bucket}/{prefix}/data/", filesystem=fs)
    assert table.num_rows == manifest["rows"] > 100
    expected = [i for uri in sorted(gated.filtered) for i in pq.read_table(uri, columns=["doc_id"])["doc_id"].to_pylist()]
    assert table["doc_id"].to_pylist() == expected
    # Consumer 2: webdataset over presigned HTTP URLs (no credentials on the reader's side).
    urls = [
        client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": f"{prefix}/{f['path']}"})
        for f in manifest["pairs"]["files"]
        if f["kind"] == "webdataset"
    ]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pilrgb").to_tuple("jpg;png", "txt"))
    assert [caption for _, caption in samples] == make_pairs(16)["caption"].to_pylist()
    assert all(image.size == (512, 384) for image, _ in samples)

    # A changed object is caught, and named.
    client.put_object(Bucket=s3_bucket, Key=f"{prefix}/{part['path']}", Body=data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BadInputError, match=part["path"]):
        verify_release(cfg)


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: object):
        yield self.data


@contextmanager
def throttled(client, fragment: str, failures: int):
    """S3 answers the first `failures` PUTs of keys containing `fragment` with 503 SlowDown.

    (tests/faulty_proxy.py does this on the wire, but it answers HEAD with Content-Length 0, which
    breaks the post-upload check; so the 503s are produced at the client's HTTP layer instead.)
    """
    from botocore.awsrequest import AWSResponse

    state = {"left": failures, "failed": 0}

    def answer(request, **_):
        if request.method == "PUT" and fragment in request.url and state["left"] > 0:
            state["left"] -= 1
            state["failed"] += 1
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Body(SLOW_DOWN))
        return None

    client.meta.events.register_first("before-send.s3.PutObject", answer)
    try:
        yield state
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", answer)


def test_throttled_uploads_are_retried_with_backoff(gated, s3_bucket, tmp_path):
    # botocore's own retries are off (request_attempts=1): the publisher's whole-file retry absorbs the 503s.
    quick = {"request_attempts": 1, "retry_backoff_s": 0.01, "data_card": False}
    cfg = _s3_config(gated, s3_bucket, tmp_path, upload_attempts=5, **quick)
    client = transfer.s3_client(transfer.TransferSettings.from_config(cfg.publish))
    with throttled(client, "/data/part-00000", failures=3) as state:
        publish(gated.filtered, layout.release_uri(cfg, "2026-W06"), cfg, "2026-W06", gated.report)
    assert state["failed"] == 3
    manifest = verify_release(cfg)
    assert manifest["upload"]["retries"] == 3

    stubborn = _s3_config(gated, s3_bucket, tmp_path, upload_attempts=2, **quick)
    with throttled(client, "/data/part-00000", failures=10), pytest.raises(TransientError, match="failed 2 times"):
        publish(gated.filtered, layout.release_uri(stubborn, "2026-W07"), stubborn, "2026-W07", gated.report)
    assert not storage.exists(release.manifest_uri(stubborn, "2026-W07"))
    assert release.latest(stubborn) == "2026-W06"


KILLED_PUBLISH = """
import json, sys, threading, time
from pathlib import Path
from curation import layout, transfer
from curation.config import load_config
from curation.publish import publish

args = json.loads(Path(sys.argv[1]).read_text())
cfg = load_config(args["config"])
client = transfer.s3_client(transfer.TransferSettings.from_config(cfg.publish))
parts = []
lock = threading.Lock()

def hang_on_second_part(**_):
    with lock:
        parts.append(1)
        n = len(parts)
    if n == 2:  # mid multipart upload: some files are up, the tar is half up, no manifest yet
        Path(args["marker"]).write_text("hung")
        time.sleep(600)

client.meta.events.register("before-send.s3.UploadPart", hang_on_second_part)
publish(args["inputs"], layout.release_uri(cfg, "2026-W08"), cfg, "2026-W08", args["report"], pairs=[args["pairs"]])
"""


def test_publish_killed_mid_upload_leaves_no_manifest_and_a_rerun_completes_it(gated, big_pairs, s3_bucket, s3_server, tmp_path):
    cfg = _s3_config(gated, s3_bucket, tmp_path, shard_rows=50, file_concurrency=1, max_concurrency=1)
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    marker = tmp_path / "hung"
    args = {"config": str(tmp_path / "cfg.yaml"), "inputs": gated.filtered, "report": gated.report, "pairs": big_pairs}
    (tmp_path / "args.json").write_text(json.dumps(args | {"marker": str(marker)}))
    child = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISH, str(tmp_path / "args.json")], cwd=ROOT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the publish ended before it could be killed"
            assert time.monotonic() < deadline, "the publish never reached its second part"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    client = s3_server.client()
    prefix = "releases/web-en/2026-W08/"
    keys = {o["Key"].removeprefix(prefix) for o in client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix).get("Contents", [])}
    assert {k for k in keys if k.startswith("data/part-")}, "some files were uploaded before the kill"
    assert "manifest.json" not in keys and release.latest(cfg) is None
    assert client.list_multipart_uploads(Bucket=s3_bucket, Prefix=prefix).get("Uploads"), "the tar upload was cut off"
    with pytest.raises(Exception, match="does not exist"):
        read_manifest(cfg, "2026-W08")

    stats = publish(gated.filtered, layout.release_uri(cfg, "2026-W08"), cfg, "2026-W08", gated.report, pairs=[big_pairs])
    manifest = verify_release(cfg)
    assert manifest["rows"] == stats.rows_out and release.latest(cfg) == "2026-W08"
    uploaded_before = {k for k in keys if k.startswith("data/")}
    assert manifest["upload"]["reused"] >= len(uploaded_before) >= 1  # intact files were not sent again
    assert not client.list_multipart_uploads(Bucket=s3_bucket, Prefix=prefix).get("Uploads")  # the cut-off one aborted


def _documents(cfg, release_id: str) -> pa.Table:
    root = layout.release_uri(cfg, release_id)
    return pa.concat_tables([storage.read_table(storage.join(root, f["path"])) for f in read_manifest(cfg, release_id)["files"]])


def test_takedown_rewrites_the_release_and_the_next_build_keeps_the_rows_out(s3_bucket, s3_server, tmp_path, sample_crawl):
    base = {
        "inputs": sample_crawl,
        "work_root": str(tmp_path / "work"),
        "release_root": f"s3://{s3_bucket}/releases",
        "state_root": str(tmp_path / "state"),
        "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json")},
    }
    cfg = load_config(overrides=base | {"build_id": "2026-W01"})
    run_build(cfg)
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.model_copy(update={"build_id": None}).to_yaml())
    published = _documents(cfg, "2026-W01")
    urls = published["url"].to_pylist()[:3]
    (tmp_path / "urls.txt").write_text("# DMCA notice 9\n" + "\n".join(urls) + "\n")

    result = runner.invoke(app, ["takedown", "--urls", str(tmp_path / "urls.txt"), "--ticket", "DMCA-9", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "2026-W01 -> 2026-W01.r1: 3 row(s) removed" in result.output
    assert release.latest(cfg) == "2026-W01.r1"
    revision = verify_release(cfg)
    assert revision["rows"] == published.num_rows - 3 and revision["parent"] == "2026-W01"
    kept = _documents(cfg, "2026-W01.r1")
    assert not set(urls) & set(kept["url"].to_pylist())
    old = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="releases/web-en/2026-W01/")["Contents"]]
    assert old == ["releases/web-en/2026-W01/WITHDRAWN.json"]
    refused = runner.invoke(app, ["release", "rollback", "-c", str(config), "--to", "2026-W01"])
    assert refused.exit_code == 2 and "withdrawn" in refused.output

    # The next build crawls the same pages again, plus new ones. The gate is set for an overlapping
    # re-crawl (old pages are duplicates of what is published); the taken-down pages stay out.
    from curation.ingest.sample_crawl import write_sample_crawl

    fresh = write_sample_crawl(str(tmp_path / "crawl2"), pages=300, seed=8, files=3)
    recrawl_gate = {
        "max_dedup_ratio": 1.0,
        "source_kept_ratio": {"min": 0.0},
        "domain_kept_ratio": {"min": 0.0},
        "drift": {"enabled": False},
    }
    overrides = base | {"build_id": "2026-W02", "inputs": [*sample_crawl, *fresh]}
    summary = run_build(load_config(overrides=overrides | {"gate": base["gate"] | recrawl_gate}))
    assert summary["funnel"]["filter"]["dropped"]["takedown"] == 3
    again = _documents(cfg, "2026-W02")
    assert again.num_rows > 50 and not set(urls) & set(again["url"].to_pylist())
    assert release.latest(cfg) == "2026-W02"
