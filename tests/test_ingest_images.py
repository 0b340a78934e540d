"""Image-text candidates: <img> scanning, URL resolution, caption rules, and the pairs table ingest writes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation import layout
from curation.config import ImageCandidatesConfig
from curation.ingest.images import caption_rules, page_images
from curation.ingest.langid import language_identifier
from curation.ingest.warc import ingest
from curation.schema import PAIRS

PAGE = """<html><head><base href="https://cdn.example.org/assets/">
<script>var tpl = '<img src="x.png" alt="not a real tag here">';</script>
<style>.a::after { content: '<img alt="nor is this one at all">'; }</style></head>
<body><!-- <img src="c.png" alt="commented out image tag"> -->
<img src="rel/a.png" alt=" A  quiet &amp; old mill ">
<IMG SRC='/abs/b.jpg' TITLE='Title only caption here' width=300 height="200px">
<img src="data:image/png;base64,iVBORw0" data-src="lazy/c.webp" alt="Lazy loaded harbor photo">
<img src="rel/a.png" alt="duplicate of the first one">
<img src="javascript:alert(1)" alt="script url is refused">
<img src="d.png" alt="">
<img src="e.png">
<img src="//other.example.net/f.png#frag" alt="protocol relative image url" width="100%">
</body></html>"""


def test_page_images_resolves_urls_and_counts_every_skipped_tag():
    skipped: Counter = Counter()
    found = page_images(PAGE, "https://www.example.com/news/story.html", 100, skipped)
    by_url = {url: (caption, alt, title, w, h) for url, caption, alt, title, w, h in found}
    assert by_url == {
        "https://cdn.example.org/assets/rel/a.png": ("A quiet & old mill", " A  quiet & old mill ", None, None, None),
        "https://cdn.example.org/abs/b.jpg": ("Title only caption here", None, "Title only caption here", 300, 200),
        "https://cdn.example.org/assets/lazy/c.webp": ("Lazy loaded harbor photo", "Lazy loaded harbor photo", None, None, None),
        "https://other.example.net/f.png": ("protocol relative image url", "protocol relative image url", None, None, None),
    }
    # script, style and comment bodies hold no tags; the rest is counted by reason.
    assert skipped == Counter({"no_caption": 2, "dup_in_page": 1, "bad_src": 1})
    assert page_images("<p>no images</p>", "https://e.example/", 100, skipped) == []
    few: Counter = Counter()
    assert len(page_images(PAGE, "https://www.example.com/", 2, few)) == 2 and few["too_many"] == 2


def test_caption_rules_are_columnar_and_count_reasons():
    captions = [
        "The old mill by the river at dusk",  # kept
        "Two words",  # caption_short (DataComp: more than 2 words)
        "a b c",  # caption_short (DataComp: more than 5 characters)
        "my holiday photo.jpg",  # caption_filename
        "word " * 300,  # caption_long
        "Die alte Mühle am Fluss im Sommer bei Sonnenuntergang",  # caption_lang when only en is kept
    ]
    n = len(captions)
    table = pa.Table.from_arrays(
        [pa.array(captions if f.name == "caption" else [f"x{i}" for i in range(n)], f.type)
         if f.name in ("caption", "pair_id", "page_url", "image_url") else pa.nulls(n, f.type) for f in PAIRS],
        schema=PAIRS,
    )  # fmt: skip
    lid = language_identifier(None)
    kept, counts = caption_rules(table, ImageCandidatesConfig(), lid)
    assert kept.num_rows == 2 and counts == Counter({"caption_short": 2, "caption_filename": 1, "caption_long": 1})
    assert kept["caption_language"].null_count == 2  # identified only when an allowlist asks for it
    kept, counts = caption_rules(table, ImageCandidatesConfig(caption_languages=["en"]), lid)
    assert kept["caption"].to_pylist() == [captions[0]] and counts["caption_lang"] == 1
    assert kept["caption_language"].to_pylist() == ["en"]


def test_ingest_writes_the_pairs_of_the_sample_crawl(tmp_path, build_config, sample_crawl):
    out = str(tmp_path / "ingest" / "00000.parquet")
    docs_stats = ingest(sample_crawl, out, build_config())
    pairs = pq.read_table(layout.pairs_uri(out))
    assert pairs.schema.equals(PAIRS, check_metadata=False)
    manifest = json.loads((Path(sample_crawl[0]).parent / "crawl-manifest.json").read_text())
    expected = {
        (r["url"], img["url"], img["alt"])
        for r in manifest["records"]
        if r["kind"] == "images"
        for img in r["images"]
        if len(img["alt"].split()) >= 3
    }
    got = set(zip(pairs["page_url"].to_pylist(), pairs["image_url"].to_pylist(), pairs["caption"].to_pylist(), strict=True))
    assert got == expected and len(expected) > 10
    # Ids: pair_id from page + image URL, doc_id the page's documents row.
    assert pairs["pair_id"].null_count == 0 and len(set(pairs["pair_id"].to_pylist())) == pairs.num_rows
    docs = pq.read_table(out, columns=["doc_id", "url"])
    page_ids = dict(zip(docs["url"].to_pylist(), docs["doc_id"].to_pylist(), strict=True))
    assert all(page_ids[u] == d for u, d in zip(pairs["page_url"].to_pylist(), pairs["doc_id"].to_pylist(), strict=True))
    assert pairs["status"].null_count == pairs.num_rows  # not fetched yet
    stats = json.loads(Path(layout.stats_uri(layout.pairs_uri(out))).read_text())
    assert stats["rows_out"] == pairs.num_rows and stats["rows_in"] == stats["rows_out"] + sum(stats["dropped"].values())
    assert stats["dropped"]["no_caption"] > 0  # the manifest's empty alt texts
    # A pairs side table is not a stage output.
    assert docs_stats.outputs == [out]


def test_site_chrome_pages_give_the_same_documents_and_more_candidates(tmp_path, build_config):
    from curation.ingest.sample_crawl import write_sample_crawl

    plain = write_sample_crawl(str(tmp_path / "plain"), pages=60, seed=5, files=1)
    chrome = write_sample_crawl(str(tmp_path / "chrome"), pages=60, seed=5, files=1, site_chrome=True)
    assert Path(chrome[0]).stat().st_size > 3 * Path(plain[0]).stat().st_size
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    ingest(plain, a, build_config())
    ingest(chrome, b, build_config())
    assert pq.read_table(a)["url"].to_pylist() == pq.read_table(b)["url"].to_pylist()
    assert pq.read_table(layout.pairs_uri(b)).num_rows > pq.read_table(layout.pairs_uri(a)).num_rows
