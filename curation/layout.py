"""Where every artifact of a build lives. The one place that knows the storage layout:

{work_root}/{build_id}/config.yaml                     resolved config of the build
{work_root}/{build_id}/{stage}/{shard}.parquet         stage output, one per shard
{work_root}/{build_id}/{stage}/{shard}.stats.json      its StageStats
{work_root}/{build_id}/{stage}/dropped/{shard}.parquet rows the stage removed, with reasons
{work_root}/{build_id}/ingest/pairs/{shard}.parquet    image-text candidates of the shard's pages (+ .stats.json)
{work_root}/{build_id}/ingest/images/{shard}.parquet   image responses of the shard's crawl files (fetch source: warc)
{work_root}/{build_id}/fetch_images/{shard}.fetch.json fetch report: success rate, counts by status
{release_root}/{corpus}/{build_id}/...                 published release
{release_root}/{corpus}/LATEST                         newest release that passed its gates
"""

from __future__ import annotations

import time

import pyarrow as pa

from curation import storage
from curation.config import BuildConfig
from curation.schema import DROPPED
from curation.stats import StageStats


def shard_name(index: int) -> str:
    return f"{index:05d}"


def build_root(cfg: BuildConfig, build_id: str) -> str:
    return storage.join(cfg.work_root, build_id)


def shard_uri(cfg: BuildConfig, build_id: str, stage: str, shard: str) -> str:
    return storage.join(cfg.work_root, build_id, stage, f"{shard}.parquet")


def stage_outputs(cfg: BuildConfig, build_id: str, stage: str) -> list[str]:
    """The shard files a stage wrote for a build (not its dropped/ tables), sorted."""
    folder = storage.join(cfg.work_root, build_id, stage)
    side_tables = ("/dropped/", "/pairs/", "/images/")  # audit rows, image-text candidates, crawl images
    return [uri for uri in storage.list_files(folder, ".parquet") if not any(s in uri[len(folder) :] for s in side_tables)]


def stats_uri(output: str) -> str:
    return output.removesuffix(".parquet") + ".stats.json"


def dropped_uri(output: str) -> str:
    parent, _, shard = output.rpartition("/")
    return f"{parent}/dropped/{shard}"


def pairs_uri(output: str) -> str:
    """The image-text candidates of a documents shard: {stage}/pairs/{shard}.parquet."""
    parent, _, shard = output.rpartition("/")
    return f"{parent}/pairs/{shard}"


def crawl_images_uri(output: str) -> str:
    """The image responses found in a documents shard's inputs: {stage}/images/{shard}.parquet."""
    parent, _, shard = output.rpartition("/")
    return f"{parent}/images/{shard}"


def crawl_images(ingested: str) -> list[str]:
    """The crawl images of every shard of the stage that wrote `ingested` (the whole build's)."""
    return storage.list_files(crawl_images_uri(ingested).rpartition("/")[0], ".parquet")


def fetch_report_uri(output: str) -> str:
    """Per-shard fetch_images report (success rate, counts by status, bytes) beside the shard."""
    return output.removesuffix(".parquet") + ".fetch.json"


def config_uri(cfg: BuildConfig, build_id: str) -> str:
    return storage.join(cfg.work_root, build_id, "config.yaml")


def gate_report_uri(cfg: BuildConfig, build_id: str) -> str:
    return storage.join(cfg.work_root, build_id, "gate", "report.json")


def duplicates_uri(cfg: BuildConfig, build_id: str) -> str:
    return storage.join(cfg.work_root, build_id, "dedup", "duplicates.parquet")


def release_uri(cfg: BuildConfig, build_id: str) -> str:
    return storage.join(cfg.release_root, cfg.publish.corpus, build_id)


def latest_uri(cfg: BuildConfig) -> str:
    return storage.join(cfg.release_root, cfg.publish.corpus, "LATEST")


def write_stats(stats: StageStats, output: str) -> None:
    storage.write_json(stats_uri(output), stats.to_dict())


def finish_shard(
    stats: StageStats, writer: storage.TableWriter, output: str, started: float, dropped: list[pa.Table] | None = None
) -> StageStats:
    """End a per-shard stage: rows and bytes written to `output`, the time since `started`
    (time.monotonic()), and, for a stage that removes rows, its dropped/ table (empty if none)."""
    stats.rows_out = writer.rows
    stats.bytes_out = writer.bytes
    stats.outputs = [output]
    if dropped is not None:
        storage.write_table(dropped_uri(output), pa.concat_tables([DROPPED.empty_table(), *dropped]))
    stats.seconds = time.monotonic() - started
    return stats


def read_stats(output: str) -> StageStats:
    return StageStats.from_dict(storage.read_json(stats_uri(output)))
