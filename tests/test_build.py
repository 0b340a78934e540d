"""End-to-end builds without Airflow: `curation build`'s code path, locally and on S3."""

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import layout, storage
from curation.errors import BadInputError, GateFailure
from curation.ingest.sample_crawl import write_truncated_copy
from curation.pipeline import load_build_config, run_build
from curation.publish import read_manifest, verify_release


def test_verify_release_catches_a_changed_file(build_config):
    cfg = build_config(build_id="tamper")
    run_build(cfg)
    assert verify_release(cfg)["rows"] > 100
    first = read_manifest(cfg, "tamper")["files"][0]["path"]
    part = Path(layout.release_uri(cfg, "tamper")) / first
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(BadInputError, match=first.rsplit("/", 1)[-1].replace(".", r"\.")):
        verify_release(cfg)


def _assert_release_consistent(manifest: dict, release: str) -> int:
    rows = 0
    for entry in manifest["files"]:
        data = storage.read_bytes(storage.join(release, entry["path"]))
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        n = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        assert n == entry["rows"]
        rows += n
    assert rows == manifest["rows"]
    return rows


def test_local_build_publishes_a_consistent_release(build_config):
    cfg = build_config(build_id="2026-W48")
    summary = run_build(cfg)
    manifest = read_manifest(cfg)  # through LATEST
    release = layout.release_uri(cfg, "2026-W48")
    assert summary["manifest"] == storage.join(release, "manifest.json")
    rows = _assert_release_consistent(manifest, release)
    assert rows == summary["rows"] == manifest["funnel"]["filter"]["rows_out"] > 100
    written = storage.read_bytes(layout.config_uri(cfg, "2026-W48")).decode()
    assert manifest["config_hash"] == load_build_config(layout.config_uri(cfg, "2026-W48")).config_hash()
    assert "min_words: 50" in written
    funnel = manifest["funnel"]
    assert funnel["ingest"]["rows_out"] == funnel["filter"]["rows_in"]
    for stage in funnel.values():
        assert stage["rows_in"] == stage["rows_out"] + sum(stage["dropped"].values())
    for reason in ("dup_exact", "toxicity", "gopher_quality"):
        assert funnel["filter"]["dropped"].get(reason, 0) > 0, reason
    assert {"lang", "http_status", "not_html", "invalid_utf8"} <= set(funnel["ingest"]["dropped"])
    # No two published documents share a normalized text; ids are unique.
    table = pq.read_table(Path(release) / "data")
    assert len(set(table["text_hash"].to_pylist())) == table.num_rows == len(set(table["doc_id"].to_pylist()))
    assert storage.read_bytes(layout.latest_uri(cfg)).decode().strip() == "2026-W48"


def test_rerun_is_idempotent_and_changed_content_is_refused(build_config):
    cfg = build_config(build_id="rerun")
    run_build(cfg)
    release = Path(layout.release_uri(cfg, "rerun"))
    before = {p.name: p.read_bytes() for p in release.rglob("*") if p.is_file()}
    run_build(cfg)
    after = {p.name: p.read_bytes() for p in release.rglob("*") if p.is_file()}
    assert before == after
    with pytest.raises(Exception, match="already exists with different content"):
        run_build(build_config(build_id="rerun", heuristics={"min_words": 300}))


def test_failed_gate_publishes_nothing_and_names_the_check(build_config):
    cfg = build_config(build_id="bad", gate={"min_rows": 1_000_000})
    with pytest.raises(GateFailure) as failure:
        run_build(cfg)
    message = str(failure.value)
    assert "expect_table_row_count_to_be_between" in message and "report:" in message
    assert not storage.exists(storage.join(layout.release_uri(cfg, "bad"), "manifest.json"))
    assert not storage.exists(layout.latest_uri(cfg))
    report = storage.read_json(layout.gate_report_uri(cfg, "bad"))
    assert report["passed"] is False
    assert [c["name"] for c in report["checks"] if not c["success"]] == ["documents: expect_table_row_count_to_be_between"]


