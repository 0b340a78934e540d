"""Selection: cuts computed over the whole build, applied per shard, with reasons and a budget."""

import numpy as np
import pyarrow as pa
import pytest

from curation import layout, storage
from curation.config import load_config
from curation.errors import ConfigError
from curation.select import decide, describe_plan, load_plan, plan_selection, select_shard


def shard(path, scores, prefix, **extra) -> str:
    n = len(scores)
    table = pa.table(
        {
            "doc_id": [f"{prefix}{i}" for i in range(n)],
            "url": [f"https://example.org/{prefix}/{i}" for i in range(n)],
            "source_uri": ["crawl.warc.gz"] * n,
            "source_offset": list(range(n)),
            "quality_score": pa.array(scores, pa.float32()),
            **extra,
        }
    )
    storage.write_table(str(path), table)
    return str(path)


def config(rules, budget=None, **select):
    return load_config(overrides={"select": {"rules": rules, "budget": budget, **select}})


def run(inputs, tmp_path, cfg):
    plan = plan_selection(inputs, str(tmp_path / "plan.json"), cfg)
    results = []
    for uri in inputs:
        out = str(tmp_path / "select" / storage.name(uri))
        stats = select_shard([uri], out, cfg, str(tmp_path / "plan.json"))
        assert stats.balanced()
        results.append((stats, storage.read_table(out), storage.read_table(layout.dropped_uri(out))))
    return plan, results


def test_percentile_is_computed_over_all_shards(tmp_path):
    # Shard a holds only low scores, shard b only high ones: "top 50%" of the build is all of b.
    low = shard(tmp_path / "a.parquet", np.linspace(0.0, 0.49, 50), "a")
    high = shard(tmp_path / "b.parquet", np.linspace(0.5, 0.99, 50), "b")
    cfg = config([{"column": "quality_score", "keep": "above", "top_fraction": 0.5, "reason": "quality"}])
    plan, [(a_stats, _a_kept, a_dropped), (b_stats, b_kept, _)] = run([low, high], tmp_path, cfg)
    assert plan.rules[0].cut == pytest.approx(0.5)
    assert "of 100 rows over the whole build" in plan.rules[0].source
    assert (a_stats.rows_out, b_stats.rows_out) == (0, 50)  # per-shard cuts would have kept 25 + 25
    assert a_stats.dropped == {"quality": 50} and plan.dropped == {"quality": 50} and plan.rows_out == 50
    assert b_kept["doc_id"].to_pylist() == [f"b{i}" for i in range(50)]
    assert a_dropped["reason"].unique().to_pylist() == ["quality"]
    assert a_dropped["detail"][0].as_py() == "quality_score 0 < cut 0.5"
    assert load_plan(str(tmp_path / "plan.json")).rules[0].cut == plan.rules[0].cut


def test_rules_apply_in_order_and_percentile_counts_survivors(tmp_path):
    scores = np.arange(10) / 10  # 0.0 .. 0.9
    toxicity = pa.array([0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, None], pa.float32())
    uri = shard(tmp_path / "s.parquet", scores, "s", toxicity_score=toxicity, pii_count=pa.array([0] * 9 + [7], pa.int32()))
    cfg = config(
        [
            {"column": "toxicity_score", "keep": "below", "threshold": 0.4, "reason": "toxicity", "if_missing": "keep"},
            {"column": "pii_count", "keep": "below", "threshold": 5, "reason": "pii"},
            {"column": "quality_score", "keep": "above", "top_fraction": 0.5, "reason": "quality"},
        ]
    )
    plan, [(stats, kept, dropped)] = run([uri], tmp_path, cfg)
    # toxicity drops rows 0, 1, 8 (row 9 has no score: kept); pii drops row 9 (7 > 5);
    # quality keeps the top half of the 6 survivors (rows 2..7): rows 5, 6, 7.
    assert [r.rows_kept for r in plan.rules] == [7, 6, 3]
    assert kept["doc_id"].to_pylist() == ["s5", "s6", "s7"]
    assert stats.dropped == {"toxicity": 3, "pii": 1, "quality": 3}
    by_id = dict(zip(dropped["doc_id"].to_pylist(), dropped["reason"].to_pylist(), strict=True))
    assert by_id == {
        "s0": "toxicity",
        "s1": "toxicity",
        "s8": "toxicity",
        "s9": "pii",
        "s2": "quality",
        "s3": "quality",
        "s4": "quality",
    }
    assert "selection: 3 of 10 rows kept" in describe_plan(plan)


def test_rule_on_an_unscored_column_is_inactive_and_missing_values_can_drop(tmp_path):
    uri = shard(tmp_path / "s.parquet", [0.2, None, 0.9], "s", toxicity_score=pa.nulls(3, pa.float32()))
    cfg = config(
        [
            {"column": "toxicity_score", "keep": "below", "threshold": 0.4, "reason": "toxicity"},
            {"column": "quality_score", "keep": "above", "threshold": 0.5, "reason": "quality", "if_missing": "drop"},
        ]
    )
    plan, [(_stats, kept, dropped)] = run([uri], tmp_path, cfg)
    assert not plan.rules[0].active and "no value" in plan.rules[0].source
    assert kept["doc_id"].to_pylist() == ["s2"]
    assert dict(zip(dropped["doc_id"].to_pylist(), dropped["detail"].to_pylist(), strict=True)) == {
        "s0": "quality_score 0.2 < cut 0.5",
        "s1": "quality_score missing",
    }


