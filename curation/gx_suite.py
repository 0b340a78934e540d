"""Great Expectations (GX Core 1.x) suites for the pipeline's Arrow tables.

A suite lives in a JSON file in the format `ExpectationSuite.to_json_dict()` writes:
``{"name": ..., "expectations": [{"type": "expect_...", "kwargs": {...}, "meta": {...}}], "meta": {...}}``.
A kwarg written as ``{"$PARAMETER": "name"}`` is a suite parameter; its value is supplied per run
(GX substitutes it natively at validation time). Each expectation's ``meta["severity"]`` is
"critical" (the default) or "warning"; the gate decides what to do with failures by severity.

GX is imported lazily (it costs seconds) and runs in one ephemeral, in-memory data context per
process: no files, no network, no progress bars, and GX's INFO logging silenced.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.errors import ConfigError

if TYPE_CHECKING:
    import great_expectations
    import pyarrow

__all__ = [
    "ExpectationOutcome",
    "MissingSuiteParameterError",
    "ShardedValidation",
    "SuiteError",
    "load_suite",
    "validate_table",
]

SEVERITIES = ("critical", "warning")
DEFAULT_SEVERITY = "critical"
PARTIAL_UNEXPECTED = 5  # how many failing values an outcome keeps

_PARAM_KEY = "$PARAMETER"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_RESULT_FORMAT = {
    "result_format": "BASIC",
    "partial_unexpected_count": PARTIAL_UNEXPECTED,
}
# Result keys copied into ExpectationOutcome.observed, in this order, when GX reports them.
_OBSERVED_KEYS = (
    "observed_value",
    "details",
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "partial_unexpected_list",
)

_lock = threading.RLock()
# "context" and "batch_definition", created once per process
_gx_state: dict[str, Any] = {}


class SuiteError(ConfigError, ValueError):
    """A suite file is unreadable or malformed (a config error: rerunning will not help)."""


class MissingSuiteParameterError(SuiteError):
    """A suite references ``{"$PARAMETER": name}`` but no value for `name` was supplied."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class ExpectationOutcome:
    suite: str
    expectation: str  # e.g. "expect_column_values_to_not_be_null"
    column: str | None
    success: bool
    # JSON-serialisable dict of what GX saw: some of observed_value, details, element_count,
    # unexpected_count, unexpected_percent, partial_unexpected_list (first 5); or {"error": msg}
    # when the expectation could not be evaluated (e.g. its column is missing).
    observed: object
    expected: dict  # the kwargs with parameters filled in, JSON-serialisable
    severity: str  # meta["severity"]: "critical" (default) or "warning"


