"""wikisql_smoke end to end with the student side on (tiny scratch student): every stage runs,
the outputs contract holds, and teacher and student are compared on the same held-out rows.
Once with the default trainer (torch on Linux), once with trainer=mlx (mlx-lm training and generation);
and a second torch run with the same seed that must give the same metrics."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import read_metrics, requires_data, run_cli

STAGES = ["load", "hash", "prompt", "teacher", "clean", "execute", "judge", "gate", "filter", "export",
          "student_init", "student_pre", "train", "student_post", "compare"]


def assert_student_run(proc, run_dir: Path) -> dict:
    """The contract every student run keeps, whatever the trainer; returns metrics.json."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and m["teacher.provider"] == "simulated"
    timing = json.loads((run_dir / "timing.json").read_text())
    assert list(timing["stages"]) == STAGES
    art = run_dir / "artifacts"
    eval_ids = set(pl.read_parquet(art / "prompts.parquet").filter(pl.col("split") == "eval")["sample_id"])
    for stage in ("student_pre", "student_post"):
        rows = pl.read_parquet(art / f"{stage}.parquet")
        assert set(rows["sample_id"]) == eval_ids  # held-out rows only, all of them
        assert m[f"{stage}.rows"] == len(eval_ids)
        for key in ("exec_pass_rate", "gold_match_rate", "judge_mean", "rows_per_s"):
            assert f"{stage}.{key}" in m
    assert not eval_ids & set(pl.read_parquet(art / "distilled.parquet")["sample_id"])
    assert m["train.steps"] > 0 and m["train.final_loss"] is not None
    log = pl.read_parquet(art / "train_log.parquet")
    assert log["loss"].drop_nulls().len() == m["train.steps"]
    for name in ("distillation_metrics.json", "comparison_results.json", "plot_accuracy.png", "plot_loss.png"):
        assert (art / name).stat().st_size > 0, name
    dist = json.loads((art / "distillation_metrics.json").read_text())
    # The simulated teacher has no size: null with a reason, never 0.
    assert dist["size"]["teacher"]["params_total"] is None
    assert any("teacher" in k for k in dist["null_reasons"])
    assert (art / "student_model" / "config.json").exists()
    # Values a broken pipeline would miss: the simulated teacher at its calibration (~0.92 exec,
    # ~0.46 gold), filtering that only keeps executing rows, an untrained student that is never
    # right, metrics that equal what the artifacts hold, and the constant baseline beside them.
    assert m["teacher.exec_pass_rate"] >= 0.75 and m["teacher.gold_match_rate"] >= 0.3
    assert m["distilled.exec_pass_rate"] == 1.0 and m["distilled.gold_match_rate"] >= m["teacher.gold_match_rate"]
    assert m["student_pre.gold_match_rate"] == 0.0
    for stage in ("student_pre", "student_post"):
        rows = pl.read_parquet(art / f"{stage}.parquet")
        assert m[f"{stage}.exec_pass_rate"] == pytest.approx(rows["exec_pass"].mean())
        assert m[f"{stage}.gold_match_rate"] == pytest.approx(rows["gold_match"].mean())
        assert not rows.filter(pl.col("exec_error") == "unknown_column")["exec_pass"].any()
    results = json.loads((art / "comparison_results.json").read_text())
    post = pl.read_parquet(art / "student_post.parquet")
    counts = post["clean_sql"].fill_null("").value_counts()
    top_n = counts["count"].max()
    assert m["compare.student_distinct_predictions"] == counts.height
    assert m["compare.student_top_prediction_share"] == pytest.approx(top_n / post.height)
    assert results["constant_baseline"]["sql"] in counts.filter(pl.col("count") == top_n)["clean_sql"].to_list()
    agree = results["agreement"]
    assert agree["same_result_rate"] + agree["both_empty_rate"] <= 1.0
    # the loss fell from ~ln(vocab) at random init (smoke: a few steps, measured 7.01 -> 6.53)
    loss = log["loss"].drop_nulls()
    assert loss[-1] < 0.97 * loss[0], (loss[0], loss[-1])
    assert m["run.notices"] and "SIMULATED" in m["run.notices"][0]
    return m


def _at(doc: dict, dotted: str):
    """doc["a"]["b"] for "a.b"; KeyError where the reason names no single value (e.g. a note)."""
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            raise KeyError(dotted)
        doc = doc[part]
    return doc


# As the README writes it, with size overrides only: a few training steps, short answers.
SMOKE = ["+experiment=wikisql_smoke", "student.size=tiny", "trainer.torch.max_steps=6",
         "pipeline.stages.student_pre.max_new_tokens=8", "pipeline.stages.student_post.max_new_tokens=8"]
