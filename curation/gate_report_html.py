"""The gate report as one self-contained HTML page for the person on call.

Status and override first, then every failed check, every check with observed vs expected, the
drop funnel, the language mix and one histogram per score column with the previous release's
histogram drawn over it (inline SVG: no scripts, no external assets, so it opens anywhere,
including from S3 or as an Airflow log link).
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation.gates import Check, GateReport

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin:0 0 .3em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.banner{padding:.6em 1em;border-radius:6px;font-weight:600;margin:1em 0}
.passed{background:#e6f4ea;color:#137333}.failed{background:#fce8e6;color:#a50e0e}
.overridden{background:#fef7e0;color:#8a4b00}.warning{background:#fef7e0;color:#8a4b00}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f5f5f5}tr.fail td{background:#fff4f2}tr.warn td{background:#fffbe6}
pre{margin:0;white-space:pre-wrap;word-break:break-word;font-size:12px;max-height:14em;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;border:1px solid #ddd;padding:.5em;width:340px}
figcaption{font-size:12px}svg .cur{fill:#4285f4;fill-opacity:.55}svg .prev{fill:none;stroke:#e8710a;stroke-width:1.5}
.legend span{display:inline-block;width:1em;height:.7em;margin:0 .3em 0 1em}
"""
_W, _H, _PAD = 320, 120, 4


