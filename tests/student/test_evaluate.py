"""student_pre/student_post: held-out rows only, the teacher's scoring path, real measurements."""
from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from runner.distill.evaluate import clean_frame, execute_frame, open_executor
from runner.student.evaluate import StudentEvalStage, check_held_out
from runner.text2sql.judge import RuleJudge
from tests.lm.tiny_lm import tiny_model_dir  # noqa: F401 (fixture)
from tests.student.mini_run import gold_sql, make_run


def test_empty_prediction_is_never_exec_pass_nor_correct(tmp_path):
    ctx = make_run(tmp_path)
    df = pl.DataFrame({"sample_id": ["a", "b", "c", "d"], "gold_sql": [gold_sql("ann")] * 4,
                       "generation": ["", "   ", "```sql\n```", gold_sql("ann")]})
    with open_executor(ctx) as ex:
        scored = execute_frame(clean_frame(df), ex)
    assert scored["exec_pass"].to_list() == [False, False, False, True]
    assert scored["gold_match"].to_list() == [False, False, False, True]


def test_quoted_unknown_column_is_not_exec_pass_for_the_student(tmp_path):
    # The scratch student's constant answer: it "ran" under SQLite's legacy double-quote rule.
    ctx = make_run(tmp_path)
    df = pl.DataFrame({"sample_id": ["a", "b"], "gold_sql": [gold_sql("ann")] * 2,
                       "generation": ['SELECT "date" FROM t WHERE "date" = \'1\'', 'SELECT "nope" FROM t WHERE "nope" = 1']})
    with open_executor(ctx) as ex:
        scored = execute_frame(clean_frame(df), ex)
    assert scored["exec_pass"].to_list() == [False, False]
    assert scored["exec_error"].to_list() == ["unknown_column", "unknown_column"]


def test_student_eval_stage(tmp_path, tiny_model_dir):
    ctx = make_run(tmp_path)
    shutil.copytree(tiny_model_dir, ctx.store.path("student_base/"))
    stage = StudentEvalStage(model_dir="student_base/", output="student_pre", judge=RuleJudge(), batch_size=4,
                             max_new_tokens=6, warmup_rows=2, latency_probe_rows=2, progress=False)
    stage.name = "student_pre"
    stage.validate(ctx)
    ctx.stage = "student_pre"
    with ctx.timer.stage("student_pre"):
        stage.run(ctx)
    eval_ids = ctx.store.read("prompts").filter(pl.col("split") == "eval")["sample_id"].to_list()
    out = ctx.store.read("student_pre")
    assert out["sample_id"].to_list() == eval_ids  # eval rows only, in the prompts' order
    for col in ("generation", "clean_sql", "exec_pass", "exec_error", "gold_match", "judge_score", "tokens_out"):
        assert col in out.columns
    perf = json.loads(ctx.store.path("student_pre_perf.json").read_text())
    assert perf["generated_tokens"] == out["tokens_out"].sum()
    assert 1 <= out["tokens_out"].max() <= 6
    assert perf["rows_per_s"] > 0 and perf["generated_tokens_per_s"] > 0 and perf["load_s"] > 0
    assert perf["peak_rss_bytes"] > 0 and perf["single_row_latency"]["rows"] == 2
    m = ctx.metrics.as_dict()
    for key in ("exec_pass_rate", "gold_match_rate", "judge_mean", "rows", "rows_per_s"):
        assert f"student_pre.{key}" in m
    assert m["student_pre.rows"] == len(eval_ids)
    # Rule judge on the same rows: 1 gold match, 0.5 exec pass only, 0 otherwise.
    expected = [1.0 if g else 0.5 if e else 0.0 for g, e in zip(out["gold_match"], out["exec_pass"])]
    assert out["judge_score"].to_list() == expected


def test_eval_rows_used_in_training_are_refused(tmp_path):
    ctx = make_run(tmp_path)
    eval_rows = ctx.store.read("prompts").filter(pl.col("split") == "eval")
    check_held_out(ctx, eval_rows)  # disjoint: fine
    leaked = ctx.store.read("distilled").vstack(eval_rows.head(1).with_columns(clean_sql=pl.col("gold_sql")))
    ctx.store.write("distilled", leaked)
    with pytest.raises(RuntimeError, match="1 sample ids among the distilled rows"):
        check_held_out(ctx, eval_rows)


def test_eval_prompt_in_train_jsonl_is_refused(tmp_path):
    ctx = make_run(tmp_path)
    eval_rows = ctx.store.read("prompts").filter(pl.col("split") == "eval")
    row = eval_rows.row(0, named=True)
    extra = json.dumps({"messages": [{"role": "system", "content": row["system"]},
                                     {"role": "user", "content": row["user"]},
                                     {"role": "assistant", "content": row["gold_sql"]}]})
    path = ctx.store.path("valid.jsonl")
    path.write_text(path.read_text() + extra + "\n")
    with pytest.raises(RuntimeError, match="1 prompts in train/valid.jsonl"):
        check_held_out(ctx, eval_rows)
