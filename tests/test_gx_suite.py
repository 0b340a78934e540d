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

from curation.gx_suite import ExpectationOutcome, load_suite, validate_table

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "expectations" / "documents.json"
PARAMS = {"min_rows": 1, "max_rows": 1000, "languages": ["en", "de"], "min_words": 3}

SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("domain", pa.string()),
        ("warc_record_id", pa.string()),
        ("fetch_time", pa.timestamp("us", tz="UTC")),
        ("source_uri", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("n_words", pa.int32()),
        ("text_hash", pa.string()),
    ]
)


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
    return pa.Table.from_pylist(rows, schema=SCHEMA)


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
    }
    columns = next(o for o in failed if o.expectation == "expect_table_columns_to_match_set")
    assert columns.observed["details"] == {"mismatched": {"missing": ["text"]}}
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


def test_import_is_lazy():
    code = "import sys, curation.gx_suite; assert 'great_expectations' not in sys.modules; assert 'airflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