def test_default_rules_keep_everything_when_no_model_scored(tmp_path):
    uri = shard(
        tmp_path / "s.parquet",
        [None, None],
        "s",
        toxicity_score=pa.nulls(2, pa.float32()),
        pii_count=pa.array([0, 9], pa.int32()),
    )
    cfg = load_config()
    plan, [(stats, kept, _)] = run([uri], tmp_path, cfg)
    assert [r.active for r in plan.rules] == [False, True, False]
    assert kept["doc_id"].to_pylist() == ["s0"] and stats.dropped == {"pii": 1}


def test_budget_picks_the_strictest_cut_that_fits(tmp_path):
    # 10 docs of 100 words (130 tokens each), qualities 0.0 .. 0.9 over two shards.
    words = pa.array([100] * 5, pa.int32())
    a = shard(tmp_path / "a.parquet", [0.0, 0.2, 0.4, 0.6, 0.8], "a", n_words=words)
    b = shard(tmp_path / "b.parquet", [0.1, 0.3, 0.5, 0.7, 0.9], "b", n_words=words)
    # 1,560 tokens at <= 4 repetitions needs a pool of 390 tokens: the best 3 docs (0.9, 0.8, 0.7).
    budget = {"unit": "tokens", "amount": 1560, "max_repetitions": 4, "rank_by": "quality_score"}
    plan, results = run([a, b], tmp_path, config([], budget))
    assert plan.budget["cut"] == pytest.approx(0.7) and plan.budget["feasible"]
    assert plan.budget["kept_rows"] == 3 and plan.budget["kept_units"] == pytest.approx(390)
    assert plan.budget["repetitions"] == pytest.approx(4.0)
    kept = sorted(doc_id for r in results for doc_id in r[1]["doc_id"].to_pylist())
    assert kept == ["a4", "b3", "b4"]
    assert results[0][0].dropped == {"budget": 4}
    assert "below the budget cut 0.7" in results[0][2]["detail"][0].as_py()


def test_budget_larger_than_the_pool_keeps_everything_and_reports_repetitions(tmp_path):
    uri = shard(tmp_path / "s.parquet", [0.1, 0.2], "s")
    budget = {"unit": "samples", "amount": 20, "max_repetitions": 4, "rank_by": "quality_score"}
    plan, [(stats, _kept, _)] = run([uri], tmp_path, config([], budget))
    assert not plan.budget["feasible"] and plan.budget["cut"] is None
    assert plan.budget["repetitions"] == pytest.approx(10.0) and stats.rows_out == 2
    assert "the whole pool is too small" in describe_plan(plan)


def test_budget_without_rank_values_and_missing_columns_are_config_errors(tmp_path):
    uri = shard(tmp_path / "s.parquet", [None, None], "s")
    with pytest.raises(ConfigError, match="ranks by quality_score, which has no value"):
        plan_selection([uri], str(tmp_path / "p.json"), config([], {"unit": "samples", "amount": 1}))
    with pytest.raises(ConfigError, match=r"s.parquet lacks a column"):
        plan_selection(
            [uri], str(tmp_path / "p.json"), config([{"column": "nope", "keep": "above", "threshold": 1, "reason": "x"}])
        )


def test_plan_from_another_config_is_refused(tmp_path):
    uri = shard(tmp_path / "s.parquet", [0.1, 0.9], "s")
    rule = {"column": "quality_score", "keep": "above", "threshold": 0.5, "reason": "quality"}
    plan_selection([uri], str(tmp_path / "p.json"), config([rule]))
    with pytest.raises(ConfigError, match="another select config"):
        select_shard([uri], str(tmp_path / "o.parquet"), config([{**rule, "threshold": 0.6}]), str(tmp_path / "p.json"))


def test_ties_at_the_cut_are_kept_together(tmp_path):
    uri = shard(tmp_path / "s.parquet", [0.5, 0.5, 0.5, 0.1], "s")
    cfg = config([{"column": "quality_score", "keep": "above", "top_fraction": 0.25, "reason": "quality"}])
    plan = plan_selection([uri], str(tmp_path / "p.json"), cfg)
    reason, _ = decide(storage.read_table(uri), plan)
    assert list(reason) == ["", "", "", "quality"] and plan.rows_out == 3


def test_pairs_use_their_own_select_config(tmp_path):
    from curation.config import SelectConfig

    pairs = pa.table({"pair_id": ["p0", "p1", "p2"], "clip_score": pa.array([0.31, 0.27, 0.28], pa.float32())})
    storage.write_table(str(tmp_path / "pairs.parquet"), pairs)
    # LAION: keep CLIP similarity >= 0.28 (compared at float32, as the column is stored).
    laion = SelectConfig(
        id_column="pair_id",
        rules=[{"column": "clip_score", "keep": "above", "threshold": 0.28, "reason": "clip_score"}],
    )
    cfg = load_config()
    uri = str(tmp_path / "pairs.parquet")
    plan = plan_selection([uri], str(tmp_path / "plan.json"), cfg, select=laion)
    stats = select_shard([uri], str(tmp_path / "out" / "pairs.parquet"), cfg, plan, select=laion)
    assert storage.read_table(str(tmp_path / "out" / "pairs.parquet"))["pair_id"].to_pylist() == ["p0", "p2"]
    dropped = storage.read_table(layout.dropped_uri(str(tmp_path / "out" / "pairs.parquet")))
    assert dropped["doc_id"].to_pylist() == ["p1"] and stats.dropped == {"clip_score": 1}
