"""Validation gate: Great Expectations suites on the kept table + build-level checks -> GateReport.

What is checked, each check with a kind, a severity and its observed vs expected values:

* ``suite``      the GX suite (expectations/documents.json): column maps per shard, the row count
                 and uniqueness over the whole build (see `gx_suite.ShardedValidation`);
* ``schema``     every kept shard's Arrow schema against `schema.SCORED_DOCUMENTS`;
* ``funnel``     rows balance per stage (in = out + dropped);
* ``band.*``     kept ratio per stage, per input file and per domain within the configured bands;
                 dedup ratio and toxicity rate below their ceilings;
* ``drift.*``    against the release LATEST points at: kept rows, language mix, score means,
                 toxicity rate, dedup ratio.

Severity: a failed ``critical`` check raises GateFailure (never retried; nothing is published);
a failed ``warning`` publishes and alerts. Defaults are in `DEFAULT_SEVERITY` and the suite's
``meta.severity``; ``gate.severity`` overrides them per kind or per check name.

Override (on-call): ``gate.override = {reason: "...", by: "alice"}`` (the DAG's override Param,
or ``--set gate.override.reason=...``) makes a build with failed critical checks publishable:
every check still runs, the failures and the override are recorded in the report (its top-level
``override`` key, which publish copies into the manifest) and nothing is raised. Without a
non-empty reason the override does not take effect and the gate fails as usual.

The report is JSON for machines (next to the build, copied into the release by publish) plus an
HTML page for people, written next to it and named in the failure message. The report also keeps
the build's profile (`GateReport.metrics`: language mix, score means and histograms, rates and
kept ratios), which is what the next build's drift checks compare against.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import layout, storage
from curation.config import BuildConfig, RatioBand
from curation.errors import GateFailure
from curation.gx_suite import ShardedValidation
from curation.schema import PAIRS, SCORED_DOCUMENTS
from curation.stats import StageStats

log = logging.getLogger(__name__)

REPORT_IN_RELEASE = "gate_report.json"  # publish copies the report into the release under this name
DEFAULT_SEVERITY = {
    "schema": "critical",
    "funnel.balance": "critical",
    "band.stage_kept_ratio": "critical",
    "band.source_kept_ratio": "warning",
    "band.domain_kept_ratio": "warning",
    "band.dedup_ratio": "critical",
    "band.toxicity_rate": "critical",
    "drift.previous_release": "warning",
    "drift.kept_rows": "warning",
    "drift.language_mix": "critical",
    "drift.score_mean": "warning",
    "drift.toxicity_rate": "critical",
    "drift.dedup_ratio": "critical",
}
NOT_SCORES = {"source_offset"}  # numeric columns that are provenance, not signals
DEDUP_REASON_PREFIX = "dup_"
TOXICITY_REASON_PREFIX = "toxic"  # toxicity (lexicon), toxicity_model, ...
LISTED = 10  # offenders listed per aggregated check
STORED_DOMAINS = 200  # domains whose kept ratio the report keeps (largest first)
# Same host rule as ingest's `domain` column, applied to the URLs of dropped rows.
_HOST_PATTERN = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Check:
    name: str
    success: bool
    severity: str  # "critical" blocks publishing; "warning" only alerts
    observed: Any
    expected: Any
    kind: str = ""  # family, e.g. "suite", "schema", "band.dedup_ratio", "drift.language_mix"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        return cls(**{k: v for k, v in data.items() if k in _field_names(cls)})


@dataclass
class GateReport:
    build_id: str
    checks: list[Check]
    rows: int
    funnel: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_uri: str = ""
    seconds: float = 0.0
    html_uri: str = ""
    corpus: str = ""
    # The build's profile: what the next build's drift checks compare against.
    metrics: dict[str, Any] = field(default_factory=dict)
    # The release compared against: {"build_id", "report"}; None when there was none.
    previous: dict[str, Any] | None = None
    # {"reason", "by"} when an override made a failed build publishable; publish records it in the manifest.
    override: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.failed(severity="critical")

    @property
    def publishable(self) -> bool:
        return self.passed or bool(self.override and str(self.override.get("reason") or "").strip())

    def failed(self, severity: str | None = None) -> list[Check]:
        return [c for c in self.checks if not c.success and (severity is None or c.severity == severity)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "publishable": self.publishable}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        known = {k: v for k, v in data.items() if k in _field_names(cls)}  # older/newer reports read too
        return cls(**{**known, "checks": [Check.from_dict(c) for c in data.get("checks", [])]})

    def failure_message(self) -> str:
        critical = self.failed("critical")
        if critical:
            head = f"gate failed for build {self.build_id}: {len(critical)} critical check(s) failed"
            if self.override:
                head += f"; OVERRIDDEN by {self.override.get('by') or 'unknown'}: {self.override.get('reason')}"
        else:
            head = f"gate passed for build {self.build_id} with {len(self.failed())} warning(s)"
        lines = [head]
        for check in sorted(self.failed(), key=lambda c: c.severity != "critical"):
            lines.append(
                f"  [{check.severity}] {check.name}: observed {_compact(check.observed)}, expected {_compact(check.expected)}"
            )
        lines.append(f"report: {self.report_uri}")
        if self.html_uri:
            lines.append(f"html: {self.html_uri}")
        return "\n".join(lines)


@dataclass
class PreviousRelease:
    build_id: str
    report_uri: str
    metrics: dict[str, Any]


def run_gate(
    inputs: list[str],
    output: str,
    cfg: BuildConfig,
    build_id: str,
    funnel: list[StageStats],
    *,
    pairs: list[str] | None = None,
    pairs_funnel: list[StageStats] | None = None,
    notifiers: list | None = None,
) -> GateReport:
    """Validate the kept shards `inputs`; write the report to `output` (+ `.html`); raise GateFailure if it fails.

    `funnel` holds the per-stage totals (StageStats.total); their `outputs` locate the per-stage
    drop tables used for the per-domain and per-source kept ratios. `pairs`: image-text pair
    shards to validate against ``gate.pairs_suite``; `pairs_funnel` the totals of their own chain
    (balance and kept-ratio checks, kept apart from the documents' rates). `notifiers` replaces the ones built from
    ``cfg.gate.notify`` (see `curation.notify`).
    """
    started = time.monotonic()
    gate = cfg.gate
    previous, checks = _previous_release(cfg)
    profile = _Profile(gate.score_columns, gate.histogram_bins, (previous.metrics if previous else {}).get("histograms", {}))

    if not inputs:
        checks.append(Check("documents: kept shards exist", False, "critical", 0, ">= 1 shard", kind="suite"))
    else:
        parameters = _suite_parameters(cfg, inputs)
        checks += _suite_checks(
            "documents", inputs, gate.documents_suite, parameters, SCORED_DOCUMENTS, profile, gate.validation_batch_rows
        )
        profile.finish(inputs)
    if pairs:
        parameters = _pairs_parameters(cfg, pairs)
        checks += _suite_checks("pairs", pairs, gate.pairs_suite, parameters, PAIRS, None, gate.validation_batch_rows)

    dropped = _dropped_counts(funnel)
    metrics = _build_metrics(profile, funnel, dropped, gate)
    checks += _funnel_checks(funnel, gate)
    checks += _funnel_checks(pairs_funnel or [], gate, empty_ok=True)
    checks += _rate_checks(metrics, gate)
    checks += _domain_and_source_checks(metrics, profile, dropped, gate)
    if previous is not None and gate.drift.enabled:
        checks += _drift_checks(metrics, previous, gate)
    for check in checks:
        check.severity = gate.severity.get(check.name) or gate.severity.get(check.kind) or check.severity

    report = GateReport(
        build_id=build_id,
        checks=checks,
        rows=profile.rows,
        funnel={s.stage: s.to_dict() | {"outputs": len(s.outputs)} for s in [*funnel, *(pairs_funnel or [])]},
        report_uri=output,
        corpus=cfg.publish.corpus,
        metrics=metrics,
        previous={"build_id": previous.build_id, "report": previous.report_uri} if previous else None,
    )
    override_ignored = _apply_override(report, cfg)
    report.seconds = time.monotonic() - started
    report.html_uri = _write_html(report, output, previous)
    storage.write_json(output, report.to_dict())
    _announce(report, cfg, notifiers)

    message = report.failure_message()
    if override_ignored:
        message += "\noverride ignored: gate.override needs a non-empty reason to take effect"
    log.info("gate of %s: %d check(s), %d failed; report %s", build_id, len(checks), len(report.failed()), output)
    if not report.publishable:
        raise GateFailure(message, report_uri=output, failed=[c.name for c in report.failed("critical")])
    return report


# --- inputs, suite, previous release ---------------------------------------------------------


def _suite_path(path: str) -> str:
    """The suite file: as given (absolute or from the working directory), else from the repository root."""
    if Path(path).is_absolute() or Path(path).exists():
        return path
    bundled = _REPO_ROOT / path
    return str(bundled) if bundled.exists() else path


def _suite_checks(
    table_name: str,
    inputs: list[str],
    suite: str,
    parameters: dict[str, Any],
    schema: pa.Schema,
    profile: _Profile | None,
    batch_rows: int,
) -> list[Check]:
    """The suite over `inputs`, shard by shard, plus the Arrow schema check; feeds `profile` as it goes."""
    validation = ShardedValidation(_suite_path(suite), parameters)
    mismatched: dict[str, Any] = {}
    extra: set[str] = set()
    batch = _Batcher(validation, batch_rows)
    for uri in inputs:
        table = storage.read_table(uri)
        label = _label(uri)
        issues = _schema_issues(table.schema, schema)
        extra.update(issues.pop("extra", []))
        if issues:
            mismatched[label] = issues
        batch.add(table, label)
        if profile is not None:
            profile.add(table)
        del table
    batch.flush()
    checks = [
        Check(
            f"schema: {table_name} shards match the {table_name} schema",
            not mismatched,
            DEFAULT_SEVERITY["schema"],
            {
                "shards": len(inputs),
                "mismatched": dict(list(mismatched.items())[:LISTED]),
                "mismatched_count": len(mismatched),
                "extra_columns": sorted(extra),
            },
            {"columns": {f.name: str(f.type) for f in schema}},
            kind="schema",
        )
    ]
    for outcome in validation.finish():
        label = f"{table_name}: {outcome.expectation}" + (f"({outcome.column})" if outcome.column else "")
        checks.append(Check(label, outcome.success, outcome.severity, outcome.observed, outcome.expected, kind="suite"))
    return checks


class _Batcher:
    """Feeds GX parts of at most `rows` rows: a larger shard is split, small shards of one schema are
    grouped (GX's cost is mostly per call, so a few big parts beat many small ones). Memory: one part."""

    def __init__(self, validation: ShardedValidation, rows: int):
        self.validation, self.rows = validation, rows
        self.pending: list[tuple[str, pa.Table]] = []

    def add(self, table: pa.Table, label: str) -> None:
        if self.pending:
            fits = sum(t.num_rows for _, t in self.pending) + table.num_rows <= self.rows
            if not fits or not table.schema.equals(self.pending[0][1].schema, check_metadata=False):
                self.flush()
        if table.num_rows <= self.rows:
            self.pending.append((label, table))
            return
        for start in range(0, table.num_rows, self.rows):
            self.validation.add(table.slice(start, self.rows), label)

    def flush(self) -> None:
        if not self.pending:
            return
        labels = [label for label, _ in self.pending]
        label = ", ".join(labels[:3]) + (f" (+{len(labels) - 3} more)" if len(labels) > 3 else "")
        self.validation.add(pa.concat_tables([t for _, t in self.pending]), label)
        self.pending = []


def _present_values(inputs: list[str], column: str) -> list[str]:
    """Every non-null value of a (low-cardinality) column over the shards; reads only that column."""
    found: set[str] = set()
    for uri in inputs:
        try:
            found.update(v for v in storage.read_table(uri, columns=[column])[column].unique().to_pylist() if v)
        except (KeyError, pa.ArrowInvalid):
            continue  # a shard without the column: the suite reports it
    return sorted(found)


def _pairs_parameters(cfg: BuildConfig, inputs: list[str]) -> dict[str, Any]:
    images, fetch = cfg.ingest.images, cfg.ingest.fetch
    return {
        "min_rows": cfg.gate.pairs_min_rows,
        "max_rows": cfg.gate.max_rows,
        "min_caption_chars": images.min_caption_chars,
        "max_caption_chars": images.max_caption_chars,
        # no allowlist: every language present is allowed
        "caption_languages": list(images.caption_languages) or _present_values(inputs, "caption_language"),
        "min_image_side": fetch.min_image_size,
        "max_image_side": cfg.gate.max_image_side,
    }


def _suite_parameters(cfg: BuildConfig, inputs: list[str]) -> dict[str, Any]:
    gate = cfg.gate
    languages = gate.languages if gate.languages is not None else cfg.ingest.languages
    return {
        "min_rows": gate.min_rows,
        "max_rows": gate.max_rows,
        # no allowlist anywhere: every language present is allowed
        "languages": list(languages) or _present_values(inputs, "language"),
        "min_words": gate.min_words,
        "min_text_chars": gate.min_text_chars,
        "max_text_chars": gate.max_text_chars,
        "max_toxic_words": cfg.heuristics.max_toxic_words,
    }


def _previous_release(cfg: BuildConfig) -> tuple[PreviousRelease | None, list[Check]]:
    """The release LATEST points at and its report's metrics; a warning check when it cannot be read."""
    latest = layout.latest_uri(cfg)
    if not cfg.gate.drift.enabled or not storage.exists(latest):
        return None, []
    previous_id = storage.read_bytes(latest).decode().strip()
    uri = storage.join(layout.release_uri(cfg, previous_id), REPORT_IN_RELEASE)
    try:
        data = storage.read_json(uri)
        metrics = data.get("metrics") or {}
    except (OSError, ValueError, AttributeError) as exc:
        check = Check(
            "drift: previous release report readable",
            False,
            DEFAULT_SEVERITY["drift.previous_release"],
            {"error": f"{type(exc).__name__}: {exc}", "release": previous_id},
            {"report": uri},
            kind="drift.previous_release",
        )
        return None, [check]
    checks = []
    if not metrics:
        checks.append(
            Check(
                "drift: previous release has build metrics",
                False,
                DEFAULT_SEVERITY["drift.previous_release"],
                {"release": previous_id, "metrics": None},
                "a gate report with metrics (written by this gate version or later)",
                kind="drift.previous_release",
            )
        )
    return PreviousRelease(previous_id, uri, metrics), checks


def _label(uri: str) -> str:
    """`.../filter/00001.parquet` -> `filter/00001.parquet`: short, and still says which stage wrote it."""
    parent = uri.rsplit("/", 2)
    return "/".join(parent[-2:]) if len(parent) >= 2 else uri


def _schema_issues(actual: pa.Schema, expected: pa.Schema) -> dict[str, Any]:
    missing = [name for name in expected.names if name not in actual.names]
    wrong = {
        f.name: f"{actual.field(f.name).type} (expected {f.type})"
        for f in expected
        if f.name in actual.names and not actual.field(f.name).type.equals(f.type)
    }
    extra = [name for name in actual.names if name not in expected.names]
    return {k: v for k, v in {"missing": missing, "wrong_type": wrong, "extra": extra}.items() if v}


# --- the build's profile ---------------------------------------------------------------------


class _Profile:
    """Streaming profile of the kept table, shard by shard: language/domain/source counts, and per
    score column count, mean, std (merged with Chan et al.'s pairwise update), min, max, histogram.

    Histogram bins are the previous release's, so the two are comparable bin by bin; columns new
    to this build, or with more than 1% of values outside the previous range, are binned in a
    second pass over only those columns with edges spanning both builds.
    """

    def __init__(self, columns: list[str] | None, bins: int, previous: dict[str, Any]):
        self.columns = columns
        self.bins = bins
        self.rows = 0
        self.languages: Counter[str] = Counter()
        self._domains: list[pa.Table] = []
        self._sources: list[pa.Table] = []
        self.stats: dict[str, dict[str, float]] = {}
        self.edges: dict[str, np.ndarray] = {}
        for column, hist in previous.items():
            edges = np.asarray(hist.get("edges") or [], dtype=np.float64)
            if len(edges) >= 2 and np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0):
                self.edges[column] = edges
        self.counts: dict[str, np.ndarray] = {}
        self.outside: Counter[str] = Counter()

    def score_columns(self, schema: pa.Schema) -> list[str]:
        names = self.columns if self.columns is not None else [f.name for f in schema if f.name not in NOT_SCORES]
        numeric = {f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
        return [n for n in names if n in numeric]

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if "language" in table.column_names:
            counts = pc.value_counts(table["language"].fill_null("null"))
            self.languages.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)))
        for column, sink in (("domain", self._domains), ("source_uri", self._sources)):
            if column in table.column_names:
                sink.append(_value_counts(table[column]))
        for column in self.score_columns(table.schema):
            values = _finite(table[column])
            if len(values):
                self._merge_stats(column, values)
                if column in self.edges:
                    self._bin(column, values)

    def _merge_stats(self, column: str, values: np.ndarray) -> None:
        n, mean = float(len(values)), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        s = self.stats.setdefault(column, {"count": 0.0, "mean": 0.0, "m2": 0.0, "min": math.inf, "max": -math.inf})
        total = s["count"] + n
        delta = mean - s["mean"]
        s["mean"] += delta * n / total
        s["m2"] += m2 + delta * delta * s["count"] * n / total
        s["count"] = total
        s["min"] = min(s["min"], float(values.min()))
        s["max"] = max(s["max"], float(values.max()))

    def _bin(self, column: str, values: np.ndarray) -> None:
        edges = self.edges[column]
        self.outside[column] += int(((values < edges[0]) | (values > edges[-1])).sum())
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
        self.counts[column] = self.counts.get(column, 0) + counts

    def finish(self, inputs: list[str]) -> None:
        """Second pass for the score columns whose bins are not known yet (reads only those columns)."""
        rebin = []
        for column, s in self.stats.items():
            if column not in self.edges or self.outside[column] > 0.01 * s["count"]:
                lo, hi = s["min"], s["max"]
                if column in self.edges:
                    lo, hi = min(lo, self.edges[column][0]), max(hi, self.edges[column][-1])
                if hi <= lo:
                    hi = lo + 1.0
                self.edges[column] = np.linspace(lo, hi, self.bins + 1)
                self.counts.pop(column, None)
                self.outside[column] = 0
                rebin.append(column)
        for uri in inputs if rebin else []:
            try:
                table = storage.read_table(uri, columns=rebin)
            except (KeyError, pa.ArrowInvalid):  # a shard lacking a column (the schema check reports it)
                table = storage.read_table(uri)
            for column in rebin:
                if column in table.column_names and column in self.score_columns(table.schema):
                    values = _finite(table[column])
                    if len(values):
                        self._bin(column, values)

    def value_counts(self, which: str) -> dict[str, int]:
        parts = self._domains if which == "domain" else self._sources
        return _sum_counts(parts)

    def score_metrics(self) -> tuple[dict[str, Any], dict[str, Any]]:
        scores, histograms = {}, {}
        for column, s in sorted(self.stats.items()):
            std = math.sqrt(s["m2"] / s["count"]) if s["count"] else 0.0
            scores[column] = {"count": int(s["count"]), "mean": s["mean"], "std": std, "min": s["min"], "max": s["max"]}
            if column in self.edges:
                counts = self.counts.get(column, np.zeros(len(self.edges[column]) - 1, dtype=np.int64))
                histograms[column] = {
                    "edges": [float(e) for e in self.edges[column]],
                    "counts": [int(c) for c in counts],
                    "outside": int(self.outside[column]),
                }
        return scores, histograms


