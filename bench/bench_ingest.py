"""Ingest throughput: `curation.ingest.warc.ingest` vs a bare fastwarc + resiliparse loop.

The baseline is the practical limit: iterate the same WARC files, keep HTTP 200 HTML responses,
decode, extract the main text and detect the language, with no output and no bookkeeping. The
candidate does that plus drop accounting, ids, hashing and a Parquet shard.

    .venv/bin/python -m bench.bench_ingest --pages 4000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree
from resiliparse.parse.lang import detect_fast

from bench.harness import compare
from curation.config import load_config
from curation.ingest.sample_crawl import write_sample_crawl
from curation.ingest.warc import ingest


def bare_loop(files: list[str]) -> int:
    records = 0
    for path in files:
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                records += 1
                if record.http_headers is None or record.http_headers.status_code != 200:
                    continue
                if not (record.http_content_type or "").startswith("text/html"):
                    continue
                payload = record.reader.read()
                html = bytes_to_str(payload, record.http_charset or detect_encoding(payload))
                text = extract_plain_text(HTMLTree.parse(html), preserve_formatting=True, main_content=True, alt_texts=False)
                detect_fast(text)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_sample_crawl(str(Path(tmp) / "crawl"), pages=args.pages, seed=0, files=4)
        cfg = load_config(overrides={"work_root": tmp})

        def candidate() -> int:
            total = 0
            for i, path in enumerate(files):
                stats = ingest([path], f"{tmp}/out/{i:05d}.parquet", cfg)
                total += stats.rows_in
            return total

        compare(
            "ingest",
            "records/s",
            candidate,
            lambda: bare_loop(files),
            repeat=args.repeat,
            target=0.8,
            extra={"pages": args.pages, "files": len(files), "cores_used": 1},
        )


if __name__ == "__main__":
    main()
