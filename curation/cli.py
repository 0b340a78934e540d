"""`curation` command line: the whole build without Airflow, and one sub-command per stage."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from curation.config import BuildConfig, load_config
from curation.errors import CurationError, GateFailure
from curation.stats import StageStats

app = typer.Typer(help="Curate web crawls into pretraining corpora.", no_args_is_help=True, pretty_exceptions_enable=False)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML build config")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. heuristics.min_words=30")]


def _config(config: Path | None, overrides: list[str] | None, **extra: object) -> BuildConfig:
    cfg = load_config(config, overrides or [])
    return cfg.model_copy(update={k: v for k, v in extra.items() if v is not None}) if extra else cfg


def _fail(exc: CurationError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(3 if isinstance(exc, GateFailure) else 2)


def _run_stage(run: Callable[[], StageStats], output: str) -> StageStats | None:
    """Run one stage on a shard: a library error exits with its message; else write and print its stats."""
    from curation.layout import write_stats

    try:
        stats = run()
    except CurationError as exc:
        _fail(exc)
        return None
    write_stats(stats, output)
    typer.echo(stats.summary())
    return stats


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
    from curation.stats import FUNNEL_ORDER

    order = list(FUNNEL_ORDER)
    for stage, stats in sorted(funnel.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        drops = ", ".join(f"{k}={v}" for k, v in sorted(stats["dropped"].items())) or "none"
        typer.echo(f"{stage:>13}: {stats['rows_in']} in -> {stats['rows_out']} out (dropped: {drops})")


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

    _run_stage(lambda: run(inputs, output, _config(config, overrides)), output)


@app.command()
def dedup(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """Documents shards -> the table of exact duplicates to drop."""
    from curation.dedup.exact import plan_exact_dedup

    _run_stage(lambda: plan_exact_dedup(inputs, output, _config(config, overrides)), output)


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

    _run_stage(lambda: filter_shard(inputs, output, _config(config, overrides), duplicates=duplicates), output)


@app.command()
def score(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """Filtered shard -> the same rows with fastText quality/toxicity scores and PII counts (masked)."""
    from curation.scoring.documents import score_shard

    _run_stage(lambda: score_shard(inputs, output, _config(config, overrides)), output)


@app.command("select-plan")
def select_plan(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """Scored shards -> the selection plan: every rule's cut computed over the whole build."""
    from curation.select import describe_plan, plan_selection

    typer.echo(describe_plan(plan_selection(inputs, output, _config(config, overrides))))


