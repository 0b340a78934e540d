"""Ingest on hostile and non-WARC input: damaged WARC files, WET, JSONL (.gz/.zst) and Parquet."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import layout
from curation.errors import BadInputError
from curation.ingest.readers import detect_format
from curation.ingest.sample_crawl import write_jsonl_copy, write_wet_copy
from curation.ingest.warc import ingest


def _members(data: bytes) -> list[bytes]:
    """The gzip members of a .warc.gz (one WARC record each)."""
    out, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=31)
        inflater.decompress(data[pos:])
        end = len(data) - len(inflater.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


def _response_members(members: list[bytes]) -> list[int]:
    return [i for i, m in enumerate(members) if b"WARC-Type: response" in gzip.decompress(m)[:600]]


def _kind_of(crawl_file: Path) -> dict[str, str]:
    manifest = json.loads((crawl_file.parent / "crawl-manifest.json").read_text())
    return {r["url"]: r["kind"] for r in manifest["records"]}


def _same_pages(docs: pa.Table, warc_docs: pa.Table, crawl_file: Path) -> None:
    """Text dumps hold the same pages as the WARC, plus the page whose bytes break its declared
    UTF-8 (the WARC path drops it; a text dump has already decoded it)."""
    assert set(warc_docs["doc_id"].to_pylist()) <= set(docs["doc_id"].to_pylist())
    kinds = _kind_of(crawl_file)
    extra = set(docs["url"].to_pylist()) - set(warc_docs["url"].to_pylist())
    assert {kinds[u] for u in extra} <= {"invalid_utf8"}


def _run(tmp_path: Path, build_config, files: list[Path | str], name: str = "out", **overrides):
    out = str(tmp_path / f"{name}.parquet")
    stats = ingest([str(f) for f in files], out, build_config(**overrides))
    dropped = pq.read_table(layout.dropped_uri(out)).to_pylist()
    return stats, pq.read_table(out), dropped


@pytest.fixture(scope="module")
def one_file(sample_crawl) -> Path:
    return Path(sample_crawl[0])


def test_corrupt_gzip_member_mid_file_costs_one_record_and_the_rest_is_read(tmp_path, build_config, one_file):
    members = _members(one_file.read_bytes())
    responses = _response_members(members)
    victim = responses[len(responses) // 2]
    broken = bytearray(members[victim])
    broken[30:80] = b"\x00" * 50  # deflate data destroyed; the member header still says gzip
    bad = tmp_path / "bad-gzip.warc.gz"
    bad.write_bytes(b"".join(members[:victim]) + bytes(broken) + b"".join(members[victim + 1 :]))

    full, full_docs, _ = _run(tmp_path, build_config, [one_file], "full")
    stats, docs, dropped = _run(tmp_path, build_config, [bad], "bad")
    assert stats.dropped["malformed_record"] == 1 and stats.balanced()
    malformed = [d for d in dropped if d["reason"] == "malformed_record"]
    assert "bad gzip member" in malformed[0]["detail"] and "resumed at byte" in malformed[0]["detail"]
    # Exactly the damaged record is missing: everything after it was still read.
    assert stats.rows_in == full.rows_in
    lost = set(full_docs["url"].to_pylist()) - set(docs["url"].to_pylist())
    assert len(lost) <= 1 and docs.num_rows >= full_docs.num_rows - 1
    last_url = full_docs["url"].to_pylist()[-1]
    assert last_url in docs["url"].to_pylist()


@pytest.mark.parametrize("compressed", [True, False])
def test_malformed_warc_header_mid_file_is_skipped_and_reading_resumes(tmp_path, build_config, one_file, compressed):
    members = _members(one_file.read_bytes())
    victim = _response_members(members)[10]
    record = gzip.decompress(members[victim]).replace(b"WARC/1.0\r\n", b"WARC/one-point-oh\r\n", 1)
    damaged = [*members[:victim], gzip.compress(record), *members[victim + 1 :]]
    if compressed:
        path = tmp_path / "bad-header.warc.gz"
        path.write_bytes(b"".join(damaged))
    else:
        path = tmp_path / "bad-header.warc"
        path.write_bytes(b"".join(gzip.decompress(m) for m in damaged))
    full, full_docs, _ = _run(tmp_path, build_config, [one_file], "full")
    stats, docs, _ = _run(tmp_path, build_config, [path], "bad")
    assert stats.dropped["malformed_record"] == 1 and stats.balanced()
    assert stats.rows_in == full.rows_in
    assert full_docs.num_rows - 1 <= docs.num_rows <= full_docs.num_rows
    assert full_docs["url"].to_pylist()[-1] in docs["url"].to_pylist()


def test_garbage_before_the_first_record_is_skipped(tmp_path, build_config, one_file):
    path = tmp_path / "prefixed.warc.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage that is not gzip data" * 3 + one_file.read_bytes())
    full, _, _ = _run(tmp_path, build_config, [one_file], "full")
    stats, _, _ = _run(tmp_path, build_config, [path], "prefixed")
    assert stats.dropped["malformed_record"] == 1 and stats.rows_out == full.rows_out


def test_hostile_pages_binary_giant_and_undeclared_charset(tmp_path, build_config):
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    article = "<p>" + " ".join(["The harbor committee restored the old mill with care for the residents."] * 12) + "</p>"
    pages = {
        "https://a.example.com/pdf-as-html": ("text/html", b"%PDF-1.4\n" + bytes(range(256)) * 4),
        "https://a.example.com/nul-bytes": ("text/html", b"<html>" + b"\x00\x01\x02" * 100),
        "https://a.example.com/giant": ("text/html", b"<html><body>" + b"<p>word</p>" * 30_000 + b"</body></html>"),
        "https://a.example.com/cp1252": ("text/html", f"<html><body>{article} caf\xe9</body></html>".encode("cp1252")),
        "https://a.example.com/meta-latin1": (
            "text/html",
            f'<html><head><meta charset="iso-8859-1"></head><body>{article} na\xefve</body></html>'.encode("latin-1"),
        ),
        "https://a.example.com/good": ("application/xhtml+xml; charset=utf-8", f"<html><body>{article}</body></html>".encode()),
    }
    path = tmp_path / "hostile.warc.gz"
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, (ctype, body) in pages.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", io.BytesIO(body), len(body), http_headers=http))
    stats, docs, dropped = _run(tmp_path, build_config, [path], "hostile", ingest={"max_record_bytes": 200_000})
    reasons = {d["url"].rsplit("/", 1)[1]: d["reason"] for d in dropped}
    assert reasons == {"pdf-as-html": "binary_content", "nul-bytes": "binary_content", "giant": "too_large"}
    texts = dict(zip(docs["url"].to_pylist(), docs["text"].to_pylist(), strict=True))
    assert texts["https://a.example.com/cp1252"].endswith("café")  # undeclared: detected
    assert texts["https://a.example.com/meta-latin1"].endswith("naïve")  # from <meta charset>
    assert "https://a.example.com/good" in texts and stats.balanced()


def test_wet_input_gives_the_same_doc_ids_as_the_warc(tmp_path, build_config, one_file):
    wet = tmp_path / "crawl-00000.warc.wet.gz"
    n = write_wet_copy(str(one_file), str(wet))
    assert detect_format(str(wet), wet) == "warc"
    _, warc_docs, _ = _run(tmp_path, build_config, [one_file], "warc")
    stats, wet_docs, dropped = _run(tmp_path, build_config, [wet], "wet")
    assert stats.rows_in == n and stats.balanced()
    # doc_id comes from WARC-Refers-To: the response record the text was extracted from.
    _same_pages(wet_docs, warc_docs, one_file)
    assert set(wet_docs["language"].to_pylist()) == {"en"}
    assert Counter(d["reason"] for d in dropped)["lang"] > 0


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_text_dumps_plain_gzip_and_zstd(tmp_path, build_config, one_file, suffix):
    dump = tmp_path / f"dump{suffix}"
    n = write_jsonl_copy(str(one_file), str(dump), field="text")
    _, warc_docs, _ = _run(tmp_path, build_config, [one_file], "warc")
    stats, docs, _ = _run(tmp_path, build_config, [dump], "jsonl")
    assert stats.rows_in == n and stats.balanced()
    _same_pages(docs, warc_docs, one_file)
    assert docs["source_offset"].to_pylist() == sorted(docs["source_offset"].to_pylist())  # line numbers
    assert docs["fetch_time"].null_count == 0


def test_jsonl_bad_lines_are_counted_and_the_file_goes_on(tmp_path, build_config, one_file):
    dump = tmp_path / "dump.jsonl"
    write_jsonl_copy(str(one_file), str(dump), field="html")  # raw HTML: extracted at ingest
    good = dump.read_bytes().splitlines()
    bad = [
        b'{"id": "x1", "text": "unterminated',
        b"[1, 2, 3]",
        b'{"id": "x2", "url": "https://e.example/\xff\xfe"}',
        b'{"id": "x3"}',
    ]
    bad.append(b'{"id": "x4", "text": "' + b"a" * 300_000 + b'"}')
    dump.write_bytes(b"\n".join(good[:5] + bad + [b""] + good[5:]) + b"\n")
    stats, docs, dropped = _run(tmp_path, build_config, [dump], "bad", ingest={"max_record_bytes": 200_000})
    reasons = Counter(d["reason"] for d in dropped)
    assert reasons["bad_json"] == 2 and reasons["invalid_utf8"] == 1 and reasons["no_text"] == 1 and reasons["too_large"] == 1
    assert stats.balanced() and docs.num_rows > 0
    assert docs["title"].null_count < docs.num_rows  # titles come from the HTML


def test_cut_jsonl_gz_counts_one_truncated_record(tmp_path, build_config, one_file):
    dump = tmp_path / "dump.jsonl.gz"
    n = write_jsonl_copy(str(one_file), str(dump))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(dump.read_bytes()[: int(dump.stat().st_size * 0.6)])
    stats, _, _ = _run(tmp_path, build_config, [cut], "cut")
    assert stats.dropped["truncated_record"] == 1 and 0 < stats.rows_in - 1 < n and stats.balanced()
    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00" + b"not gzip at all" * 20)
    with pytest.raises(BadInputError, match=r"junk\.jsonl\.gz"):
        _run(tmp_path, build_config, [junk], "junk")


def test_parquet_dump_with_fineweb_style_columns(tmp_path, build_config, one_file):
    dump = tmp_path / "dump.jsonl"
    write_jsonl_copy(str(one_file), str(dump))
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    table = pa.table({"text": [r["text"] for r in rows], "id": [r["id"] for r in rows], "url": [r["url"] for r in rows]})
    table = table.append_column("date", pa.array([r["date"] for r in rows]))
    pq.write_table(table, tmp_path / "dump.parquet")
    stats, docs, _ = _run(tmp_path, build_config, [tmp_path / "dump.parquet"], "pq")
    assert stats.rows_in == len(rows) and stats.balanced() and docs.num_rows > 0
    assert docs["source_offset"].to_pylist()[0] >= 1
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BadInputError, match=r"broken\.parquet"):
        _run(tmp_path, build_config, [tmp_path / "broken.parquet"], "broken")


def test_format_is_sniffed_when_the_name_does_not_say(tmp_path, one_file):
    unnamed = tmp_path / "download-1234"
    unnamed.write_bytes(one_file.read_bytes())
    assert detect_format(str(unnamed), unnamed) == "warc"
    text = tmp_path / "notes"
    text.write_bytes(b"hello")
    with pytest.raises(BadInputError, match="notes"):
        detect_format(str(text), text)
