"""fetch_images with `source: warc`: the images of image-text pairs taken from the crawl's own
image responses (kept by ingest), checked like downloads, with nothing fetched from the network."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curation import layout, storage
from curation.ingest.fetch import fetch_images
from curation.pipeline import load_build_config, prepare, run_fetch, run_ingest
from curation.schema import CRAWL_IMAGES
from tests.test_ingest_fetch import _pairs as write_pairs

WARC_FETCH = {"enabled": True, "source": "warc", "min_image_size": 128}


def _manifest(sample_crawl: list[str]) -> dict:
    return json.loads((Path(sample_crawl[0]).parent / "crawl-manifest.json").read_text())


def _ingest(cfg, build_id: str) -> tuple[object, list[str]]:
    config_uri, shards = prepare(cfg, build_id)
    cfg = load_build_config(config_uri)
    return cfg, [run_ingest(cfg, build_id, shard) for shard in shards]


def test_ingest_keeps_image_records_and_fetch_takes_pairs_images_from_them(build_config, sample_crawl):
    manifest = _manifest(sample_crawl)
    cfg, ingested = _ingest(build_config(ingest={"fetch": WARC_FETCH}), "warc")

    # Every image response of the crawl is in images/, counted by ingest as `image_record`, not `not_html`.
    tables = layout.crawl_images(ingested[0])
    assert len(tables) == len(ingested)
    crawled = pa.concat_tables([storage.read_table(u) for u in tables])
    assert sorted(crawled["image_url"].to_pylist()) == sorted(i["url"] for i in manifest["images"])
    assert set(crawled["content_type"].to_pylist()) == {"image/png", "image/jpeg"}
    ingest_stats = [layout.read_stats(u) for u in ingested]
    assert sum(s.dropped["image_record"] for s in ingest_stats) == len(manifest["images"])
    non_html_pages = sum(r["kind"] == "non_html" for r in manifest["records"])
    assert sum(s.dropped["not_html"] for s in ingest_stats) == non_html_pages
    assert all(s.balanced() for s in ingest_stats)

    fetched = [run_fetch(cfg, "warc", u) for u in ingested]
    rows = pa.concat_tables([storage.read_table(u) for u in fetched]).to_pylist()
    sizes = {
        u: Image.open(io.BytesIO(b)).size
        for u, b in zip(crawled["image_url"].to_pylist(), crawled["image"].to_pylist(), strict=True)
    }
    by_url = dict(zip(crawled["image_url"].to_pylist(), crawled["image"].to_pylist(), strict=True))
    assert rows and {r["status"] for r in rows} == {"ok", "too_small"}
    for row in rows:  # 256 px images pass the 128 px rule, 64 px ones do not; bytes as crawled
        assert row["status"] == ("ok" if sizes[row["image_url"]][0] >= 128 else "too_small")
        assert row["image_sha256"] == hashlib.sha256(by_url[row["image_url"]]).hexdigest()
        assert row["http_status"] == 200 and row["attempts"] == 0
        if row["status"] == "ok":
            assert row["image"] == by_url[row["image_url"]]
    report = storage.read_json(layout.fetch_report_uri(fetched[0]))
    assert report["source"] == "warc" and report["bytes_downloaded"] == 0


def test_without_the_warc_source_image_records_are_not_kept(build_config, sample_crawl):
    manifest = _manifest(sample_crawl)
    _, ingested = _ingest(build_config(), "http")
    assert layout.crawl_images(ingested[0]) == []
    stats = [layout.read_stats(u) for u in ingested]
    non_html = sum(r["kind"] == "non_html" for r in manifest["records"]) + len(manifest["images"])
    assert sum(s.dropped["not_html"] for s in stats) == non_html and not any(s.dropped["image_record"] for s in stats)


def _png(size: int, colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def test_lookup_across_shards_first_response_wins_and_bad_records_are_counted(tmp_path, build_config):
    red, blue, good = _png(200, "red"), _png(200, "blue"), _png(300, "green")

    def crawl_table(name: str, rows: list[tuple[str, bytes]]) -> str:
        urls, images = zip(*rows, strict=True)
        table = pa.table({"image_url": list(urls), "content_type": ["image/png"] * len(rows), "image": list(images)})
        uri = str(tmp_path / "ingest" / "images" / f"{name}.parquet")
        storage.write_table(
            uri,
            table.append_column("warc_record_id", pa.nulls(len(rows), pa.string()))
            .append_column("source_uri", pa.array([name] * len(rows)))
            .append_column("source_offset", pa.nulls(len(rows), pa.int64()))
            .cast(CRAWL_IMAGES),
        )
        return uri

    first = crawl_table("00000", [("https://a.example/twice.png", red), ("https://a.example/cut.png", good[:200])])
    second = crawl_table(
        "00001",
        [
            ("https://b.example/other-shard.png", good),
            ("https://a.example/twice.png", blue),
            ("https://b.example/huge.png", good + b"\0" * 5000),
        ],
    )
    urls = [
        "https://b.example/other-shard.png",
        "https://a.example/twice.png",
        "https://a.example/cut.png",
        "https://a.example/never-crawled.png",
        "https://b.example/huge.png",
        "https://b.example/other-shard.png",
    ]
    pairs_uri = write_pairs(tmp_path, urls)

    cfg = build_config(ingest={"fetch": {**WARC_FETCH, "max_bytes": len(good) + 1000}})
    out = str(tmp_path / "fetch_images" / "00000.parquet")
    stats = fetch_images([pairs_uri], out, cfg, [first, second])
    rows = pq.read_table(out).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "decode_error", "not_in_crawl", "too_large", "ok"]
    assert rows[0]["image"] == rows[5]["image"] == good  # found in the other shard's table
    assert rows[1]["image"] == red  # the first response for a URL wins
    assert (
        stats.rows_out == 3
        and stats.balanced()
        and Counter(stats.dropped) == {"decode_error": 1, "not_in_crawl": 1, "too_large": 1}
    )
    dropped = storage.read_table(layout.dropped_uri(out))
    assert sorted(dropped["reason"].to_pylist()) == ["decode_error", "not_in_crawl", "too_large"]
    assert pc.all(pc.is_valid(dropped["detail"])).as_py()
