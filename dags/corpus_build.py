"""
### Weekly corpus build

Turns the week's crawl into a curated corpus release:
`prepare -> ingest (+ image fetch) -> dedup (exact, URL, MinHash LSH) -> filter -> score -> select
-> gate -> publish -> dedup index update`,
per-shard steps mapped over shard batches.

* **Schedule**: Mondays 03:00 UTC; each run covers the previous week (its data interval) and
  its `build_id` is that week's ISO week (e.g. `2026-W47`) unless the trigger form sets one.
  Input patterns may name the week: `s3://crawl/{build_id}/*.warc.gz`, `{start}` / `{end}`
  (ISO dates of the data interval), so a backfill run reads the crawl of its own week.
* **Trigger form**: inputs, shard limit, publish on/off (off = dry run), config overrides.
* **Retries**: transient storage/network errors retry with exponential backoff; config errors,
  unreadable inputs and gate failures fail at once (no retries).
* **Gate**: a failed critical check fails the run and nothing is published; the task log names
  every failed check and the gate report's URI.
* **On-call**: a failed run sends its gate outcome (or the failing task's error) through the
  build's notifiers; a run not finished `CURATION_DEADLINE_HOURS` (12) after it started is
  failed by the scheduler (dagrun_timeout), which pages the same way.
* **On publish**: an event on the asset `corpus/<corpus>` whose extra holds the manifest URI,
  so training DAGs can be scheduled on new releases.

Every task is a thin wrapper around `curation.pipeline`; heavy imports happen inside tasks.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from airflow.sdk import (
    Asset,
    AssetAlias,
    CronDataIntervalTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    TaskGroup,
    TriggerRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

sys.path.insert(0, os.path.dirname(__file__))  # sibling helper modules of this folder (Airflow 3 no longer adds it)
from notifiers import GateNotifier

# The weekly build must be done this long after it was queued, or on-call hears about it.
DEADLINE_HOURS = float(os.environ.get("CURATION_DEADLINE_HOURS", "12"))

CORPUS_ALIAS = AssetAlias("curated-corpus")

RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception="curation.errors.TransientError", action=RetryAction.RETRY, reason="transient storage/network error"),
        RetryRule(
            exception=["curation.errors.ConfigError", "curation.errors.BadInputError", "curation.errors.GateFailure"],
            action=RetryAction.FAIL,
            reason="deterministic failure: a retry cannot fix it",
        ),
    ]
)

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    # First retry delay, doubled each time; tests shorten it through the environment.
    "retry_delay": dt.timedelta(seconds=float(os.environ.get("CURATION_RETRY_DELAY_SECONDS", "30"))),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
    "retry_policy": RETRY_POLICY,
    "execution_timeout": dt.timedelta(hours=6),
}


def _build_config(params: dict, triggered_by: str | None = None):
    """The run's BuildConfig: YAML (Param or $CURATION_CONFIG) < overrides < trigger-form fields."""
    from curation.config import load_config

    overrides = dict(params.get("overrides") or {})
    for key in ("inputs", "shard_limit", "build_id"):
        if params.get(key) not in (None, [], ""):
            overrides[key] = params[key]
    overrides.setdefault("publish", {})["enabled"] = bool(params.get("publish", True))
    reason = (params.get("gate_override_reason") or "").strip()
    if reason:
        overrides.setdefault("gate", {})["override"] = {"reason": reason, "by": triggered_by}
    return load_config(params.get("config_path") or os.environ.get("CURATION_CONFIG"), overrides)


