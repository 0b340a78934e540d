"""`curation` command line: the whole build without Airflow, and one sub-command per stage."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from curation.config import BuildConfig, load_config
from curation.errors import CurationError, GateFailure

app = typer.Typer(help="Curate web crawls into pretraining corpora.", no_args_is_help=True, pretty_exceptions_enable=False)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML build config")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. heuristics.min_words=30")]


def _config(config: Path | None, overrides: list[str] | None, **extra: object) -> BuildConfig:
    cfg = load_config(config, overrides or [])
    return cfg.model_copy(update={k: v for k, v in extra.items() if v is not None}) if extra else cfg


def _fail(exc: CurationError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(3 if isinstance(exc, GateFailure) else 2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def build(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    inputs: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="input WARC file, glob or prefix/")] = None,
    build_id: Annotated[Optional[str], typer.Option(help="defaults to the ISO week, e.g. 2026-W48")] = None,
) -> None:
    """Run the whole pipeline (ingest -> dedup -> filter -> gate -> publish) in this process."""
    from curation.pipeline import run_build

    try:
        cfg = load_config(config, (overrides or []) + ([f"build_id={build_id}"] if build_id else []))
        if inputs:
            cfg = cfg.model_copy(update={"inputs": inputs})
        summary = run_build(cfg, progress=sys.stderr.isatty())
    except CurationError as exc:
        _fail(exc)
        return
    _echo_funnel(summary["funnel"])
    typer.echo(f"build {summary['build_id']}: {summary['rows']} documents passed the gate")
    if summary["manifest"]:
        typer.echo(f"release: {summary['manifest'].rsplit('/', 1)[0]}")
        typer.echo(f"manifest: {summary['manifest']}")
    else:
        typer.echo(f"publish disabled (dry run); gate report: {summary['gate_report']}")


def _echo_funnel(funnel: dict) -> None:
    order = ["ingest", "dedup", "filter", "publish"]
    for stage, stats in sorted(funnel.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        drops = ", ".join(f"{k}={v}" for k, v in sorted(stats["dropped"].items())) or "none"
        typer.echo(f"{stage:>8}: {stats['rows_in']} in -> {stats['rows_out']} out (dropped: {drops})")


@app.command("sample-crawl")
def sample_crawl(
    out: Path,
    pages: Annotated[int, typer.Option(help="page records in total")] = 200,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    files: Annotated[int, typer.Option(help="number of WARC.gz files")] = 2,
) -> None:
    """Write a deterministic sample crawl (WARC.gz) that exercises every filter."""
    from curation.ingest.sample_crawl import write_sample_crawl

    for path in write_sample_crawl(str(out), pages=pages, seed=seed, files=files):
        typer.echo(path)


@app.command()
def ingest(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """WARC files -> one documents Parquet shard."""
    from curation.ingest.warc import ingest as run
    from curation.layout import write_stats

    try:
        stats = run(inputs, output, _config(config, overrides))
    except CurationError as exc:
        _fail(exc)
        return
    write_stats(stats, output)
    typer.echo(stats.summary())


@app.command()
def dedup(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """Documents shards -> the table of exact duplicates to drop."""
    from curation.dedup.exact import plan_exact_dedup

    typer.echo(plan_exact_dedup(inputs, output, _config(config, overrides)).summary())


@app.command("filter")
def filter_cmd(
    inputs: list[str],
    output: Annotated[str, typer.Option("--output", "-o")],
    duplicates: Annotated[Optional[str], typer.Option(help="dedup plan from `curation dedup`")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Documents shard -> kept documents with heuristic signal columns."""
    from curation.filtering import filter_shard
    from curation.layout import write_stats

    stats = filter_shard(inputs, output, _config(config, overrides), duplicates=duplicates)
    write_stats(stats, output)
    typer.echo(stats.summary())


BuildIdOpt = Annotated[str, typer.Option("--build-id", help="the build whose work files to use, e.g. 2026-W48")]


@app.command()
def gate(build_id: BuildIdOpt, config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Validate a build's filtered shards; exit 3 and print every failed check if the gate fails."""
    from curation import layout
    from curation.pipeline import run_gate_step

    cfg = _config(config, overrides)
    try:
        report = run_gate_step(
            cfg, build_id, layout.stage_outputs(cfg, build_id, "ingest"), layout.stage_outputs(cfg, build_id, "filter")
        )
    except CurationError as exc:
        _fail(exc)
        return
    typer.echo(f"gate passed for {build_id}: {report.rows} rows, {len(report.failed())} warning(s); report {report.report_uri}")


@app.command()
def publish(
    build_id: BuildIdOpt,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    force: Annotated[bool, typer.Option(help="replace an existing release with different content")] = False,
) -> None:
    """Publish a gated build's filtered shards as a release (manifest last, then LATEST)."""
    from curation import layout
    from curation.pipeline import run_publish

    cfg = _config(config, overrides)
    try:
        manifest = run_publish(cfg, build_id, layout.stage_outputs(cfg, build_id, "filter"), force=force)
    except CurationError as exc:
        _fail(exc)
        return
    typer.echo(f"release: {manifest.rsplit('/', 1)[0]}")


@app.command()
def release(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    build_id: Annotated[Optional[str], typer.Option(help="defaults to the release LATEST points at")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole manifest")] = False,
    verify: Annotated[bool, typer.Option(help="re-read every file and check bytes, sha256 and rows")] = False,
) -> None:
    """Show a release: its size, files, gate result and drop funnel."""
    from curation.publish import read_manifest, verify_release

    cfg = _config(config, overrides)
    try:
        manifest = verify_release(cfg, build_id) if verify else read_manifest(cfg, build_id)
    except CurationError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    files = len(manifest["files"])
    typer.echo(f"corpus {manifest['corpus']}, build {manifest['build_id']}: {manifest['rows']} documents in {files} file(s)")
    typer.echo(
        f"gate passed: {manifest['gate']['passed']}; config {manifest['config_hash'][:12]}; code {manifest['code_version']}"
    )
    _echo_funnel(manifest["funnel"])
    if verify:
        typer.echo(f"verified: {files} file(s) match the manifest (bytes, sha256) and hold {manifest['rows']} rows in all")


if __name__ == "__main__":
    app()
