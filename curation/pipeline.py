"""The build as steps over URIs. `curation build` runs them in order; the Airflow DAG runs the
same steps as tasks (per-shard ones mapped), passing only URIs and small stats between them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from curation import layout, storage
from curation.config import BuildConfig, load_config
from curation.dedup.exact import plan_exact_dedup
from curation.errors import ConfigError
from curation.filtering import filter_shard
from curation.gates import GateReport, run_gate
from curation.ingest.warc import ingest
from curation.publish import publish
from curation.stats import StageStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    name: str
    inputs: list[str]


def input_patterns(patterns: list[str], build_id: str, interval: tuple[dt.datetime, dt.datetime] | None) -> list[str]:
    """Fill `{build_id}`, `{start}` and `{end}` (ISO dates of the data interval) in input patterns."""
    start, end = interval or (None, None)
    values = {
        "build_id": build_id,
        "start": start.date().isoformat() if start else "",
        "end": end.date().isoformat() if end else "",
    }
    try:
        return [p.format_map(values) for p in patterns]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"input pattern uses an unknown placeholder {exc}; known: {sorted(values)}") from exc


def prepare(cfg: BuildConfig, build_id: str, interval: tuple[dt.datetime, dt.datetime] | None = None) -> tuple[str, list[Shard]]:
    """Resolve the inputs into shards (one input file each) and write the build's config."""
    inputs = storage.expand_inputs(input_patterns(cfg.inputs, build_id, interval))
    if not inputs:
        raise ConfigError(f"no input files match {cfg.inputs!r}; set `inputs` to WARC files, globs or prefixes")
    if cfg.shard_limit:
        inputs = inputs[: cfg.shard_limit]
    cfg = cfg.model_copy(update={"inputs": inputs, "build_id": build_id})
    config_uri = layout.config_uri(cfg, build_id)
    storage.write_bytes(config_uri, cfg.to_yaml().encode())
    log.info("build %s: %d input shard(s), config %s (hash %s)", build_id, len(inputs), config_uri, cfg.config_hash()[:12])
    return config_uri, [Shard(layout.shard_name(i), [uri]) for i, uri in enumerate(inputs)]


def load_build_config(config_uri: str) -> BuildConfig:
    """The resolved config a build wrote in `prepare` (tasks reload it rather than pass it around)."""
    import yaml

    return load_config(overrides=yaml.safe_load(storage.read_bytes(config_uri)))


def run_ingest(cfg: BuildConfig, build_id: str, shard: Shard) -> str:
    output = layout.shard_uri(cfg, build_id, "ingest", shard.name)
    return _finish(ingest(shard.inputs, output, cfg), output)


def run_dedup(cfg: BuildConfig, build_id: str, ingested: list[str]) -> str:
    output = layout.duplicates_uri(cfg, build_id)
    return _finish(plan_exact_dedup(ingested, output, cfg), output)


def run_filter(cfg: BuildConfig, build_id: str, ingested: str, duplicates: str) -> str:
    output = layout.shard_uri(cfg, build_id, "filter", storage.name(ingested).removesuffix(".parquet"))
    return _finish(filter_shard([ingested], output, cfg, duplicates=duplicates), output)


def funnel(ingested: list[str], filtered: list[str]) -> list[StageStats]:
    """Stage totals (the drop funnel) from the per-shard stats files."""
    return [
        StageStats.total("ingest", [layout.read_stats(u) for u in ingested]),
        StageStats.total("filter", [layout.read_stats(u) for u in filtered]),
    ]


def run_gate_step(cfg: BuildConfig, build_id: str, ingested: list[str], filtered: list[str]) -> GateReport:
    return run_gate(filtered, layout.gate_report_uri(cfg, build_id), cfg, build_id, funnel(ingested, filtered))


def run_publish(cfg: BuildConfig, build_id: str, filtered: list[str], force: bool = False) -> str:
    output = layout.release_uri(cfg, build_id)
    stats = publish(filtered, output, cfg, build_id, layout.gate_report_uri(cfg, build_id), force=force)
    log.info(stats.summary())
    return stats.outputs[0]


def _finish(stats: StageStats, output: str) -> str:
    layout.write_stats(stats, output)
    log.info(stats.summary())
    return output


def run_build(cfg: BuildConfig, progress: bool = False) -> dict:
    """Run the whole pipeline in this process; returns a summary (raises GateFailure on a failed gate)."""
    build_id = cfg.resolved_build_id()
    config_uri, shards = prepare(cfg, build_id)
    cfg = load_build_config(config_uri)
    ingested = [run_ingest(cfg, build_id, s) for s in _bar(shards, "ingest", progress)]
    duplicates = run_dedup(cfg, build_id, ingested)
    filtered = [run_filter(cfg, build_id, u, duplicates) for u in _bar(ingested, "filter", progress)]
    report = run_gate_step(cfg, build_id, ingested, filtered)
    manifest = run_publish(cfg, build_id, filtered) if cfg.publish.enabled else None
    return {
        "build_id": build_id,
        "rows": report.rows,
        "gate_report": report.report_uri,
        "manifest": manifest,
        "funnel": report.funnel,
    }


def _bar(items: list, label: str, enabled: bool) -> list:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=f"{label:>8}")
