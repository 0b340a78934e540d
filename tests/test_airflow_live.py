"""The DAG against a real, running Airflow: `airflow standalone` driven through REST API v2.

One standalone (SQLite, LocalExecutor, parallelism 2, all on 127.0.0.1) serves every test here:
the weekly schedule's own run, a UI-style trigger with a conf, a three-week backfill, a
transient S3 fault that a retry absorbs, and a config error that fails at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from curation import storage
from curation.config import iso_week_id
from tests.airflow_server import AirflowStandalone, _group_alive
from tests.faulty_proxy import FaultyProxy

ROOT = Path(__file__).resolve().parent.parent
DAG = "corpus_build"
pytestmark = pytest.mark.slow

BACKFILL_FROM, BACKFILL_TO = "2026-10-05", "2026-10-25"  # logical dates Oct 5, 12, 19
BACKFILL_WEEKS = ["2026-W41", "2026-W42", "2026-W43"]
FAULT_KEY = "work/transient/ingest/00001.parquet"
BOTO_ATTEMPTS = 5  # storage.s3_client retries a throttled request 5 times in all


def _recent_weeks(count: int = 6) -> list[str]:
    today = dt.datetime.now(dt.UTC).date()
    return sorted({iso_week_id(today - dt.timedelta(weeks=i)) for i in range(count)})


@pytest.fixture(scope="module")
def live(tmp_path_factory, sample_crawl, s3_server):
    root = tmp_path_factory.mktemp("live")
    # A crawl folder per week; the config's input pattern picks the run's own week.
    for week in sorted(set(BACKFILL_WEEKS + _recent_weeks() + ["manual"])):
        folder = root / "crawl" / week
        folder.mkdir(parents=True)
        for warc in sample_crawl[:2]:
            (folder / Path(warc).name).symlink_to(warc)
    bucket = "live-" + os.urandom(4).hex()
    s3_server.create_bucket(bucket)
    config = root / "build.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": [f"{root}/crawl/{{build_id}}/*.warc.gz"],
                "work_root": str(root / "work"),
                "release_root": str(root / "releases"),
                "state_root": str(root / "state"),
                "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json")},
                # Every week here re-reads the same sample crawl; with cross-build dedup on, each
                # later week would (rightly) drop everything already published.
                "dedup": {"cross_build": False},
            }
        )
    )
    with FaultyProxy(s3_server.endpoint_url, "PUT", f"/{bucket}/{FAULT_KEY}", failures=BOTO_ATTEMPTS) as proxy:
        env = {**s3_server.env(), "AWS_ENDPOINT_URL": proxy.endpoint_url}
        env |= {"CURATION_CONFIG": str(config), "CURATION_RETRY_DELAY_SECONDS": "2"}
        server = AirflowStandalone(root / "airflow", extra_env=env)
        with server:
            server.wait_for_dag(DAG)
            server.post("/api/v2/pools", {"name": "fetch", "slots": 4, "description": "image fetching (per-host politeness)"})
            yield {"server": server, "root": root, "bucket": bucket, "proxy": proxy}
    assert server.process is None


def _trigger(server: AirflowStandalone, conf: dict) -> str:
    run = server.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})
    return run["dag_run_id"]


def _tis(server: AirflowStandalone, run_id: str) -> dict[tuple[str, int], dict]:
    return {(ti["task_id"], ti["map_index"]): ti for ti in server.task_instances(DAG, run_id)}


def test_every_airflow_server_listens_on_loopback_only(live):
    listeners = live["server"].listening_addresses()
    assert listeners, "no listening socket found"
    assert {addr for addr, _ in listeners} == {"127.0.0.1"}, listeners


def test_schedule_and_api_trigger_build_and_emit_the_corpus_asset(live):
    server = live["server"]
    server.patch(f"/api/v2/dags/{DAG}", {"is_paused": False})  # the schedule creates the latest week's run
    run_id = _trigger(server, {"build_id": "api-run", "inputs": [f"{live['root']}/crawl/manual/*.warc.gz"], "overrides": {}})
    run = server.wait_for_run(DAG, run_id)
    tis = _tis(server, run_id)
    assert run["state"] == "success", {k: v["state"] for k, v in tis.items()}
    assert all(ti["state"] == "success" for ti in tis.values())
    assert sorted(ti["rendered_map_index"] for (task, _), ti in tis.items() if task == "ingest_stage.ingest") == [
        "00000",
        "00001",
    ]
    manifest = storage.read_json(str(live["root"] / "releases" / "web-en" / "api-run" / "manifest.json"))
    assert manifest["rows"] > 0

    query = urllib.parse.urlencode({"source_dag_id": DAG, "source_run_id": run_id})  # run ids hold '+'
    events = server.get(f"/api/v2/assets/events?{query}")["asset_events"]
    assert [e["extra"]["build_id"] for e in events] == ["api-run"]
    assert events[0]["extra"]["manifest"].endswith("web-en/api-run/manifest.json")
    assets = server.get("/api/v2/assets?name_pattern=corpus")["assets"]
    assert "corpus/web-en" in {a["name"] for a in assets}

    # The weekly schedule ran by itself for the last complete week (catchup off: only that one).
    scheduled = [r for r in server.get(f"/api/v2/dags/{DAG}/dagRuns")["dag_runs"] if r["run_type"] == "scheduled"]
    assert len(scheduled) == 1
    done = server.wait_for_run(DAG, scheduled[0]["dag_run_id"])
    assert done["state"] == "success"
    start = dt.datetime.fromisoformat(done["data_interval_start"])
    assert dt.datetime.fromisoformat(done["data_interval_end"]) - start == dt.timedelta(days=7)
    assert start.weekday() == 0 and start.hour == 3
    week = iso_week_id(start.date())
    assert (live["root"] / "releases" / "web-en" / week / "manifest.json").exists()


def test_backfill_of_three_weeks_publishes_three_releases(live):
    server = live["server"]
    # Paused while the backfill creates its runs: the scheduler leaves a paused DAG's runs alone.
    # On SQLite, Airflow 3.3 cannot create a backfill while the scheduler works on its first run
    # (its API answers 503 and the scheduler can die of StaleDataError); Postgres has no such race.
    server.patch(f"/api/v2/dags/{DAG}", {"is_paused": True})
    backfill = server.post(
        "/api/v2/backfills",
        {"dag_id": DAG, "from_date": f"{BACKFILL_FROM}T00:00:00Z", "to_date": f"{BACKFILL_TO}T00:00:00Z", "max_active_runs": 1},
    )
    server.patch(f"/api/v2/dags/{DAG}", {"is_paused": False})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = [r for r in server.get(f"/api/v2/dags/{DAG}/dagRuns?limit=100")["dag_runs"] if r["run_type"] == "backfill"]
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(3)
    assert backfill["dag_id"] == DAG
    assert sorted(r["state"] for r in runs) == ["success"] * 3, runs
    latest = (live["root"] / "releases" / "web-en" / "LATEST").read_text().strip()
    for week in BACKFILL_WEEKS:
        manifest = json.loads((live["root"] / "releases" / "web-en" / week / "manifest.json").read_text())
        assert manifest["build_id"] == week and manifest["inputs"][0].startswith(str(live["root"] / "crawl" / week))
    assert latest not in BACKFILL_WEEKS  # a backfill never moves LATEST back to an older week


def test_transient_s3_error_in_one_mapped_task_is_retried(live):
    server, proxy = live["server"], live["proxy"]
    conf = {"build_id": "transient", "overrides": {"work_root": f"s3://{live['bucket']}/work"}, "shard_limit": 2}
    conf["inputs"] = [f"{live['root']}/crawl/manual/*.warc.gz"]
    run_id = _trigger(server, conf)
    run = server.wait_for_run(DAG, run_id)
    tis = _tis(server, run_id)
    assert run["state"] == "success", {k: (v["state"], v["try_number"]) for k, v in tis.items()}
    assert proxy.failed == BOTO_ATTEMPTS  # every attempt of the first try was throttled
    assert tis[("ingest_stage.ingest", 1)]["try_number"] == 2 and tis[("ingest_stage.ingest", 1)]["state"] == "success"
    assert tis[("ingest_stage.ingest", 0)]["try_number"] == 1  # the other shard was not touched


def test_config_error_fails_at_once_without_retries(live):
    server = live["server"]
    run_id = _trigger(server, {"build_id": "bad-config", "overrides": {"heuristics": {"min_wordz": 3}}})
    run = server.wait_for_run(DAG, run_id)
    prepare = _tis(server, run_id)[("prepare", -1)]
    assert run["state"] == "failed"
    assert prepare["state"] == "failed" and prepare["try_number"] == 1
    assert not (live["root"] / "work" / "bad-config").exists()


def test_stopping_leaves_no_process(tmp_path):
    server = AirflowStandalone(tmp_path / "airflow")
    with server:
        pgid = server.process.pid
        assert _group_alive(pgid)
    assert not _group_alive(pgid)
