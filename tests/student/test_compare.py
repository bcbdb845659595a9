"""compare: teacher vs student on the same eval rows, with hand-computed expectations."""
from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from runner.distill.evaluate import clean_frame, execute_frame, open_executor
from runner.lm.perf import safetensors_params
from runner.providers.local_hf import LocalHFProvider
from runner.student.compare import CompareStage
from runner.text2sql.scoring import token_f1
from tests.lm.tiny_lm import tiny_model_dir  # noqa: F401 (fixture)
from tests.student.mini_run import gold_sql, make_run

# Eval rows of mini_run, in order: dan-city, dan-age, eve-city, eve-age, fay-city, fay-age.
TEACHER = [gold_sql("dan"), gold_sql("dan", "age"), gold_sql("eve"), gold_sql("eve", "age"),
           gold_sql("fay", "age"),  # wrong column: executes, not gold
           ""]                      # empty answer
STUDENT = ["```sql\n" + gold_sql("dan") + "\n```",    # right, same SQL once cleaned
           "select age from t where name = 'dan'",    # right, same SQL after normalisation
           gold_sql("ann"),                           # wrong row: executes, not gold
           "",                                        # empty: never exec pass, never right
           gold_sql("fay"),                           # right where the teacher is wrong
           ""]                                        # both empty: no agreement


class SimulatedTeacher:
    kind, model = "simulated", "simulated-teacher"

    def describe(self):
        return "simulated:simulated-teacher"


def _scored(ctx, texts):
    eval_rows = ctx.store.read("prompts").filter(pl.col("split") == "eval")
    df = eval_rows.with_columns(generation=pl.Series(texts), latency_s=pl.lit(0.2), cache_hit=pl.lit(False),
                                error=pl.lit(None, dtype=pl.String))
    with open_executor(ctx) as ex:
        return execute_frame(clean_frame(df), ex)


def _setup(tmp_path, model_dir, teacher_texts=TEACHER):
    ctx = make_run(tmp_path)
    ctx.store.write("teacher", _scored(ctx, teacher_texts))
    ctx.store.write("student_post", _scored(ctx, STUDENT))
    shutil.copytree(model_dir, ctx.store.path("student_model/"))
    ctx.store.write_json("student_post_perf.json", {"rows_per_s": 12.5, "generated_tokens_per_s": 300.0,
                                                    "load_s": 0.1, "null_reasons": {}})
    ctx.store.write("train_log", pl.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5],
                                               "valid_loss": [None, 2.2, None]}))
    return ctx


def _run(ctx, provider):
    stage = CompareStage(provider=provider)
    stage.name = ctx.stage = "compare"
    with ctx.timer.stage("compare"):
        stage.run(ctx)
    return (json.loads(ctx.store.path("distillation_metrics.json").read_text()),
            json.loads(ctx.store.path("comparison_results.json").read_text()))


def test_token_f1_on_known_token_sets():
    assert token_f1('SELECT "a" FROM t', "SELECT a FROM t WHERE b = 1") == pytest.approx(2 / 3)  # P=1, R=1/2
    assert token_f1("select A from T", 'SELECT "a" FROM t') == 1.0  # identifiers unquoted and lowercased
    assert token_f1("", "SELECT a FROM t") == 0.0
    assert token_f1("SELECT b FROM u", "SELECT a FROM t") == pytest.approx(0.5)  # 2 of 4 tokens each