def load_suite(path: str | os.PathLike, parameters: dict | None = None) -> great_expectations.ExpectationSuite:
    """Load a suite JSON. Values in kwargs written as {"$PARAMETER": "name"} are filled from
    `parameters` (a missing one raises ValueError naming it).

    The placeholders stay in the suite and GX substitutes them natively when validating: the
    supplied values are kept on ``suite.suite_parameters``, which `validate_table` passes on as
    ``batch.validate(suite, expectation_parameters=...)``. Raises `SuiteError` (a ValueError) on
    a malformed file, an unknown expectation type or bad kwargs, or a severity other than
    "critical"/"warning".
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"cannot read expectation suite {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise SuiteError(f"{path}: not an expectation suite (need an object with an 'expectations' list)")
    name = raw.get("name") or raw.get("expectation_suite_name") or path.stem
    parameters = dict(parameters or {})

    gx = _gx()
    from great_expectations.core.suite_parameters import parse_suite_parameter
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    expectations = []
    for i, item in enumerate(raw["expectations"]):
        where = f"{path}: expectation #{i}"
        if not isinstance(item, dict):
            raise SuiteError(f"{where} is not an object")
        # 0.x files say "expectation_type"
        type_ = item.get("type") or item.get("expectation_type")
        kwargs = item.get("kwargs")
        meta = dict(item.get("meta") or {})
        if not isinstance(type_, str) or not isinstance(kwargs, dict):
            raise SuiteError(f"{where} needs a string 'type' and an object 'kwargs'")
        where = f"{path}: expectation #{i} ({type_})"
        severity = meta.setdefault("severity", DEFAULT_SEVERITY)
        if severity not in SEVERITIES:
            raise SuiteError(f"{where}: meta.severity must be one of {SEVERITIES}, got {severity!r}")
        for key, value in kwargs.items():
            if isinstance(value, dict) and _PARAM_KEY in value:
                _check_parameter(value[_PARAM_KEY], parameters, where, key, parse_suite_parameter)
        try:
            expectation = ExpectationConfiguration(
                type=type_,
                kwargs=kwargs,
                meta=meta,
                notes=item.get("notes"),
                description=item.get("description"),
                severity=severity,  # keep GX's own severity field in step with meta
            ).to_domain_obj()
        except Exception as exc:
            # ExpectationNotFoundError, pydantic's ValidationError, ...
            raise SuiteError(f"{where}: invalid expectation: {exc}") from exc
        expectations.append(expectation)

    # Pass built Expectation objects: given dicts, the ExpectationSuite constructor only *logs*
    # an invalid one and silently drops it.
    return gx.ExpectationSuite(
        name=name,
        expectations=expectations,
        suite_parameters=parameters,
        meta=raw.get("meta") or None,
        notes=raw.get("notes"),
    )


def validate_table(
    table: pyarrow.Table, suite_path: str | os.PathLike, parameters: dict | None = None
) -> list[ExpectationOutcome]:
    """Validate one Arrow table against the suite; one outcome per expectation, in suite order.
    A failing or unevaluable expectation (e.g. a missing column) gives an outcome with success
    False; nothing is raised for bad data. For a table in many parts, use `ShardedValidation`."""
    validation = ShardedValidation(suite_path, parameters)
    validation.add(table, "table")
    return validation.finish()


# --- internals -------------------------------------------------------------------------------


def _gx():
    """Import great_expectations with its INFO logging silenced (warnings and errors kept)."""
    gx_logger = logging.getLogger("great_expectations")
    # respect a level the application set on purpose
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def _batch_definition():
    """The process-wide ephemeral context's whole-dataframe batch definition (created once)."""
    with _lock:
        if "batch_definition" not in _gx_state:
            gx = _gx()
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            # In-memory stores, no data-docs site (the default ephemeral config makes a temp
            # directory for one), no usage statistics, no tqdm bars on stderr.
            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            )
            context = gx.get_context(mode="ephemeral", project_config=config)
            asset = context.data_sources.add_pandas("curation").add_dataframe_asset("table")
            _gx_state["context"] = context
            _gx_state["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
        return _gx_state["batch_definition"]


def _check_parameter(expr: Any, parameters: dict, where: str, key: str, parse) -> None:
    if not isinstance(expr, str) or not expr:
        raise SuiteError(f"{where}: kwarg {key!r} has a bad $PARAMETER reference {expr!r}")
    if _IDENT.match(expr):
        if expr not in parameters:
            raise MissingSuiteParameterError(
                f"{where}: kwarg {key!r} needs suite parameter {expr!r}, which was not supplied (supplied: {sorted(parameters)})",
                expr,
            )
        return
    try:  # an expression such as "max_rows * 2": let GX's own parser find missing names
        parse(expr, suite_parameters=parameters)
    except Exception as exc:
        raise SuiteError(f"{where}: kwarg {key!r}: cannot evaluate $PARAMETER {expr!r}: {exc}") from exc


def _outcome(suite_name: str, expectation, result) -> ExpectationOutcome:
    config = expectation.configuration
    meta = config.meta or {}
    kwargs = dict(result.expectation_config.kwargs if result is not None else config.kwargs)
    kwargs.pop("batch_id", None)
    if result is None:
        # should not happen; never report a pass for an unmatched expectation
        success = False
        observed = {"error": "GX returned no result for this expectation"}
    else:
        success = bool(result.success)
        observed = _observed(result)
    return ExpectationOutcome(
        suite=suite_name,
        expectation=config.type,
        column=kwargs.get("column"),
        success=success,
        observed=_jsonable(observed),
        expected=_jsonable(kwargs),
        severity=meta.get("severity", DEFAULT_SEVERITY),
    )


def _observed(result) -> dict:
    error = _exception_message(result.exception_info)
    if error is not None:
        return {"error": error}
    data = result.result or {}
    observed = {k: data[k] for k in _OBSERVED_KEYS if k in data}
    if "partial_unexpected_list" in observed:
        observed["partial_unexpected_list"] = list(observed["partial_unexpected_list"])[:PARTIAL_UNEXPECTED]
    return observed


def _exception_message(info) -> str | None:
    """The first exception message in a result's exception_info, whose shape varies: either one
    ExceptionInfo dict or a dict of them keyed by metric id (metric resolution errors)."""
    if not info:
        return None
    if hasattr(info, "to_json_dict"):
        info = info.to_json_dict()
    if isinstance(info, dict) and "raised_exception" in info:
        return (info.get("exception_message") or "exception") if info.get("raised_exception") else None
    if isinstance(info, dict):
        for value in info.values():
            message = _exception_message(value)
            if message is not None:
                return message
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON types from what GX and pandas hand back (numpy scalars, Timestamps, NaN...)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):  # datetime, pandas.Timestamp
        try:
            return value.isoformat()
        except ValueError:  # NaT
            return None
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    if hasattr(value, "tolist"):  # numpy array
        return _jsonable(value.tolist())
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError, ImportError):
        pass
    return str(value)


