"""Shared fixtures. The environment is fixed before anything imports Airflow or GX."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="curation-airflow-")
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
)
os.environ.pop("CURATION_CONFIG", None)

pytest_plugins = ["tests.conftest_s3"]


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A deterministic 3-file crawl with every kind of page the pipeline must handle."""
    from curation.ingest.sample_crawl import write_sample_crawl

    return write_sample_crawl(str(tmp_path_factory.mktemp("crawl")), pages=300, seed=7, files=3)


@pytest.fixture
def build_config(tmp_path: Path, sample_crawl: list[str]):
    """A BuildConfig over the sample crawl with every root under tmp_path; kwargs override."""
    from curation.config import load_config

    def make(**overrides):
        base = {
            "inputs": sample_crawl,
            "work_root": str(tmp_path / "work"),
            "release_root": str(tmp_path / "releases"),
            "state_root": str(tmp_path / "state"),
            "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json")},
        }
        return load_config(overrides=_merge(base, overrides))

    return make


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata DB in this session's AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=300)
    return _AIRFLOW_HOME
