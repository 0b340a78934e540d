"""The build as steps over URIs. `curation build` runs them in order; the Airflow DAG runs the
same steps as tasks (per-shard ones mapped), passing only URIs and small stats between them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from curation import layout, storage
from curation.config import BuildConfig, load_config
from curation.dedup import lsh
from curation.dedup.exact import plan_exact_dedup, plan_url_dedup
from curation.dedup.images import compute_image_keys, plan_image_dedup
from curation.dedup.index import add_to_index
from curation.dedup.lsh import find_candidates, resolve_duplicates
from curation.dedup.minhash import compute_signatures
from curation.errors import ConfigError
from curation.filtering import filter_shard
from curation.gates import GateReport, run_gate
from curation.ingest.cc_paths import resolve_inputs
from curation.ingest.fetch import fetch_images
from curation.ingest.warc import ingest
from curation.pairs import filter_pairs
from curation.publish import publish, read_manifest
from curation.scoring.documents import score_shard
from curation.select import describe_plan, plan_selection, select_shard
from curation.stats import PAIR_STAGES, StageStats

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
    inputs = resolve_inputs(input_patterns(cfg.inputs, build_id, interval), cfg)  # applies sampling and shard_limit
    if not inputs:
        raise ConfigError(f"no input files match {cfg.inputs!r}; set `inputs` to WARC files, globs, prefixes or path listings")
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


def run_dedup(cfg: BuildConfig, build_id: str, ingested: list[str]) -> list[str]:
    """The build-wide exact and URL dedup plans (each a DUPLICATES table), as configured."""
    plans = []
    if cfg.dedup.exact:
        output = layout.duplicates_uri(cfg, build_id)
        plans.append(_finish(plan_exact_dedup(ingested, output, cfg), output))
    if cfg.dedup.url:
        output = storage.join(cfg.work_root, build_id, "dedup", "url_duplicates.parquet")
        plans.append(_finish(plan_url_dedup(ingested, output, cfg), output))
    return plans


def run_signatures(cfg: BuildConfig, build_id: str, ingested: str) -> str | None:
    """MinHash signatures of one ingest shard (near-dup dedup step 1, mapped per shard)."""
    if not cfg.dedup.near:
        return None
    output = lsh.signatures_uri(cfg, build_id, storage.name(ingested).removesuffix(".parquet"))
    return _finish(compute_signatures([ingested], output, cfg), output)


def near_dedup_tasks(cfg: BuildConfig) -> list[tuple[list[int], int]]:
    """(bands, partition) of each candidates task (near-dup dedup step 2); none when near-dup is off."""
    return lsh.lsh_tasks(cfg) if cfg.dedup.near else []


def run_candidates(cfg: BuildConfig, build_id: str, signatures: list[str], bands: list[int], partition: int) -> str:
    """Candidate edges of one band group x hash partition, against this build and the published index."""
    output = lsh.candidates_uri(cfg, build_id, bands, partition)
    return _finish(find_candidates(signatures, output, cfg, bands, partition), output)


def run_resolve_near(cfg: BuildConfig, build_id: str, edges: list[str]) -> list[str]:
    """Union-find over every candidate edge -> the near-duplicates table (step 3, one global task)."""
    if not edges:
        return []
    output = lsh.near_duplicates_uri(cfg, build_id)
    return [_finish(resolve_duplicates(edges, output, cfg), output)]


def run_index_update(cfg: BuildConfig, build_id: str, signatures: list[str]) -> None:
    """After publishing: add the published documents' signatures to the cross-build dedup index."""
    if not (cfg.dedup.near and cfg.dedup.cross_build and signatures):
        return
    release = layout.release_uri(cfg, build_id)
    data = [storage.join(release, f["path"]) for f in read_manifest(cfg, build_id)["files"]]
    log.info(add_to_index(signatures, data, cfg, build_id).summary())


def _next_shard(cfg: BuildConfig, build_id: str, stage: str, previous: str) -> str:
    """The output URI of `stage` for the shard that `previous` (another stage's shard) holds."""
    return layout.shard_uri(cfg, build_id, stage, storage.name(previous).removesuffix(".parquet"))


def run_fetch(cfg: BuildConfig, build_id: str, ingested: str) -> str | None:
    """Fetch the images of one shard's image-text candidates (only when fetching is enabled)."""
    if not (cfg.ingest.images.enabled and cfg.ingest.fetch.enabled):
        return None
    output = _next_shard(cfg, build_id, "fetch_images", ingested)
    crawl_images = layout.crawl_images(ingested) if cfg.ingest.fetch.source == "warc" else None
    return _finish(fetch_images([layout.pairs_uri(ingested)], output, cfg, crawl_images), output)