# --- sharded validation ----------------------------------------------------------------------

# Expectations whose verdict on a table is the conjunction of their verdicts on its parts: they
# run per shard (memory bounded by one shard) and their outcomes are merged.
_PER_SHARD_PREFIXES = (
    "expect_column_values_to_",
    "expect_column_value_lengths_",
    "expect_column_pair_values_",
    "expect_multicolumn_sum_values_",
    "expect_select_column_values_to_be_unique_within_record",
    "expect_column_to_exist",
    "expect_table_columns_to_match",
    "expect_table_column_count_",
)
# ... except these, which need the whole table (uniqueness, global statistics, order across shards).
_WHOLE_TABLE = {
    "expect_column_values_to_be_unique",
    "expect_column_value_z_scores_to_be_less_than",
    "expect_column_values_to_be_increasing",
    "expect_column_values_to_be_decreasing",
}
_ROW_COUNT = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
_UNIQUE = {"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"}
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list",)


def is_per_shard(expectation_type: str) -> bool:
    """True when the expectation can be validated shard by shard and the outcomes merged."""
    return expectation_type.startswith(_PER_SHARD_PREFIXES) and expectation_type not in _WHOLE_TABLE


class ShardedValidation:
    """Validate a table that arrives in parts (shards, or batches of a shard) against one suite.

    Per-part expectations (column maps, column sets) run through GX on each part as it comes and
    their outcomes are merged (unexpected counts summed, the first failing values kept, failing
    parts named). Whole-table expectations are evaluated once at the end over what they need only:
    the row count (GX on an index-only frame), uniqueness with pyarrow on the key columns across
    every part, and anything else through GX on the concatenation of the columns it references.
    Memory: one part plus the referenced key columns, never the whole table.
    """

    def __init__(self, suite_path: str | os.PathLike, parameters: dict | None = None):
        self.suite_path = suite_path
        self.parameters = dict(parameters or {})
        self.suite = load_suite(suite_path, self.parameters)  # fail fast on a bad suite or a missing parameter
        self._per_part: list[int] = []
        self._whole: list[int] = []
        for i, expectation in enumerate(self.suite.expectations):
            expectation.id = f"{self.suite.name}#{i}"
            (self._per_part if is_per_shard(expectation.configuration.type) else self._whole).append(i)
        self._key_columns = sorted({c for i in self._whole for c in _referenced_columns(self._config(i))})
        self._keys: dict[str, list] = {c: [] for c in self._key_columns}
        self._key_errors: dict[str, str] = {}
        self._parts: dict[int, list[tuple[str, ExpectationOutcome]]] = {i: [] for i in self._per_part}
        self._subsuites: dict[tuple[int, ...], Any] = {}
        self.rows = 0
        self.labels: list[str] = []

    def add(self, table: pyarrow.Table, label: str) -> None:
        """Validate one part; `label` (e.g. the shard file name) names it in failure details."""
        self.rows += table.num_rows
        self.labels.append(label)
        for column in self._key_columns:
            if column in table.column_names:
                self._keys[column].append(table[column])
            else:
                self._key_errors.setdefault(column, f"column {column!r} does not exist in {label}")
        present = set(table.column_names)
        run = []
        for i in self._per_part:
            if self._optional(i) and not set(_referenced_columns(self._config(i))) <= present:
                self._parts[i].append((label, self._native(i, True, {"skipped": f"optional column(s) absent in {label}"})))
            else:
                run.append(i)
        if not run:
            return
        outcomes = self._run_gx(table.to_pandas(), run)
        for i, outcome in zip(run, outcomes, strict=True):
            self._parts[i].append((label, outcome))

    def finish(self) -> list[ExpectationOutcome]:
        """One outcome per expectation, in suite order."""
        whole = self._whole_table_outcomes()
        out = []
        for i in range(len(self.suite.expectations)):
            out.append(whole[i] if i in whole else _merge_parts(self._parts[i], self._empty_outcome(i)))
        return out

    # -- internals

    def _config(self, i: int):
        return self.suite.expectations[i].configuration

    def _optional(self, i: int) -> bool:
        """meta.optional: the expectation applies only where its columns exist (signals a stage may add)."""
        return bool((self._config(i).meta or {}).get("optional"))

    def _run_gx(self, df, indexes: list[int]) -> list[ExpectationOutcome]:
        gx = _gx()
        from great_expectations.exceptions import SuiteParameterError

        key = tuple(indexes)
        if key not in self._subsuites:
            # GX refuses an Expectation that already belongs to a suite: use copies, with the same ids.
            part = gx.ExpectationSuite(
                name=self.suite.name, expectations=[copy.copy(self.suite.expectations[i]) for i in indexes]
            )
            for expectation, i in zip(part.expectations, indexes, strict=True):
                expectation.id = self.suite.expectations[i].id
            self._subsuites[key] = part
        part = self._subsuites[key]
        with _lock:
            batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
            try:
                result = batch.validate(part, result_format=_RESULT_FORMAT, expectation_parameters=self.parameters)
            except SuiteParameterError as exc:
                raise SuiteError(f"{self.suite_path}: {exc}") from exc
        by_id = {r.expectation_config.id: r for r in result.results}
        return [_outcome(self.suite.name, self.suite.expectations[i], by_id.get(self.suite.expectations[i].id)) for i in indexes]

    def _empty_outcome(self, i: int) -> ExpectationOutcome:
        # No part at all: nothing was checked, which is never a pass.
        return self._native(i, False, {"error": "no data to validate (no shards)"})

    def _native(self, i: int, success: bool, observed: dict) -> ExpectationOutcome:
        config = self._config(i)
        kwargs = _fill_parameters(dict(config.kwargs), self.parameters)
        return ExpectationOutcome(
            suite=self.suite.name,
            expectation=config.type,
            column=kwargs.get("column"),
            success=success,
            observed=_jsonable(observed),
            expected=_jsonable(kwargs),
            severity=(config.meta or {}).get("severity", DEFAULT_SEVERITY),
        )

    def _whole_table_outcomes(self) -> dict[int, ExpectationOutcome]:
        import pandas as pd

        out: dict[int, ExpectationOutcome] = {}
        via_gx: list[int] = []
        for i in self._whole:
            config = self._config(i)
            columns = _referenced_columns(config)
            missing = [self._key_errors[c] for c in columns if c in self._key_errors]
            if missing and self._optional(i):
                out[i] = self._native(i, True, {"skipped": "; ".join(missing)})
            elif missing:
                out[i] = self._native(i, False, {"error": "; ".join(missing)})
            elif config.type in _ROW_COUNT:
                # GX itself on a frame with the right length and no columns: real semantics, no memory.
                (out[i],) = self._run_gx(pd.DataFrame(index=pd.RangeIndex(self.rows)), [i])
            elif config.type in _UNIQUE:
                out[i] = self._native(i, *_unique_outcome(self._keys, columns, config.kwargs))
            else:
                via_gx.append(i)
        if via_gx:
            frame = self._key_frame()
            for i, outcome in zip(via_gx, self._run_gx(frame, via_gx), strict=True):
                out[i] = outcome
        return out

    def _key_frame(self):
        """The referenced columns of every part, concatenated (the only whole-table data GX sees)."""
        import pandas as pd
        import pyarrow as pa

        if not self._keys:
            return pd.DataFrame(index=pd.RangeIndex(self.rows))
        return pa.table({column: _concat(chunks) for column, chunks in self._keys.items()}).to_pandas()


