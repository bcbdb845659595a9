"""`+experiment=wikisql_logit_kd` at smoke size through the CLI, as a user types it: the local
teacher is trained and evaluated, the tiny student shares its tokenizer, the offline top-k store is
computed once and reused by the second job of an alpha sweep, and runner.report plots gold match
against alpha. Plus the fail-early checks of the kd block on the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, read_metrics, requires_data, run_cli

pytestmark = requires_data

SMOKE = ["dataset.n_train=40", "dataset.n_eval=10", "gate.pilot_size=10", "gate.min_total=20",
         "pipeline.stages.kd_teacher_init.student.size=tiny", "pipeline.stages.kd_teacher_train.trainer.max_steps=6",
         "trainer.torch.max_steps=4", "pipeline.stages.kd_teacher_eval.max_new_tokens=8",
         "pipeline.stages.student_pre.max_new_tokens=8", "pipeline.stages.student_post.max_new_tokens=8"]
STAGES = ["load", "hash", "prompt", "teacher", "clean", "execute", "judge", "gate", "filter", "export",
          "kd_teacher_init", "kd_teacher_train", "kd_teacher_eval", "student_init", "student_pre",
          "teacher_logits", "train", "student_post", "compare"]


@pytest.mark.slow
def test_logit_kd_alpha_sweep_end_to_end(tmp_path):
    proc, sweep = run_cli(["-m", "+experiment=wikisql_logit_kd", *SMOKE, "trainer.torch.kd.alpha=0,0.9"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = [read_metrics(sweep / str(i)) for i in (0, 1)]
    for i, m in enumerate(jobs):
        assert m["status"] == "ok", m.get("error")
        timing = json.loads((sweep / str(i) / "timing.json").read_text())
        assert list(timing["stages"]) == STAGES
        # the teacher's and the student's held-out figures, and the KD cost figures
        for key in ("kd_teacher_eval.gold_match_rate", "kd_teacher_eval.exec_pass_rate",
                    "student_pre.gold_match_rate", "student_post.gold_match_rate", "train.best_valid_loss",
                    "train.kd_teacher_s", "train.tokens_per_s", "teacher_logits.bytes_per_token"):
            assert key in m, key
        assert m["student.vocab_size"] == m["kd_teacher.vocab_size"]  # one tokenizer
        assert m["teacher_logits.bytes_per_token"] == 16 * (2 + 2)   # k=16, int16 ids, float16 log-probs
        art = sweep / str(i) / "artifacts"
        assert (art / "kd_teacher_base" / "tokenizer.json").read_bytes() == \
            (art / "student_base" / "tokenizer.json").read_bytes()
    a0, a9 = jobs
    assert a0["train.kd_alpha"] == 0 and a9["train.kd_alpha"] == 0.9
    assert a0["train.kd_teacher_s"] == 0 and a9["train.kd_teacher_s"] > 0   # alpha 0 never asks the teacher
    # same seed, same teacher weights, same rows: the second job reuses the first job's store
    assert not a0["teacher_logits.cache_hit"] and a9["teacher_logits.cache_hit"]
    assert a0["teacher_logits.cache_key"] == a9["teacher_logits.cache_key"]
    assert a0["kd_teacher_eval.gold_match_rate"] == a9["kd_teacher_eval.gold_match_rate"]

    rep = subprocess.run([sys.executable, "-m", "runner.report", str(sweep),
                          "--metrics", "student_post.gold_match_rate,train.best_valid_loss"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), **__import__("os").environ})
    assert rep.returncode == 0, rep.stderr[-2000:]
    plots = {p.name for p in sweep.rglob("*.png")}
    assert "student_post.gold_match_rate__vs__trainer.torch.kd.alpha.png" in plots, plots


def test_kd_config_errors_fail_before_any_work(tmp_path):
    proc, run_dir = run_cli(["+experiment=wikisql_logit_kd", *SMOKE, "trainer.torch.kd.alpha=1.5"], tmp_path / "a")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    m = read_metrics(run_dir)
    assert m["status"] == "failed" and "trainer.torch.kd.alpha=1.5" in m["error"] and "teacher.requests" not in m
    proc, run_dir = run_cli(["+experiment=wikisql_logit_kd", *SMOKE[:4], "trainer=mlx"], tmp_path / "b")
    assert proc.returncode == 1
    m = read_metrics(run_dir)
    assert "trainer=torch only" in m["error"] and "teacher.requests" not in m