def test_compare_metrics(tmp_path, tiny_model_dir):
    ctx = _setup(tmp_path, tiny_model_dir)
    dist, comp = _run(ctx, SimulatedTeacher())
    acc = dist["accuracy"]
    assert acc["teacher"] == {"rows": 6, "exec_pass_rate": pytest.approx(5 / 6),
                              "gold_match_rate": pytest.approx(4 / 6)}
    assert acc["student_post"] == {"rows": 6, "exec_pass_rate": pytest.approx(4 / 6),
                                   "gold_match_rate": pytest.approx(3 / 6)}
    gm = dist["distillation"]["gold_match_rate"]
    assert gm["delta"] == pytest.approx(-1 / 6) and gm["retention_pct"] == pytest.approx(75.0)
    assert dist["distillation"]["exec_pass_rate"]["retention_pct"] == pytest.approx(80.0)
    a = comp["agreement"]
    assert a["same_sql_rate"] == pytest.approx(2 / 6) and a["same_result_rate"] == pytest.approx(2 / 6)
    assert a["both_empty_rate"] == 0.0 and a["both_failed_rate"] == pytest.approx(1 / 6)  # row 5: both empty SQL
    assert a["student_right_when_teacher_wrong"] == pytest.approx(1 / 2)
    assert a["student_right_when_teacher_right"] == pytest.approx(2 / 4)
    assert a["token_f1"]["student_mean"] == pytest.approx((1 + 1 + 7 / 8 + 0 + 1 + 0) / 6)  # 7/8: one literal off
    assert a["token_f1"]["teacher_mean"] == pytest.approx((4 + 7 / 8 + 0) / 6)
    # Sizes: student measured from its safetensors, the simulated teacher's is null with a reason.
    params = safetensors_params(ctx.store.path("student_model/"))
    assert dist["size"]["student"]["params_total"] == params > 0
    assert dist["size"]["student"]["params_trainable"] == params  # full fine-tuning, no adapter
    assert dist["size"]["student"]["weight_bytes"] > params * 4 - 1  # fp32 weights
    assert dist["size"]["teacher"]["params_total"] is None
    assert "simulated" in dist["null_reasons"]["size.teacher.params_total"]
    eff = dist["distillation"]["efficiency"]
    assert eff["retention_per_param_ratio"] is None and "efficiency.retention_per_param_ratio" in dist["null_reasons"]
    assert eff["accuracy_per_mb"] == pytest.approx(0.5 / (dist["size"]["student"]["weight_bytes"] / 1e6))
    assert dist["teacher_simulated"] is True
    for png in ("plot_accuracy.png", "plot_loss.png"):
        assert ctx.store.path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ctx.store.read("comparison_rows").height == 6
    assert ctx.metrics.get("compare.gold_match_retention_pct") == pytest.approx(75.0)


def test_unmeasurable_values_are_null_with_a_reason_never_zero(tmp_path, tiny_model_dir):
    ctx = _setup(tmp_path, tiny_model_dir, teacher_texts=[""] * 6)  # a teacher that is never right
    dist, comp = _run(ctx, SimulatedTeacher())
    gm = dist["distillation"]["gold_match_rate"]
    assert gm["teacher"] == 0.0 and gm["retention_pct"] is None
    assert "distillation.gold_match_rate.retention_pct" in dist["null_reasons"]
    assert comp["agreement"]["student_right_when_teacher_right"] is None  # no row where the teacher is right
    assert dist["accuracy"]["student_pre"] is None and "accuracy.student_pre" in dist["null_reasons"]


def test_local_teacher_size_is_measured(tmp_path, tiny_model_dir):
    ctx = _setup(tmp_path, tiny_model_dir)
    dist, _ = _run(ctx, LocalHFProvider(str(tiny_model_dir)))
    t, s = dist["size"]["teacher"], dist["size"]["student"]
    assert t["params_total"] == s["params_total"] and dist["size"]["size_ratio"] == pytest.approx(1.0)
    assert dist["distillation"]["efficiency"]["retention_per_param_ratio"] == pytest.approx(75.0)


def test_both_empty_is_not_agreement_and_a_collapsed_student_meets_its_constant_baseline(tmp_path, tiny_model_dir):
    zed = gold_sql("zed")  # executes on the toy table and finds nothing
    teacher = [zed, gold_sql("dan", "age"), gold_sql("eve"), "", gold_sql("fay", "age"), ""]
    student = [zed, zed, zed, zed, gold_sql("dan"), ""]
    ctx = _setup(tmp_path, tiny_model_dir, teacher_texts=teacher)
    ctx.store.write("student_post", _scored(ctx, student))
    _, comp = _run(ctx, SimulatedTeacher())
    a = comp["agreement"]
    # row 0: both return nothing (not agreement); row 5: both empty SQL (both failed)
    assert a["same_result_rate"] == 0.0
    assert a["both_empty_rate"] == pytest.approx(1 / 6) and a["both_failed_rate"] == pytest.approx(1 / 6)
    spread = comp["student_predictions"]
    assert spread["distinct"] == 3 and spread["top_share"] == pytest.approx(4 / 6) and spread["top_sql"] == zed
    assert spread["collapsed"] is True and "67%" in spread["note"]
    golds = ctx.store.read("comparison_rows")["gold_sql"].to_list()
    base = comp["constant_baseline"]
    assert base["sql"] == zed and base["exec_pass_rate"] == 1.0 and base["gold_match_rate"] == 0.0
    assert base["token_f1"] == pytest.approx(sum(token_f1(zed, g) for g in golds) / 6)
    m = ctx.metrics.as_dict()
    assert m["compare.student_distinct_predictions"] == 3 and m["compare.student_collapsed"] is True
    assert m["compare.constant_baseline_exec_pass_rate"] == 1.0
    assert m["compare.constant_baseline_token_f1"] == pytest.approx(base["token_f1"])
