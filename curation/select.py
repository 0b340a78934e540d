"""Selection: turn score columns into keep / drop, with the reason, by cuts computed over the whole build.

Two steps, so a percentile means the same thing whatever the sharding:

1. `plan_selection` (one task) reads only the columns the rules need from every shard and
   computes each rule's cut: an absolute threshold as configured (LAION's CLIP score 0.28), or the
   value that keeps `top_fraction` of the rows reaching the rule (DataComp top 30%, DFN top 15%,
   DCLM top 10%), then the optional budget cut. It writes the plan (cuts + expected funnel) as JSON.
2. `select_shard` (mapped per shard) applies the plan's cuts to one shard: kept rows to the
   output, removed rows with their reason to `dropped/`.

Rules apply in order; a percentile is taken over the rows that passed the earlier rules and have
a value. A rule whose column has no value anywhere in the build (a classifier that is not
configured) is inactive and says so in the plan. The budget cut ("Scaling Laws for Data Filtering",
Goyal et al. 2024) keeps the best-ranked rows until the pool, repeated at most `max_repetitions`
times, covers the training budget: the strictest filter the budget can afford. If even the whole
pool would need more repetitions, everything is kept and the plan says how many repetitions the
budget implies.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from curation import layout, storage
from curation.config import BuildConfig, SelectBudget, SelectConfig, SelectRule
from curation.errors import ConfigError
from curation.schema import DROPPED
from curation.stats import Progress, StageStats

log = logging.getLogger(__name__)

STAGE = "select"
BUDGET_REASON = "budget"
_BATCH_ROWS = 65_536


@dataclass
class RuleCut:
    """One rule as planned: its cut and what it did to the whole build."""

    column: str
    keep: str
    reason: str
    if_missing: str
    cut: float | None
    source: str
    active: bool
    rows_in: int = 0
    rows_kept: int = 0


@dataclass
class SelectionPlan:
    rules: list[RuleCut]
    budget: dict | None
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    inputs: list[str]
    select_config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SelectionPlan:
        return cls(**{**data, "rules": [RuleCut(**r) for r in data["rules"]]})


def load_plan(uri: str) -> SelectionPlan:
    return SelectionPlan.from_dict(storage.read_json(uri))


# --- values -----------------------------------------------------------------------------------


def _values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric or boolean column as float64, null -> NaN."""
    if pa.types.is_null(column.type):
        return np.full(len(column), math.nan)
    if pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ConfigError(f"select rules need numeric columns, not {column.type}")
    return np.asarray(column.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False), np.float64)


def _read_columns(inputs: list[str], columns: list[str]) -> pa.Table:
    """The named columns of every shard, concatenated (the only data the plan reads)."""
    tables = []
    for uri in inputs:
        try:
            tables.append(storage.read_table(uri, columns=columns))
        except (KeyError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"{uri} lacks a column the select rules need ({columns}): {exc}") from exc
    if not tables:
        return pa.table({c: pa.array([], pa.float64()) for c in columns})
    return pa.concat_tables(tables, promote_options="permissive")


def _passes(values: np.ndarray, keep: str, cut: float, if_missing: str) -> np.ndarray:
    missing = np.isnan(values)
    with np.errstate(invalid="ignore"):
        ok = values >= cut if keep == "above" else values <= cut
    return np.where(missing, if_missing == "keep", ok)


def _top_cut(values: np.ndarray, keep: str, fraction: float) -> float:
    """The value that keeps `fraction` of `values` (ties at the cut are all kept)."""
    k = max(1, math.ceil(fraction * len(values)))
    ordered = np.sort(values)
    return float(ordered[len(values) - k] if keep == "above" else ordered[k - 1])


# --- plan -------------------------------------------------------------------------------------


def _plan_rule(rule: SelectRule, values: np.ndarray, alive: np.ndarray) -> tuple[RuleCut, np.ndarray]:
    present = ~np.isnan(values)
    base = {"column": rule.column, "keep": rule.keep, "reason": rule.reason, "if_missing": rule.if_missing}
    rows_in = int(alive.sum())
    if not present.any():
        log.warning("select rule %s: column %s has no value in this build; rule inactive", rule.reason, rule.column)
        note = "inactive: the column has no value in this build (is its model configured?)"
        return RuleCut(**base, cut=None, source=note, active=False, rows_in=rows_in, rows_kept=rows_in), alive
    if rule.threshold is not None:
        cut, source = float(rule.threshold), "threshold"
    else:
        pool = values[alive & present]
        if len(pool) == 0:
            cut, source = math.inf if rule.keep == "above" else -math.inf, "no row with a value reached this rule"
        else:
            cut = _top_cut(pool, rule.keep, rule.top_fraction)
            side = "highest" if rule.keep == "above" else "lowest"
            source = f"{side} {rule.top_fraction:.4g} of {len(pool)} rows over the whole build"
    alive = alive & _passes(values, rule.keep, cut, rule.if_missing)
    return RuleCut(**base, cut=cut, source=source, active=True, rows_in=rows_in, rows_kept=int(alive.sum())), alive


