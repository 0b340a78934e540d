"""Publishing to a local release root: resharding, readers, identity, gate override, data card, rollback, takedown."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curation import layout, release, storage
from curation.cli import app
from curation.config import BuildConfig, load_config
from curation.errors import ConfigError, GateFailure
from curation.pipeline import run_build
from curation.publish import publish, read_manifest, verify_release
from curation.reshard import ParquetLayout, reshard
from curation.takedown import add_to_blocklist, takedown
from curation.webdataset import tar_keys
from tests.test_publish_webdataset import make_pairs

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@dataclass
class Gated:
    """A real build of the sample crawl, gated but not published."""

    cfg: BuildConfig
    filtered: list[str]
    report: str

    def config(self, root: Path, **publish_settings: object) -> BuildConfig:
        """The build's config with release and state roots under `root` and publish settings changed."""
        data = self.cfg.model_dump(mode="json")
        data.update(release_root=str(root / "releases"), state_root=str(root / "state"))
        data["publish"].update(enabled=True, **publish_settings)
        return load_config(overrides=data)


def gated_build(root: Path, sample_crawl: list[str], build_id: str, **overrides: object) -> Gated:
    base = {
        "inputs": sample_crawl,
        "build_id": build_id,
        "work_root": str(root / "work"),
        "release_root": str(root / "unused-releases"),
        "state_root": str(root / "state"),
        "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json")},
        "publish": {"enabled": False},
        **overrides,
    }
    run_build(load_config(overrides=base))
    cfg = load_config(overrides=base)
    # The shards the pipeline gates and publishes: those of its last document stage.
    kept = next(out for stage in ("select", "score", "filter") if (out := layout.stage_outputs(cfg, build_id, stage)))
    return Gated(cfg, kept, layout.gate_report_uri(cfg, build_id))


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, sample_crawl: list[str]) -> Gated:
    return gated_build(tmp_path_factory.mktemp("gated"), sample_crawl, "g1")


def _publish(gated: Gated, cfg: BuildConfig, build_id: str, **kwargs: object):
    return publish(gated.filtered, layout.release_uri(cfg, build_id), cfg, build_id, gated.report, **kwargs)


def _input_table(gated: Gated) -> pa.Table:
    return pa.concat_tables([pq.read_table(u) for u in sorted(gated.filtered)])


