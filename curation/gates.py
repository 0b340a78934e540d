"""Validation gate: Great Expectations suites on the kept table + build-level checks -> GateReport.

A failed critical check raises GateFailure (never retried); the orchestrator turns it into a
failed run and publishing does not happen. The report is written with the build so the person
paged can read what failed: every check with its observed and expected values.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from curation import storage
from curation.config import BuildConfig
from curation.errors import GateFailure
from curation.gx_suite import validate_table
from curation.stats import StageStats


@dataclass
class Check:
    name: str
    success: bool
    severity: str  # "critical" blocks publishing; "warning" only alerts
    observed: Any
    expected: Any


@dataclass
class GateReport:
    build_id: str
    checks: list[Check]
    rows: int
    funnel: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_uri: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failed(severity="critical")

    def failed(self, severity: str | None = None) -> list[Check]:
        return [c for c in self.checks if not c.success and (severity is None or c.severity == severity)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        data = {k: v for k, v in data.items() if k != "passed"}
        return cls(**{**data, "checks": [Check(**c) for c in data["checks"]]})

    def failure_message(self) -> str:
        lines = [f"gate failed for build {self.build_id}: {len(self.failed('critical'))} critical check(s) failed"]
        for check in self.failed():
            lines.append(f"  [{check.severity}] {check.name}: observed {check.observed!r}, expected {check.expected!r}")
        lines.append(f"report: {self.report_uri}")
        return "\n".join(lines)


def run_gate(inputs: list[str], output: str, cfg: BuildConfig, build_id: str, funnel: list[StageStats]) -> GateReport:
    """Validate the kept shards `inputs`; write the report to `output`; raise GateFailure if it fails."""
    started = time.monotonic()
    table = pa.concat_tables([storage.read_table(uri) for uri in inputs]) if inputs else None
    languages = cfg.gate.languages if cfg.gate.languages is not None else cfg.ingest.languages
    if not languages and table is not None:  # no allowlist anywhere: every language is allowed
        languages = sorted(set(table["language"].to_pylist()))
    parameters = {
        "min_rows": cfg.gate.min_rows,
        "max_rows": cfg.gate.max_rows,
        "languages": languages,
        "min_words": cfg.gate.min_words,
    }
    checks: list[Check] = []
    if table is None:
        checks.append(Check("documents: kept shards exist", False, "critical", 0, ">= 1 shard"))
    else:
        for outcome in validate_table(table, cfg.gate.documents_suite, parameters):
            label = f"documents: {outcome.expectation}" + (f"({outcome.column})" if outcome.column else "")
            checks.append(Check(label, outcome.success, outcome.severity, outcome.observed, outcome.expected))
    for stats in funnel:
        checks.append(
            Check(
                f"{stats.stage}: rows balance (in = out + dropped)",
                stats.balanced(),
                "critical",
                {"in": stats.rows_in, "out": stats.rows_out, "dropped": stats.rows_dropped},
                "in == out + dropped",
            )
        )
    report = GateReport(
        build_id=build_id,
        checks=checks,
        rows=table.num_rows if table is not None else 0,
        funnel={s.stage: s.to_dict() | {"outputs": len(s.outputs)} for s in funnel},
        report_uri=output,
        seconds=time.monotonic() - started,
    )
    storage.write_json(output, report.to_dict())
    if not report.passed:
        raise GateFailure(report.failure_message(), report_uri=output, failed=[c.name for c in report.failed("critical")])
    return report