def _units(table: pa.Table, budget: SelectBudget) -> np.ndarray:
    if budget.unit == "samples":
        return np.ones(table.num_rows)
    return np.nan_to_num(_values(table[budget.tokens_column])) * budget.tokens_per_unit


def _plan_budget(budget: SelectBudget, rank: np.ndarray, units: np.ndarray, alive: np.ndarray) -> tuple[dict, np.ndarray]:
    ranked = alive & ~np.isnan(rank)
    if not ranked.any():
        raise ConfigError(
            f"the select budget ranks by {budget.rank_by}, which has no value in the rows left: "
            "configure the model that fills it, or set select.budget.rank_by to a column with values"
        )
    needed = budget.amount / budget.max_repetitions
    order = np.argsort(-rank[ranked], kind="stable")
    ranks, cumulative = rank[ranked][order], np.cumsum(units[ranked][order])
    pool = float(units[alive].sum())
    feasible = bool(cumulative[-1] >= needed)
    if feasible:
        cut = float(ranks[int(np.searchsorted(cumulative, needed))])
        kept = ranked & (rank >= cut)
    else:  # the whole pool is too small: keep everything, say how often it would be repeated
        cut, kept = None, alive
    kept_units = float(units[kept].sum())
    report = {
        "unit": budget.unit,
        "amount": budget.amount,
        "max_repetitions": budget.max_repetitions,
        "rank_by": budget.rank_by,
        "pool_rows": int(alive.sum()),
        "pool_units": pool,
        "needed_units": needed,
        "cut": cut,
        "feasible": feasible,
        "kept_rows": int(kept.sum()),
        "kept_units": kept_units,
        "kept_fraction_of_pool": kept_units / pool if pool else 0.0,
        "repetitions": budget.amount / kept_units if kept_units else math.inf,
    }
    return report, kept


def plan_selection(inputs: list[str], output: str, cfg: BuildConfig, select: SelectConfig | None = None) -> SelectionPlan:
    """Compute every rule's cut (and the budget cut) over all of `inputs`; write the plan to `output`.

    `select` defaults to `cfg.select` (documents); another table (e.g. image-text pairs) passes its own.
    """
    sel = select or cfg.select
    needed = [r.column for r in sel.rules]
    if sel.budget:
        needed += [sel.budget.rank_by] + ([sel.budget.tokens_column] if sel.budget.unit == "tokens" else [])
    columns = list(dict.fromkeys(needed))
    table = _read_columns(inputs, columns) if columns else None
    n = table.num_rows if table is not None else sum(storage.parquet_rows(u) for u in inputs)
    alive = np.ones(n, bool)
    cuts, dropped = [], {}
    if sel.enabled:
        for rule in sel.rules:
            cut, alive = _plan_rule(rule, _values(table[rule.column]), alive)
            cuts.append(cut)
            if cut.rows_in - cut.rows_kept:
                dropped[rule.reason] = dropped.get(rule.reason, 0) + cut.rows_in - cut.rows_kept
    budget_report = None
    if sel.enabled and sel.budget:
        before = int(alive.sum())
        budget_report, alive = _plan_budget(sel.budget, _values(table[sel.budget.rank_by]), _units(table, sel.budget), alive)
        if before - int(alive.sum()):
            dropped[BUDGET_REASON] = before - int(alive.sum())
    plan = SelectionPlan(
        rules=cuts,
        budget=budget_report,
        rows_in=n,
        rows_out=int(alive.sum()),
        dropped=dropped,
        inputs=list(inputs),
        select_config=sel.model_dump(mode="json"),
    )
    storage.write_json(output, plan.to_dict())
    log.info("selection plan %s: %d of %d rows kept, dropped %s", output, plan.rows_out, n, dropped)
    return plan