def test_reshard_is_deterministic_and_every_reader_reads_it(gated, tmp_path):
    import duckdb
    import polars as pl
    from datasets import load_dataset

    inputs = _input_table(gated)
    releases = []
    for name in ("a", "b"):
        cfg = gated.config(tmp_path / name, shard_rows=60, row_group_rows=25)
        stats = _publish(gated, cfg, "2026-W10")
        assert stats.rows_in == stats.rows_out == inputs.num_rows > 100
        releases.append(Path(layout.release_uri(cfg, "2026-W10")))
    parts = sorted((releases[0] / "data").iterdir())
    assert len(parts) == -(-inputs.num_rows // 60) >= 3
    for part in parts:  # same inputs, same settings: the same bytes
        assert part.read_bytes() == (releases[1] / "data" / part.name).read_bytes()
    for part in parts[:-1]:
        meta = pq.ParquetFile(part).metadata
        assert meta.num_rows == 60 and [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [25, 25, 10]
        assert {meta.row_group(0).column(c).compression for c in range(meta.num_columns)} == {"ZSTD"}
    # Rows keep the inputs' order (sorted by URI), whatever reads them.
    ids = inputs["doc_id"].to_pylist()
    data = str(releases[0] / "data" / "*.parquet")
    assert pq.read_table(releases[0] / "data")["doc_id"].to_pylist() == ids
    assert pl.scan_parquet(data).select("doc_id").collect()["doc_id"].to_list() == ids
    assert duckdb.sql(f"SELECT count(*), count(DISTINCT doc_id) FROM read_parquet('{data}')").fetchall() == [(len(ids), len(ids))]
    docs = load_dataset("parquet", data_files=data, split="train", cache_dir=str(tmp_path / "hf"))
    assert docs.num_rows == len(ids) and docs[0]["doc_id"] == ids[0] and docs[len(ids) - 1]["text"] == inputs["text"][-1].as_py()
    assert verify_release(gated.config(tmp_path / "a"))["rows"] == len(ids)


def test_byte_target_and_passthrough_of_right_sized_files(gated, tmp_path):
    inputs = [Path(u) for u in sorted(gated.filtered)]
    target = 60_000
    sized = ParquetLayout(shard_bytes=target, row_group_bytes=30_000)
    first = reshard(inputs, tmp_path / "first", sized)
    sizes = [p.stat().st_size for p, _ in first.files]
    # About the target: files close at the first row group past it (the footer is estimated).
    assert len(sizes) >= 3 and all(0.8 * target <= s < 1.6 * target for s in sizes[:-1]), sizes
    assert first.rows == sum(pq.ParquetFile(p).metadata.num_rows for p in inputs) and first.passthrough == 0
    # Resharding the result again: files already at the target are published byte for byte.
    second = reshard([p for p, _ in first.files], tmp_path / "second", sized)
    assert second.passthrough >= len(sizes) - 1
    assert [p.read_bytes() for p, _ in second.files] == [p.read_bytes() for p, _ in first.files]


def test_rerun_is_a_noop_changed_content_is_refused_and_force_replaces(gated, tmp_path):
    cfg = gated.config(tmp_path, shard_rows=60, data_card=False)
    _publish(gated, cfg, "2026-W11")
    out = Path(layout.release_uri(cfg, "2026-W11"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    _publish(gated, cfg, "2026-W11")
    assert before == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    changed = gated.config(tmp_path, shard_rows=None, data_card=False)
    with pytest.raises(ConfigError, match="already exists with different content"):
        _publish(gated, changed, "2026-W11")
    _publish(gated, changed, "2026-W11", force=True)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["part-00000.parquet"]  # old parts removed
    manifest = verify_release(changed, "2026-W11")
    assert manifest["config_hash"] == changed.config_hash() and len(manifest["files"]) == 1


def test_failed_gate_is_refused_unless_a_person_overrides_it(gated, tmp_path):
    report = storage.read_json(gated.report)
    report["checks"][0]["success"] = False
    report["checks"][0]["severity"] = "critical"
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps(report))
    cfg = gated.config(tmp_path)
    with pytest.raises(GateFailure, match=report["checks"][0]["name"].split("(")[0]):
        publish(gated.filtered, layout.release_uri(cfg, "2026-W12"), cfg, "2026-W12", str(failed))
    assert not storage.exists(release.manifest_uri(cfg, "2026-W12")) and release.latest(cfg) is None

    report["override"] = {"reason": "known false alarm, INC-42", "by": "oncall@example.org"}
    failed.write_text(json.dumps(report))
    publish(gated.filtered, layout.release_uri(cfg, "2026-W12"), cfg, "2026-W12", str(failed))
    manifest = read_manifest(cfg)
    assert manifest["gate"]["passed"] is False and manifest["gate"]["override"] == report["override"]
    assert manifest["gate"]["failed"] == [report["checks"][0]["name"]]
    readme = (Path(layout.release_uri(cfg, "2026-W12")) / "README.md").read_text()
    assert "published despite a failed gate" in readme and "INC-42" in readme


def test_manifest_and_data_card_describe_the_release(gated, tmp_path, monkeypatch):
    from PIL import Image

    cfg = gated.config(tmp_path, shard_rows=80)
    _publish(gated, cfg, "2026-W13")
    _publish(gated, cfg, "2026-W14")
    out = Path(layout.release_uri(cfg, "2026-W14"))
    manifest = verify_release(cfg)
    assert manifest["build_id"] == "2026-W14" and manifest["parent"] == "2026-W13"
    attached = load_config(overrides=yaml.safe_load((out / "config.yaml").read_text()))
    assert manifest["config_hash"] == cfg.config_hash() == attached.config_hash() and manifest["code_version"]
    assert [s["uri"] for s in manifest["shards_in"]] == sorted(gated.filtered)
    assert manifest["inputs"] == sorted(gated.cfg.inputs)
    assert {"ingest", "filter", "publish"} <= set(manifest["funnel"])
    assert {m.get("open_clip") for m in manifest["models"]} >= {gated.cfg.clip.model}
    assert [c["name"] for c in manifest["schema"]] == pq.read_schema(gated.filtered[0]).names
    attachments = {a["path"] for a in manifest["attachments"]}
    assert attachments >= {"README.md", "card/documents_scores.png", "config.yaml", "gate_report.json"}

    readme = (out / "README.md").read_text()
    assert f"**{manifest['rows']:,} documents** in {len(manifest['files'])} Parquet file(s)" in readme
    for stage, stats in manifest["funnel"].items():
        assert re.search(rf"\| {stage} \| {stats['rows_in']:,} \| {stats['rows_out']:,} \|", readme), stage
        for reason, count in stats["dropped"].items():
            assert f"| {stage} | {reason} | {count:,} |" in readme
    languages = pq.read_table(out / "data", columns=["language"])["language"].to_pylist()
    for language in set(languages):
        assert f"| {language} | {languages.count(language):,} |" in readme
    with Image.open(out / "card" / "documents_scores.png") as png:
        assert png.format == "PNG" and png.size[0] > 400
    # The card's own loading snippet works as written.
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    scope: dict = {}
    exec(code, scope)
    assert scope["docs"].num_rows == scope["table"].num_rows == len(scope["frame"]) == manifest["rows"]


def test_rollback_moves_latest_and_backfills_do_not(gated, tmp_path):
    cfg = gated.config(tmp_path, data_card=False)
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.to_yaml())
    for week in ("2026-W20", "2026-W21"):
        _publish(gated, cfg, week)
    _publish(gated, cfg, "2026-W19")  # a backfill: LATEST stays on the newest
    assert release.latest(cfg) == "2026-W21"
    listed = runner.invoke(app, ["release", "list", "-c", str(config)])
    assert listed.exit_code == 0 and re.search(r"\* 2026-W21 ", listed.output) and "2026-W19" in listed.output

    rolled = runner.invoke(app, ["release", "rollback", "-c", str(config), "--reason", "bad tokenizer output"])
    assert rolled.exit_code == 0, rolled.output
    assert "2026-W21 -> 2026-W20" in rolled.output and release.latest(cfg) == "2026-W20"
    assert read_manifest(cfg)["build_id"] == "2026-W20"
    shown = runner.invoke(app, ["release", "show", "-c", str(config), "--verify"])
    assert shown.exit_code == 0 and "build 2026-W20" in shown.output and "verified:" in shown.output
    events = storage.list_files(storage.join(release.corpus_root(cfg), "_events"))
    assert json.loads(Path(events[-1]).read_text())["to"] == "2026-W20"

    missing = runner.invoke(app, ["release", "rollback", "-c", str(config), "--to", "2026-W01"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    # A rollback target with a missing file is refused: LATEST never points at a broken release.
    (Path(layout.release_uri(cfg, "2026-W19")) / "data" / "part-00000.parquet").unlink()
    broken = runner.invoke(app, ["release", "rollback", "-c", str(config), "--to", "2026-W19"])
    assert broken.exit_code == 2 and "missing" in broken.output and release.latest(cfg) == "2026-W20"


def test_takedown_rewrites_documents_and_pairs_into_a_new_revision(gated, tmp_path):
    cfg = gated.config(tmp_path, shard_rows=70)
    pairs_uri = tmp_path / "pairs.parquet"
    pq.write_table(make_pairs(12), pairs_uri)
    publish(gated.filtered, layout.release_uri(cfg, "2026-W30"), cfg, "2026-W30", gated.report, pairs=[str(pairs_uri)])
    before = verify_release(cfg)
    docs = pq.read_table(Path(layout.release_uri(cfg, "2026-W30")) / "data")
    urls = [docs["url"][5].as_py(), docs["url"][100].as_py(), make_pairs(12)["image_url"][3].as_py()]

    result = takedown(cfg, urls=urls, ticket="DMCA-7")
    assert result.revisions == {"2026-W30": "2026-W30.r1"} and result.removed["2026-W30"] == 3
    assert release.latest(cfg) == "2026-W30.r1"
    after = verify_release(cfg)
    assert after["rows"] == before["rows"] - 2 and after["pairs"]["rows"] == before["pairs"]["rows"] - 1
    assert after["parent"] == "2026-W30" and after["takedown"]["ticket"] == "DMCA-7"
    new_root = Path(layout.release_uri(cfg, "2026-W30.r1"))
    kept = pq.read_table(new_root / "data")
    assert not set(urls) & set(kept["url"].to_pylist())
    # Only the files that held a taken-down row were rewritten.
    changed = {f["path"] for f in after["files"]} - {(f["path"]) for f in after["files"] if f in before["files"]}
    assert 1 <= len(changed) <= 2
    assert len(tar_keys(new_root / "pairs" / "00000.tar")) == 11
    assert json.loads((new_root / "pairs" / "sizes.json").read_text()) == {"00000.tar": 11}
    assert "takedown | takedown | 2 |" in (new_root / "README.md").read_text()
    # The old revision is withdrawn: no manifest, no data, a tombstone; it cannot come back.
    old_root = Path(layout.release_uri(cfg, "2026-W30"))
    assert [p.name for p in old_root.rglob("*") if p.is_file()] == ["WITHDRAWN.json"]
    assert [r.state for r in release.list_releases(cfg)] == ["withdrawn", "live"]
    with pytest.raises(ConfigError, match="withdrawn"):
        publish(gated.filtered, str(old_root), cfg, "2026-W30", gated.report, pairs=[str(pairs_uri)])
    # The text of the URL-matched documents is blocklisted as well.
    blocked = {h for h in docs.filter(pa.array([u in urls for u in docs["url"].to_pylist()]))["text_hash"].to_pylist()}
    assert blocked <= set(pq.read_table(Path(cfg.state_root) / "takedown" / "blocklist.parquet")["value"].to_pylist())


def test_publish_applies_takedowns_made_after_the_build_was_filtered(gated, tmp_path):
    cfg = gated.config(tmp_path, data_card=False)
    rows = _input_table(gated)
    assert add_to_blocklist(cfg, "url", rows["url"].to_pylist()[:4], ticket="late-takedown") == 4
    stats = _publish(gated, cfg, "2026-W40")
    assert stats.dropped == {"takedown": 4} and stats.rows_out == rows.num_rows - 4 and stats.balanced()
    published = pq.read_table(Path(layout.release_uri(cfg, "2026-W40")) / "data")
    assert not set(rows["url"].to_pylist()[:4]) & set(published["url"].to_pylist())
    assert read_manifest(cfg)["funnel"]["publish"]["dropped"] == {"takedown": 4}