def _finite(column: pa.ChunkedArray) -> np.ndarray:
    values = pc.drop_null(column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values[np.isfinite(values)]


def _value_counts(column: pa.ChunkedArray | pa.Array) -> pa.Table:
    counts = pc.value_counts(pc.cast(column, pa.string()).fill_null("unknown"))
    return pa.table({"key": counts.field("values"), "n": counts.field("counts")})


def _sum_counts(parts: list[pa.Table]) -> dict[str, int]:
    if not parts:
        return {}
    total = pa.concat_tables(parts).group_by("key").aggregate([("n", "sum")])
    return dict(zip(total["key"].to_pylist(), total["n_sum"].to_pylist(), strict=True))


def _dropped_counts(funnel: list[StageStats]) -> dict[str, dict[str, int]]:
    """Rows every stage dropped, per domain and per source file, from the stages' dropped/ tables.

    Per source file every dropped record counts (records read -> documents kept). Per domain only
    rows that had become documents (a doc_id) count: a CDN serving images or a host answering
    404 is not a text source whose kept ratio means anything. Those tables hold only ids, URLs
    and reasons (never text), so they are cheap to read. A shard without one contributes nothing
    (its drops are still in the funnel totals).
    """
    domains: list[pa.Table] = []
    sources: list[pa.Table] = []
    for stats in funnel:
        for output in stats.outputs:
            uri = layout.dropped_uri(output)
            try:
                table = storage.read_table(uri, columns=["doc_id", "url", "source_uri"])
            except (FileNotFoundError, KeyError, pa.ArrowInvalid):
                continue
            sources.append(_value_counts(table["source_uri"]))
            documents = table.filter(pc.is_valid(table["doc_id"]))
            host = pc.struct_field(pc.extract_regex(documents["url"].fill_null(""), _HOST_PATTERN), "host")
            domains.append(_value_counts(pc.utf8_lower(host)))
    return {"domain": _sum_counts(domains), "source": _sum_counts(sources)}


def _build_metrics(profile: _Profile, funnel: list[StageStats], dropped: dict, gate) -> dict[str, Any]:
    by_stage = {s.stage: s for s in funnel}
    documents = by_stage["ingest"].rows_out if "ingest" in by_stage else (funnel[0].rows_in if funnel else 0)
    dup = sum(n for s in funnel for reason, n in s.dropped.items() if reason.startswith(DEDUP_REASON_PREFIX))
    toxic = sum(n for s in funnel for reason, n in s.dropped.items() if reason.startswith(TOXICITY_REASON_PREFIX))
    scores, histograms = profile.score_metrics()
    total_languages = sum(profile.languages.values())
    domain_ratio = _kept_ratios(profile.value_counts("domain"), dropped["domain"])
    big = {d: v for d, v in domain_ratio.items() if v["total"] >= gate.domain_min_documents}
    largest = sorted(big, key=lambda d: -big[d]["total"])[:STORED_DOMAINS]
    return {
        "kept_rows": profile.rows,
        "documents": documents,
        "language_counts": dict(profile.languages.most_common()),
        "language_mix": {k: v / total_languages for k, v in profile.languages.most_common()} if total_languages else {},
        "scores": scores,
        "histograms": histograms,
        "dedup_ratio": dup / documents if documents else None,
        "toxicity_rate": toxic / documents if documents else None,
        "stage_kept_ratio": {s.stage: (s.rows_out / s.rows_in if s.rows_in else None) for s in funnel},
        "source_kept_ratio": {k: v["ratio"] for k, v in _kept_ratios(profile.value_counts("source"), dropped["source"]).items()},
        "domain_kept_ratio": {d: big[d]["ratio"] for d in largest},
    }


def _kept_ratios(kept: dict[str, int], dropped: dict[str, int]) -> dict[str, dict[str, Any]]:
    out = {}
    for key in set(kept) | set(dropped):
        total = kept.get(key, 0) + dropped.get(key, 0)
        out[key] = {"kept": kept.get(key, 0), "total": total, "ratio": kept.get(key, 0) / total if total else None}
    return out


# --- build-level checks ----------------------------------------------------------------------


def _band_text(band: RatioBand) -> dict[str, float]:
    return {"min": band.min, "max": band.max}


def _in_band(value: float | None, band: RatioBand) -> bool:
    return value is not None and band.min <= value <= band.max


def _funnel_checks(funnel: list[StageStats], gate, empty_ok: bool = False) -> list[Check]:
    """Rows balance and kept-ratio band per stage; `empty_ok`: a stage that saw no rows has no ratio to
    check (a crawl without images gives the image-text chain nothing to do)."""
    checks = []
    for stats in funnel:
        checks.append(
            Check(
                f"{stats.stage}: rows balance (in = out + dropped)",
                stats.balanced(),
                DEFAULT_SEVERITY["funnel.balance"],
                {"in": stats.rows_in, "out": stats.rows_out, "dropped": stats.rows_dropped},
                "in == out + dropped",
                kind="funnel.balance",
            )
        )
        band = gate.stage_kept_ratio_by_stage.get(stats.stage, gate.stage_kept_ratio)
        ratio = stats.rows_out / stats.rows_in if stats.rows_in else None
        if ratio is None and empty_ok:
            continue
        top = dict(stats.dropped.most_common(3))
        checks.append(
            Check(
                f"stage kept ratio: {stats.stage}",
                _in_band(ratio, band),
                DEFAULT_SEVERITY["band.stage_kept_ratio"],
                {"ratio": ratio, "in": stats.rows_in, "out": stats.rows_out, "top_drop_reasons": top},
                _band_text(band),
                kind="band.stage_kept_ratio",
            )
        )
    return checks


def _rate_checks(metrics: dict[str, Any], gate) -> list[Check]:
    checks = []
    for key, name, ceiling in (
        ("dedup_ratio", "dedup ratio", gate.max_dedup_ratio),
        ("toxicity_rate", "toxicity rate", gate.max_toxicity_rate),
    ):
        value = metrics[key]
        checks.append(
            Check(
                name,
                value is not None and value <= ceiling,
                DEFAULT_SEVERITY[f"band.{key}"],
                {key: value, "documents": metrics["documents"]},
                {"max": ceiling},
                kind=f"band.{key}",
            )
        )
    return checks


def _domain_and_source_checks(metrics: dict[str, Any], profile: _Profile, dropped: dict, gate) -> list[Check]:
    checks = []
    sources = _kept_ratios(profile.value_counts("source"), dropped["source"])
    if sources:
        outside = {k: v["ratio"] for k, v in sorted(sources.items()) if not _in_band(v["ratio"], gate.source_kept_ratio)}
        checks.append(
            Check(
                "source kept ratio: every input file",
                not outside,
                DEFAULT_SEVERITY["band.source_kept_ratio"],
                {"sources": len(sources), "outside": dict(list(outside.items())[:LISTED]), "outside_count": len(outside)},
                _band_text(gate.source_kept_ratio),
                kind="band.source_kept_ratio",
            )
        )
    domains = _kept_ratios(profile.value_counts("domain"), dropped["domain"])
    explicit = gate.domain_kept_ratio_by_domain
    for domain, band in sorted(explicit.items()):
        value = domains.get(domain, {"ratio": None, "total": 0})
        checks.append(
            Check(
                f"domain kept ratio: {domain}",
                _in_band(value["ratio"], band),
                DEFAULT_SEVERITY["band.domain_kept_ratio"],
                {"ratio": value["ratio"], "documents": value["total"]},
                _band_text(band),
                kind="band.domain_kept_ratio",
            )
        )
    eligible = {d: v for d, v in domains.items() if d not in explicit and v["total"] >= gate.domain_min_documents}
    if eligible:
        outside = {d: v["ratio"] for d, v in sorted(eligible.items()) if not _in_band(v["ratio"], gate.domain_kept_ratio)}
        checks.append(
            Check(
                f"domain kept ratio: every domain with >= {gate.domain_min_documents} documents",
                not outside,
                DEFAULT_SEVERITY["band.domain_kept_ratio"],
                {"domains": len(eligible), "outside": dict(list(outside.items())[:LISTED]), "outside_count": len(outside)},
                _band_text(gate.domain_kept_ratio),
                kind="band.domain_kept_ratio",
            )
        )
    return checks


def _drift_checks(metrics: dict[str, Any], previous: PreviousRelease, gate) -> list[Check]:
    drift, old, vs = gate.drift, previous.metrics, f"vs {previous.build_id}"
    checks = []
    if old.get("kept_rows") is not None:
        change = abs(metrics["kept_rows"] - old["kept_rows"]) / max(old["kept_rows"], 1)
        checks.append(
            Check(
                f"drift: kept rows {vs}",
                change <= drift.max_kept_rows_change,
                DEFAULT_SEVERITY["drift.kept_rows"],
                {"kept_rows": metrics["kept_rows"], "previous": old["kept_rows"], "relative_change": change},
                {"max_relative_change": drift.max_kept_rows_change},
                kind="drift.kept_rows",
            )
        )
    if old.get("language_mix") and metrics["language_mix"]:
        mix, before = metrics["language_mix"], old["language_mix"]
        shift = 0.5 * sum(abs(mix.get(k, 0.0) - before.get(k, 0.0)) for k in set(mix) | set(before))
        checks.append(
            Check(
                f"drift: language mix {vs}",
                shift <= drift.max_language_mix_shift,
                DEFAULT_SEVERITY["drift.language_mix"],
                {"total_variation": shift, "current": _top(mix), "previous": _top(before)},
                {"max_total_variation": drift.max_language_mix_shift},
                kind="drift.language_mix",
            )
        )
    for column, now in sorted(metrics["scores"].items()):
        then = (old.get("scores") or {}).get(column)
        if not then:
            continue
        pooled = math.sqrt((now["std"] ** 2 + then["std"] ** 2) / 2)
        delta = abs(now["mean"] - then["mean"])
        shift = delta / pooled if pooled > 1e-12 else (0.0 if delta <= 1e-12 else math.inf)
        checks.append(
            Check(
                f"drift: mean {column} {vs}",
                shift <= drift.max_score_mean_shift,
                DEFAULT_SEVERITY["drift.score_mean"],
                {"mean": now["mean"], "previous": then["mean"], "shift_in_std": shift if math.isfinite(shift) else "inf"},
                {"max_shift_in_std": drift.max_score_mean_shift},
                kind="drift.score_mean",
            )
        )
    for key, name, limit in (
        ("toxicity_rate", "toxicity rate", drift.max_toxicity_rate_change),
        ("dedup_ratio", "dedup ratio", drift.max_dedup_ratio_change),
    ):
        if old.get(key) is None or metrics[key] is None:
            continue
        change = abs(metrics[key] - old[key])
        checks.append(
            Check(
                f"drift: {name} {vs}",
                change <= limit,
                DEFAULT_SEVERITY[f"drift.{key}"],
                {key: metrics[key], "previous": old[key], "change": change},
                {"max_change": limit},
                kind=f"drift.{key}",
            )
        )
    return checks


def _top(mix: dict[str, float], n: int = 6) -> dict[str, float]:
    return {k: round(v, 4) for k, v in sorted(mix.items(), key=lambda kv: -kv[1])[:n]}


# --- outcome: override, HTML, metrics, notifications -----------------------------------------


def _apply_override(report: GateReport, cfg: BuildConfig) -> bool:
    """Record an override with a reason when critical checks failed; True if one was given without a reason."""
    override = cfg.gate.override
    if override is None or report.passed:
        return False
    reason = override.reason.strip()
    if not reason:
        return True
    report.override = {"reason": reason, "by": override.by}
    log.warning("gate of %s overridden by %s: %s", report.build_id, override.by or "unknown", reason)
    return False


def html_uri_for(report_uri: str) -> str:
    return report_uri.removesuffix(".json") + ".html"


def _write_html(report: GateReport, output: str, previous: PreviousRelease | None) -> str:
    from curation.gate_report_html import render_report

    uri = html_uri_for(output)
    report.html_uri = uri
    try:
        storage.write_bytes(uri, render_report(report, previous.metrics if previous else None).encode())
    except Exception:  # the page is for people: never let it hide the gate's verdict
        log.exception("could not write the gate report page %s", uri)
        return ""
    return uri


def _announce(report: GateReport, cfg: BuildConfig, notifiers: list | None) -> None:
    """Gauges for every gate run; notifications for failures, overrides and warnings. Never raises."""
    from curation.metrics import emit_gate_metrics
    from curation.notify import GateEvent, notifiers_from_config, send

    emit_gate_metrics(report, cfg.gate.metrics)
    event = GateEvent.from_report(report)
    if event.status == "passed" or event.status not in cfg.gate.notify.on:
        return
    if notifiers is None and not cfg.gate.notify.enabled:
        return
    send(event, notifiers if notifiers is not None else notifiers_from_config(cfg.gate.notify))


def _compact(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, default=str, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}