# --- apply ------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def decide(table: pa.Table, plan: SelectionPlan) -> tuple[np.ndarray, np.ndarray]:
    """(reason, detail) per row of `table` under `plan`; reason '' keeps the row. The first failing rule wins."""
    n = table.num_rows
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    undecided = np.ones(n, bool)
    for rule in plan.rules:
        if not rule.active:
            continue
        values = _values(table[rule.column])
        failed = undecided & ~_passes(values, rule.keep, rule.cut, rule.if_missing)
        if failed.any():
            side = "<" if rule.keep == "above" else ">"
            reason[failed] = rule.reason
            detail[failed] = [
                f"{rule.column} missing" if math.isnan(v) else f"{rule.column} {_fmt(v)} {side} cut {_fmt(rule.cut)}"
                for v in values[failed]
            ]
            undecided &= ~failed
    budget = plan.budget
    if budget and budget["cut"] is not None:
        rank = _values(table[budget["rank_by"]])
        with np.errstate(invalid="ignore"):
            failed = undecided & ~(rank >= budget["cut"])
        reason[failed] = BUDGET_REASON
        detail[failed] = f"{budget['rank_by']} below the budget cut {_fmt(budget['cut'])}"
    return reason, detail


def _dropped_rows(batch: pa.Table, stage: str, id_column: str, reason: np.ndarray, detail: np.ndarray) -> pa.Table:
    def column(name: str, type_: pa.DataType) -> pa.Array:
        return batch[name].cast(type_) if name in batch.column_names else pa.nulls(batch.num_rows, type_)

    return pa.table(
        {
            "stage": pa.array([stage] * batch.num_rows, pa.string()),
            "reason": pa.array(reason, pa.string()),
            "doc_id": column(id_column, pa.string()),
            "url": column("url", pa.string()),
            "source_uri": column("source_uri", pa.string()),
            "source_offset": column("source_offset", pa.int64()),
            "detail": pa.array(detail, pa.string()),
        },
        schema=DROPPED,
    )


def select_shard(
    inputs: list[str],
    output: str,
    cfg: BuildConfig,
    plan: SelectionPlan | str,
    select: SelectConfig | None = None,
    stage: str = STAGE,
) -> StageStats:
    """Apply the plan's cuts to `inputs` (one shard): kept rows to `output`, the rest to dropped/ with a reason.

    `select` replaces `cfg.select` (the pairs' `select_pairs`), `stage` names the stage in stats and dropped/."""
    sel = select or cfg.select
    plan = load_plan(plan) if isinstance(plan, str) else plan
    if plan.select_config and plan.select_config != sel.model_dump(mode="json"):
        raise ConfigError("the selection plan was made with another select config; plan again with this config")
    if not inputs:
        raise ConfigError(f"select_shard needs at least one input for {output}")
    stats = StageStats(stage=stage, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    progress = Progress(stats)
    dropped: list[pa.Table] = []
    tables = ((uri, storage.read_table(uri)) for uri in inputs)
    first = next(tables)
    with storage.TableWriter(output, first[1].schema) as writer:
        for uri, table in itertools.chain([first], tables):
            stats.bytes_in += storage.size(uri)
            for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
                batch = pa.Table.from_batches([batch], schema=table.schema)
                stats.rows_in += batch.num_rows
                reason, detail = decide(batch, plan)
                keep = reason == ""
                if not keep.all():
                    stats.drop_each(reason[~keep])
                    dropped.append(_dropped_rows(batch.filter(~keep), stage, sel.id_column, reason[~keep], detail[~keep]))
                writer.write(batch.filter(pa.array(keep)))
                progress.tick()
    layout.finish_shard(stats, writer, output, started, dropped)
    return stats


def describe_plan(plan: SelectionPlan) -> str:
    """Human-readable summary of a plan (the CLI prints it)."""
    lines = [f"selection: {plan.rows_out} of {plan.rows_in} rows kept"]
    for rule in plan.rules:
        cut = "-" if rule.cut is None else _fmt(rule.cut)
        lines.append(f"  {rule.reason:>10}: {rule.column} {rule.keep} {cut} ({rule.source}): {rule.rows_in} -> {rule.rows_kept}")
    if plan.budget:
        b = plan.budget
        fit = "" if b["feasible"] else " [the whole pool is too small]"
        lines.append(
            f"      budget: {b['amount']:.4g} {b['unit']} at <= {b['max_repetitions']:g} repetitions: "
            f"keep {b['kept_rows']} rows = {b['kept_units']:.4g} {b['unit']}, {b['repetitions']:.3g} repetitions{fit}"
        )
    return "\n".join(lines)
