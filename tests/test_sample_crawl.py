"""Tests for the synthetic crawl generator used by the ingest and filtering tests."""

from __future__ import annotations

import html
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from fastwarc.warc import WarcRecordType
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from curation.ingest.sample_crawl import SAMPLE_KINDS, TOXIC_LEXICON, jaccard5, write_sample_crawl, write_truncated_copy
from curation.scoring.scenes import COLOURS

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> tuple[list[str], dict, dict]:
    """A 200-page crawl: (paths, manifest, url -> (status, http headers, body) read with warcio)."""
    out = tmp_path_factory.mktemp("crawl")
    paths = write_sample_crawl(str(out), pages=200, seed=0)
    manifest = json.loads((out / "crawl-manifest.json").read_text())
    responses = {}
    for path in paths:
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type == "response":
                    url = rec.rec_headers.get_header("WARC-Target-URI")
                    status = int(rec.http_headers.get_statuscode())
                    responses[url] = (status, dict(rec.http_headers.headers), rec.content_stream().read())
    return paths, manifest, responses


def _dir_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _article_text(body: bytes, encoding: str = "utf-8") -> str:
    """The <p> text inside <article>, the way a simple extractor would see it."""
    page = body.decode(encoding)
    article = page[page.index("<article>") : page.index("</article>")]
    return " ".join(html.unescape(p) for p in re.findall(r"<p>(.*?)</p>", article, re.S))


def _visible_words(body: bytes) -> list[str]:
    return re.sub(r"<[^>]+>", " ", body.decode("utf-8")).split()


def _by_kind(manifest: dict, kind: str) -> list[dict]:
    return [r for r in manifest["records"] if r["kind"] == kind]


# -- determinism ----------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = write_sample_crawl(str(tmp_path / "a"), pages=60, seed=3)
    b = write_sample_crawl(str(tmp_path / "b"), pages=60, seed=3)
    c = write_sample_crawl(str(tmp_path / "c"), pages=60, seed=4)
    assert [Path(p).name for p in a] == [Path(p).name for p in b] == ["crawl-00000.warc.gz", "crawl-00001.warc.gz"]
    assert _dir_bytes(tmp_path / "a") == _dir_bytes(tmp_path / "b")
    for pa, pc in zip(a, c, strict=True):
        assert Path(pa).read_bytes() != Path(pc).read_bytes()


