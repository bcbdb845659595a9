"""Filters: every reject reason, first reason wins, dedup, and the strict LLM yes/no filter."""
from __future__ import annotations

import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from runner.core.context import RunContext
from runner.core.stage import ConfigError
from runner.distill.filters import Filters, FilterStage, LlmYesNo
from tests.conftest import REPO

SCHEMA = {"sample_id": pl.String, "split": pl.String, "question": pl.String, "user": pl.String,
          "generation": pl.String, "clean_sql": pl.String, "exec_pass": pl.Boolean, "gold_match": pl.Boolean,
          "judge_score": pl.Float64, "error": pl.String}


def _row(i, sql="SELECT \"a\" FROM t", exec_pass=True, gold=True, score=1.0, error=None, user=None, split="train"):
    return {"sample_id": f"s{i}", "split": split, "question": f"q{i}", "user": user or f"prompt {i}",
            "generation": sql, "clean_sql": sql, "exec_pass": exec_pass, "gold_match": gold,
            "judge_score": score, "error": error}


def simulated_provider(overrides):
    """The simulated provider as configured in conf/provider/simulated.yaml (its one place of defaults)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["provider=simulated", *overrides])
    return instantiate(cfg.provider)


def _frame(rows):
    return pl.DataFrame(rows, schema=SCHEMA)


@pytest.fixture
def ctx(tmp_path):
    return RunContext.create(tmp_path / "run", cache_dir=tmp_path / "cache")


def test_each_reason(ctx):
    rows = [
        _row(0),                                              # kept
        _row(1, error="boom", sql=""),                        # provider_error
        _row(2, sql="", exec_pass=False),                     # empty
        _row(3, sql="SELECT 1"),                              # too_short (min_chars=10)
        _row(4, sql="SELECT " + "x" * 100),                   # too_long (max_chars=60)
        _row(5, sql="SELECT \"a\" FROM t; DROP x"),           # excluded_pattern
        _row(6, exec_pass=False, gold=False, score=0.0),      # exec_fail
        _row(7, gold=False, score=0.5),                       # low_judge_score (min_score 0.8)
        _row(8, score=None),                                  # no_judge_score
        _row(9, user="prompt 0"),                             # duplicate of row 0
    ]
    f = Filters(min_chars=10, max_chars=60, exclude_regex=[r"\bdrop\b"], min_score=0.8)
    f.validate()
    reasons, _ = f.apply(_frame(rows), ctx)
    assert reasons == [None, "provider_error", "empty", "too_short", "too_long", "excluded_pattern",
                       "exec_fail", "low_judge_score", "no_judge_score", "duplicate"]


def test_require_gold_keywords_and_no_dedup(ctx):
    rows = [_row(0, gold=False), _row(1, sql='SELECT "a" FROM t WHERE "b" = 1'), _row(2, user="prompt 1",
                                                                                   sql='SELECT "a" FROM t WHERE "b" = 1')]
    f = Filters(require_gold=True, keywords={"where": 1.0, "select": 0.5}, min_keyword_score=1.5, dedup=False)
    assert f.keyword_score('select x from t where y') == 1.5
    reasons, _ = f.apply(_frame(rows), ctx)
    assert reasons == ["low_keyword_score", None, None]
    reasons, _ = Filters(require_gold=True).apply(_frame(rows), ctx)
    assert reasons == ["gold_mismatch", None, "duplicate"]


@pytest.mark.parametrize("text, verdict", [("yes", True), ("No.", False), (" YES\n", True),
                                           ("yes, it does", None), ("", None), (None, None), ("maybe", None)])
def test_yes_no_parsing_is_strict(text, verdict):
    assert LlmYesNo.parse(text) is verdict


def test_llm_filter_goes_through_the_engine(ctx):
    provider = simulated_provider(["provider.yesno_error_rate=0", "provider.latency_median_s=0",
                                   "provider.latency_p95_s=0", "provider.rate_429=0", "provider.rate_5xx=0",
                                   "provider.rate_timeout=0"])
    llm = LlmYesNo(provider=provider, enabled=True, user="Q: {question}\nSQL: {sql}")
    rows = [_row(0), _row(1, gold=False), _row(2, sql="")]
    reasons, stats = Filters(llm=llm).apply(_frame(rows), ctx)
    # The empty row is rejected by the cheap checks and never sent to the LLM.
    assert reasons == [None, "llm_no", "empty"] and stats["requests"] == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"min_score": 2}, "min_score"), ({"min_chars": 50, "max_chars": 10}, "min_chars"),
    ({"exclude_regex": ["("]}, "exclude_regex"), ({"text_field": "nope"}, "text_field"),
    ({"llm": LlmYesNo(enabled=True)}, "provider")])
def test_invalid_filter_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Filters(**kwargs).validate()


def test_filter_stage_marks_eval_rows_and_counts_reasons(ctx):
    df = _frame([_row(0), _row(1, exec_pass=False), _row(2, split="eval")])
    ctx.store.write("teacher_judged", df)
    with ctx.timer.stage("filter"):
        FilterStage(Filters()).run(ctx)
    out = ctx.store.read("teacher_filtered")
    assert out["keep"].to_list() == [True, False, False]
    assert out["reject_reason"].to_list() == [None, "exec_fail", "eval_split"]
    assert ctx.metrics.get("filter.reject.exec_fail") == 1 and ctx.metrics.get("filter.total") == 2
    assert "filter.reject.eval_split" not in ctx.metrics


def test_quoted_unknown_column_is_rejected_by_require_exec(tmp_path):
    # Through the one executor: SQLite's legacy reading of "nope" as a string would make this
    # query "execute" and be distilled.
    from runner.distill.evaluate import clean_frame, execute_frame, open_executor
    from tests.student.mini_run import gold_sql, make_run

    run = make_run(tmp_path)
    sqls = ['SELECT "nope" FROM t WHERE "nope" = 1', 'SELECT "city" FROM t WHERE "name" = "ann"', gold_sql("ann")]
    df = _frame([_row(i, sql=s) for i, s in enumerate(sqls)]).drop("exec_pass", "gold_match")
    df = df.with_columns(gold_sql=pl.lit(gold_sql("ann")))
    with open_executor(run) as ex:
        df = execute_frame(clean_frame(df), ex)
    assert df["exec_error"].to_list() == ["unknown_column", "unknown_column", None]
    reasons, _ = Filters(require_exec=True, min_chars=0).apply(df, run)
    assert reasons == ["exec_fail", "exec_fail", None]


def test_the_oracle_filter_is_labelled_as_an_oracle():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["filters=oracle"])
    stage = FilterStage(instantiate(cfg.filters))
    assert stage.filters.require_gold and stage.filters.name == "oracle"
    assert any("ORACLE" in n for n in stage.notices())
    assert not FilterStage(Filters()).notices()  # the default filters say nothing
