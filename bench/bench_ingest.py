"""Ingest throughput (records/s on one core) against the practical limit and against datatrove.

1. `ingest` vs a bare fastwarc + resiliparse loop over the same WARC files: the practical limit.
   The loop keeps HTTP 200 HTML responses, decodes, extracts the main text and detects the
   language, with no output and no bookkeeping. Like for like, ingest runs text-only (image
   candidates off); it adds drop accounting, binary sniffing, ids, hashing and Parquet output.
   Target >= 0.8x. Pages carry realistic site chrome (about 38 KB of HTML, like Common Crawl's)
   unless --small-pages: then the synthetic ~3 KB pages, where per-record bookkeeping weighs most.
2. `ingest_with_images`: the default config (image-text candidates on) against the same loop,
   to show what the candidates cost. No target.
3. `ingest_vs_datatrove*`: the default ingest (text, language id, image candidates, Parquet)
   against datatrove 0.10.1's WarcReader + extractor + ParquetWriter on the same files: its stock
   Trafilatura extractor (FineWeb's setup, less its fastText language filter, which needs a
   download), and a resiliparse extractor on datatrove's BaseExtractor. Target >= 2x.

Every comparison runs both sides in this process, interleaved, best of --repeat (others share the
machine's cores: timings are noisy). Records = WARC response records in the files, the same count
for every side. Results: bench/results/<name>.json.

    .venv/bin/python -m bench.bench_ingest                    # realistic pages, all comparisons
    .venv/bin/python -m bench.bench_ingest --small-pages      # the 3 KB synthetic pages
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile

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


def _html_sizes(files: list[str]) -> dict:
    sizes = [
        len(r.reader.read())
        for path in files
        for r in ArchiveIterator(path, record_types=WarcRecordType.response, parse_http=True)
        if (r.http_content_type or "").startswith("text/html")
    ]
    return {
        "html_pages": len(sizes),
        "html_bytes_mean": round(statistics.mean(sizes)),
        "html_bytes_median": statistics.median(sizes),
    }


def _ingest_runner(files: list[str], out: str, cfg):
    def run() -> int:
        return sum(ingest([path], f"{out}/{i:05d}.parquet", cfg).rows_in for i, path in enumerate(files))

    return run


def _datatrove_runner(folder: str, out: str, extractor: str, records: int):
    """datatrove's WarcReader -> extractor -> ParquetWriter, chained as its executor chains steps."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.extractors.base import BaseExtractor
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    class ResiliparseExtractor(BaseExtractor):
        """The same extraction call as ours, on datatrove's extractor base (a sandboxed worker process)."""

        name = "resiliparse"

        def __init__(self, timeout: float = 1.0):
            super().__init__(timeout)

        def extract(self, text: str) -> str:
            return extract_plain_text(text, preserve_formatting=True, main_content=True, alt_texts=False)

    def run() -> int:
        reader = WarcReader(folder, glob_pattern="*.warc.gz")
        step = Trafilatura(favour_precision=True, timeout=5.0) if extractor == "trafilatura" else ResiliparseExtractor(5.0)
        writer = ParquetWriter(out)
        for _ in writer.run(step.run(reader.run())):
            pass
        return records

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--datatrove-pages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-pages", action="store_true", help="3 KB synthetic pages instead of realistic ones")
    parser.add_argument("--skip-datatrove", action="store_true")
    args = parser.parse_args()
    logging.getLogger("datatrove").setLevel(logging.WARNING)
    from datatrove.utils.logging import logger as datatrove_logger

    datatrove_logger.remove()  # loguru: its per-step INFO lines would dominate the output
    chrome = not args.small_pages
    style = "small" if args.small_pages else "realistic"
    with tempfile.TemporaryDirectory() as tmp:
        files = write_sample_crawl(f"{tmp}/crawl", pages=args.pages, seed=0, files=4, site_chrome=chrome)
        records = bare_loop(files)
        text_only = load_config(overrides={"work_root": tmp, "ingest": {"images": {"enabled": False}}})
        default = load_config(overrides={"work_root": tmp})
        facts = {"pages": args.pages, "records": records, "files": len(files), "page_style": style, **_html_sizes(files)}
        facts["cores_used"] = 1
        suffix = "_small_pages" if args.small_pages else ""
        compare(
            f"ingest{suffix}",
            "records/s",
            _ingest_runner(files, f"{tmp}/out-text", text_only),
            lambda: bare_loop(files),
            repeat=args.repeat,
            target=0.8,
            extra={**facts, "candidate_config": "ingest.images.enabled=false (same work as the loop, plus bookkeeping)"},
        )
        compare(
            f"ingest_with_images{suffix}",
            "records/s",
            _ingest_runner(files, f"{tmp}/out-default", default),
            lambda: bare_loop(files),
            repeat=args.repeat,
            extra={**facts, "candidate_config": "defaults (image-text candidates on)"},
        )
        if args.skip_datatrove:
            return
        dt_folder = f"{tmp}/dt-crawl"
        dt_files = write_sample_crawl(dt_folder, pages=args.datatrove_pages, seed=1, files=2, site_chrome=chrome)
        dt_records = bare_loop(dt_files)
        dt_facts = {"pages": args.datatrove_pages, "records": dt_records, "page_style": style, **_html_sizes(dt_files)}
        dt_facts["candidate_config"] = "defaults: text, language id, image candidates, Parquet"
        for extractor in ("trafilatura", "resiliparse"):
            compare(
                f"ingest_vs_datatrove_{extractor}{suffix}",
                "records/s",
                _ingest_runner(dt_files, f"{tmp}/out-dt-{extractor}", default),
                _datatrove_runner(dt_folder, f"{tmp}/datatrove-{extractor}", extractor, dt_records),
                repeat=args.repeat,
                target=2.0,
                extra={**dt_facts, "baseline_pipeline": f"datatrove 0.10.1 WarcReader + {extractor} extractor + ParquetWriter"},
            )


if __name__ == "__main__":
    main()
