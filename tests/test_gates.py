"""The validation gate end to end on the sample crawl: a good build passes; injected faults fail it,
publish nothing and name the failed check; an override with a reason publishes; the HTML renders."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation import layout, pipeline, storage
from curation.config import load_config
from curation.errors import GateFailure
from curation.gates import GateReport
from curation.pipeline import run_build

ROOT = Path(__file__).resolve().parent.parent
SUITE = json.loads((ROOT / "expectations" / "documents.json").read_text())
MULTILINGUAL = {"ingest": {"languages": []}, "heuristics": {"min_stop_words": 0}}


def _report(cfg, build_id: str) -> GateReport:
    return GateReport.from_dict(storage.read_json(layout.gate_report_uri(cfg, build_id)))


def _published(cfg, build_id: str) -> bool:
    return storage.exists(storage.join(layout.release_uri(cfg, build_id), "manifest.json"))


def _latest(cfg) -> str | None:
    uri = layout.latest_uri(cfg)
    return storage.read_bytes(uri).decode().strip() if storage.exists(uri) else None


def _failed_names(report: GateReport) -> list[str]:
    return [c.name for c in report.failed("critical")]


def _assert_refused_and_unpublished(cfg, build_id: str, latest_before: str | None) -> None:
    """Publishing the failed build is refused, and no release or LATEST move happened."""
    filtered = layout.stage_outputs(cfg, build_id, "filter")
    with pytest.raises(GateFailure, match="refusing to publish"):
        pipeline.run_publish(cfg, build_id, filtered)
    assert not _published(cfg, build_id)
    assert _latest(cfg) == latest_before


def _rerun_gate(cfg, build_id: str):
    return pipeline.run_gate_step(
        cfg, build_id, layout.stage_outputs(cfg, build_id, "ingest"), layout.stage_outputs(cfg, build_id, "filter")
    )


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, sample_crawl):
    """One good build of the sample crawl, published as 2026-W10: the release later builds compare against."""
    root = tmp_path_factory.mktemp("baseline")
    cfg = load_config(
        overrides={
            "build_id": "2026-W10",
            "inputs": sample_crawl,
            "work_root": str(root / "work"),
            "release_root": str(root / "releases"),
            "state_root": str(root / "state"),
            "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json")},
        }
    )
    return cfg, run_build(cfg)


def _after_baseline(build_config, baseline, **overrides):
    """A config whose release root already holds the baseline release (copied: tests stay independent)."""
    cfg = build_config(**overrides)
    shutil.copytree(baseline[0].release_root, cfg.release_root)
    return cfg


@pytest.fixture(scope="module")
def shifted(baseline, tmp_path_factory):
    """A build that lets German, French and Spanish pages through, after the English-only baseline."""
    base = baseline[0]
    root = tmp_path_factory.mktemp("shifted")
    shutil.copytree(base.release_root, root / "releases")
    # Its own state root: a fresh cross-build dedup index, so the same crawl is not all near-duplicates.
    update = {
        "build_id": "2026-W11",
        "work_root": str(root / "work"),
        "release_root": str(root / "releases"),
        "state_root": str(root / "state"),
    }
    cfg = load_config(overrides=base.model_dump(mode="json") | update | MULTILINGUAL)
    with pytest.raises(GateFailure) as failure:
        run_build(cfg)
    return cfg, _report(cfg, "2026-W11"), str(failure.value)


def test_good_build_passes_every_check_and_stores_its_profile(baseline, build_config):
    cfg, summary = baseline
    report = _report(cfg, "2026-W10")
    assert report.passed and report.failed() == [], report.failure_message()
    kinds = {c.kind for c in report.checks}
    assert {"suite", "schema", "funnel.balance", "band.stage_kept_ratio", "band.source_kept_ratio"} <= kinds
    assert {"band.domain_kept_ratio", "band.dedup_ratio", "band.toxicity_rate"} <= kinds
    assert sum(c.kind == "suite" for c in report.checks) == len(SUITE["expectations"])
    assert report.previous is None and not any(c.kind.startswith("drift") for c in report.checks)

    # The stored profile matches the published data and the funnel.
    metrics = report.metrics
    published = pq.read_table(Path(layout.release_uri(cfg, "2026-W10")) / "data")
    funnel = summary["funnel"]
    assert metrics["kept_rows"] == report.rows == published.num_rows == summary["rows"] > 100
    assert metrics["language_mix"] == {"en": 1.0}
    extracted = funnel["ingest"]["rows_out"]
    duplicates = sum(n for reason, n in funnel["filter"]["dropped"].items() if reason.startswith("dup_"))
    assert metrics["dedup_ratio"] == pytest.approx(duplicates / extracted)
    assert metrics["toxicity_rate"] == pytest.approx(funnel["filter"]["dropped"]["toxicity"] / extracted)
    assert 0 < metrics["toxicity_rate"] < 0.25 and 0 < metrics["dedup_ratio"] < 0.5
    assert metrics["scores"]["n_words"]["mean"] == pytest.approx(pc.mean(published["n_words"]).as_py())
    assert metrics["scores"]["language_score"]["std"] == pytest.approx(pc.stddev(published["language_score"]).as_py(), rel=1e-5)
    hist = metrics["histograms"]["n_words"]
    assert sum(hist["counts"]) == published.num_rows and len(hist["edges"]) == cfg.gate.histogram_bins + 1
    assert set(metrics["source_kept_ratio"]) == set(cfg.inputs) and metrics["domain_kept_ratio"]
    # publish copied the report, profile included, into the release: the next build's baseline
    assert storage.read_json(storage.join(layout.release_uri(cfg, "2026-W10"), "gate_report.json"))["metrics"] == metrics

    # The same crawl a week later (dry run): drift is checked against 2026-W10 and there is none.
    later = _after_baseline(build_config, baseline, build_id="2026-W11", publish={"enabled": False})
    run_build(later)
    again = _report(later, "2026-W11")
    drift = [c for c in again.checks if c.kind.startswith("drift")]
    assert again.passed and again.failed() == [] and again.previous["build_id"] == "2026-W10"
    assert {c.kind for c in drift} == {
        "drift.kept_rows",
        "drift.language_mix",
        "drift.score_mean",
        "drift.toxicity_rate",
        "drift.dedup_ratio",
    }
    assert all(c.success for c in drift) and len(drift) == 4 + len(metrics["scores"])
    assert next(c for c in drift if c.kind == "drift.language_mix").observed["total_variation"] == 0


@pytest.mark.parametrize(
    ("fault", "detail"),
    [
        ("missing_column", {"missing": ["language_score"]}),
        ("wrong_type", {"wrong_type": {"n_words": "string (expected int32)"}}),
    ],
)
def test_schema_break_fails_the_gate_and_publishes_nothing(build_config, fault, detail):
    cfg = build_config(build_id=f"schema-{fault}", publish={"enabled": False})
    run_build(cfg)  # a good build (dry run) ...
    shard = layout.stage_outputs(cfg, cfg.build_id, "filter")[1]
    table = pq.read_table(shard)
    if fault == "missing_column":  # ... then a stage bug writes a shard without a column
        table = table.drop_columns(["language_score"])
    else:  # ... or with a column of the wrong type
        table = table.set_column(table.schema.get_field_index("n_words"), "n_words", pc.cast(table["n_words"], pa.string()))
    pq.write_table(table, shard)

    with pytest.raises(GateFailure) as failure:
        _rerun_gate(cfg, cfg.build_id)
    message = str(failure.value)
    assert "[critical] schema: documents shards match the documents schema" in message
    schema = next(c for c in _report(cfg, cfg.build_id).checks if c.kind == "schema")
    assert schema.observed["mismatched"] == {"filter/00001.parquet": detail}
    if fault == "missing_column":
        assert "documents: expect_table_columns_to_match_set" in message
        assert "documents: expect_column_values_to_be_between(language_score)" in message
    else:
        assert "documents: expect_column_values_to_be_in_type_list(n_words)" in message
    _assert_refused_and_unpublished(cfg, cfg.build_id, None)


def test_all_documents_toxic_fails_the_gate(build_config):
    # A lexicon that matches every English page: the filter removes almost everything as toxic.
    cfg = build_config(build_id="toxic", heuristics={"toxic_words": ["the", "and", "of"]})
    with pytest.raises(GateFailure) as failure:
        run_build(cfg)
    message = str(failure.value)
    report = _report(cfg, "toxic")
    assert {"toxicity rate", "stage kept ratio: filter"} <= set(_failed_names(report))
    assert "[critical] toxicity rate: observed" in message and "[critical] stage kept ratio: filter" in message
    assert (
        report.rows == 0 and report.metrics["toxicity_rate"] > 0.75
    )  # far above the 0.25 ceiling; near-dup dedup removes some pages first
    assert not _published(cfg, "toxic") and _latest(cfg) is None


def test_dedup_removing_98_percent_fails_the_gate(build_config):
    cfg = build_config(build_id="dedup-bug", publish={"enabled": False})
    run_build(cfg)
    # A dedup bug: the plan marks 98% of all documents as duplicates of one document.
    ingested = layout.stage_outputs(cfg, "dedup-bug", "ingest")
    ids = pa.concat_tables([pq.read_table(u, columns=["doc_id"]) for u in ingested])["doc_id"].combine_chunks().sort()
    victims = ids.slice(1, round(0.98 * len(ids)))
    duplicates = layout.duplicates_uri(cfg, "dedup-bug")
    kept = pa.array([ids[0].as_py()] * len(victims), pa.string())
    reasons = pa.array(["dup_exact"] * len(victims), pa.string())
    storage.write_table(duplicates, pa.table({"doc_id": victims, "kept_doc_id": kept, "reason": reasons}))
    for uri in ingested:
        pipeline.run_filter(cfg, "dedup-bug", uri, duplicates)

    with pytest.raises(GateFailure) as failure:
        _rerun_gate(cfg, "dedup-bug")
    message = str(failure.value)
    report = _report(cfg, "dedup-bug")
    assert report.metrics["dedup_ratio"] == pytest.approx(len(victims) / report.metrics["documents"]) and len(
        victims
    ) > 0.97 * len(ids)
    assert {"dedup ratio", "stage kept ratio: filter"} <= set(_failed_names(report))
    assert "[critical] dedup ratio: observed" in message and '"max": 0.5' in message
    _assert_refused_and_unpublished(cfg, "dedup-bug", None)


def test_language_mix_shift_against_the_previous_release_fails(shifted):
    cfg, report, message = shifted
    assert _failed_names(report) == ["drift: language mix vs 2026-W10"]
    assert "[critical] drift: language mix vs 2026-W10: observed" in message
    shift = report.failed()[0].observed
    assert shift["previous"] == {"en": 1.0} and shift["current"]["en"] < 0.95 and shift["total_variation"] > 0.05
    # No language allowlist in this build: the suite's language check passes; only drift catches it.
    assert next(c for c in report.checks if c.name == "documents: expect_column_values_to_be_in_set(language)").success
    assert f"html: {report.html_uri}" in message and Path(report.html_uri).is_file()
    _assert_refused_and_unpublished(cfg, "2026-W11", "2026-W10")


def test_severity_per_check_kind_turns_a_failure_into_a_warning(build_config, baseline):
    severity = {"drift.language_mix": "warning"}
    cfg = _after_baseline(
        build_config, baseline, build_id="2026-W11", publish={"enabled": False}, gate={"severity": severity}, **MULTILINGUAL
    )
    summary = run_build(cfg)  # publishable: the shift only warns now
    report = GateReport.from_dict(storage.read_json(summary["gate_report"]))
    assert report.passed and [(c.name, c.severity) for c in report.failed()] == [("drift: language mix vs 2026-W10", "warning")]


def test_override_without_a_reason_does_not_take_effect(build_config, baseline):
    cfg = _after_baseline(
        build_config, baseline, build_id="2026-W11", gate={"override": {"reason": "  ", "by": "oncall"}}, **MULTILINGUAL
    )
    with pytest.raises(GateFailure, match=r"override ignored: gate\.override needs a non-empty reason"):
        run_build(cfg)
    assert _report(cfg, "2026-W11").override is None and not _published(cfg, "2026-W11")


def test_override_with_a_reason_publishes_and_the_manifest_records_it(build_config, baseline):
    override = {"reason": "multilingual mix approved in DATA-124", "by": "oncall@example.com"}
    cfg = _after_baseline(build_config, baseline, build_id="2026-W11", gate={"override": override}, **MULTILINGUAL)
    summary = run_build(cfg)  # no GateFailure
    raw = storage.read_json(summary["gate_report"])
    assert raw["override"] == override and raw["passed"] is False and raw["publishable"] is True
    report = GateReport.from_dict(raw)
    assert _failed_names(report) == ["drift: language mix vs 2026-W10"]  # every check ran; the failure is kept
    assert "OVERRIDDEN by oncall@example.com: multilingual mix approved in DATA-124" in report.failure_message()
    page = _Page()
    page.feed(Path(report.html_uri).read_text())
    assert page.status == "overridden" and override["reason"] in Path(report.html_uri).read_text()
    manifest = storage.read_json(summary["manifest"])
    assert manifest["gate"]["override"] == override and manifest["gate"]["passed"] is False
    assert _latest(cfg) == "2026-W11"


class _Page(HTMLParser):
    """Collects what a person sees: the status banner, check rows (cells as text), SVG histograms."""

    def __init__(self):
        super().__init__()
        self.status = None
        self.rows: dict[str, list[str]] = {}  # data-check -> cell texts, from the all-checks table
        self.figures: dict[str, dict[str, int]] = {}
        self._table = self._row = self._cell = self._figure = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") == "status":
            self.status = attrs["data-status"]
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "tr" and self._table == "checks" and "data-check" in attrs:
            self._row = attrs["data-check"]
            self.rows[self._row] = []
        elif tag == "td" and self._row:
            self._cell = []
        elif tag == "figure":
            self._figure = attrs["data-column"]
            self.figures[self._figure] = {"rect": 0, "polyline": 0}
        elif tag in ("rect", "polyline") and self._figure:
            self.figures[self._figure][tag] += 1

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[self._row].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "figure":
            self._figure = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_renders_every_check_and_histograms_against_the_previous_release(shifted):
    cfg, report, _ = shifted
    assert report.html_uri == str(Path(layout.gate_report_uri(cfg, "2026-W11")).with_suffix(".html"))
    page = _Page()
    page.feed(Path(report.html_uri).read_text())
    page.close()
    assert page.status == "failed"
    assert list(page.rows) == [c.name for c in report.checks]
    for check in report.checks:
        _name, severity, result, observed, expected = page.rows[check.name]
        assert (severity, result) == (check.severity, "pass" if check.success else "FAIL")
        for shown, value in ((observed, check.observed), (expected, check.expected)):
            assert shown == value if isinstance(value, str) else json.loads(shown) == value
    histograms = report.metrics["histograms"]
    assert set(page.figures) == set(histograms) and {"n_words", "language_score", "stop_words"} <= set(histograms)
    for column, drawn in page.figures.items():
        assert drawn == {"rect": len(histograms[column]["counts"]), "polyline": 1}, column  # bars + the previous release


def _fetched_pairs(cfg, build_id: str) -> pa.Table:
    """The build's image-text candidates (from ingest) with the fetch columns filled as the fetch
    stage fills them for a successful download: here PNGs of the <img> size made with Pillow,
    keeping only the images the fetch rules keep."""
    import hashlib
    import io

    from PIL import Image

    folder = storage.join(cfg.work_root, build_id, "ingest", "pairs")
    candidates = pa.concat_tables(pq.read_table(u) for u in storage.list_files(folder, ".parquet"))
    rows = []
    for row in candidates.to_pylist():
        width, height = row["width"] or 256, row["height"] or 256
        if min(width, height) < cfg.ingest.fetch.min_image_size:
            continue  # fetch drops these (status too_small): they are never published
        rows.append(row)
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="PNG")
        image = buffer.getvalue()
        row.update(status="ok", image=image, image_sha256=hashlib.sha256(image).hexdigest(), image_format="PNG")
        row.update(
            image_width=width, image_height=height, original_width=width, original_height=height, http_status=200, attempts=1
        )
    return pa.Table.from_pylist(rows, schema=candidates.schema)


def test_pairs_shards_are_validated_with_their_suite(baseline, tmp_path):
    from curation.gates import run_gate

    cfg, _ = baseline
    filtered = layout.stage_outputs(cfg, "2026-W10", "filter")
    funnel = pipeline.funnel(layout.stage_outputs(cfg, "2026-W10", "ingest"), filtered)
    pairs = _fetched_pairs(cfg, "2026-W10")
    assert pairs.num_rows > 10
    good = str(tmp_path / "pairs" / "00000.parquet")
    storage.write_table(good, pairs)
    report = run_gate(filtered, str(tmp_path / "gate" / "report.json"), cfg, "2026-W10", funnel, pairs=[good])
    pair_checks = [c for c in report.checks if c.name.startswith(("pairs:", "schema: pairs"))]
    assert len(pair_checks) == 1 + len(json.loads((ROOT / "expectations" / "pairs.json").read_text())["expectations"])
    assert report.passed and all(c.success for c in pair_checks), [c for c in pair_checks if not c.success]

    # A thumbnail below DataComp's 200 px shorter side slipped through the fetch rules.
    rows = pairs.to_pylist()
    rows[3]["original_width"] = 120
    bad = str(tmp_path / "pairs" / "00001.parquet")
    storage.write_table(bad, pa.Table.from_pylist(rows, schema=pairs.schema))
    with pytest.raises(GateFailure) as failure:
        run_gate(filtered, str(tmp_path / "gate" / "report.json"), cfg, "2026-W10", funnel, pairs=[bad])
    assert "[critical] pairs: expect_column_values_to_be_between(original_width): observed" in str(failure.value)
