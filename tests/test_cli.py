"""The `curation` command line: the whole build, and the same build stage by stage."""

from pathlib import Path

import yaml
from typer.testing import CliRunner

from curation import storage
from curation.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _config(tmp_path: Path, sample_crawl: list[str]) -> str:
    path = tmp_path / "build.yaml"
    roots = {k: str(tmp_path / k) for k in ("work_root", "release_root", "state_root")}
    suite = {"documents_suite": str(ROOT / "expectations" / "documents.json")}
    path.write_text(yaml.safe_dump({"inputs": sample_crawl, **roots, "gate": suite}))
    return str(path)


def test_build_command_prints_the_release_and_funnel(tmp_path, sample_crawl):
    result = runner.invoke(app, ["build", "-c", _config(tmp_path, sample_crawl), "--build-id", "cli"])
    assert result.exit_code == 0, result.output
    assert f"release: {tmp_path}/release_root/web-en/cli" in result.output
    assert "ingest:" in result.output and "dup_exact=" in result.output
    shown = runner.invoke(app, ["release", "-c", _config(tmp_path, sample_crawl)])
    assert shown.exit_code == 0 and "build cli:" in shown.output and "gate passed: True" in shown.output


def test_stage_commands_chain_to_the_same_release(tmp_path, sample_crawl):
    cfg = _config(tmp_path, sample_crawl)
    work = tmp_path / "work_root" / "steps"
    for i, warc in enumerate(sample_crawl):
        ran = runner.invoke(app, ["ingest", warc, "-o", f"{work}/ingest/{i:05d}.parquet", "-c", cfg])
        assert ran.exit_code == 0, ran.output
    ingested = sorted(str(p) for p in (work / "ingest").glob("*.parquet"))
    assert runner.invoke(app, ["dedup", *ingested, "-o", f"{work}/dedup/duplicates.parquet", "-c", cfg]).exit_code == 0
    for uri in ingested:
        out = uri.replace("/ingest/", "/filter/")
        ran = runner.invoke(app, ["filter", uri, "--duplicates", f"{work}/dedup/duplicates.parquet", "-o", out, "-c", cfg])
        assert ran.exit_code == 0, ran.output
        ran = runner.invoke(app, ["score", out, "-o", out.replace("/filter/", "/score/"), "-c", cfg])
        assert ran.exit_code == 0, ran.output
    scored = sorted(str(p) for p in (work / "score").glob("*.parquet"))
    planned = runner.invoke(app, ["select-plan", *scored, "-o", f"{work}/select/plan.json", "-c", cfg])
    assert planned.exit_code == 0 and "pii" in planned.output, planned.output
    for uri in scored:
        out = uri.replace("/score/", "/select/")
        ran = runner.invoke(app, ["select", uri, "--plan", f"{work}/select/plan.json", "-o", out, "-c", cfg])
        assert ran.exit_code == 0, ran.output
    gated = runner.invoke(app, ["gate", "--build-id", "steps", "-c", cfg])
    assert gated.exit_code == 0, gated.output
    published = runner.invoke(app, ["publish", "--build-id", "steps", "-c", cfg])
    assert published.exit_code == 0, published.output
    manifest = storage.read_json(f"{tmp_path}/release_root/web-en/steps/manifest.json")
    selected = sum(storage.parquet_rows(str(p)) for p in (work / "select").glob("*.parquet"))
    assert manifest["rows"] == selected > 100


def test_gate_failure_exits_3_with_the_failed_check(tmp_path, sample_crawl):
    result = runner.invoke(app, ["build", "-c", _config(tmp_path, sample_crawl), "--set", "gate.min_rows=1000000"])
    assert result.exit_code == 3
    assert "expect_table_row_count_to_be_between" in result.output


def test_config_error_exits_2_naming_the_field(tmp_path, sample_crawl):
    result = runner.invoke(app, ["build", "-c", _config(tmp_path, sample_crawl), "--set", "heuristics.min_wordz=3"])
    assert result.exit_code == 2 and "min_wordz" in result.output