@app.command("select")
def select_cmd(
    inputs: list[str],
    output: Annotated[str, typer.Option("--output", "-o")],
    plan: Annotated[str, typer.Option(help="plan from `curation select-plan`")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Scored shard -> the rows the plan keeps (the rest to dropped/ with their reason)."""
    from curation.select import select_shard

    _run_stage(lambda: select_shard(inputs, output, _config(config, overrides), plan), output)


BuildIdOpt = Annotated[str, typer.Option("--build-id", help="the build whose work files to use, e.g. 2026-W48")]
_STAGES_AFTER_INGEST = ("filter", "score", "select")


def _stage_outputs(cfg: BuildConfig, build_id: str) -> tuple[list[str], list[list[str]]]:
    """A build's ingest shards and, in order, the shards of each later stage it has run."""
    from curation import layout

    later = [layout.stage_outputs(cfg, build_id, stage) for stage in _STAGES_AFTER_INGEST]
    return layout.stage_outputs(cfg, build_id, "ingest"), [outputs for outputs in later if outputs]


@app.command()
def gate(build_id: BuildIdOpt, config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Validate a build's last stage's shards; exit 3 and print every failed check if the gate fails."""
    from curation.pipeline import run_gate_step

    cfg = _config(config, overrides)
    ingested, later = _stage_outputs(cfg, build_id)
    try:
        report = run_gate_step(cfg, build_id, ingested, *later)
    except CurationError as exc:
        _fail(exc)
        return
    if not report.passed and report.override:
        typer.echo(f"gate FAILED for {build_id} but is overridden ({report.override}); report {report.report_uri}")
        return
    typer.echo(f"gate passed for {build_id}: {report.rows} rows, {len(report.failed())} warning(s); report {report.report_uri}")


@app.command()
def publish(
    build_id: BuildIdOpt,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    force: Annotated[bool, typer.Option(help="replace an existing release with different content")] = False,
) -> None:
    """Publish a gated build's last stage's shards as a release (manifest last, then LATEST)."""
    from curation.pipeline import run_publish

    cfg = _config(config, overrides)
    try:
        _, later = _stage_outputs(cfg, build_id)
        manifest = run_publish(cfg, build_id, later[-1] if later else [], force=force)
    except CurationError as exc:
        _fail(exc)
        return
    typer.echo(f"release: {manifest.rsplit('/', 1)[0]}")


release_app = typer.Typer(help="Releases of the corpus: show (the default), list, rollback.", pretty_exceptions_enable=False)
app.add_typer(release_app, name="release")
ReleaseIdOpt = Annotated[Optional[str], typer.Option("--build-id", help="release id; defaults to the one LATEST points at")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
VerifyOpt = Annotated[bool, typer.Option(help="re-read every file and check bytes, sha256 and rows")]


@release_app.callback(invoke_without_command=True)
def release(
    ctx: typer.Context,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    build_id: ReleaseIdOpt = None,
    as_json: JsonOpt = False,
    verify: VerifyOpt = False,
) -> None:
    """Show a release: its size, files, gate result and drop funnel (`release show`, `list`, `rollback`)."""
    if ctx.invoked_subcommand is None:
        _show_release(config, overrides, build_id, as_json, verify)


@release_app.command("show")
def release_show(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    build_id: ReleaseIdOpt = None,
    as_json: JsonOpt = False,
    verify: VerifyOpt = False,
) -> None:
    """Show a release (LATEST by default); --verify re-reads every file against the manifest."""
    _show_release(config, overrides, build_id, as_json, verify)


def _show_release(config: Path | None, overrides: list[str] | None, build_id: str | None, as_json: bool, verify: bool) -> None:
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
    pairs = manifest.get("pairs") or {}
    if pairs:
        typer.echo(f"image-text pairs: {pairs['rows']} in {pairs.get('shard_count', 0)} WebDataset shard(s)")
    gate = manifest["gate"]
    typer.echo(f"gate passed: {gate['passed']}; config {manifest['config_hash'][:12]}; code {manifest['code_version']}")
    if gate.get("override"):
        typer.echo(f"published despite the gate: override by {gate['override'].get('by')}: {gate['override'].get('reason')}")
    if manifest.get("parent"):
        typer.echo(f"parent release: {manifest['parent']}")
    _echo_funnel(manifest["funnel"])
    if verify:
        from curation.release import manifest_files

        held = f"{manifest['rows']} rows" + (f" and {pairs['rows']} image-text pairs" if pairs else "")
        typer.echo(f"verified: {len(manifest_files(manifest))} file(s) match the manifest (bytes, sha256) and hold {held} in all")


@release_app.command("list")
def release_list(config: ConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Every release of the corpus, oldest first: live or withdrawn, and which one LATEST points at."""
    from curation.release import list_releases

    infos = [r.to_dict() for r in list_releases(_config(config, overrides))]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        typer.echo("no releases")
    for r in infos:
        mark = "*" if r["latest"] else " "
        if r["state"] == "withdrawn":
            w = r["withdrawn"] or {}
            typer.echo(f"{mark} {r['release_id']:<20} withdrawn, replaced by {w.get('superseded_by')} (ticket {w.get('ticket')})")
        else:
            gate = "override" if r["override"] else ("passed" if r["gate_passed"] else "failed")
            typer.echo(
                f"{mark} {r['release_id']:<20} {r['rows'] or 0:>10} docs {r['pairs'] or 0:>10} pairs {r['files']:>5} files "
                f"gate {gate:<8} parent {r['parent'] or '-'}  {r['created_at'] or ''}"
            )


@release_app.command("rollback")
def release_rollback(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    to: Annotated[Optional[str], typer.Option("--to", help="release id; default: the newest live one older than LATEST")] = None,
    reason: Annotated[str, typer.Option(help="why, for the audit record under _events/")] = "",
) -> None:
    """Move LATEST back to an earlier live release (checked: every file present with its size)."""
    from curation.release import rollback

    try:
        before, after = rollback(_config(config, overrides), to, reason)
    except CurationError as exc:
        _fail(exc)
        return
    typer.echo(f"LATEST: {before} -> {after}")


@app.command("train-classifier")
def train_classifier_cmd(
    positives: Annotated[list[str], typer.Option("--positives", help="JSONL / Parquet with a `text` column (file, glob)")],
    negatives: Annotated[list[str], typer.Option("--negatives", help="the same, for the negative class")],
    output: Annotated[str, typer.Option("--output", "-o", help="model file to write (local or s3://), e.g. models/quality.bin")],
    label: Annotated[str, typer.Option(help="labels are __label__<label> and __label__not_<label>")] = "quality",
    dim: int = 100,
    epoch: int = 5,
    lr: float = 0.1,
    word_ngrams: int = 2,
    bucket: Annotated[int, typer.Option(help="hash buckets for n-grams (model size ~ bucket x dim x 4 bytes)")] = 2_000_000,
    holdout: Annotated[float, typer.Option(help="share of each class held out for the evaluation report")] = 0.2,
    seed: int = 0,
) -> None:
    """Train a fastText classifier (DCLM / Ultra-FineWeb preprocessing, bigrams); writes MODEL, MODEL.sha256, MODEL.eval.json."""
    from curation.scoring.fasttext_classifier import TrainParams, train_classifier

    params = TrainParams(dim=dim, epoch=epoch, lr=lr, word_ngrams=word_ngrams, bucket=bucket, holdout=holdout, seed=seed)
    try:
        trained = train_classifier(positives, negatives, output, label, params)
    except CurationError as exc:
        _fail(exc)
        return
    test = trained.report["test"]
    typer.echo(f"model: {trained.model.uri}\nsha256: {trained.model.sha256}\nlabel: {trained.label}")
    typer.echo(
        f"held-out ({test['positives']} positives, {test['negatives']} negatives): ROC AUC {test['roc_auc']:.4f}, "
        f"precision {test['precision']:.4f}, recall {test['recall']:.4f} at {test['threshold']}"
    )
    typer.echo(f"report: {trained.report_uri}")


@app.command("train-demo-classifiers")
def train_demo_classifiers_cmd(out_dir: str, seed: Annotated[int, typer.Option(help="same seed, same model bytes")] = 0) -> None:
    """Train the demo's small quality and toxicity fastText models; print the `scoring` config that uses them."""
    import yaml

    from curation.scoring.fasttext_classifier import demo_scoring_overrides, train_demo_models

    typer.echo(yaml.safe_dump(demo_scoring_overrides(train_demo_models(out_dir, seed)), sort_keys=False), nl=False)


@app.command("train-filter-network")
def train_filter_network_cmd(
    output: Annotated[str, typer.Option("--output", "-o", help="checkpoint to write (local or s3://), e.g. models/dfn.pt")],
    pairs: Annotated[
        Optional[list[str]], typer.Option("--pairs", help="Parquet with pair_id, caption, image; file, glob or prefix/")
    ] = None,
    demo_pairs: Annotated[int, typer.Option(help="train on this many synthetic seed pairs instead of --pairs")] = 0,
    fine_tune: Annotated[bool, typer.Option(help="fine-tune the config's `clip` model instead of training the tiny one")] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    holdout: Annotated[float, typer.Option(help="share of pairs held out for the evaluation report")] = 0.2,
    seed: int = 0,
    cpu_threads: Annotated[Optional[int], typer.Option(help="torch threads on CPU (1 is fastest for the tiny model)")] = None,
) -> None:
    """Train a DFN-style CLIP filter network on high-quality pairs; writes MODEL, MODEL.sha256, MODEL.eval.json."""
    import pyarrow as pa

    from curation import storage
    from curation.errors import ConfigError
    from curation.scoring.clip import read_pairs
    from curation.scoring.filter_network import TrainSettings, train_filter_network
    from curation.scoring.scenes import make_seed_pairs

    try:
        cfg = _config(config, overrides)
        if demo_pairs:
            table = make_seed_pairs(demo_pairs, seed)
        elif pairs:
            uris = storage.expand_inputs(pairs)
            if not uris:
                raise ConfigError(f"no files match --pairs {pairs}")
            table = pa.concat_tables([read_pairs(u, columns=["pair_id", "caption", "image"]) for u in uris])
        else:
            raise ConfigError("give --pairs (Parquet with pair_id, caption, image) or --demo-pairs N")
        settings = TrainSettings(
            epochs=epochs, batch_size=batch_size, lr=lr, holdout_fraction=holdout, seed=seed, cpu_threads=cpu_threads
        )
        ref, report = train_filter_network(
            table, output, base=cfg.clip if fine_tune else None, settings=settings, max_image_pixels=cfg.clip.max_image_pixels
        )
    except CurationError as exc:
        _fail(exc)
        return
    typer.echo(f"model: {ref.uri}\nsha256: {ref.sha256}\nsource: {report['source']}")
    typer.echo(
        f"held-out ({report['heldout_pairs']} pairs): AUC matched vs shuffled captions "
        f"{report['heldout_auc_matched_vs_shuffled']:.4f}, top-1 image->text {report['heldout_top1_image_to_text']:.4f}"
    )
    typer.echo(f"use it: --set clip.checkpoint.uri={ref.uri} --set clip.checkpoint.sha256={ref.sha256}")


@app.command("train-nsfw-head")
def train_nsfw_head_cmd(
    positives: Annotated[list[str], typer.Option("--positives", help="unsafe examples: Parquet with image (or clip_embedding)")],
    negatives: Annotated[list[str], typer.Option("--negatives", help="safe examples, same columns")],
    output: Annotated[str, typer.Option("--output", "-o", help="head to write (local or s3://), e.g. models/nsfw_head.pt")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    hidden: Annotated[Optional[list[int]], typer.Option(help="hidden layer widths; none = logistic regression")] = None,
    holdout: Annotated[float, typer.Option(help="share of each class held out for the evaluation report")] = 0.25,
    seed: int = 0,
) -> None:
    """Train the image safety head on CLIP embeddings of the config's `clip` model; writes MODEL, .sha256, .eval.json."""
    from curation.scoring.image_safety import labelled_embeddings, train_nsfw_head

    try:
        cfg = _config(config, overrides)
        embeddings, labels, model_id = labelled_embeddings(positives, negatives, cfg.clip)
        ref, report = train_nsfw_head(
            embeddings, labels, output, embedding_model=model_id, hidden=hidden, holdout_fraction=holdout, seed=seed
        )
    except CurationError as exc:
        _fail(exc)
        return
    test = report["test"]
    typer.echo(f"model: {ref.uri}\nsha256: {ref.sha256}\nembeddings of: {model_id}")
    typer.echo(
        f"held-out ({test['positives']} positives, {test['negatives']} negatives): ROC AUC {test['roc_auc']:.4f}, "
        f"precision {test['precision']:.4f}, recall {test['recall']:.4f} at {test['threshold']}"
    )
    typer.echo(f"use it: --set clip.nsfw_head.uri={ref.uri} --set clip.nsfw_head.sha256={ref.sha256}")


@app.command("train-demo-image-models")
def train_demo_image_models_cmd(
    out_dir: str, seed: Annotated[int, typer.Option(help="same seed, same training data")] = 0
) -> None:
    """Train the demo's tiny CLIP filter network and stand-in safety head; print the `clip` config that uses them."""
    import yaml

    from curation.scoring.image_safety import demo_clip_overrides, train_demo_image_models

    typer.echo(yaml.safe_dump(demo_clip_overrides(train_demo_image_models(out_dir, seed)), sort_keys=False), nl=False)


@app.command()
def takedown(
    urls: Annotated[Optional[Path], typer.Option("--urls", help="file with one URL per line")] = None,
    hashes: Annotated[Optional[Path], typer.Option("--hashes", help="file with one text_hash per line")] = None,
    ticket: Annotated[Optional[str], typer.Option(help="request id or reason, kept with the blocklist entries")] = None,
    build_ids: Annotated[Optional[list[str]], typer.Option("--build-id", help="only these releases (default: all live)")] = None,
    keep_old: Annotated[bool, typer.Option(help="keep the replaced revisions instead of withdrawing them")] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Blocklist URLs / text hashes and rewrite every live release holding them into a new revision."""
    import datetime as dt
    import getpass

    from curation.takedown import read_values
    from curation.takedown import takedown as run_takedown

    if urls is None and hashes is None:
        typer.secho("error: give --urls FILE or --hashes FILE (or both)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    try:
        result = run_takedown(
            _config(config, overrides),
            urls=read_values(urls) if urls else None,
            hashes=read_values(hashes) if hashes else None,
            ticket=ticket or f"cli {getpass.getuser()} {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%MZ}",
            releases=build_ids,
            purge=not keep_old,
        )
    except (CurationError, OSError) as exc:
        _fail(exc if isinstance(exc, CurationError) else CurationError(str(exc)))
        return
    typer.echo(f"blocklist: +{result.added.get('url', 0)} URL(s), +{result.added.get('text_hash', 0)} text hash(es)")
    for old, new in result.revisions.items():
        typer.echo(f"{old} -> {new}: {result.removed[old]} row(s) removed")
    if not result.revisions:
        typer.echo("no live release held a matching row")
    typer.echo(f"LATEST: {result.latest}")


@app.command("fetch-images")
def fetch_images_cmd(
    inputs: list[str],
    output: Annotated[str, typer.Option("--output", "-o")],
    crawl_images: Annotated[
        list[str] | None, typer.Option("--crawl-images", help="with ingest.fetch.source=warc: ingest's images/ tables")
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Image-text candidates (ingest's pairs/ shards) -> the same rows with image bytes and a status each."""
    from curation.ingest.fetch import fetch_images
    from curation.layout import fetch_report_uri
    from curation.storage import read_json

    if _run_stage(lambda: fetch_images(inputs, output, _config(config, overrides), crawl_images), output) is None:
        return
    report = read_json(fetch_report_uri(output))
    typer.echo(f"success rate {report['success_rate']}; by status {report['by_status']}")


@app.command("inputs")
def inputs_cmd(
    patterns: list[str],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    shard_limit: Annotated[Optional[int], typer.Option()] = None,
) -> None:
    """Print the shard files inputs resolve to: globs, prefix/, Common Crawl listings (warc.paths.gz, cc:CC-MAIN-2024-22/wet)."""
    from curation.ingest.cc_paths import resolve_inputs

    try:
        files = resolve_inputs(patterns, _config(config, overrides, shard_limit=shard_limit))
    except CurationError as exc:
        _fail(exc)
        return
    for uri in files:
        typer.echo(uri)


@app.command("dedup-near")
def dedup_near(
    inputs: list[str],
    output: Annotated[str, typer.Option("--output", "-o")],
    work: Annotated[Optional[str], typer.Option(help="folder for signatures/ and lsh/ (default: next to output)")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Documents shards -> near-duplicates (MinHash LSH, plus the cross-build index) to drop."""
    from curation.dedup.lsh import plan_near_dedup
    from curation.storage import parquet_rows

    try:
        stats = plan_near_dedup(inputs, output, _config(config, overrides), work=work)
    except CurationError as exc:
        _fail(exc)
        return
    typer.echo(f"{stats.summary()}\n{parquet_rows(output)} near-duplicates to drop: {output}")


@app.command("dedup-url")
def dedup_url(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """Documents shards -> pages whose normalized URL an earlier doc_id has."""
    from curation.dedup.exact import plan_url_dedup

    _run_stage(lambda: plan_url_dedup(inputs, output, _config(config, overrides)), output)


@app.command("dedup-images")
def dedup_images_cmd(
    inputs: list[str], output: Annotated[str, typer.Option("--output", "-o")], config: ConfigOpt = None, overrides: SetOpt = None
) -> None:
    """Image-text pairs shards -> image duplicates (sha256, pHash, SemDeDup) and undecodable images."""
    from curation import storage
    from curation.dedup.images import compute_image_keys, plan_image_dedup

    def run() -> StageStats:
        cfg = _config(config, overrides)
        keys = []
        for i, uri in enumerate(inputs):
            keys.append(storage.join(output.rsplit("/", 1)[0], "image-keys", f"{i:05d}.parquet"))
            compute_image_keys([uri], keys[-1], cfg)
        return plan_image_dedup(keys, output, cfg)

    _run_stage(run, output)


@app.command("dedup-index-add")
def dedup_index_add(
    build_id: BuildIdOpt,
    signatures: Annotated[list[str], typer.Option("--signatures", help="the build's signature shards")],
    published: Annotated[list[str], typer.Option("--published", help="the release's data files")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Add a published build's signatures to the cross-build dedup index (run after publish)."""
    from curation.dedup.index import add_to_index

    try:
        typer.echo(add_to_index(signatures, published, _config(config, overrides), build_id).summary())
    except CurationError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
