"""Tests for curation.gx_suite against expectations/documents.json (GX Core 1.x, in memory)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from curation.gx_suite import ExpectationOutcome, ShardedValidation, load_suite, validate_table
from curation.schema import DOCUMENTS, PAIR_SCORES, PAIRS, SCORED_DOCUMENTS
from curation.scoring.heuristics import heuristic_signals

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "expectations" / "documents.json"
PARAMS = {
    "min_rows": 1,
    "max_rows": 1000,
    "languages": ["en", "de"],
    "min_words": 3,
    "min_text_chars": 1,
    "max_text_chars": 100_000,
    "max_toxic_words": 0,
}
SCHEMA = SCORED_DOCUMENTS


def _hex(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()  # 32 lower-case hex chars


def _rows(n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        text = f"document number {i} has a few words in it"
        rows.append(
            {
                "doc_id": _hex(f"rec-{i}"),
                "url": f"{'https' if i % 2 else 'http'}://example{i}.org/page",
                "domain": f"example{i}.org",
                "warc_record_id": f"<urn:uuid:{i}>",
                "fetch_time": datetime(2024, 1, 1, tzinfo=UTC),
                "source_uri": "s3://crawl/part-0.warc.gz",
                "source_offset": 1000 * i,
                "title": None if i == 0 else f"title {i}",
                "text": text,
                "language": "en" if i % 3 else "de",
                "language_score": 0.5 + i / (4 * n),
                "n_words": len(text.split()),
                "text_hash": _hex(text),
            }
        )
    return rows


def _table(rows: list[dict]) -> pa.Table:
    """Documents rows plus the real heuristic signal columns: the kept-table schema the gate validates."""
    docs = pa.Table.from_pylist(rows, schema=DOCUMENTS)
    signals = heuristic_signals(docs["text"], ["badword"])
    for field in SCORED_DOCUMENTS:
        if field.name not in docs.column_names:
            docs = docs.append_column(field, signals[field.name].cast(field.type))
    return docs.select(SCORED_DOCUMENTS.names)


def _failed(outcomes: list[ExpectationOutcome]) -> list[ExpectationOutcome]:
    return [o for o in outcomes if not o.success]


def test_good_table_passes_every_expectation():
    outcomes = validate_table(_table(_rows()), SUITE, PARAMS)
    raw = json.loads(SUITE.read_text())
    assert len(outcomes) == len(raw["expectations"])
    # one outcome per expectation, in suite order
    assert [o.expectation for o in outcomes] == [e["type"] for e in raw["expectations"]]
    assert _failed(outcomes) == [], _failed(outcomes)
    assert {o.suite for o in outcomes} == {"documents"}
    # parameters are filled in the reported kwargs; everything is JSON-serialisable
    lang = next(o for o in outcomes if o.column == "language")
    assert lang.expected["value_set"] == ["en", "de"]
    rows = next(o for o in outcomes if o.expectation == "expect_table_row_count_to_be_between")
    assert rows.severity == "critical"
    assert rows.expected == {"min_value": 1, "max_value": 1000}
    assert rows.observed == {"observed_value": 4}
    json.dumps([dataclasses.asdict(o) for o in outcomes])


def test_duplicate_doc_id_fails_only_uniqueness():
    rows = _rows()
    rows[2]["doc_id"] = rows[1]["doc_id"]
    outcomes = validate_table(_table(rows), SUITE, PARAMS)
    failed = _failed(outcomes)
    assert [(o.expectation, o.column) for o in failed] == [("expect_column_values_to_be_unique", "doc_id")]
    (dup,) = failed
    assert dup.severity == "critical"
    assert dup.observed["unexpected_count"] == 2  # both rows sharing the id
    assert dup.observed["partial_unexpected_list"] == [rows[1]["doc_id"]] * 2


def test_language_outside_allowed_set_fails():
    rows = _rows()
    rows[1]["language"] = "fr"
    outcomes = validate_table(_table(rows), SUITE, PARAMS)
    failed = _failed(outcomes)
    assert [(o.expectation, o.column) for o in failed] == [("expect_column_values_to_be_in_set", "language")]
    assert failed[0].observed["unexpected_count"] == 1
    assert failed[0].observed["partial_unexpected_list"] == ["fr"]


def test_warning_severity_and_numeric_bounds():
    rows = _rows()
    rows[0]["n_words"] = 1  # below min_words: a warning in this suite
    rows[3]["language_score"] = 1.5
    outcomes = validate_table(_table(rows), SUITE, PARAMS)
    failed = {(o.column, o.severity) for o in _failed(outcomes)}
    assert failed == {("n_words", "warning"), ("language_score", "critical")}


def test_missing_parameter_raises_value_error_naming_it():
    params = {k: v for k, v in PARAMS.items() if k != "languages"}
    with pytest.raises(ValueError, match="languages"):
        load_suite(SUITE, params)
    with pytest.raises(ValueError, match="min_rows"):
        validate_table(_table(_rows()), SUITE, {})


def test_missing_column_fails_with_clear_outcome():
    table = _table(_rows()).drop_columns(["text"])
    outcomes = validate_table(table, SUITE, PARAMS)
    failed = _failed(outcomes)
    assert {(o.expectation, o.column) for o in failed} == {
        ("expect_table_columns_to_match_set", None),
        ("expect_column_values_to_not_be_null", "text"),
        ("expect_column_value_lengths_to_be_between", "text"),
    }
    columns = next(o for o in failed if o.expectation == "expect_table_columns_to_match_set")
    assert columns.observed["details"]["mismatched"]["missing"] == ["text"]
    text = next(o for o in failed if o.column == "text")
    assert "text" in text.observed["error"] and "does not exist" in text.observed["error"]
    json.dumps([dataclasses.asdict(o) for o in outcomes])


def test_bad_suite_files_raise_value_error(tmp_path):
    bad_severity = tmp_path / "s1.json"
    bad_severity.write_text(
        json.dumps(
            {
                "name": "s1",
                "expectations": [
                    {
                        "type": "expect_column_to_exist",
                        "kwargs": {"column": "a"},
                        "meta": {"severity": "fatal"},
                    }
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="severity"):
        load_suite(bad_severity)
    unknown = tmp_path / "s2.json"
    unknown.write_text(json.dumps({"name": "s2", "expectations": [{"type": "expect_magic", "kwargs": {}}]}))
    with pytest.raises(ValueError, match="expect_magic"):
        load_suite(unknown)


@pytest.fixture
def small_suite(tmp_path) -> Path:
    """A few expectations of each scope from the documents suite (GX's cost grows with the suite size)."""
    keep = {
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_values_to_not_be_null", "doc_id"),
        ("expect_column_values_to_be_unique", "doc_id"),
        ("expect_column_values_to_be_in_set", "language"),
        ("expect_column_values_to_be_between", "language_score"),
        ("expect_column_values_to_be_between", "quality_score"),
    }
    raw = json.loads(SUITE.read_text())
    raw["expectations"] = [e for e in raw["expectations"] if (e["type"], e["kwargs"].get("column")) in keep]
    assert len(raw["expectations"]) == len(keep)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(raw))
    return path