def test_language_mix_fault_fails_the_gate(build_config):
    # Ingest lets German and French through, but the suite's language allowlist stays English.
    cfg = build_config(build_id="lang", ingest={"languages": []}, heuristics={"min_stop_words": 0}, gate={"languages": ["en"]})
    with pytest.raises(GateFailure, match=r"expect_column_values_to_be_in_set\(language\)"):
        run_build(cfg)


def test_bad_input_files_are_counted_and_the_build_goes_on(tmp_path, build_config, sample_crawl):
    truncated = str(tmp_path / "cut.warc.gz")
    write_truncated_copy(sample_crawl[0], truncated, keep_fraction=0.5)
    cfg = build_config(build_id="bad-input", inputs=[truncated, *sample_crawl[1:]])
    summary = run_build(cfg)
    dropped = summary["funnel"]["ingest"]["dropped"]
    assert dropped["truncated_record"] == 1 and dropped["invalid_utf8"] >= 1
    assert summary["manifest"] and summary["rows"] > 50


@pytest.mark.slow
def test_build_publishes_to_s3_and_reads_back_with_boto3(s3_bucket, build_config, s3_server):
    cfg = build_config(build_id="2026-W47", work_root=f"s3://{s3_bucket}/work", release_root=f"s3://{s3_bucket}/releases")
    summary = run_build(cfg)
    client = s3_server.client()
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key="releases/web-en/2026-W47/manifest.json")["Body"].read())
    assert client.get_object(Bucket=s3_bucket, Key="releases/web-en/LATEST")["Body"].read().decode().strip() == "2026-W47"
    total = 0
    for entry in manifest["files"]:
        body = client.get_object(Bucket=s3_bucket, Key=f"releases/web-en/2026-W47/{entry['path']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        total += pq.read_table(io.BytesIO(body)).num_rows
    assert total == manifest["rows"] == summary["rows"] > 100
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="work/2026-W47/")["Contents"]}
    assert "work/2026-W47/config.yaml" in keys and "work/2026-W47/gate/report.json" in keys


def test_blocklisted_documents_are_dropped_as_takedown(build_config):
    from curation.takedown import add_to_blocklist

    # Cross-build dedup off: the second build re-reads the same crawl and must differ only by takedowns.
    cfg = build_config(build_id="td-1", dedup={"cross_build": False})
    run_build(cfg)
    published = pq.read_table(Path(layout.release_uri(cfg, "td-1")) / "data")
    urls, hashes = published["url"].to_pylist()[:3], published["text_hash"].to_pylist()[3:5]
    assert add_to_blocklist(cfg, "url", urls, ticket="DMCA-1") == 3
    assert add_to_blocklist(cfg, "url", urls, ticket="DMCA-1") == 0  # already there
    assert add_to_blocklist(cfg, "text_hash", hashes, ticket="DMCA-2") == 2
    summary = run_build(build_config(build_id="td-2", dedup={"cross_build": False}))
    assert summary["funnel"]["filter"]["dropped"]["takedown"] >= 5
    again = pq.read_table(Path(layout.release_uri(cfg, "td-2")) / "data")
    assert not set(urls) & set(again["url"].to_pylist())
    assert not set(hashes) & set(again["text_hash"].to_pylist())


def test_next_build_drops_near_duplicates_of_published_documents(build_config):
    first = build_config(build_id="2026-W46")
    run_build(first)
    published = set(pq.read_table(Path(layout.release_uri(first, "2026-W46")) / "data")["doc_id"].to_pylist())
    # The same crawl again a week later: everything it would publish is already out there.
    with pytest.raises(GateFailure, match="dedup ratio"):
        run_build(build_config(build_id="2026-W47"))
    near = pq.read_table(storage.join(first.work_root, "2026-W47", "dedup", "near_duplicates.parquet")).to_pylist()
    # Every document published last week is dropped this week, each pointing at its published twin.
    twins = {r["doc_id"] for r in near if r["kept_doc_id"] in published}
    assert published <= twins and {r["reason"] for r in near} == {"dup_near"}
    # A build that failed its gate is not added to the index: only the published build is in it.
    from curation.dedup.index import current_manifest

    assert list(current_manifest(first)["builds"]) == ["2026-W46"]
