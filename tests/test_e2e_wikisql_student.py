"""wikisql_smoke end to end with the student side on (tiny scratch student): every stage runs,
the outputs contract holds, and teacher and student are compared on the same held-out rows."""
from __future__ import annotations

import json

import polars as pl

from tests.conftest import read_metrics, requires_data, run_cli


@requires_data
def test_wikisql_smoke_with_student_end_to_end(tmp_path):
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", "student.size=tiny"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and m["teacher.provider"] == "simulated"
    timing = json.loads((run_dir / "timing.json").read_text())
    assert list(timing["stages"]) == ["load", "hash", "prompt", "teacher", "clean", "execute", "judge", "gate",
                                      "filter", "export", "student_init", "student_pre", "train",
                                      "student_post", "compare"]
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