def _sharded(parts: list[pa.Table], suite=SUITE, params=PARAMS) -> list[ExpectationOutcome]:
    validation = ShardedValidation(suite, params)
    for i, part in enumerate(parts):
        validation.add(part, f"shard-{i}")
    return validation.finish()


def test_sharded_validation_matches_whole_table_validation(small_suite):
    table = _table(_rows(9))
    whole = validate_table(table, small_suite, PARAMS)
    parts = _sharded([table.slice(0, 4), table.slice(4, 3), table.slice(7)], small_suite)
    assert [(o.expectation, o.column, o.success) for o in parts] == [(o.expectation, o.column, o.success) for o in whole]
    assert all(o.success for o in parts)
    rows = next(o for o in parts if o.expectation == "expect_table_row_count_to_be_between")
    assert rows.observed == {"observed_value": 9}  # over all shards, not per shard
    not_null = next(o for o in parts if o.expectation == "expect_column_values_to_not_be_null" and o.column == "doc_id")
    assert not_null.observed["element_count"] == 9 and not_null.observed["shards"] == 3


def test_sharded_uniqueness_spans_shards_and_failures_name_their_shard(small_suite):
    rows = _rows(9)
    rows[7]["doc_id"] = rows[1]["doc_id"]  # unique inside each shard, duplicated across shards
    rows[8]["language"] = "fr"
    table = _table(rows)
    failed = _failed(_sharded([table.slice(0, 3), table.slice(3, 3), table.slice(6)], small_suite))
    assert [(o.expectation, o.column) for o in failed] == [
        ("expect_column_values_to_be_unique", "doc_id"),
        ("expect_column_values_to_be_in_set", "language"),
    ]
    unique, language = failed
    assert unique.observed["unexpected_count"] == 2 and unique.observed["partial_unexpected_list"] == [rows[1]["doc_id"]] * 2
    assert language.observed["failed_shards"] == ["shard-2"] and language.observed["partial_unexpected_list"] == ["fr"]
    assert language.observed["unexpected_count"] == 1 and language.observed["element_count"] == 9


