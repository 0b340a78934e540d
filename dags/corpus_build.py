"""
### Weekly corpus build

Turns the week's crawl into a curated corpus release:
`prepare -> ingest (mapped per shard batch) -> dedup plan -> filter (mapped) -> gate -> publish`.

* **Schedule**: Mondays 03:00 UTC; each run covers the previous week (its data interval) and
  its `build_id` is that week's ISO week (e.g. `2026-W48`) unless the trigger form sets one.
* **Trigger form**: inputs, shard limit, publish on/off (off = dry run), config overrides.
* **Gate**: a failed critical check fails the run (no retries) and nothing is published; the
  log names every failed check and the gate report's URI.

Every task is a thin wrapper around `curation.pipeline`; heavy imports happen inside tasks.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=6),
}


def _build_config(params: dict):
    """The run's BuildConfig: YAML (Param or $CURATION_CONFIG) < overrides < trigger-form fields."""
    from curation.config import load_config
    from curation.errors import ConfigError

    overrides = dict(params.get("overrides") or {})
    for key in ("inputs", "shard_limit", "build_id"):
        if params.get(key) not in (None, [], ""):
            overrides[key] = params[key]
    overrides.setdefault("publish", {})["enabled"] = bool(params.get("publish", True))
    try:
        return load_config(params.get("config_path") or os.environ.get("CURATION_CONFIG"), overrides)
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from exc  # a config error never improves with retries


def _fail_fast(fn):
    """Run a library call; a deterministic library error fails the task at once (no retries).

    Transient errors (and anything unexpected) propagate unchanged, so the task's retries apply.
    """
    from curation.errors import CurationError

    try:
        return fn()
    except CurationError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


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
    params={
        "config_path": Param(
            None, type=["null", "string"], title="Config file", description="YAML build config; defaults to $CURATION_CONFIG"
        ),
        "inputs": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Inputs",
            description="WARC files, globs or prefixes/ (empty: from the config)",
        ),
        "shard_limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Shard limit",
            description="use only the first N input files (trial builds)",
        ),
        "build_id": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            title="Build id",
            description="defaults to the ISO week of the data interval",
        ),
        "publish": Param(True, type="boolean", title="Publish", description="off = dry run: everything but the release"),
        "overrides": Param(
            {}, type="object", title="Config overrides", description='nested, e.g. {"heuristics": {"min_words": 30}}'
        ),
    },
)
def corpus_build():
    @task(retries=0)
    def prepare() -> dict:
        from airflow.sdk import conf

        from curation.config import iso_week_id
        from curation.pipeline import prepare as prepare_build

        context = get_current_context()
        cfg = _build_config(context["params"])
        start = context.get("data_interval_start") or context["dag_run"].run_after
        build_id = cfg.build_id or iso_week_id(start.date())
        config_uri, shards = prepare_build(cfg, build_id)
        # One mapped task per batch of shards, never more than [core] max_map_length of them.
        max_len = conf.getint("core", "max_map_length", fallback=1024)
        per_batch = -(-len(shards) // max_len)
        batches = [[[s.name, s.inputs] for s in shards[i : i + per_batch]] for i in range(0, len(shards), per_batch)]
        return {"build_id": build_id, "config_uri": config_uri, "batches": batches}

    @task
    def shard_batches(build: dict) -> list:
        return build["batches"]

    @task(map_index_template="{{ task.op_kwargs['batch'][0][0] }}")
    def ingest(batch: list, build: dict) -> list[str]:
        from curation.pipeline import Shard, load_build_config, run_ingest

        cfg = load_build_config(build["config_uri"])
        return [_fail_fast(lambda n=name, i=inputs: run_ingest(cfg, build["build_id"], Shard(n, i))) for name, inputs in batch]

    @task
    def dedup(ingested: list, build: dict) -> str:
        from curation.pipeline import load_build_config, run_dedup

        return _fail_fast(lambda: run_dedup(load_build_config(build["config_uri"]), build["build_id"], _flatten(ingested)))

    @task
    def filter_shards(batch: list[str], build: dict, duplicates: str) -> list[str]:
        from curation.pipeline import load_build_config, run_filter

        cfg = load_build_config(build["config_uri"])
        return [_fail_fast(lambda u=uri: run_filter(cfg, build["build_id"], u, duplicates)) for uri in batch]

    @task(retries=0)
    def gate(ingested: list, filtered: list, build: dict) -> dict:
        from curation.errors import GateFailure
        from curation.pipeline import load_build_config, run_gate_step

        try:
            report = run_gate_step(
                load_build_config(build["config_uri"]), build["build_id"], _flatten(ingested), _flatten(filtered)
            )
        except GateFailure as exc:
            raise AirflowFailException(str(exc)) from exc
        return {"rows": report.rows, "report": report.report_uri, "warnings": [c.name for c in report.failed()]}

    @task
    def publish(filtered: list, build: dict, gate_result: dict) -> str:
        from curation.pipeline import load_build_config, run_publish

        cfg = load_build_config(build["config_uri"])
        if not cfg.publish.enabled:
            raise AirflowSkipException(f"dry run: publish is off; gate report {gate_result['report']}")
        return _fail_fast(lambda: run_publish(cfg, build["build_id"], _flatten(filtered)))

    build = prepare()
    ingested = ingest.partial(build=build).expand(batch=shard_batches(build))
    duplicates = dedup(ingested, build)
    filtered = filter_shards.partial(build=build, duplicates=duplicates).expand(batch=ingested)
    gate_result = gate(ingested, filtered, build)
    publish(filtered, build, gate_result)


corpus_build()