def _referenced_columns(config) -> list[str]:
    kwargs = config.kwargs
    columns = [kwargs[k] for k in _COLUMN_KWARGS if isinstance(kwargs.get(k), str)]
    for key in _COLUMN_LIST_KWARGS:
        if isinstance(kwargs.get(key), list):
            columns += [c for c in kwargs[key] if isinstance(c, str)]
    return columns


def _fill_parameters(kwargs: dict, parameters: dict) -> dict:
    for key, value in kwargs.items():
        if isinstance(value, dict) and _PARAM_KEY in value and value[_PARAM_KEY] in parameters:
            kwargs[key] = parameters[value[_PARAM_KEY]]
    return kwargs


def _concat(chunks: list):
    """One chunked array from per-part columns; parts of a different type are cast to the first one."""
    import pyarrow as pa

    if not chunks:
        return pa.chunked_array([], pa.null())
    first = chunks[0].type
    return pa.chunked_array([c.cast(first) if c.type != first else c for c in chunks], first)


def _unique_outcome(keys: dict[str, list], columns: list[str], kwargs: dict) -> tuple[bool, dict]:
    """GX-shaped outcome of a (compound) uniqueness check over every part, computed with pyarrow.

    Like GX: rows whose value is null (for a compound key: null in any key column) are ignored
    and unexpected_count counts every row whose value occurs more than once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = pa.table({c: _concat(keys[c]) for c in columns})
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return False, {"error": f"cannot combine {columns} across shards: {exc}"}
    element_count = table.num_rows
    table = table.drop_null()
    counts = table.group_by(columns).aggregate([([], "count_all")])
    dupes = counts.filter(pc.greater(counts["count_all"], 1))
    unexpected = int(pc.sum(dupes["count_all"]).as_py() or 0)
    partial: list = []
    for row in dupes.slice(0, PARTIAL_UNEXPECTED).to_pylist():
        value = row[columns[0]] if len(columns) == 1 else {c: row[c] for c in columns}
        partial += [value] * min(row["count_all"], PARTIAL_UNEXPECTED - len(partial))
    nonnull = table.num_rows
    observed = {
        "element_count": element_count,
        "unexpected_count": unexpected,
        "unexpected_percent": 100.0 * unexpected / nonnull if nonnull else 0.0,
        "partial_unexpected_list": partial[:PARTIAL_UNEXPECTED],
    }
    mostly = kwargs.get("mostly")
    success = unexpected == 0 if not mostly else (nonnull == 0 or (nonnull - unexpected) / nonnull >= mostly)
    return success, observed


def _merge_parts(parts: list[tuple[str, ExpectationOutcome]], empty: ExpectationOutcome) -> ExpectationOutcome:
    """Outcomes of one per-part expectation on every part -> its outcome on the whole table."""
    if not parts:
        return empty
    failed = [(label, o) for label, o in parts if not o.success]
    first = (failed or parts)[0][1]
    observed = dict(first.observed) if isinstance(first.observed, dict) else {"observed_value": first.observed}
    counted = [o.observed for _, o in parts if isinstance(o.observed, dict) and "element_count" in o.observed]
    if counted and "error" not in observed:
        elements = sum(o.get("element_count") or 0 for o in counted)
        unexpected = sum(o.get("unexpected_count") or 0 for o in counted)
        observed["element_count"] = elements
        observed["unexpected_count"] = unexpected
        # GX's percent is of the non-null values; summed over parts, of all rows is the honest merge.
        observed["unexpected_percent"] = 100.0 * unexpected / elements if elements else 0.0
        partial: list = []
        for o in counted:
            partial += list(o.get("partial_unexpected_list") or [])
        observed["partial_unexpected_list"] = partial[:PARTIAL_UNEXPECTED]
    if failed:
        observed["failed_shards"] = [label for label, _ in failed][:PARTIAL_UNEXPECTED]
        observed["failed_shard_count"] = len(failed)
    if len(parts) > 1:
        observed["shards"] = len(parts)
    return dataclasses.replace(first, success=not failed, observed=observed)