def _name_shards(batch: list[str]) -> None:
    """Name this mapped task instance after its shards in the UI (map_index_template)."""
    get_current_context()["shard_names"] = ",".join(uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet") for uri in batch)


def _each_shard(batch: list[str], build: dict, step: str, *args: object) -> list[str]:
    """A mapped task's body: `curation.pipeline.<step>(cfg, build_id, shard, *args)` for each shard
    of its batch, in order; steps that return None (switched off by the config) add nothing."""
    from curation import pipeline

    _name_shards(batch)
    cfg = pipeline.load_build_config(build["config_uri"])
    run = getattr(pipeline, step)
    return [uri for uri in (run(cfg, build["build_id"], shard, *args) for shard in batch) if uri]


def _flatten(batches) -> list[str]:
    return [uri for batch in batches for uri in batch]


@dag(
    dag_id="corpus_build",
    schedule=CronDataIntervalTimetable("0 3 * * 1", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["curation", "corpus"],
    doc_md=__doc__,
    on_failure_callback=GateNotifier(),
    # A run still going after this is failed by the scheduler, so the failure notifier pages on-call.
    # (Airflow 3.3.2's DeadlineAlert breaks `airflow dags test`, so lateness is handled this way.)
    dagrun_timeout=dt.timedelta(hours=DEADLINE_HOURS),
    params={
        "inputs": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Inputs",
            description="WARC files, globs or prefixes/; may use {build_id}, {start}, {end}. Empty: from the config.",
            section="Inputs",
        ),
        "shard_limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Shard limit",
            description="use only the first N input files",
            section="Inputs",
        ),
        "config_path": Param(
            None,
            type=["null", "string"],
            title="Config file",
            description="YAML build config; defaults to $CURATION_CONFIG",
            section="Build",
        ),
        "build_id": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            title="Build id",
            description="defaults to the ISO week of the data interval",
            section="Build",
        ),
        "overrides": Param(
            {},
            type="object",
            title="Config overrides",
            description='nested, e.g. {"heuristics": {"min_words": 30}, "gate": {"min_rows": 1000}}',
            section="Thresholds",
        ),
        "publish": Param(
            True, type="boolean", title="Publish", description="off = dry run: everything but the release", section="Publish"
        ),
    },
)
def corpus_build():
    @task
    def prepare() -> dict:
        from airflow.sdk import conf

        from curation.config import iso_week_id
        from curation.pipeline import prepare as prepare_build

        context = get_current_context()
        run = context["dag_run"]
        cfg = _build_config(context["params"], triggered_by=getattr(run, "triggering_user_name", None))
        start = context.get("data_interval_start")
        end = context.get("data_interval_end")
        build_id = cfg.build_id or iso_week_id((start or run.run_after).date())
        config_uri, shards = prepare_build(cfg, build_id, interval=(start, end) if start and end else None)
        # One mapped task per batch of shards, never more than [core] max_map_length of them.
        max_len = conf.getint("core", "max_map_length", fallback=1024)
        per_batch = -(-len(shards) // max_len)
        batches = [[[s.name, s.inputs] for s in shards[i : i + per_batch]] for i in range(0, len(shards), per_batch)]
        return {"build_id": build_id, "config_uri": config_uri, "batches": batches}

    @task
    def shard_batches(build: dict) -> list:
        return build["batches"]

    @task(map_index_template="{{ shard_names }}")
    def ingest(batch: list, build: dict) -> list[str]:
        from curation.pipeline import Shard, load_build_config, run_ingest

        get_current_context()["shard_names"] = ",".join(name for name, _ in batch)
        cfg = load_build_config(build["config_uri"])
        return [run_ingest(cfg, build["build_id"], Shard(name, inputs)) for name, inputs in batch]

    @task(map_index_template="{{ shard_names }}", pool="fetch")
    def fetch_images(batch: list[str], build: dict) -> list[str]:
        """Image-text pairs: download each shard's images (only when ingest.fetch.enabled)."""
        return _each_shard(batch, build, "run_fetch")

    @task(map_index_template="{{ shard_names }}")
    def minhash(batch: list[str], build: dict) -> list[str]:
        """Near-dup step 1: MinHash signatures per shard."""
        return _each_shard(batch, build, "run_signatures")

    @task
    def lsh_tasks(build: dict) -> list:
        from curation.pipeline import load_build_config, near_dedup_tasks

        return [[bands, partition] for bands, partition in near_dedup_tasks(load_build_config(build["config_uri"]))]

    @task(map_index_template="{{ lsh_task_name }}")
    def lsh_candidates(lsh_task: list, signatures: list, build: dict) -> str:
        """Near-dup step 2: candidate edges of a band group x hash partition (this build + published index)."""
        from curation.pipeline import load_build_config, run_candidates

        bands, partition = lsh_task
        get_current_context()["lsh_task_name"] = f"bands {bands[0]}-{bands[-1]}, partition {partition}"
        cfg = load_build_config(build["config_uri"])
        return run_candidates(cfg, build["build_id"], _flatten(signatures), bands, partition)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def dedup_plans(ingested: list, edges: list, build: dict) -> list[str]:
        """Build-wide exact and URL plans, and near-dup step 3 (union-find over the edges)."""
        from curation.pipeline import load_build_config, run_dedup, run_resolve_near

        cfg = load_build_config(build["config_uri"])
        return run_dedup(cfg, build["build_id"], _flatten(ingested)) + run_resolve_near(cfg, build["build_id"], list(edges or []))

    @task(map_index_template="{{ shard_names }}")
    def filter_shards(batch: list[str], build: dict, duplicates: list[str]) -> list[str]:
        return _each_shard(batch, build, "run_filter", duplicates)

    @task(map_index_template="{{ shard_names }}")
    def score(batch: list[str], build: dict) -> list[str]:
        return _each_shard(batch, build, "run_score")

    @task
    def select_plan(scored: list, build: dict) -> str:
        from curation.pipeline import load_build_config, run_select_plan

        return run_select_plan(load_build_config(build["config_uri"]), build["build_id"], _flatten(scored))

    @task(map_index_template="{{ shard_names }}")
    def select(batch: list[str], build: dict, plan: str) -> list[str]:
        return _each_shard(batch, build, "run_select", plan)

    @task(map_index_template="{{ shard_names }}", queue="clip")
    def clip_scores(batch: list[str], build: dict) -> list[str]:
        """CLIP similarity, embeddings and NSFW score per fetched pairs shard: the GPU queue's work."""
        return _each_shard(batch, build, "run_clip")

    @task(map_index_template="{{ shard_names }}")
    def image_keys(batch: list[str], build: dict) -> list[str]:
        return _each_shard(batch, build, "run_image_keys")

    @task
    def image_dedup(keys: list, build: dict) -> str | None:
        from curation.pipeline import load_build_config, run_image_dedup

        flat = _flatten(keys)
        return run_image_dedup(load_build_config(build["config_uri"]), build["build_id"], flat) if flat else None

    @task(map_index_template="{{ shard_names }}")
    def pairs_dedup(batch: list[str], build: dict, duplicates: str | None) -> list[str]:
        return _each_shard(batch, build, "run_pairs_filter", duplicates)

    @task
    def pairs_select_plan(pairs: list, build: dict) -> str | None:
        from curation.pipeline import load_build_config, run_pairs_select_plan

        flat = _flatten(pairs)
        return run_pairs_select_plan(load_build_config(build["config_uri"]), build["build_id"], flat) if flat else None

    @task(map_index_template="{{ shard_names }}")
    def pairs_select(batch: list[str], build: dict, plan: str | None) -> list[str]:
        return _each_shard(batch, build, "run_pairs_select", plan)

    @task(retries=0)
    def gate(ingested: list, filtered: list, scored: list, selected: list, pairs: list, build: dict) -> dict:
        from curation.pipeline import load_build_config, run_gate_step

        cfg = load_build_config(build["config_uri"])
        stages = [_flatten(x) for x in (filtered, scored, selected)]
        report = run_gate_step(cfg, build["build_id"], _flatten(ingested), *stages, pairs=_flatten(pairs))
        return {
            "rows": report.rows,
            "report": report.report_uri,
            "passed": report.passed,
            "override": report.override,
            "failed": [c.name for c in report.failed()],
        }

    @task(outlets=[CORPUS_ALIAS])
    def publish(selected: list, pairs: list, build: dict, gate_result: dict) -> str | None:
        from curation.pipeline import load_build_config, run_publish

        cfg = load_build_config(build["config_uri"])
        if not cfg.publish.enabled:
            raise AirflowSkipException(f"dry run: publish is off; gate report {gate_result['report']}")
        manifest = run_publish(cfg, build["build_id"], _flatten(selected), pairs=_flatten(pairs))
        extra = {"manifest": manifest, "build_id": build["build_id"], "rows": gate_result["rows"]}
        get_current_context()["outlet_events"][CORPUS_ALIAS].add(Asset(f"corpus/{cfg.publish.corpus}"), extra=extra)
        return manifest

    @task
    def update_dedup_index(signatures: list, build: dict, manifest: str) -> None:
        """After publishing only: add the published documents to the cross-build dedup index."""
        from curation.pipeline import load_build_config, run_index_update

        run_index_update(load_build_config(build["config_uri"]), build["build_id"], _flatten(signatures))

    build = prepare()
    with TaskGroup("ingest_stage", tooltip="WARC -> documents and image-text candidates; image fetching"):
        ingested = ingest.partial(build=build).expand(batch=shard_batches(build))
        fetched = fetch_images.partial(build=build).expand(batch=ingested)
    with TaskGroup("dedup_stage", tooltip="exact, URL and MinHash LSH near-duplicates, also against published releases"):
        signatures = minhash.partial(build=build).expand(batch=ingested)
        edges = lsh_candidates.partial(signatures=signatures, build=build).expand(lsh_task=lsh_tasks(build))
        duplicates = dedup_plans(ingested, edges, build)
    with TaskGroup("score_stage", tooltip="takedowns, dedup removal, heuristic rules; fastText scores and PII"):
        filtered = filter_shards.partial(build=build, duplicates=duplicates).expand(batch=ingested)
        scored = score.partial(build=build).expand(batch=filtered)
    with TaskGroup("select_stage", tooltip="build-wide cuts (percentiles, budget), then keep/drop per shard"):
        plan = select_plan(scored, build)
        selected = select.partial(build=build, plan=plan).expand(batch=scored)
    with TaskGroup("pairs_stage", tooltip="image-text pairs: CLIP scores (queue clip), image dedup, build-wide CLIP cut"):
        clipped = clip_scores.partial(build=build).expand(batch=fetched)
        image_plan = image_dedup(image_keys.partial(build=build).expand(batch=clipped), build)
        deduped = pairs_dedup.partial(build=build, duplicates=image_plan).expand(batch=clipped)
        pairs = pairs_select.partial(build=build, plan=pairs_select_plan(deduped, build)).expand(batch=deduped)
    gate_result = gate(ingested, filtered, scored, selected, pairs, build)
    manifest = publish(selected, pairs, build, gate_result)
    update_dedup_index(signatures, build, manifest)


corpus_build()