def test_optional_expectations_apply_only_where_their_column_exists(small_suite):
    table = _table(_rows())
    scored = table.append_column("quality_score", pa.array([0.1, 0.5, 1.5, 0.9], pa.float32()))
    outcomes = {(o.expectation, o.column): o for o in _sharded([table, scored], small_suite)}
    quality = outcomes[("expect_column_values_to_be_between", "quality_score")]
    assert not quality.success and quality.observed["failed_shards"] == ["shard-1"]
    assert quality.observed["partial_unexpected_list"] == [1.5]
    absent = {(o.expectation, o.column): o for o in validate_table(table, small_suite, PARAMS)}
    assert absent[("expect_column_values_to_be_between", "quality_score")].success
    assert "absent" in absent[("expect_column_values_to_be_between", "quality_score")].observed["skipped"]


PAIRS_SUITE = ROOT / "expectations" / "pairs.json"
PAIR_PARAMS = {
    "min_rows": 1,
    "max_rows": 100,
    "min_caption_chars": 6,
    "max_caption_chars": 1000,
    "caption_languages": ["en"],
    "min_image_side": 200,
    "max_image_side": 10_000,
}


def _pairs(n: int = 3) -> pa.Table:
    rows = []
    for i in range(n):
        image = f"fake image bytes {i}".encode()
        rows.append(
            {
                "pair_id": _hex(f"pair-{i}"),
                "doc_id": _hex(f"rec-{i}"),
                "page_url": f"https://example{i}.org/page",
                "image_url": f"https://cdn.example.org/{i}.jpg",
                "caption": f"a red kayak on a quiet lake number {i}",
                "caption_language": "en",
                "status": "ok",
                "image": image,
                "image_sha256": hashlib.sha256(image).hexdigest(),
                "image_format": "JPEG",
                "image_width": 256,
                "image_height": 320,
                "original_width": 512,
                "original_height": 640,
                "clip_score": 0.31,
            }
        )
    schema = pa.schema([*PAIRS, PAIR_SCORES.field("clip_score")])
    return pa.Table.from_pylist(rows, schema=schema)


def test_pairs_suite_checks_image_size_fetch_status_and_scores():
    assert _failed(validate_table(_pairs(), PAIRS_SUITE, PAIR_PARAMS)) == []
    bad = _pairs().to_pylist()
    bad[0]["original_width"] = 120  # below DataComp's 200 px shorter side
    bad[1]["status"] = "timeout"
    bad[2]["clip_score"] = 1.7
    failed = _failed(validate_table(pa.Table.from_pylist(bad, schema=_pairs().schema), PAIRS_SUITE, PAIR_PARAMS))
    assert {(o.column, o.severity) for o in failed} == {
        ("original_width", "critical"),
        ("status", "critical"),
        ("clip_score", "critical"),
    }


def test_import_is_lazy():
    code = "import sys, curation.gx_suite; assert 'great_expectations' not in sys.modules; assert 'airflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