# Measured durations, rates per second, memory, dates and hosts: everything else must be equal.
VOLATILE = re.compile(r"(_s$|_s_|per_s|per_hour|latency|wall|started_at|ended_at|rss|memory|^run\.|^version\."
                      r"|elapsed|speedup|_ms$|host|pid|gflops|threads|accuracy_per_mb)")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run, read by the end-to-end test and compared with a second run for reproducibility."""
    tmp = tmp_path_factory.mktemp("smoke_a")
    return run_cli(SMOKE, tmp)


@requires_data
def test_wikisql_smoke_with_student_end_to_end(smoke_run):
    m = assert_student_run(*smoke_run)
    assert m["train.steps"] == 6 and m["train.stopped_by"] == "steps"


@requires_data
@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_the_same_metrics(smoke_run, tmp_path):
    """Same command, same seed, same numbers: a second run of the smoke job (its own cache, so it
    recomputes everything) gives the first run's metrics.json values, timings and timestamps aside.
    Nothing may depend on how busy the machine is (a wall budget that decides the step count did:
    train.stopped_by says when it happens)."""
    proc, run_dir = run_cli(SMOKE, tmp_path)
    assert proc.returncode == 0 and smoke_run[0].returncode == 0, proc.stderr[-3000:]
    a, b = read_metrics(smoke_run[1]), read_metrics(run_dir)
    stable = sorted(k for k in a if not VOLATILE.search(k))
    assert len(stable) > 100  # the comparison covers the run, not a handful of keys
    assert set(stable) <= set(b)
    diff = {k: (a[k], b[k]) for k in stable if a[k] != b[k]}
    assert not diff, diff
    assert a["train.final_loss"] == b["train.final_loss"] and a["student_post.gold_match_rate"] is not None


@requires_data
@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None,
                    reason="mlx-lm is not installed (pip install 'mlx[cpu]' mlx-lm on Linux)")
@pytest.mark.slow
def test_wikisql_smoke_with_mlx_student_end_to_end(tmp_path):
    # mlx on Linux CPU is slow: a few small batches. batch_size=2 fits the 2 usable valid rows,
    # so mlx-lm's validation (full batches only) runs and best_valid_loss is measured.
    # 4 steps take the loss from ~6.9 to ~5.8 (measured), ~1 s each here.
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", "student.size=tiny", "trainer=mlx", "trainer.iters=4",
                             "trainer.batch_size=2", "trainer.steps_per_eval=2", "trainer.val_batches=1",
                             "pipeline.stages.student_pre.max_new_tokens=8",
                             "pipeline.stages.student_post.max_new_tokens=8"], tmp_path)
    m = assert_student_run(proc, run_dir)
    art = run_dir / "artifacts"
    assert m["train.backend"] == "mlx" and m["train.steps"] == 4
    assert m["student_pre.backend"] == m["student_post.backend"] == "mlx"  # evaluated with mlx-lm too
    loss = pl.read_parquet(art / "train_log.parquet")["loss"].drop_nulls()
    assert loss[-1] < loss[0]  # it trained (from ~ln(vocab) at random init)
    assert m["train.best_valid_loss"] is not None and m["train.tokens"] > 0 and m["train.tokens_per_s"] > 0
    for stage in ("student_pre", "student_post"):
        assert m[f"{stage}.rows_per_s"] > 0 and m[f"{stage}.generated_tokens_per_s"] > 0
        assert m[f"{stage}.errors"] == 0
        assert m[f"{stage}.peak_rss_growth_bytes"] is None or m[f"{stage}.peak_rss_growth_bytes"] >= 0

    dist = json.loads((art / "distillation_metrics.json").read_text())
    reasons = dist["null_reasons"]
    # mlx generation does not count parameters: null with a reason; compare counts them from the weights.
    assert dist["inference"]["student"]["params_total"] is None and "inference.student.params_total" in reasons
    assert dist["size"]["student"]["params_total"] == m["train.params_total"] > 0
    for key in reasons:  # every explained value is null, never a stand-in 0
        try:
            assert _at(dist, key) is None, key
        except KeyError:
            pass
    results = json.loads((art / "comparison_results.json").read_text())
    assert results["agreement"]["rows"] == m["student_post.rows"]

    # The saved student loads in transformers AND mlx-lm, and both compute the same logits.
    import mlx.core as mx
    import numpy as np
    import torch
    from mlx_lm import load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = art / "student_model"
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("SELECT COUNT(*) FROM t WHERE x = 1", return_tensors="pt").input_ids
    with torch.no_grad():
        torch_logits = AutoModelForCausalLM.from_pretrained(folder)(ids).logits[0].float().numpy()
    mlx_model, _ = load(str(folder))
    mlx_logits = np.array(mlx_model(mx.array(ids.numpy()))[0].astype(mx.float32))
    np.testing.assert_allclose(mlx_logits, torch_logits, atol=1e-3)
