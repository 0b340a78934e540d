"""DAG tests against a real Airflow: DagBag import, `dag.test()` builds, backfill planning."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _config_file(tmp_path: Path, sample_crawl: list[str]) -> str:
    path = tmp_path / "build.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inputs": sample_crawl,
                "work_root": str(tmp_path / "work"),
                "release_root": str(tmp_path / "releases"),
                "state_root": str(tmp_path / "state"),
                "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json")},
            }
        )
    )
    return str(path)


def _conf(config_path: str, **fields) -> dict:
    # Every field explicit: dag.test() on a shared DAG object keeps the previous run's params.
    base = {
        "config_path": config_path,
        "inputs": [],
        "shard_limit": None,
        "publish": True,
        "overrides": {},
        "gate_override_reason": "",
    }
    return {**base, **fields}


def _states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}


def test_dagbag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    dag = dagbag.dags["corpus_build"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"  # a real data interval, not a trigger
    assert dag.timetable.expression == "0 3 * * 1" and str(dag.timetable.timezone) == "UTC"
    assert dag.max_active_runs == 1 and not dag.catchup
    assert {"inputs", "shard_limit", "publish", "build_id", "overrides"} <= set(dag.params)


def test_dag_test_builds_and_publishes_the_sample_crawl(dagbag, tmp_path, sample_crawl):
    from curation import storage

    dag = dagbag.dags["corpus_build"]
    run = dag.test(run_conf=_conf(_config_file(tmp_path, sample_crawl), build_id="dagtest"))
    states = _states(run)
    assert str(run.state) == "success", states
    assert (run.data_interval_end - run.data_interval_start).days == 7
    assert sorted(i for (t, i) in states if t == "ingest_stage.ingest") == [0, 1, 2]  # one mapped task per shard
    assert all(s == "success" for s in states.values()), states
    manifest = storage.read_json(str(tmp_path / "releases" / "web-en" / "dagtest" / "manifest.json"))
    rows = sum(storage.parquet_rows(str(tmp_path / "releases" / "web-en" / "dagtest" / f["path"])) for f in manifest["files"])
    assert rows == manifest["rows"] > 100


def test_failed_gate_fails_the_run_and_publishes_nothing(dagbag, tmp_path, sample_crawl):
    dag = dagbag.dags["corpus_build"]
    run = dag.test(
        run_conf=_conf(_config_file(tmp_path, sample_crawl), build_id="gatefail", overrides={"gate": {"min_rows": 10**9}})
    )
    states = _states(run)
    assert str(run.state) == "failed"
    assert states[("gate", -1)] == "failed" and states[("publish", -1)] == "upstream_failed"
    assert not (tmp_path / "releases" / "web-en" / "gatefail").exists()
    report = tmp_path / "work" / "gatefail" / "gate" / "report.json"
    assert '"passed": false' in report.read_text()


def test_dry_run_skips_publish(dagbag, tmp_path, sample_crawl):
    dag = dagbag.dags["corpus_build"]
    run = dag.test(run_conf=_conf(_config_file(tmp_path, sample_crawl), build_id="dry", publish=False, shard_limit=1))
    states = _states(run)
    assert states[("publish", -1)] == "skipped" and states[("gate", -1)] == "success", states
    assert sorted(i for (t, i) in states if t == "ingest_stage.ingest") == [0]
    assert not (tmp_path / "releases").exists()


def test_backfill_dry_run_lists_three_weekly_runs(airflow_db):
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "dags", "reserialize"], check=True, capture_output=True, timeout=300)
    result = subprocess.run(
        [
            *airflow,
            "backfill",
            "create",
            "--dag-id",
            "corpus_build",
            "--from-date",
            "2026-11-02",
            "--to-date",
            "2026-11-22",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dates = re.findall(r"\| (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00) \|", result.stdout)
    assert dates == ["2026-11-02 03:00:00+00:00", "2026-11-09 03:00:00+00:00", "2026-11-16 03:00:00+00:00"]


def test_dag_policy_owners_tags_retries_docs_and_parse_time(dagbag):
    assert dagbag.dags, "no DAG found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries is not None, f"{dag_id}.{task.task_id} has no retries set"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution timeout"
    # Parsing the whole folder (what the DAG processor does on every loop) stays under a second.
    total = sum(stat.duration.total_seconds() for stat in dagbag.dagbag_stats)
    assert total < 1.0, dagbag.dagbag_stats


def test_gate_override_param_publishes_and_the_manifest_records_it(dagbag, tmp_path, sample_crawl):
    from curation import storage

    dag = dagbag.dags["corpus_build"]
    conf = _conf(
        _config_file(tmp_path, sample_crawl),
        build_id="overridden",
        overrides={"gate": {"min_rows": 10**9}},
        gate_override_reason="INC-42: row-count floor is wrong this week",
    )
    run = dag.test(run_conf=conf)
    states = _states(run)
    assert str(run.state) == "success", states
    manifest = storage.read_json(str(tmp_path / "releases" / "web-en" / "overridden" / "manifest.json"))
    assert manifest["gate"]["override"]["reason"] == "INC-42: row-count floor is wrong this week"


def test_train_filters_publishes_checksummed_models_that_corpus_build_uses_for_pairs(dagbag, tmp_path, sample_crawl):
    from curation.config import load_config
    from curation.models import resolve

    dag = dagbag.dags["train_filters"]
    run = dag.test(run_conf={"models_root": str(tmp_path / "models"), "seed": 0})
    assert str(run.state) == "success", _states(run)
    (models_yaml,) = (tmp_path / "models").glob("*/models.yaml")
    overrides = yaml.safe_load(models_yaml.read_text())
    cfg = load_config(overrides=overrides)
    for ref in (cfg.scoring.quality.model, cfg.scoring.toxicity.model, cfg.clip.checkpoint, cfg.clip.nsfw_head):
        assert ref.sha256 and resolve(ref).exists()  # resolve() re-checks every sha256

    # corpus_build with those models and the crawl's own images: the image-text chain under Airflow.
    from curation import storage

    overrides["ingest"] = {"fetch": {"enabled": True, "source": "warc", "min_image_size": 64}}
    dag = dagbag.dags["corpus_build"]
    run = dag.test(run_conf=_conf(_config_file(tmp_path, sample_crawl), build_id="pairs", overrides=overrides))
    states = _states(run)
    assert str(run.state) == "success" and all(s == "success" for s in states.values()), states
    assert sorted(i for (t, i) in states if t == "pairs_stage.clip_scores") == [0, 1, 2]
    manifest = storage.read_json(str(tmp_path / "releases" / "web-en" / "pairs" / "manifest.json"))
    assert manifest["pairs"]["rows"] == manifest["funnel"]["select_pairs"]["rows_out"] > 0
    assert manifest["funnel"]["fetch_images"]["rows_in"] == manifest["funnel"]["ingest_pairs"]["rows_out"]
