import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import layout
from curation.errors import BadInputError
from curation.ingest.sample_crawl import write_truncated_copy
from curation.ingest.warc import ingest


def _kinds(sample_crawl: list[str]) -> dict[str, str]:
    manifest = json.loads((Path(sample_crawl[0]).parent / "crawl-manifest.json").read_text())
    return {r["url"]: r["kind"] for r in manifest["records"]}


def _reasons_by_kind(output: str, kinds: dict[str, str]) -> Counter:
    dropped = pq.read_table(layout.dropped_uri(output)).to_pylist()
    return Counter((kinds.get(r["url"], "image"), r["reason"]) for r in dropped)


def test_sample_crawl_ingests_with_a_reason_for_every_dropped_record(tmp_path, build_config, sample_crawl):
    cfg = build_config()
    out = str(tmp_path / "ingest" / "00000.parquet")
    stats = ingest(sample_crawl, out, cfg)
    docs = pq.read_table(out)
    kinds = _kinds(sample_crawl)
    assert stats.balanced() and stats.rows_out == docs.num_rows > 100
    by_kind = _reasons_by_kind(out, kinds)
    n = Counter(kinds.values())
    # Every page of these kinds is dropped at ingest, with the reason that fits it.
    assert by_kind[("non_english", "lang")] == n["non_english"] > 0
    assert by_kind[("invalid_utf8", "invalid_utf8")] == n["invalid_utf8"] > 0
    assert by_kind[("http_error", "http_status")] == n["http_error"] > 0
    assert by_kind[("non_html", "not_html")] == n["non_html"] > 0
    kept = Counter(kinds[u] for u in docs["url"].to_pylist())
    assert kept["good"] == n["good"] and kept["latin1"] == n["latin1"] > 0
    # Latin-1 pages are decoded with their declared charset, not mangled.
    latin = [t for t, u in zip(docs["text"].to_pylist(), docs["url"].to_pylist(), strict=True) if kinds[u] == "latin1"]
    assert all("\ufffd" not in t for t in latin) and any(ch in "".join(latin) for ch in "éèàçü")
    assert docs["doc_id"].null_count == 0 and len(set(docs["doc_id"].to_pylist())) == docs.num_rows
    assert set(docs["language"].to_pylist()) == {"en"}


def test_ingest_is_deterministic_and_ids_are_stable(tmp_path, build_config, sample_crawl):
    cfg = build_config()
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    ingest(sample_crawl[:1], a, cfg)
    ingest(sample_crawl[:1], b, cfg)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    # The same record read from another file keeps its doc_id (ids come from the WARC record id).
    both = str(tmp_path / "both.parquet")
    ingest(sample_crawl[:2], both, cfg)
    assert set(pq.read_table(a)["doc_id"].to_pylist()) <= set(pq.read_table(both)["doc_id"].to_pylist())


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_warc_counts_one_truncated_record_and_keeps_the_rest(tmp_path, build_config, sample_crawl, compressed):
    src = sample_crawl[0]
    if not compressed:
        plain = tmp_path / "full.warc"
        plain.write_bytes(gzip.decompress(Path(src).read_bytes()))
        src = str(plain)
    truncated = str(tmp_path / ("cut.warc.gz" if compressed else "cut.warc"))
    write_truncated_copy(src, truncated, keep_fraction=0.6)
    full = ingest([src], str(tmp_path / "full.parquet"), build_config())
    cut = ingest([truncated], str(tmp_path / "cut.parquet"), build_config())
    assert cut.dropped["truncated_record"] == 1
    assert cut.balanced()
    assert 0 < cut.rows_out < full.rows_out
    assert full.dropped["truncated_record"] == 0


def test_corrupt_bytes_inside_a_file_are_counted_and_the_file_continues(tmp_path, build_config, sample_crawl):
    data = Path(sample_crawl[0]).read_bytes()
    broken = tmp_path / "junk.warc.gz"
    broken.write_bytes(data + b"\x1f\x8b\x08\x00 not a gzip member" * 5)
    stats = ingest([str(broken)], str(tmp_path / "out.parquet"), build_config())
    assert stats.dropped["malformed_record"] == 1 and stats.rows_out > 0 and stats.balanced()


def test_wholly_unreadable_file_fails_naming_it(tmp_path, build_config):
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"\x1f\x8b" + b"this is not a warc" * 50)
    out = tmp_path / "out.parquet"
    with pytest.raises(BadInputError, match=r"junk\.warc\.gz"):
        ingest([str(junk)], str(out), build_config())
    assert not out.exists()  # nothing that looks finished
    with pytest.raises(BadInputError, match=r"missing\.warc\.gz"):
        ingest([str(tmp_path / "missing.warc.gz")], str(out), build_config())