def run_clip(cfg: BuildConfig, build_id: str, fetched: str) -> str:
    """CLIP image-text similarity, image embedding and NSFW score of one fetched pairs shard (GPU queue)."""
    from curation.scoring.clip import score_pairs_shard  # torch + open_clip: only where pairs are scored

    output = _next_shard(cfg, build_id, "clip", fetched)
    return _finish(score_pairs_shard([fetched], output, cfg), output)


def run_image_keys(cfg: BuildConfig, build_id: str, clipped: str) -> str:
    """Image dedup step 1 (mapped): sha256 + perceptual hash (+ embedding) per pair, no image bytes."""
    output = _next_shard(cfg, build_id, "image_keys", clipped)
    return _finish(compute_image_keys([clipped], output, cfg), output)


def run_image_dedup(cfg: BuildConfig, build_id: str, keys: list[str]) -> str:
    """Image dedup step 2 (global): exact, perceptual and (optionally) semantic duplicates."""
    output = storage.join(cfg.work_root, build_id, "dedup", "image_duplicates.parquet")
    return _finish(plan_image_dedup(keys, output, cfg), output)


def run_pairs_filter(cfg: BuildConfig, build_id: str, clipped: str, duplicates: str) -> str:
    output = _next_shard(cfg, build_id, "pairs_dedup", clipped)
    return _finish(filter_pairs([clipped], output, cfg, [duplicates]), output)


def run_pairs_select_plan(cfg: BuildConfig, build_id: str, pairs: list[str]) -> str:
    """Build-wide cuts for pairs (e.g. CLIP-score top 30% over every shard, DataComp-style)."""
    output = storage.join(cfg.work_root, build_id, "select_pairs", "plan.json")
    plan = plan_selection(pairs, output, cfg, select=cfg.select_pairs)
    log.info("pairs selection plan %s:\n%s", output, describe_plan(plan))
    return output


def run_pairs_select(cfg: BuildConfig, build_id: str, pairs: str, plan: str) -> str:
    output = _next_shard(cfg, build_id, "select_pairs", pairs)
    return _finish(select_shard([pairs], output, cfg, plan, select=cfg.select_pairs, stage="select_pairs"), output)


def run_filter(cfg: BuildConfig, build_id: str, ingested: str, duplicates: list[str]) -> str:
    """Takedowns, then the dedup tables in order (exact, URL, near: the first reason wins), then the rules."""
    output = _next_shard(cfg, build_id, "filter", ingested)
    return _finish(filter_shard([ingested], output, cfg, duplicates=duplicates), output)


def run_score(cfg: BuildConfig, build_id: str, filtered: str) -> str:
    output = _next_shard(cfg, build_id, "score", filtered)
    return _finish(score_shard([filtered], output, cfg), output)


def run_select_plan(cfg: BuildConfig, build_id: str, scored: list[str]) -> str:
    """One global pass over the score columns of every shard: the cuts (percentiles are build-wide)."""
    output = storage.join(cfg.work_root, build_id, "select", "plan.json")
    plan = plan_selection(scored, output, cfg)
    log.info("selection plan %s:\n%s", output, describe_plan(plan))
    return output


def run_select(cfg: BuildConfig, build_id: str, scored: str, plan: str) -> str:
    output = _next_shard(cfg, build_id, "select", scored)
    return _finish(select_shard([scored], output, cfg, plan), output)


def funnel(ingested: list[str], *later: list[str]) -> list[StageStats]:
    """Stage totals (the drop funnel) from the per-shard stats files, in pipeline order.

    `later` are the per-shard outputs of the following stages (filter, score, select), each
    stage's name read from its stats.
    """
    stages = [StageStats.total("ingest", [layout.read_stats(u) for u in ingested])]
    for outputs in later:
        parts = [layout.read_stats(u) for u in outputs]
        if parts:
            stages.append(StageStats.total(parts[0].stage, parts))
    return stages


def pairs_funnel(cfg: BuildConfig, build_id: str, ingested: list[str]) -> list[StageStats]:
    """Stage totals of the image-text chain, in pipeline order (each stage writes to the folder it is named after)."""
    stages = [StageStats.total(PAIR_STAGES[0], [layout.read_stats(layout.pairs_uri(u)) for u in ingested])]
    for stage in PAIR_STAGES[1:]:
        parts = [layout.read_stats(u) for u in layout.stage_outputs(cfg, build_id, stage)]
        if parts:
            stages.append(StageStats.total(stage, parts))
    return stages