def render_report(report: GateReport, previous_metrics: dict[str, Any] | None = None) -> str:
    """The whole page for `report`; `previous_metrics` is the compared release's report metrics."""
    previous_metrics = previous_metrics or {}
    status, banner = _status(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Gate report {_e(report.corpus)} {_e(report.build_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Gate report: {_e(report.corpus)} / {_e(report.build_id)}</h1>",
        f'<div class="banner {status}" id="status" data-status="{status}">{_e(banner)}</div>',
        _summary(report),
    ]
    if report.override:
        parts.append(
            '<h2>Override</h2><p id="override">Published despite failed critical checks by '
            f"<b>{_e(report.override.get('by') or 'unknown')}</b>. Reason: {_e(report.override.get('reason'))}</p>"
        )
    failed = report.failed()
    if failed:
        parts.append(f"<h2>Failed checks ({len(failed)})</h2>")
        parts.append(_checks_table(sorted(failed, key=lambda c: c.severity != "critical"), "failed-checks"))
    parts.append(f"<h2>All checks ({len(report.checks)})</h2>")
    parts.append(_checks_table(report.checks, "checks"))
    parts.append(_funnel(report))
    parts.append(_languages(report.metrics or {}, previous_metrics))
    parts.append(_histograms(report.metrics or {}, previous_metrics, (report.previous or {}).get("build_id")))
    parts.append("</body></html>")
    return "\n".join(parts)


def _status(report: GateReport) -> tuple[str, str]:
    critical, warnings = len(report.failed("critical")), len(report.failed("warning"))
    if critical and report.override:
        return "overridden", f"OVERRIDDEN: {critical} critical check(s) failed; published by override"
    if critical:
        return "failed", f"FAILED: {critical} critical check(s) failed; not published"
    if warnings:
        return "warning", f"PASSED with {warnings} warning(s)"
    return "passed", "PASSED: every check succeeded"


def _summary(report: GateReport) -> str:
    previous = (report.previous or {}).get("build_id") or "none (drift not checked)"
    rows = [
        ("Build", report.build_id),
        ("Corpus", report.corpus),
        ("Kept documents", f"{report.rows:,}"),
        ("Compared with release", previous),
        ("Machine-readable report", report.report_uri),
        ("Gate time", f"{report.seconds:.1f} s"),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table id="summary">{body}</table>'


def _checks_table(checks: list[Check], table_id: str) -> str:
    head = "<tr><th>Check</th><th>Severity</th><th>Result</th><th>Observed</th><th>Expected</th></tr>"
    rows = []
    for check in checks:
        cls = "" if check.success else ("fail" if check.severity == "critical" else "warn")
        rows.append(
            f'<tr class="{cls}" data-check="{_e(check.name)}" data-kind="{_e(check.kind)}">'
            f"<td>{_e(check.name)}</td><td>{_e(check.severity)}</td><td>{'pass' if check.success else 'FAIL'}</td>"
            f"<td><pre>{_e(_json(check.observed))}</pre></td><td><pre>{_e(_json(check.expected))}</pre></td></tr>"
        )
    return f'<table id="{table_id}">{head}{"".join(rows)}</table>'


def _funnel(report: GateReport) -> str:
    rows = []
    for stage, s in report.funnel.items():
        ratio = s["rows_out"] / s["rows_in"] if s.get("rows_in") else None
        drops = ", ".join(f"{k}: {v:,}" for k, v in sorted((s.get("dropped") or {}).items(), key=lambda kv: -kv[1]))
        rows.append(
            f"<tr><td>{_e(stage)}</td><td>{s['rows_in']:,}</td><td>{s['rows_out']:,}</td>"
            f"<td>{_pct(ratio)}</td><td>{_e(drops or 'none')}</td></tr>"
        )
    metrics = report.metrics or {}
    extra = (
        f"<p>Dedup ratio {_pct(metrics.get('dedup_ratio'))}; toxicity rate {_pct(metrics.get('toxicity_rate'))}"
        " (shares of extracted documents).</p>"
    )
    head = "<tr><th>Stage</th><th>In</th><th>Out</th><th>Kept</th><th>Dropped by reason</th></tr>"
    return f'<h2>Drop funnel</h2><table id="funnel">{head}{"".join(rows)}</table>{extra}'


def _languages(metrics: dict[str, Any], previous: dict[str, Any]) -> str:
    mix, before = metrics.get("language_mix") or {}, previous.get("language_mix") or {}
    counts = metrics.get("language_counts") or {}
    keys = sorted(set(mix) | set(before), key=lambda k: -(mix.get(k, 0.0) + before.get(k, 0.0)))
    head = "<tr><th>Language</th><th>Documents</th><th>Share</th><th>Previous share</th></tr>"
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{counts.get(k, 0):,}</td><td>{_pct(mix.get(k, 0.0))}</td>"
        f"<td>{_pct(before.get(k)) if before else 'n/a'}</td></tr>"
        for k in keys
    )
    return f'<h2>Language mix</h2><table id="languages">{head}{rows}</table>'


def _histograms(metrics: dict[str, Any], previous: dict[str, Any], previous_id: str | None) -> str:
    current, before = metrics.get("histograms") or {}, previous.get("histograms") or {}
    scores, old_scores = metrics.get("scores") or {}, previous.get("scores") or {}
    legend = '<p class="legend"><span style="background:#4285f4;opacity:.55"></span>this build'
    if previous_id:
        legend += f'<span style="background:#e8710a"></span>previous release {_e(previous_id)}'
    figures = []
    for column in sorted(current):
        mean = scores.get(column, {}).get("mean")
        old_mean = old_scores.get(column, {}).get("mean")
        caption = f"<b>{_e(column)}</b>: mean {_num(mean)}" + (f" (previous {_num(old_mean)})" if old_mean is not None else "")
        outside = current[column].get("outside") or 0
        if outside:
            caption += f"; {outside:,} value(s) outside the bins, counted in the end bins"
        figures.append(
            f'<figure class="histogram" data-column="{_e(column)}">{_svg(column, current[column], before.get(column))}'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return f'<h2>Score distributions</h2>{legend}</p><div class="grid" id="histograms">{"".join(figures)}</div>'


def _svg(column: str, hist: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """Bars: this build's share per bin. Line: the previous release's share per bin (same axis)."""
    series = [hist] + ([previous] if previous and previous.get("edges") else [])
    lo = min(s["edges"][0] for s in series)
    hi = max(s["edges"][-1] for s in series)
    span = (hi - lo) or 1.0
    shares = [_shares(s["counts"]) for s in series]
    top = max((max(s) for s in shares if s), default=0.0) or 1.0

    def x(value: float) -> float:
        return _PAD + (value - lo) / span * (_W - 2 * _PAD)

    def y(share: float) -> float:
        return _H - _PAD - share / top * (_H - 2 * _PAD)

    edges = hist["edges"]
    bars = "".join(
        f'<rect class="cur" x="{x(edges[i]):.1f}" y="{y(share):.1f}" width="{max(x(edges[i + 1]) - x(edges[i]) - 1, 0.5):.1f}" '
        f'height="{_H - _PAD - y(share):.1f}"/>'
        for i, share in enumerate(shares[0])
    )
    line = ""
    if len(series) > 1:
        pedges, points = series[1]["edges"], []
        for i, share in enumerate(shares[1]):
            points += [f"{x(pedges[i]):.1f},{y(share):.1f}", f"{x(pedges[i + 1]):.1f},{y(share):.1f}"]
        line = f'<polyline class="prev" points="{" ".join(points)}"/>'
    axis = f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>'
    labels = (
        f'<text x="{_PAD}" y="{_H + 12}" font-size="10">{_num(lo)}</text>'
        f'<text x="{_W - _PAD}" y="{_H + 12}" font-size="10" text-anchor="end">{_num(hi)}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H + 16}" role="img">'
        f"<title>{_e(column)} histogram</title>{bars}{line}{axis}{labels}</svg>"
    )


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0 for _ in counts]


def _json(value: Any, limit: int = 20_000) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
