"""The burgers_cd experiment through the CLI: fail-fast validation, the smoke run, and reuse."""
from __future__ import annotations

import json
import math
import time

import pytest

from tests.conftest import read_metrics, run_cli

SMOKE = ["+experiment=burgers_cd_smoke", "pipeline.runtime.num_threads=1"]


def test_invalid_micro_batch_fails_at_validation_before_data(tmp_path):
    t0 = time.perf_counter()
    proc, run_dir = run_cli(["+experiment=burgers_cd", "consistency_distill.batch_size=12",
                             "consistency_distill.micro_batch=5"], tmp_path)
    wall = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    m = read_metrics(run_dir)
    assert m["status"] == "failed"
    assert "micro_batch=5" in m["error"] and "batch_size=12" in m["error"]
    assert not (tmp_path / "cache" / "burgers1d").exists()  # no data was generated
    assert wall < 20, f"validation took {wall:.1f} s"


def test_bf16_on_cpu_is_a_config_error(tmp_path):
    proc, run_dir = run_cli([*SMOKE, "pipeline.runtime.device=cpu",
                             "consistency_distill.bf16=true"], tmp_path)
    assert proc.returncode == 1
    err = read_metrics(run_dir)["error"]
    assert "bf16" in err and "CUDA" in err


@pytest.mark.slow
def test_smoke_experiment_end_to_end_then_rerun_distillation_on_its_teacher(tmp_path):
    t0 = time.perf_counter()
    proc, run_dir = run_cli(SMOKE, tmp_path / "a")
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert wall < 30, f"smoke run took {wall:.1f} s"
    m = read_metrics(run_dir)
    keys = ["cd.nrmse_operator", "cd.nrmse_teacher", "cd.nrmse_teacher_lowstep", "cd.nrmse_student_1step",
            "cd.nrmse_student_2step", "cd.nrmse_student_vs_teacher", "cd.nrmse_teacher_ensemble",
            "cd.nrmse_student_ensemble", "cd.sampling_speedup", "cd.flops_total", "cd.distill_samples_per_s"]
    for k in keys:
        assert isinstance(m[k], (int, float)) and math.isfinite(m[k]) and m[k] > 0, (k, m.get(k))
    assert (m["cd.nfe_teacher"], m["cd.nfe_student"]) == (7, 1)  # smoke: 4 Heun steps
    # 20 steps x batch 16 x 4 taus; the seed's formula counts 20 x (16/4) x 4 instead.
    assert m["cd.rows_student_fwd_bwd"] == 20 * 16 * 4 and m["cd.rows_teacher_fwd"] == 2 * 20 * 16 * 4
    assert m["cd.forward_passes_seed_formula"] == 20 * 4 * 4
    assert m["run.samples"] == m["cd.distill_samples"] == 20 * 16
    art = run_dir / "artifacts"
    report = json.loads((art / "cd_report.json").read_text())
    assert report["metrics"]["nrmse_student_1step"] == m["cd.nrmse_student_1step"]
    for png in ("cd_nrmse_vs_nfe.png", "cd_test_cases.png"):
        assert (art / png).read_bytes()[:4] == b"\x89PNG"

    # Rerun only distillation + evaluation on the first run's teacher, with other CD settings.
    proc, rerun = run_cli([*SMOKE, "pipeline.skip=[operator,diffusion_teacher]",
                           f"pipeline.reuse_from=[{run_dir}]", "consistency_distill.num_taus=2"], tmp_path / "b")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m2 = read_metrics(rerun)
    assert m2["cd.rows_student_fwd_bwd"] == 20 * 16 * 2
    assert m2["cd.nrmse_teacher"] == m["cd.nrmse_teacher"]  # same teacher, same evaluation noise
    assert not (rerun / "artifacts" / "teacher.pt").exists()


@pytest.mark.slow
def test_burgers_cd_meets_its_claims(tmp_path):
    # The README's command, unchanged: the student's 1-step NRMSE is within 1.1x the 35-NFE
    # teacher's, and measured sampling is more than 10x faster. A student that did not learn
    # (or a teacher sampled with too few steps) fails here.
    proc, run_dir = run_cli(["+experiment=burgers_cd"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert (m["cd.nfe_teacher"], m["cd.nfe_student"]) == (35, 1)
    assert m["cd.nrmse_student_1step"] <= 1.1 * m["cd.nrmse_teacher"], (m["cd.nrmse_student_1step"],
                                                                        m["cd.nrmse_teacher"])
    assert m["cd.sampling_speedup"] > 10, m["cd.sampling_speedup"]
    # distillation, not a copy of the operator: the student tracks the teacher's samples closely
    assert m["cd.nrmse_student_vs_teacher"] < 0.5 * m["cd.nrmse_teacher"]
    assert m["cd.nrmse_teacher_lowstep"] > m["cd.nrmse_student_1step"]  # few teacher steps are worse
