"""Sweeps through the real CLI: launchers (basic, joblib, submitit_local), Optuna presets,
failing jobs, and the shared teacher cache across parallel jobs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runner.report import build_report
from tests.conftest import read_metrics, requires_data, run_cli

# trainer=none: no student side (its own tests cover it); the sweep machinery is what is tested here.
SMOKE = ["+experiment=wikisql_smoke", "trainer=none"]

pytestmark = requires_data


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def test_seed_sweep_makes_one_job_folder_per_value(tmp_path, session_cache):
    proc, sweep = run_cli([*SMOKE, "-m", "seed=1,2"], tmp_path, cache_dir=session_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, seed in zip(jobs, (1, 2)):
        m = read_metrics(job)
        assert m["status"] == "ok" and m["seed"] == seed
        assert json.loads((job / "timing.json").read_text())["stages"]


@pytest.mark.slow
def test_joblib_2x2_filter_sweep_report_and_shared_cache(tmp_path):
    # Fresh cache: the 4 jobs (2 at a time) differ only in filters, so together they must send
    # each of the teacher requests exactly once; every other lookup is a cache hit.
    proc, sweep = run_cli([*SMOKE, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "filters.min_score=0.5,0.9", "filters.require_gold=false,true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    metrics = [read_metrics(j) for j in jobs]
    assert all(m["status"] == "ok" for m in metrics)

    report = build_report([sweep], metrics=["teacher.*", "filter.kept", "distilled.gold_match_rate"])
    assert len(report.rows) == 4
    assert {"filters.min_score", "filters.require_gold"} <= set(report.columns)
    for row in report.rows:
        m = read_metrics(sweep / row["job"])
        for col in report.columns:
            if col in m:
                assert row[col] == m[col], (row["job"], col)
    assert (sweep / "report.csv").read_text().count("\n") == 5
    assert (sweep / "report.md").exists() and (sweep / "report_plots" / "stage_times.png").exists()

    per_job = metrics[0]["teacher.requests"] + metrics[0]["teacher.cache_hits"]
    assert per_job > 0 and all(m["teacher.requests"] + m["teacher.cache_hits"] == per_job for m in metrics)
    sent = sum(m["teacher.requests"] for m in metrics)
    assert sent == per_job, f"teacher requests sent across the 4 jobs: {sent}; distinct requests: {per_job}"
    assert sum(m["teacher.cache_hits"] for m in metrics) == 3 * per_job


def test_sweep_with_one_invalid_value_reports_one_failed_job(tmp_path, session_cache):
    # joblib: the failed job must come back as a result from a worker process, not kill the pool.
    proc, sweep = run_cli([*SMOKE, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "filters.min_score=0.3,0.9,1.5"], tmp_path, cache_dir=session_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a multirun goes on past a failed job
    report = build_report([sweep], metrics=["filter.kept"], plot=False)
    by_status = {}
    for r in report.rows:
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status["ok"]) == 2 and len(by_status["failed"]) == 1
    bad = by_status["failed"][0]
    assert bad["filters.min_score"] == 1.5 and "min_score" in bad["error"]
    ok_only = build_report([sweep], where="status = 'ok'", plot=False)
    assert len(ok_only.rows) == 2


def test_optuna_preset_runs_three_trials(tmp_path, session_cache):
    # No student stage in the smoke job: optimise the distilled set (documented in the preset).
    proc, sweep = run_cli([*SMOKE, "hparams_search=wikisql_filters_optuna", "optimized_metric=distilled.gold_match_rate",
                       "hydra.sweeper.n_trials=3", "-m"], tmp_path, cache_dir=session_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == {"filters.min_score", "filters.min_chars", "filters.require_exec",
                                           "filters.dedup"}
    values = [read_metrics(j)["distilled.gold_match_rate"] for j in job_dirs(sweep)]
    assert len(values) == 3 and results["best_value"] == pytest.approx(max(values))


def test_submitit_local_runs_two_jobs(tmp_path, session_cache):
    proc, sweep = run_cli([*SMOKE, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                       "seed=1,2"], tmp_path, cache_dir=session_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [read_metrics(j)["status"] for j in job_dirs(sweep)] == ["ok", "ok"]
    # The submitit code path really ran: its job folders hold the pickled results.
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))


def test_slurm_preset_composes(tmp_path):
    proc, _ = run_cli(["hydra/launcher=slurm_gpu", "hydra.launcher.partition=a100", "--cfg=hydra",
                       "--package=hydra.launcher"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout.split("\n", 1)[1])
    assert cfg["_target_"].endswith("SlurmLauncher")
    assert cfg["partition"] == "a100" and cfg["gpus_per_node"] == 1 and cfg["timeout_min"] > 0


def test_ray_launcher_preset(tmp_path, session_cache):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="hydra-ray-launcher not installed (optional extra: pip install -e '.[ray]')")
    proc, sweep = run_cli([*SMOKE, "-m", "hydra/launcher=ray_local", "seed=1,2"], tmp_path, cache_dir=session_cache,
                      env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [read_metrics(j)["status"] for j in job_dirs(sweep)] == ["ok", "ok"]
