"""Publish throughput: `curation.publish.publish` to S3 vs a bare boto3 `upload_file` of the same bytes.

Both write to the same SeaweedFS server on 127.0.0.1 (tests/s3server.py), started here. The
candidate does everything a publish does: hash the inputs, decide the identity, reshard (here the
inputs are already right-sized, so they are published byte for byte, as when the filter writes
shards of the target size), upload with SHA256 checksums (multipart), verify every object
against the server's checksum, write the data card, the manifest, then LATEST. The baseline
uploads the release's data files with `client.upload_file` and boto3's default TransferConfig,
nothing else. Throughput is MiB of release data per second.

A second comparison (`publish_reshard`, no target) starts from small shards that must be merged,
so the candidate also decodes and re-encodes every row (zstd Parquet): that one is CPU-bound.

    .venv/bin/python -m bench.bench_publish --mb 512 --shard-mb 64
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import compare
from curation import layout
from curation.config import load_config
from curation.gates import Check, GateReport
from curation.publish import publish, read_manifest
from curation.reshard import ParquetFileWriter, ParquetLayout, reshard
from curation.storage import write_json
from tests.s3server import S3Server

MiB = 2**20
BUCKET = "bench"


def text_pool(mb: int, seed: int = 0) -> bytes:
    """`mb` MiB of Zipf-distributed words: compresses like web text (~3x with zstd)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = [bytes(rng.choice(letters, size=rng.integers(2, 11))) for _ in range(30_000)]
    weights = 1 / np.arange(1, len(vocab) + 1)
    ids = rng.choice(len(vocab), size=mb * MiB // 6, p=weights / weights.sum())
    return b" ".join(vocab[i] for i in ids)[: mb * MiB]


def documents(pool: bytes, rows: int, seed: int) -> pa.Table:
    """`rows` documents whose text is consecutive slices of the pool, from a random offset (wrapping)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(800, 8000, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    start = int(rng.integers(0, len(pool)))
    data = (pool[start:] + pool)[: int(offsets[-1])]
    text = pa.StringArray.from_buffers(rows, pa.py_buffer(offsets.astype(np.int32).tobytes()), pa.py_buffer(data))
    ids = [f"{x:032x}" for x in rng.integers(0, 2**62, rows)]
    return pa.table(
        {
            "doc_id": ids,
            "url": [f"https://site{i % 997}.example.org/page/{h[:12]}" for i, h in enumerate(ids)],
            "domain": [f"site{i % 997}.example.org" for i in range(rows)],
            "language": pa.array(["en"] * rows),
            "language_score": pa.array(rng.uniform(0.65, 1.0, rows).astype(np.float32)),
            "text": text,
            "text_hash": [h[::-1] for h in ids],
            "mean_word_length": pa.array(rng.normal(4.8, 0.3, rows).astype(np.float32)),
            "quality_score": pa.array(rng.beta(2, 5, rows).astype(np.float32)),
            "toxicity_score": pa.array(rng.beta(1, 20, rows).astype(np.float32)),
        }
    )


def write_shards(folder: Path, pool: bytes, total_mb: int, shard_layout: ParquetLayout) -> list[str]:
    """Input shards of about `shard_layout.shard_bytes` each, `total_mb` MiB in all."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    written, seed = 0, 0
    while written < total_mb * MiB:
        path = folder / f"{len(paths):05d}.parquet"
        writer = None
        while writer is None or writer.written_bytes < shard_layout.shard_bytes:
            table = documents(pool, 1000, seed)
            seed += 1
            writer = writer or ParquetFileWriter(path, table.schema, shard_layout)
            for batch in table.to_batches():
                writer.add(batch)
        writer.close()
        paths.append(str(path))
        written += path.stat().st_size
    return paths


def gate_report(path: Path, rows: int) -> str:
    report = GateReport(build_id="bench", checks=[Check("bench: rows", True, "critical", rows, "> 0")], rows=rows)
    write_json(str(path), report.to_dict())
    return str(path)


def run(name: str, inputs: list[str], tmp: Path, s3: S3Server, shard_mb: int, repeat: int, target: float | None) -> dict:
    cfg = load_config(
        overrides={
            "release_root": f"s3://{BUCKET}/{name}",
            "work_root": str(tmp / "work"),
            "state_root": str(tmp / "state"),
            "publish": {"shard_bytes": shard_mb * MiB},
        }
    )
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in inputs)
    report = gate_report(tmp / f"{name}-gate.json", rows)
    # The release's data files, as publish will write them (deterministic): what the baseline uploads.
    resharded = reshard([Path(p) for p in inputs], tmp / f"{name}-release", ParquetLayout.from_config(cfg.publish))
    release_files = [str(p) for p, _ in resharded.files]
    data_bytes = sum(os.path.getsize(p) for p in release_files)
    client = s3.client()
    runs = itertools.count()

    def candidate() -> int:
        build_id = f"run-{next(runs)}"
        publish(inputs, layout.release_uri(cfg, build_id), cfg, build_id, report)
        manifest = read_manifest(cfg, build_id)
        assert manifest["bytes"] == data_bytes, "publish wrote other bytes than the baseline uploads"
        return round(manifest["bytes"] / MiB)

    def baseline() -> int:
        prefix = f"{name}-baseline/{next(runs)}"
        for path in release_files:
            client.upload_file(path, BUCKET, f"{prefix}/{Path(path).name}")
        return round(data_bytes / MiB)

    return compare(
        name,
        "MiB/s",
        candidate,
        baseline,
        repeat=repeat,
        target=target,
        extra={
            "release_mib": round(data_bytes / MiB, 1),
            "input_files": len(inputs),
            "release_files": len(release_files),
            "shard_mib": shard_mb,
            "passthrough_files": resharded.passthrough,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512, help="release size, MiB")
    parser.add_argument("--shard-mb", type=int, default=64, help="target shard size, MiB")
    parser.add_argument("--small-mb", type=int, default=4, help="input shard size of the reshard case, MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-reshard", action="store_true", help="only the right-sized (pass-through) case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp_dir, S3Server() as s3:
        tmp = Path(tmp_dir)
        s3.create_bucket(BUCKET)
        os.environ.update(s3.env())
        pool = text_pool(32)
        sized = write_shards(tmp / "sized", pool, args.mb, ParquetLayout(shard_bytes=args.shard_mb * MiB))
        run("publish", sized, tmp, s3, args.shard_mb, args.repeat, target=0.8)
        if not args.skip_reshard:
            small = write_shards(tmp / "small", pool, args.mb // 4, ParquetLayout(shard_bytes=args.small_mb * MiB))
            run("publish_reshard", small, tmp, s3, args.shard_mb, args.repeat, target=None)


if __name__ == "__main__":
    main()