def test_identical_bytes_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # Guards against hidden dependence on hash randomisation or process state.
    write_sample_crawl(str(tmp_path / "here"), pages=50, seed=11, files=3)
    code = (
        f"from curation.ingest.sample_crawl import write_sample_crawl; write_sample_crawl({str(tmp_path / 'there')!r}, 50, 11, 3)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO_ROOT)
    assert _dir_bytes(tmp_path / "here") == _dir_bytes(tmp_path / "there")


def test_paths_sorted_and_page_count_exact(tmp_path: Path) -> None:
    paths = write_sample_crawl(str(tmp_path), pages=45, seed=1, files=3)
    assert paths == sorted(paths) and len(paths) == 3
    manifest = json.loads((tmp_path / "crawl-manifest.json").read_text())
    assert manifest["pages"] == len(manifest["records"]) == 45
    assert {r["kind"] for r in manifest["records"]} == set(SAMPLE_KINDS)  # every kind from 40 pages up


# -- WARC validity ----------------------------------------------------------------


def test_fastwarc_reads_every_record_with_valid_digests(crawl) -> None:
    paths, manifest, _ = crawl
    ids, types = [], Counter()
    for path in paths:
        with open(path, "rb") as fh:
            records = list(FastArchiveIterator(fh, verify_digests=True))  # bad digests would be skipped
        assert records[0].record_type == WarcRecordType.warcinfo
        for rec in records:
            types[str(rec.record_type)] += 1
            if rec.record_type == WarcRecordType.response:
                ids.append(rec.record_id)
                assert rec.http_headers.status_code in (200, 301, 404, 500)
    expected = [r["record_id"] for r in manifest["records"] + manifest["images"]]
    assert sorted(ids) == sorted(expected)
    assert types["response"] == types["request"] == 200 + len(manifest["images"])
    assert types["warcinfo"] == 2 and types["metadata"] > 0


def test_warcio_reads_every_record_and_http_headers_are_consistent(crawl) -> None:
    _, manifest, responses = crawl
    assert len(responses) == 200 + len(manifest["images"])  # URLs are unique
    for status, headers, body in responses.values():
        assert int(headers["Content-Length"]) == len(body)
        assert headers["Content-Type"]
        if status == 301:
            assert headers["Location"].startswith("https://")


def test_manifest_lists_every_kind_and_is_sorted_json(crawl) -> None:
    paths, manifest, responses = crawl
    assert set(manifest["kinds"]) == set(SAMPLE_KINDS)
    assert all(manifest["counts"][k] >= 1 for k in SAMPLE_KINDS)
    assert manifest["counts"]["good"] > 90  # good pages are the majority kind
    assert {r["url"] for r in manifest["records"]} <= set(responses)
    text = (Path(paths[0]).parent / "crawl-manifest.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1) + "\n"


def test_zero_pages_and_bad_arguments(tmp_path: Path) -> None:
    (path,) = write_sample_crawl(str(tmp_path), pages=0, seed=0, files=1)
    with open(path, "rb") as fh:
        assert [r.rec_type for r in ArchiveIterator(fh)] == ["warcinfo"]
    with pytest.raises(ValueError):
        write_sample_crawl(str(tmp_path), files=0)
    with pytest.raises(ValueError):
        write_truncated_copy(path, str(tmp_path / "x"), keep_fraction=1.5)


# -- page kinds look like what they claim to be ----------------------------------------


def test_good_pages_are_plausible_english_articles(crawl) -> None:
    _, manifest, responses = crawl
    texts = [_article_text(responses[r["url"]][2]) for r in _by_kind(manifest, "good")]
    for text in texts:
        words = text.lower().split()
        assert 150 <= len(words) <= 600
        assert {"the", "and", "of", "to"} <= set(words)
        assert len({"the", "and", "of", "to", "that", "with", "have", "be"} & set(words)) >= 5
    body = responses[_by_kind(manifest, "good")[0]["url"]][2].decode()
    assert "<title>" in body and "<nav>" in body and "<footer>" in body and 4 <= body.count("<p>") - 1 <= 10
    # Distinct articles are not near-duplicates of one another.
    assert max(jaccard5(a, b) for i, a in enumerate(texts[:40]) for b in texts[:i]) < 0.2


def test_duplicates_match_their_sources(crawl) -> None:
    _, manifest, responses = crawl
    for rec in _by_kind(manifest, "exact_duplicate"):
        assert rec["url"] != rec["source_url"]
        assert _article_text(responses[rec["url"]][2]) == _article_text(responses[rec["source_url"]][2])
    for rec in _by_kind(manifest, "near_duplicate"):
        sim = jaccard5(_article_text(responses[rec["url"]][2]), _article_text(responses[rec["source_url"]][2]))
        assert 0.8 <= sim <= 0.95


def test_low_quality_pages(crawl) -> None:
    _, manifest, responses = crawl
    variants = {r["variant"] for r in _by_kind(manifest, "boilerplate")}
    assert variants == {"keyword_stuffing", "navigation_only"}
    for rec in _by_kind(manifest, "boilerplate"):
        lines = Counter(responses[rec["url"]][2].decode().splitlines())
        assert lines.most_common(1)[0][1] >= 30
    for rec in _by_kind(manifest, "short"):
        assert len(_visible_words(responses[rec["url"]][2])) < 30
    for rec in _by_kind(manifest, "toxic"):
        words = re.findall(r"\w+", _article_text(responses[rec["url"]][2]).lower())
        assert sum(w in TOXIC_LEXICON for w in words) >= 3


def test_non_english_pages_use_their_own_stop_words(crawl) -> None:
    _, manifest, responses = crawl
    stop = {"de": {"und", "die", "der"}, "fr": {"et", "les", "la"}, "es": {"y", "el", "los"}}
    for rec in _by_kind(manifest, "non_english"):
        words = _article_text(responses[rec["url"]][2]).lower().split()
        assert len(words) >= 150
        assert len(stop[rec["lang"]] & set(words)) >= 2 and "the" not in words


def test_image_pages_and_image_records(crawl) -> None:
    _, manifest, responses = crawl
    images = [img for r in _by_kind(manifest, "images") for img in r["images"]]
    assert any(i["src"].startswith("/") for i in images) and any(i["src"].startswith("https://") for i in images)
    assert any(i["alt"] == "" for i in images)
    assert all(3 <= len(i["alt"].split()) <= 16 for i in images if i["alt"])
    assert {i["caption"] for i in images} == {"matched", "mismatched", "generic", "none"}
    assert all((i["alt"] == "") == (i["caption"] == "none") for i in images)
    page = b"".join(responses[r["url"]][2] for r in _by_kind(manifest, "images")).decode()
    assert re.search(r'<img src="[^"]+" alt="[^"]*" width="\d+" height="\d+">', page)
    assert {i["url"] for i in images} == {i["url"] for i in manifest["images"]}
    for img in manifest["images"]:
        status, headers, body = responses[img["url"]]
        assert status == 200 and headers["Content-Type"] in ("image/png", "image/jpeg")
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[headers["Content-Type"]]
            assert im.size in ((64, 64), (256, 256))


def test_matched_alt_texts_describe_their_pictures(crawl) -> None:
    """A "matched" alt names the picture's background colour (read from a corner pixel), a
    "mismatched" one describes another scene; this is what the demo's CLIP filter network learns."""
    _, manifest, responses = crawl
    images = [i for r in _by_kind(manifest, "images") for i in r["images"] if i["caption"] in ("matched", "mismatched")]
    described = Counter()
    for img in images:
        background = re.search(r"(?:on a )?(\w+(?: and yellow striped)?) background$", img["alt"]).group(1)
        with Image.open(io.BytesIO(responses[img["url"]][2])) as im:
            corner = im.convert("RGB").getpixel((1, im.height // 2))
        if "striped" in background:
            fits = img["striped"]
        else:
            fits = not img["striped"] and max(abs(a - b) for a, b in zip(corner, COLOURS[background], strict=True)) <= 12
        described[img["caption"], fits] += 1
    assert described["matched", False] == 0 and described["matched", True] >= 10
    assert described["mismatched", False] > described["mismatched", True]


def test_error_non_html_and_encoding_pages(crawl) -> None:
    _, manifest, responses = crawl
    assert {r["status"] for r in _by_kind(manifest, "http_error")} == {301, 404, 500}
    assert {r["content_type"] for r in _by_kind(manifest, "non_html")} == {"application/pdf", "text/css", "application/json"}
    (bad,) = _by_kind(manifest, "invalid_utf8")
    body = responses[bad["url"]][2]
    assert b"\xff\xfe\xfa" in body and "charset=utf-8" in bad["content_type"]
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    (latin,) = _by_kind(manifest, "latin1")
    _, headers, body = responses[latin["url"]]
    assert headers["Content-Type"] == "text/html; charset=iso-8859-1"
    assert "café" in body.decode("latin-1") and "café".encode() not in body


# -- truncated copies ------------------------------------------------------------


def test_write_truncated_copy_is_a_shorter_prefix(crawl, tmp_path: Path) -> None:
    src = crawl[0][0]
    dst = tmp_path / "truncated.warc.gz"
    write_truncated_copy(src, str(dst))
    data, full = dst.read_bytes(), Path(src).read_bytes()
    assert 0 < len(data) < len(full) and full.startswith(data)
    assert len(data) == int(len(full) * 0.6)