def run_gate_step(
    cfg: BuildConfig, build_id: str, ingested: list[str], *later: list[str], pairs: list[str] | None = None
) -> GateReport:
    """Gate the last stage's shards (and the selected pairs), with the funnel of every stage before it."""
    kept = later[-1] if later else []
    chain = pairs_funnel(cfg, build_id, ingested) if pairs else None
    report_uri = layout.gate_report_uri(cfg, build_id)
    return run_gate(kept, report_uri, cfg, build_id, funnel(ingested, *later), pairs=pairs or None, pairs_funnel=chain)


def run_publish(cfg: BuildConfig, build_id: str, kept: list[str], force: bool = False, pairs: list[str] | None = None) -> str:
    output = layout.release_uri(cfg, build_id)
    stats = publish(kept, output, cfg, build_id, layout.gate_report_uri(cfg, build_id), force=force, pairs=pairs or None)
    log.info(stats.summary())
    return stats.outputs[0]


def _finish(stats: StageStats, output: str) -> str:
    layout.write_stats(stats, output)
    log.info(stats.summary())
    return output


def run_documents_path(cfg: BuildConfig, build_id: str, ingested: list[str], progress: bool = False) -> dict[str, list[str]]:
    """Ingested documents -> dedup (exact, URL, near) -> filter -> score -> build-wide selection."""
    signatures = [u for u in (run_signatures(cfg, build_id, i) for i in _bar(ingested, "minhash", progress)) if u]
    edges = [run_candidates(cfg, build_id, signatures, bands, part) for bands, part in near_dedup_tasks(cfg)]
    duplicates = run_dedup(cfg, build_id, ingested) + run_resolve_near(cfg, build_id, edges)
    filtered = [run_filter(cfg, build_id, u, duplicates) for u in _bar(ingested, "filter", progress)]
    scored = [run_score(cfg, build_id, u) for u in _bar(filtered, "score", progress)]
    plan = run_select_plan(cfg, build_id, scored)
    selected = [run_select(cfg, build_id, u, plan) for u in _bar(scored, "select", progress)]
    return {"signatures": signatures, "filtered": filtered, "scored": scored, "selected": selected}


def run_build(cfg: BuildConfig, progress: bool = False) -> dict:
    """Run the whole pipeline in this process; returns a summary (raises GateFailure on a failed gate)."""
    build_id = cfg.resolved_build_id()
    config_uri, shards = prepare(cfg, build_id)
    cfg = load_build_config(config_uri)
    ingested = [run_ingest(cfg, build_id, s) for s in _bar(shards, "ingest", progress)]
    fetched = [u for u in (run_fetch(cfg, build_id, i) for i in _bar(ingested, "fetch", progress)) if u]
    docs = run_documents_path(cfg, build_id, ingested, progress)
    pairs = run_pairs_path(cfg, build_id, fetched, progress)
    report = run_gate_step(cfg, build_id, ingested, docs["filtered"], docs["scored"], docs["selected"], pairs=pairs)
    manifest = run_publish(cfg, build_id, docs["selected"], pairs=pairs) if cfg.publish.enabled else None
    if manifest:
        run_index_update(cfg, build_id, docs["signatures"])
    return {
        "build_id": build_id,
        "rows": report.rows,
        "gate_report": report.report_uri,
        "manifest": manifest,
        "funnel": report.funnel,
        "pairs": pairs,
    }


def run_pairs_path(cfg: BuildConfig, build_id: str, fetched: list[str], progress: bool = False) -> list[str]:
    """Fetched pairs -> CLIP scores -> image dedup -> build-wide selection; [] when nothing was fetched."""
    if not fetched:
        return []
    clipped = [run_clip(cfg, build_id, u) for u in _bar(fetched, "clip", progress)]
    duplicates = run_image_dedup(cfg, build_id, [run_image_keys(cfg, build_id, u) for u in clipped])
    deduped = [run_pairs_filter(cfg, build_id, u, duplicates) for u in clipped]
    plan = run_pairs_select_plan(cfg, build_id, deduped)
    return [run_pairs_select(cfg, build_id, u, plan) for u in deduped]


def _bar(items: list, label: str, enabled: bool) -> list:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=f"{label:>8}")
