"""Stage `compare`: teacher vs student on the same held-out eval rows (seed 002, done right).

Writes (schema in docs/comparison.md):
  distillation_metrics.json  accuracy of teacher / student_pre / student_post on the SAME rows,
                             delta, retention, size, speed, memory, efficiency; each formula in
                             `formulas`, each null explained in `null_reasons`
  comparison_results.json    agreement between teacher and student, conditional correctness,
                             token-level F1 against gold (aggregates)
  comparison_rows.parquet    the per-row comparison behind comparison_results.json
  plot_accuracy.png          (+ plot_loss.png when train_log exists) via runner.student.plots

Correct = gold match (execution accuracy). An empty prediction is never correct, never exec
pass, never agrees and has token F1 0. Nothing unmeasurable is 0: it is null with a reason.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from runner.core.stage import Stage
from runner.distill.evaluate import open_executor
from runner.lm.perf import safetensors_params, weight_bytes
from runner.student import baseline as base
from runner.student import plots as plotting
from runner.student.paired import log_paired
from runner.text2sql.scoring import results_match, sql_tokens, token_f1

FORMULAS = {
    "exec_pass_rate": "rows whose cleaned SQL is non-empty and executes / rows",
    "gold_match_rate": "rows whose result equals the gold result (scorer semantics) / rows",
    "delta": "student rate - teacher rate (same rows)",
    "retention_pct": "student rate / teacher rate * 100 (null when the teacher rate is 0)",
    "same_sql_rate": "rows where both SQLs are non-empty and their normalised token sequences "
                     "(scoring.sql_tokens) are equal / rows",
    "same_result_rate": "rows where both SQLs execute and return equal NON-EMPTY results (results_match) / rows",
    "both_empty_rate": "rows where both SQLs execute and both return no rows / rows (not counted as agreement)",
    "both_failed_rate": "rows where neither SQL executes (empty SQL counts as failing) / rows",
    "student_right_when_teacher_wrong": "rows with student gold match and teacher not / rows with teacher not",
    "student_right_when_teacher_right": "rows with both gold match / rows with teacher gold match",
    "token_f1": "mean over rows of F1 of SQL token multisets vs gold: 2PR/(P+R); empty prediction = 0",
    "rows_per_s": "rows generated / generation wall seconds (after a warm-up batch; model load excluded)",
    "generated_tokens_per_s": "sum of tokens actually generated per row (stop token included, padding "
                              "excluded) / the same wall seconds",
    "peak_rss_bytes": "process RSS high-water mark over model load + generation (VmHWM reset before)",
    "retention_per_param_ratio": "gold match retention_pct / (student params / teacher params)",
    "accuracy_per_mb": "student gold_match_rate / (student weight bytes / 1e6)",
    "accuracy_per_million_params": "student gold_match_rate / (student params / 1e6)",
    "size_ratio": "student weight bytes / teacher weight bytes",
}


def _rate(df: pl.DataFrame, col: str) -> float | None:
    return float(df[col].fill_null(False).cast(pl.Float64).mean()) if df.height else None


def accuracy(df: pl.DataFrame, prefix: str) -> dict[str, Any]:
    return {"rows": df.height, "exec_pass_rate": _rate(df, f"{prefix}exec_pass"),
            "gold_match_rate": _rate(df, f"{prefix}gold_match")}


def retention(student: float | None, teacher: float | None) -> float | None:
    if student is None or not teacher:
        return None
    return student / teacher * 100.0


def compare_rows(joined: pl.DataFrame, executor) -> pl.DataFrame:
    """Per-row agreement of teacher (t_*) and student (s_*) predictions and token F1 vs gold."""
    out: dict[str, list] = {k: [] for k in ("same_sql", "same_result", "both_empty", "both_failed", "t_f1", "s_f1")}
    ordered_cache: dict[str, bool] = {}
    tables = joined["sql_table"].to_list() if "sql_table" in joined.columns else [None] * joined.height
    for (t_sql, s_sql, gold), table in zip(joined.select("t_clean_sql", "s_clean_sql", "gold_sql").rows(), tables):
        t_sql, s_sql = t_sql or "", s_sql or ""
        t_tok, s_tok = sql_tokens(t_sql), sql_tokens(s_sql)
        out["same_sql"].append(bool(t_tok) and t_tok == s_tok)
        t_res = executor.execute(t_sql, table) if t_sql.strip() else None
        s_res = executor.execute(s_sql, table) if s_sql.strip() else None
        t_ok, s_ok = bool(t_res and t_res.ok), bool(s_res and s_res.ok)
        both_empty = t_ok and s_ok and not t_res.rows and not s_res.rows
        same = False
        if t_ok and s_ok and not both_empty:  # two queries that both find nothing do not agree on anything
            if gold not in ordered_cache:
                ordered_cache[gold] = " order by " in " ".join(gold.lower().split())
            same = results_match(s_res.rows, t_res.rows, ordered=ordered_cache[gold])
        out["same_result"].append(same)
        out["both_empty"].append(both_empty)
        out["both_failed"].append(not t_ok and not s_ok)
        out["t_f1"].append(token_f1(t_sql, gold))
        out["s_f1"].append(token_f1(s_sql, gold))
    return joined.with_columns(*[pl.Series(k, v) for k, v in out.items()])


def agreement(rows: pl.DataFrame) -> dict[str, Any]:
    t_right, s_right = rows["t_gold_match"].fill_null(False), rows["s_gold_match"].fill_null(False)
    n_t_right, n_t_wrong = int(t_right.sum()), int((~t_right).sum())
    both = int((t_right & s_right).sum())
    s_only = int((~t_right & s_right).sum())
    return {
        "rows": rows.height,
        "same_sql_rate": _rate(rows, "same_sql"),
        "same_result_rate": _rate(rows, "same_result"),
        "both_empty_rate": _rate(rows, "both_empty"),
        "both_failed_rate": _rate(rows, "both_failed"),
        "teacher_right": n_t_right, "teacher_wrong": n_t_wrong,
        "student_right_when_teacher_right": both / n_t_right if n_t_right else None,
        "student_right_when_teacher_right_count": both,
        "student_right_when_teacher_wrong": s_only / n_t_wrong if n_t_wrong else None,
        "student_right_when_teacher_wrong_count": s_only,
        "token_f1": {"teacher_mean": float(rows["t_f1"].mean()) if rows.height else None,
                     "student_mean": float(rows["s_f1"].mean()) if rows.height else None},
    }


class CompareStage(Stage):
    reads = ("teacher", "student_post", "student_post_perf.json", "student_model/", "database.json")
    reads_optional = ("student_pre", "student_post_plain", "train_log", "student_adapter/")

    def __init__(self, provider: Any = None, plots: bool = True):
        self.provider = provider  # the teacher's provider: its kind/model say what can be measured
        self.make_plots = plots
        self.writes = ("distillation_metrics.json", "comparison_results.json", "comparison_rows",
                       *(("plot_accuracy.png",) if plots else ()))

    def run(self, ctx) -> None:
        teacher = ctx.store.read("teacher").filter(pl.col("split") == "eval")
        post = ctx.store.read("student_post")
        pre = ctx.store.read("student_pre") if ctx.store.exists("student_pre") else None
        joined = self._join(teacher, post)
        if joined.height == 0:
            raise RuntimeError("teacher and student share no eval row (teacher.answer_eval=false?): "
                               "nothing to compare")
        with open_executor(ctx) as ex:
            rows = compare_rows(joined, ex)
            spread = base.prediction_spread(rows["s_clean_sql"].to_list())
            constant = base.constant_baseline(rows, spread["top_sql"] or "", ex)
        note = base.collapse_note(spread)
        if note:
            ctx.log.warning("compare: %s (constant baseline: exec %.3f, token F1 %.3f)", note,
                            constant["exec_pass_rate"], constant["token_f1"])
        ctx.store.write("comparison_rows", rows)
        ids = rows["sample_id"]
        pre_same = pre.filter(pl.col("sample_id").is_in(ids.implode())) if pre is not None else None
        nulls: dict[str, str] = {}
        acc = {"teacher": accuracy(rows, "t_"), "student_post": accuracy(rows, "s_"),
               "student_pre": accuracy(pre_same, "") if pre_same is not None else None}
        if pre is None:
            nulls["accuracy.student_pre"] = "student_pre did not run (pipeline.skip or disabled)"
        dist = self._distillation(acc, nulls)
        sizes = self._sizes(ctx, nulls)
        perf = self._perf(ctx, teacher, nulls)
        dist.update(self._efficiency(acc, sizes, nulls))
        metrics = {"schema_version": 1, "eval_rows": rows.height, "correct_means": "gold_match",
                   "teacher_simulated": self._teacher_kind() == "simulated",
                   "accuracy": acc, "distillation": dist, "size": sizes, "inference": perf,
                   "formulas": FORMULAS, "null_reasons": nulls}
        results = {"schema_version": 1, "teacher": self._teacher_label(),
                   "student": str(ctx.store.locate("student_model/")),
                   "agreement": agreement(rows),
                   "student_predictions": {"distinct": spread["distinct"], "top_share": spread["top_share"],
                                           "top_sql": spread["top_sql"], "collapsed": note is not None,
                                           "note": note},
                   "constant_baseline": constant,
                   "formulas": {**{k: FORMULAS[k] for k in (
                       "same_sql_rate", "same_result_rate", "both_empty_rate", "both_failed_rate",
                       "student_right_when_teacher_wrong", "student_right_when_teacher_right", "token_f1")},
                       **base.FORMULAS},
                   "per_row": "artifacts/comparison_rows.parquet"}
        ctx.store.write_json("distillation_metrics.json", metrics)
        ctx.store.write_json("comparison_results.json", results)
        self._log(ctx, metrics, results)
        log_paired(ctx, rows, pre_same)
        if self.make_plots:
            plotting.accuracy_bars(acc, ctx.store.path("plot_accuracy.png"), simulated=metrics["teacher_simulated"])
            if ctx.store.exists("train_log"):
                plotting.loss_curves(ctx.store.read("train_log"), ctx.store.path("plot_loss.png"))
        ctx.timer.add_items(rows.height)

    # --- parts ---------------------------------------------------------------------------------
    @staticmethod
    def _join(teacher: pl.DataFrame, post: pl.DataFrame) -> pl.DataFrame:
        extra = ["sql_table"] if "sql_table" in teacher.columns else []
        t = teacher.select("sample_id", "gold_sql", *extra, t_clean_sql="clean_sql", t_exec_pass="exec_pass",
                           t_gold_match="gold_match")
        s = post.select("sample_id", s_clean_sql="clean_sql", s_exec_pass="exec_pass", s_gold_match="gold_match",
                        s_generation="generation")
        return t.join(s, on="sample_id", how="inner")

    @staticmethod
    def _distillation(acc: dict, nulls: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric in ("exec_pass_rate", "gold_match_rate"):
            t, s = acc["teacher"][metric], acc["student_post"][metric]
            out[metric] = {"teacher": t, "student_post": s,
                           "student_pre": acc["student_pre"][metric] if acc["student_pre"] else None,
                           "delta": s - t if s is not None and t is not None else None,
                           "retention_pct": retention(s, t)}
            if out[metric]["retention_pct"] is None:
                nulls[f"distillation.{metric}.retention_pct"] = "teacher rate is 0 (or no rows): ratio undefined"
            if acc["student_pre"]:
                pre = acc["student_pre"][metric]
                out[metric]["training_gain"] = s - pre if s is not None and pre is not None else None
        return out

    def _teacher_kind(self) -> str | None:
        return getattr(self.provider, "kind", None)

    def _teacher_label(self) -> str:
        return self.provider.describe() if self.provider is not None else "unknown"

    def _sizes(self, ctx, nulls: dict) -> dict[str, Any]:
        student_dir = ctx.store.locate("student_model/")
        adapter_dir = ctx.store.locate("student_adapter/")
        s_params = safetensors_params(student_dir)
        if adapter_dir is not None:
            trainable = safetensors_params(adapter_dir)
        else:  # full fine-tuning: every parameter was trained
            trainable = s_params
        student = {"params_total": s_params, "params_trainable": trainable,
                   "weight_bytes": weight_bytes(student_dir),
                   "adapter_bytes": weight_bytes(adapter_dir) if adapter_dir is not None else None,
                   "method": "adapter" if adapter_dir is not None else "full"}
        if adapter_dir is None:
            nulls["size.student.adapter_bytes"] = "no adapter: the student was fully fine-tuned (merged weights only)"
        teacher: dict[str, Any] = {"params_total": None, "weight_bytes": None}
        kind = self._teacher_kind()
        t_path = Path(getattr(self.provider, "model", "") or "")
        if kind == "local_hf" and t_path.is_dir():
            teacher = {"params_total": safetensors_params(t_path), "weight_bytes": weight_bytes(t_path)}
        else:
            why = ("the teacher is simulated (no model exists)" if kind == "simulated" else
                   f"the teacher is served through an API ({kind}): its size is not observable")
            nulls["size.teacher.params_total"] = why
            nulls["size.teacher.weight_bytes"] = why
        size_ratio = (student["weight_bytes"] / teacher["weight_bytes"]
                      if student["weight_bytes"] and teacher["weight_bytes"] else None)
        if size_ratio is None:
            nulls["size.size_ratio"] = "teacher weight bytes unknown"
        return {"teacher": teacher, "student": student, "size_ratio": size_ratio}

    def _perf(self, ctx, teacher_eval: pl.DataFrame, nulls: dict) -> dict[str, Any]:
        student = json.loads(ctx.store.locate("student_post_perf.json").read_text())
        for k, why in student.get("null_reasons", {}).items():
            nulls[f"inference.student.{k}"] = why
        fresh = teacher_eval.filter(~pl.col("cache_hit").fill_null(False) & pl.col("error").is_null())
        lat = fresh["latency_s"].drop_nulls() if "latency_s" in fresh.columns else pl.Series([], dtype=pl.Float64)
        teacher = {"latency_p50_s": float(lat.quantile(0.5, "linear")) if lat.len() else None,
                   "latency_p95_s": float(lat.quantile(0.95, "linear")) if lat.len() else None,
                   "rows_timed": int(lat.len()), "simulated": self._teacher_kind() == "simulated"}
        if not lat.len():
            nulls["inference.teacher.latency"] = "every teacher eval answer came from the response cache"
        elif teacher["simulated"]:
            nulls["inference.teacher.note"] = "teacher latencies are SIMULATED (sampled from the simulator's model)"
        return {"teacher": teacher, "student": {k: v for k, v in student.items() if k != "null_reasons"}}

    @staticmethod
    def _efficiency(acc: dict, sizes: dict, nulls: dict) -> dict[str, Any]:
        gm = acc["student_post"]["gold_match_rate"]
        s_params, t_params = sizes["student"]["params_total"], sizes["teacher"]["params_total"]
        s_bytes = sizes["student"]["weight_bytes"]
        ret = retention(gm, acc["teacher"]["gold_match_rate"])
        eff = {
            "retention_per_param_ratio": (ret / (s_params / t_params) if ret is not None and s_params and t_params
                                          else None),
            "accuracy_per_mb": gm / (s_bytes / 1e6) if gm is not None and s_bytes else None,
            "accuracy_per_million_params": gm / (s_params / 1e6) if gm is not None and s_params else None,
        }
        if eff["retention_per_param_ratio"] is None:
            nulls["efficiency.retention_per_param_ratio"] = "needs both parameter counts and a non-zero teacher rate"
        return {"efficiency": eff}

    def _log(self, ctx, metrics: dict, results: dict) -> None:
        d = metrics["distillation"]
        ctx.metrics.update("compare", {
            "eval_rows": metrics["eval_rows"],
            "teacher_exec_pass_rate": d["exec_pass_rate"]["teacher"],
            "teacher_gold_match_rate": d["gold_match_rate"]["teacher"],
            "student_exec_pass_rate": d["exec_pass_rate"]["student_post"],
            "student_gold_match_rate": d["gold_match_rate"]["student_post"],
            # greedy | greedy+wikisql (constrained decoding: exec pass is then ~1 by construction)
            "student_decoding": metrics["inference"]["student"].get("decoding", "greedy"),
            "gold_match_retention_pct": d["gold_match_rate"]["retention_pct"],
            # retention compares like with like only when the student decodes as the teacher does
            "retention_like_for_like": metrics["inference"]["student"].get("decoding", "greedy") == "greedy",
            "exec_pass_retention_pct": d["exec_pass_rate"]["retention_pct"],
            "same_sql_rate": results["agreement"]["same_sql_rate"],
            "same_result_rate": results["agreement"]["same_result_rate"],
            "both_empty_rate": results["agreement"]["both_empty_rate"],
            "both_failed_rate": results["agreement"]["both_failed_rate"],
            "student_token_f1": results["agreement"]["token_f1"]["student_mean"],
            "constant_baseline_token_f1": results["constant_baseline"]["token_f1"],
            "constant_baseline_exec_pass_rate": results["constant_baseline"]["exec_pass_rate"],
            "constant_baseline_gold_match_rate": results["constant_baseline"]["gold_match_rate"],
            "student_distinct_predictions": results["student_predictions"]["distinct"],
            "student_top_prediction_share": results["student_predictions"]["top_share"],
            "student_collapsed": results["student_predictions"]["collapsed"],
            "accuracy_per_mb": d["efficiency"]["accuracy_per_mb"]})
