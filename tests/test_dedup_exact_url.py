"""Exact (normalized text) and URL dedup: keys, keep rule, hash partitions, the filter."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation import storage
from curation.dedup.exact import plan_exact_dedup, plan_url_dedup
from curation.dedup.normalize import normalize_url
from curation.errors import ConfigError


@pytest.mark.parametrize(
    "a, b",
    [
        ("HTTP://WWW.Example.COM:80/a/b/?utm_source=x&b=2&a=1#top", "https://example.com/a/b?a=1&b=2"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com/p;jsessionid=ABC123?x=1", "https://example.com/p?x=1"),
        ("https://example.com/p?fbclid=zz&gclid=yy", "https://example.com/p"),
        ("https://example.com:8443/p", "https://example.com:8443/p/"),
    ],
)
def test_urls_that_name_the_same_page_normalize_the_same(a, b):
    assert normalize_url(a) == normalize_url(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("https://example.com/A", "https://example.com/a"),  # paths are case-sensitive
        ("https://example.com/p?id=1", "https://example.com/p?id=2"),
        ("https://example.com:8443/p", "https://example.com/p"),
        ("https://a.example.com/p", "https://b.example.com/p"),
    ],
)
def test_different_pages_stay_different(a, b):
    assert normalize_url(a) != normalize_url(b)


def test_odd_urls_never_crash():
    assert normalize_url(None) is None and normalize_url("") is None
    assert normalize_url("http://[::1") == "http://[::1"  # unparsable: compared as it is
    assert normalize_url("not a url") == "not a url"


def _shards(tmp_path, rows: list[tuple[str, str, str]], n: int) -> list[str]:
    table = pa.table({"doc_id": [r[0] for r in rows], "url": [r[1] for r in rows], "text_hash": [r[2] for r in rows]})
    uris = []
    for i in range(n):
        uris.append(str(tmp_path / f"{i}.parquet"))
        storage.write_table(uris[-1], table.take(list(range(i, len(rows), n))))
    return uris


ROWS = [
    ("d05", "https://www.site.example/a?utm_campaign=x", "h1"),
    ("d01", "https://site.example/a", "h2"),
    ("d09", "http://site.example/a/", "h1"),
    ("d02", "https://site.example/b", "h3"),
    ("d07", "https://site.example/c", "h3"),
    ("d03", None, "h4"),
    ("d04", None, "h5"),
    ("d08", "https://site.example/b#part2", "h6"),
]


def test_url_dedup_keeps_the_smallest_doc_id_per_normalized_url(tmp_path, build_config):
    cfg = build_config()
    out = str(tmp_path / "url.parquet")
    stats = plan_url_dedup(_shards(tmp_path, ROWS, 3), out, cfg)
    dups = storage.read_table(out)
    assert dups.to_pylist() == [
        {"doc_id": "d05", "kept_doc_id": "d01", "reason": "dup_url"},
        {"doc_id": "d08", "kept_doc_id": "d02", "reason": "dup_url"},
        {"doc_id": "d09", "kept_doc_id": "d01", "reason": "dup_url"},
    ]
    assert stats.rows_in == 8  # pages without a URL are looked at, never duplicates


@pytest.mark.parametrize("plan", [plan_url_dedup, plan_exact_dedup])
def test_hash_partitions_together_give_the_whole_plan(tmp_path, build_config, plan):
    cfg = build_config()
    shards = _shards(tmp_path, ROWS, 2)
    plan(shards, str(tmp_path / "whole.parquet"), cfg)
    whole = storage.read_table(str(tmp_path / "whole.parquet"))
    parts = []
    for p in range(3):
        plan(shards[::-1], str(tmp_path / f"p{p}.parquet"), cfg, partition=p, partitions=3)
        parts.append(storage.read_table(str(tmp_path / f"p{p}.parquet")))
    assert pa.concat_tables(parts).sort_by("doc_id").equals(whole)
    assert whole.num_rows >= 2
    with pytest.raises(ConfigError, match="partition"):
        plan(shards, str(tmp_path / "bad.parquet"), cfg, partition=3, partitions=3)


def test_filter_drops_exact_url_and_near_duplicates_with_their_reasons(tmp_path, build_config):
    """One ingest shard of the sample crawl through the filter with three dedup tables."""
    from curation.dedup.lsh import plan_near_dedup
    from curation.filtering import filter_shard
    from curation.ingest.warc import ingest

    cfg = build_config()
    shard = str(tmp_path / "ingest" / "00000.parquet")
    ingest(cfg.inputs, shard, cfg)
    exact, url, near = (str(tmp_path / "dedup" / f"{n}.parquet") for n in ("exact", "url", "near"))
    plan_exact_dedup([shard], exact, cfg)
    plan_url_dedup([shard], url, cfg)
    plan_near_dedup([shard], near, cfg)
    planned = {
        name: set(storage.read_table(uri)["doc_id"].to_pylist())
        for name, uri in [("dup_exact", exact), ("dup_url", url), ("dup_near", near)]
    }
    assert planned["dup_exact"] and planned["dup_near"]
    assert planned["dup_exact"] <= planned["dup_near"]  # exact copies are near-duplicates too
    stats = filter_shard([shard], str(tmp_path / "filter" / "00000.parquet"), cfg, duplicates=[exact, url, near])
    # The first table that lists a doc_id gives its reason.
    assert stats.dropped["dup_exact"] == len(planned["dup_exact"])
    assert stats.dropped["dup_url"] == len(planned["dup_url"] - planned["dup_exact"])
    assert stats.dropped["dup_near"] == len(planned["dup_near"] - planned["dup_exact"] - planned["dup_url"])
    assert stats.balanced()
