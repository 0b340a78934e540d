"""The data card of a release: README.md with counts, the drop funnel, languages, score histograms.

Profiles are computed from the staged release files (only the columns they need), so the card
describes exactly what was published. Histograms come from a deterministic sample (every k-th
row) of at most `SAMPLE_ROWS` rows, drawn with matplotlib's Agg canvas (no pyplot, no display),
and saved without the software-version stamp so the same data gives the same PNG bytes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.stats import FUNNEL_ORDER, PAIR_STAGES

SAMPLE_ROWS = 100_000
_NOT_SCORES = ("_offset", "_id", "_ms")


@dataclass
class Profile:
    """What the card says about one table: rows, category counts and sampled numeric columns."""

    rows: int = 0
    categories: dict[str, Counter[str]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    sampled: int = 0


def _is_score(f: pa.Field) -> bool:
    numeric = pa.types.is_floating(f.type) or pa.types.is_integer(f.type)
    return numeric and not f.name.endswith(_NOT_SCORES)


def profile_parquet(
    paths: list[Path], categories: tuple[str, ...] = ("language",), derived_lengths: tuple[str, ...] = ()
) -> Profile:
    """Profile Parquet files: value counts of `categories`, a sample of every numeric column,
    and the character length of each `derived_lengths` column (e.g. captions) as `{name}_chars`."""
    profile = Profile()
    if not paths:
        return profile
    schema = pq.read_schema(paths[0])
    scores = [f.name for f in schema if _is_score(f)]
    cats = [c for c in categories if c in schema.names]
    lengths = [c for c in derived_lengths if c in schema.names]
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    stride = max(1, math.ceil(total / SAMPLE_ROWS))
    samples: dict[str, list[np.ndarray]] = {name: [] for name in [*scores, *(f"{c}_chars" for c in lengths)]}
    offset = 0
    for path in paths:
        table = pq.read_table(path, columns=[*scores, *cats, *lengths])
        n = table.num_rows
        for name in cats:
            counts = profile.categories.setdefault(name, Counter())
            for item in pc.value_counts(table[name]).to_pylist():
                counts[str(item["values"])] += item["counts"]
        # Global row i is sampled when i % stride == 0.
        take = np.arange((-offset) % stride, n, stride)
        for name in scores:
            samples[name].append(_floats(table[name].take(take)))
        for name in lengths:
            samples[f"{name}_chars"].append(_floats(pc.utf8_length(table[name].take(take))))
        offset += n
        profile.sampled += len(take)
    profile.rows = total
    profile.numeric = {name: np.concatenate(parts) if parts else np.array([]) for name, parts in samples.items()}
    return profile


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False) if isinstance(column, pa.Array) else column.to_numpy()
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def histogram_png(path: Path, numeric: dict[str, np.ndarray], title: str) -> bool:
    """One grid of histograms, one panel per column; False if there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [name for name, values in numeric.items() if len(values)]
    if not columns:
        return False
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.0 * nrows + 0.4), dpi=72)
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax, name in zip(axes, columns, strict=False):
        counts, edges = np.histogram(numeric[name], bins=40)
        ax.stairs(counts, edges, fill=True, color="#4477aa")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    # Fixed margins: tight_layout costs more than the drawing itself.
    fig.subplots_adjust(hspace=0.65, wspace=0.3, left=0.05, right=0.98, top=1 - 0.5 / (2.0 * nrows + 0.4), bottom=0.04)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


def _sample_note(profile: Profile, what: str) -> str:
    stride = max(1, math.ceil(profile.rows / SAMPLE_ROWS))
    if stride == 1:
        return f"Over all {profile.rows:,} {what}."
    return f"From a sample of {profile.sampled:,} of {profile.rows:,} {what} (every {stride}-th row)."


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _stage_order(stage: str) -> tuple[float, str]:
    """Pipeline order; stages this module does not know go just before publishing."""
    return (FUNNEL_ORDER.index(stage) if stage in FUNNEL_ORDER else FUNNEL_ORDER.index("publish") - 0.5, stage)


