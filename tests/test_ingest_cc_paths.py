"""Common Crawl path listings (warc.paths.gz) -> shards: a local copy, a local mirror, an http base."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import BadInputError, ConfigError
from curation.ingest.cc_paths import expand_shorthand, resolve_inputs
from curation.ingest.warc import ingest

CRAWL = "CC-MAIN-2099-01"


@pytest.fixture
def mirror(tmp_path, sample_crawl) -> tuple[Path, list[str]]:
    """A Common Crawl-shaped mirror of the sample crawl and the relative paths its listing names."""
    root = tmp_path / "mirror"
    relative = []
    for i, src in enumerate(sample_crawl):
        rel = f"crawl-data/{CRAWL}/segments/1700000000.{i}/warc/{CRAWL}-2099010100000{i}-0000{i}.warc.gz"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
        relative.append(rel)
    listing = gzip.compress(("\n".join(relative) + "\n").encode())
    (root / "crawl-data" / CRAWL / "warc.paths.gz").write_bytes(listing)
    (tmp_path / "warc.paths.gz").write_bytes(listing)  # a local copy of the listing, elsewhere
    return root, relative


def test_a_local_listing_expands_against_the_base_one_shard_per_file(tmp_path, build_config, mirror):
    root, relative = mirror
    cfg = build_config(ingest={"cc_base": f"{root}/"})
    files = resolve_inputs([str(tmp_path / "warc.paths.gz")], cfg)
    assert files == [f"{root}/{rel}" for rel in relative]
    assert resolve_inputs([f"cc:{CRAWL}/warc"], cfg) == files  # shorthand: {base}crawl-data/CRAWL/warc.paths.gz
    assert (
        resolve_inputs([str(tmp_path / "warc.paths.gz")], build_config(shard_limit=2, ingest={"cc_base": f"{root}/"}))
        == files[:2]
    )
    stats = ingest(files[:1], str(tmp_path / "out.parquet"), cfg)
    assert stats.rows_out > 0 and pq.read_table(tmp_path / "out.parquet")["source_uri"].to_pylist()[0] == files[0]


def test_shard_sample_rate_is_deterministic_by_file_name(tmp_path, build_config):
    names = [f"crawl-data/{CRAWL}/segments/s/warc/file-{i:05d}.warc.gz" for i in range(400)]
    (tmp_path / "big.paths.gz").write_bytes(gzip.compress("\n".join(names).encode()))
    cfg = build_config(ingest={"shard_sample_rate": 0.1})
    first = resolve_inputs([str(tmp_path / "big.paths.gz")], cfg)
    assert first == resolve_inputs([str(tmp_path / "big.paths.gz")], cfg)
    assert 20 <= len(first) <= 60 and all(f.startswith("s3://commoncrawl/crawl-data/") for f in first)
    assert expand_shorthand(f"cc:{CRAWL}/wet", "s3://commoncrawl/") == f"s3://commoncrawl/crawl-data/{CRAWL}/wet.paths.gz"
    with pytest.raises(ConfigError):
        expand_shorthand("cc:2024-22", "s3://commoncrawl/")


def test_listing_and_files_over_http(tmp_path, build_config, mirror):
    root, relative = mirror
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        cfg = build_config(ingest={"cc_base": base})
        files = resolve_inputs([f"cc:{CRAWL}/warc"], cfg)
        assert files == [base + rel for rel in relative]
        remote = ingest(files[:1], str(tmp_path / "remote.parquet"), cfg)
        local = ingest([str(root / relative[0])], str(tmp_path / "local.parquet"), cfg)
        assert remote.rows_out == local.rows_out > 0 and remote.dropped == local.dropped
        with pytest.raises(BadInputError, match="missing"):
            ingest([base + "missing.warc.gz"], str(tmp_path / "x.parquet"), cfg)
    finally:
        server.shutdown()
        server.server_close()


def test_unreadable_listings_fail_naming_them(tmp_path, build_config):
    (tmp_path / "empty.paths").write_text("\n# nothing\n")
    with pytest.raises(BadInputError, match=r"empty\.paths"):
        resolve_inputs([str(tmp_path / "empty.paths")], build_config())
    (tmp_path / "cut.paths.gz").write_bytes(gzip.compress(b"a\nb\n" * 100)[:20])
    with pytest.raises(BadInputError, match=r"cut\.paths\.gz"):
        resolve_inputs([str(tmp_path / "cut.paths.gz")], build_config())


def test_cli_prints_the_resolved_shards(tmp_path, mirror):
    root, relative = mirror
    result = CliRunner().invoke(
        app, ["inputs", str(tmp_path / "warc.paths.gz"), "--shard-limit", "2", "--set", f"ingest.cc_base={root}/"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.split() == [f"{root}/{rel}" for rel in relative[:2]]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