def _is_pairs_stage(stage: str) -> bool:
    return stage in PAIR_STAGES or "pair" in stage or "image" in stage


def _scores_section(profile: Profile, name: str, title: str, out_dir: Path, m: dict, written: list[Path]) -> list[str]:
    """Markdown for a table's score histograms (card/{name}_scores.png, added to `written`); [] without scores."""
    png = out_dir / "card" / f"{name}_scores.png"
    if not histogram_png(png, profile.numeric, f"{m['corpus']} {m['build_id']}: {name}"):
        return []
    written.append(png)
    return [
        f"## {title} scores",
        "",
        _sample_note(profile, name),
        "",
        f"![{title.lower()} score histograms](card/{name}_scores.png)",
        "",
        *_summary_lines(profile.numeric),
        "",
    ]


def funnel_lines(funnel: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: rows per stage, then every drop reason with its share of the stage's input and of
    everything that entered its chain (documents from ingest; image-text pairs from their first stage)."""
    stages = sorted(funnel, key=_stage_order)
    firsts = {
        chain: next((funnel[s]["rows_in"] for s in stages if _is_pairs_stage(s) == chain and funnel[s].get("rows_in")), 0)
        for chain in (False, True)
    }
    lines = ["| stage | rows in | rows out | dropped |", "|---|---:|---:|---:|"]
    for stage in stages:
        s = funnel[stage]
        lines.append(f"| {stage} | {s['rows_in']:,} | {s['rows_out']:,} | {sum(s['dropped'].values()):,} |")
    lines += ["", "| stage | reason | rows | share of stage input | share of all input |", "|---|---|---:|---:|---:|"]
    for stage in stages:
        s = funnel[stage]
        first = firsts[_is_pairs_stage(stage)]
        for reason, count in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            stage_share = count / s["rows_in"] if s["rows_in"] else 0.0
            all_share = count / first if first else 0.0
            lines.append(f"| {stage} | {reason} | {count:,} | {stage_share:.1%} | {all_share:.1%} |")
    return lines


def _summary_lines(numeric: dict[str, np.ndarray]) -> list[str]:
    lines = ["| column | min | p10 | median | p90 | max | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, values in numeric.items():
        if len(values):
            p10, p50, p90 = np.percentile(values, [10, 50, 90])
            lines.append(
                f"| {name} | {values.min():.4g} | {p10:.4g} | {p50:.4g} | {p90:.4g} | {values.max():.4g} | {values.mean():.4g} |"
            )
    return lines


def _count_lines(counts: Counter[str], label: str, total: int) -> list[str]:
    lines = [f"| {label} | rows | share |", "|---|---:|---:|"]
    for value, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {value} | {count:,} | {count / total:.1%} |" if total else f"| {value} | {count:,} | |")
    return lines


def _loading_lines(release: str, manifest: dict[str, Any]) -> list[str]:
    s3 = release.startswith("s3://")
    docs = f"{release}/data/*.parquet"
    lines = ["## How to load it", ""]
    if s3:
        lines += [
            "The release is on S3: credentials and endpoint come from the usual AWS environment",
            "(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` for S3-compatible stores).",
            "",
        ]
    if manifest.get("files"):
        lines += [
            "```python",
            "# Hugging Face datasets" + (" (needs s3fs for s3://)" if s3 else ""),
            "from datasets import load_dataset",
            f'docs = load_dataset("parquet", data_files="{docs}", split="train")',
            "",
            "# pyarrow",
            "import pyarrow.dataset as ds",
            f'table = ds.dataset("{release}/data/", format="parquet").to_table()',
            "",
            "# polars",
            "import polars as pl",
            f'frame = pl.scan_parquet("{docs}").collect()',
            "",
            "# duckdb" + (" (LOAD httpfs for s3://)" if s3 else ""),
            "import duckdb",
            f"duckdb.sql(\"SELECT language, count(*) FROM read_parquet('{docs}') GROUP BY ALL\")",
            "```",
            "",
        ]
    pairs = manifest.get("pairs") or {}
    if pairs.get("shards"):
        pattern = f"{release}/{pairs['shards']}"
        lines += [
            "Image-text pairs are WebDataset shards (`{key}.jpg|png`, `{key}.txt`, `{key}.json`) with `sizes.json`:",
            "",
            "```python",
            "import webdataset as wds",
            f'pairs = wds.WebDataset("{pattern}", shardshuffle=False).decode("pilrgb").to_tuple("jpg;png", "txt")',
            "```",
            "",
            "open_clip: `python -m open_clip_train.main --dataset-type webdataset "
            f"--train-data '{pattern}' ...` (sample count from `sizes.json`). open_clip_train 3.3 with "
            "webdataset >= 0.2.96 needs `eof_value=None` in its `tarfile_to_samples_nothrow` (open_clip issue 935).",
            "",
        ]
    lines += [
        "Every file is listed in `manifest.json` with its size, SHA256 and row count; "
        f"check them with `curation release show --build-id {manifest['build_id']} --verify`.",
        "",
    ]
    return lines


def write_data_card(
    out_dir: Path,
    manifest: dict[str, Any],
    release: str,
    documents: Profile,
    pairs: Profile | None = None,
) -> list[Path]:
    """Write README.md (and card/*.png) into `out_dir`; returns the files written, README first."""
    written: list[Path] = []
    m = manifest
    gate = m.get("gate") or {}
    lines = [f"# {m['corpus']} — release {m['build_id']}", ""]
    summary = f"**{m['rows']:,} documents** in {len(m.get('files', []))} Parquet file(s)"
    pair_info = m.get("pairs") or {}
    if pair_info:
        summary += f", **{pair_info['rows']:,} image-text pairs** in {pair_info.get('shard_count', 0)} WebDataset shard(s)"
    lines += [summary + f"; {_human(m.get('bytes', 0))} in all.", ""]
    lines += [
        f"- build: `{m['base_build_id']}`, revision {m.get('revision', 0)}; parent release: `{m.get('parent') or 'none'}`",
        f"- config hash: `{m['config_hash']}`; code version: `{m['code_version']}`",
        f"- inputs: {len(m.get('inputs', []))} crawl file(s), {len(m.get('shards_in', []))} curated shard(s)",
        f"- quality gate: {'passed' if gate.get('passed') else 'FAILED'} (report: `gate_report.json`)",
    ]
    if gate.get("override"):
        o = gate["override"]
        lines.append(f"- **published despite a failed gate**: override by {o.get('by', '?')}: {o.get('reason', '')}")
    if m.get("takedown"):
        t = m["takedown"]
        lines.append(f"- takedown revision: {t['rows_removed']:,} row(s) removed (ticket `{t.get('ticket', '')}`)")
    lines.append("")
    lines += _loading_lines(release, m)
    lines += ["## Drop funnel", "", *funnel_lines(m.get("funnel", {})), ""]
    if documents.categories.get("language"):
        lines += ["## Languages", "", *_count_lines(documents.categories["language"], "language", documents.rows), ""]
    lines += _scores_section(documents, "documents", "Document", out_dir, m, written)
    if pairs is not None and pairs.rows:
        if pairs.categories.get("image_format"):
            lines += ["## Image formats", "", *_count_lines(pairs.categories["image_format"], "format", pairs.rows), ""]
        lines += _scores_section(pairs, "pairs", "Image-text pair", out_dir, m, written)
    if m.get("schema"):
        lines += ["## Documents schema", "", "| column | type | description |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['type']} | {c['doc']} |" for c in m["schema"]]
        lines.append("")
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines))
    return [readme, *written]
