"""Runner core through the real CLI: outputs contract, failure handling, secrets, sweeps."""
from __future__ import annotations

import json
import time

from tests.conftest import REPO, read_metrics, run_cli

# Absolute: the CLI runs from a temporary folder (tests.conftest.run_cli).
DEMO = [f"hydra.searchpath=[file://{REPO}/tests/conf]", "pipeline=core_demo"]


def test_single_run_writes_output_contract(tmp_path):
    proc, run_dir = run_cli(DEMO, tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and "error" not in m
    for key in ("experiment", "run.wall_s", "run.samples_per_hour", "run.git_commit", "run.host",
                "run.started_at", "run.ended_at", "version.python", "version.torch", "version.polars",
                "version.litellm", "version.hydra"):
        assert key in m, key
    assert m["make.rows"] == 20 and m["run.samples"] == 20
    assert abs(m["run.samples_per_hour"] - 20 / m["run.wall_s"] * 3600) < 1e-3 * m["run.samples_per_hour"]
    t = json.loads((run_dir / "timing.json").read_text())
    assert set(t["stages"]) == {"make", "summarise"}
    make = t["stages"]["make"]
    assert make["items"] == 20 and set(make["latency"]) >= {"p50", "p90", "p95", "max"}
    assert "latency" not in t["stages"]["summarise"]  # only stages that time items one by one
    assert 0 < make["share"] < 1 and t["total_wall_s"] > 0
    assert (run_dir / "artifacts" / "rows.parquet").exists()
    assert (run_dir / "artifacts" / "summary.parquet").exists()
    assert (run_dir / "run.log").read_text().count("stage make: done") == 1
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert "stages: make " in proc.stdout and "summarise " in proc.stdout  # the summary's stage-time line


def test_failing_stage_writes_failed_status_and_exits_nonzero(tmp_path):
    proc, run_dir = run_cli([*DEMO, "pipeline.stages.summarise.fail=true"], tmp_path)
    assert proc.returncode == 1
    m = read_metrics(run_dir)
    assert m["status"] == "failed"
    assert "deliberate failure" in m["error"] and m["failed_stage"] == "summarise"
    assert m["make.rows"] == 20  # what ran before the failure is kept
    assert (run_dir / "timing.json").exists()


def test_typo_in_override_fails_within_seconds(tmp_path):
    t0 = time.perf_counter()
    proc, run_dir = run_cli(["+experiment=wikisql_1k", "trainer.learnign_rate=1"], tmp_path)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 20
    assert "learnign_rate" in proc.stderr
    assert not (run_dir / "artifacts").exists()  # no work started


def test_misspelled_group_option_fails(tmp_path):
    proc, _ = run_cli(["+experiment=wikisql_1k", "provider=simulatd"], tmp_path)
    assert proc.returncode != 0 and "simulatd" in proc.stderr


def test_missing_input_fails_validation_before_any_stage_runs(tmp_path):
    proc, run_dir = run_cli([*DEMO, "pipeline.skip=[make]"], tmp_path)
    assert proc.returncode == 1
    m = read_metrics(run_dir)
    assert m["status"] == "failed" and "config error" in m["error"]
    assert "'rows'" in m["error"] and "reuse_from" in m["error"]
    assert "make.rows" not in m


def test_reuse_from_satisfies_inputs_of_a_rerun(tmp_path):
    first, run1 = run_cli(DEMO, tmp_path / "a")
    assert first.returncode == 0
    proc, run2 = run_cli([*DEMO, "pipeline.skip=[make]", f"pipeline.reuse_from=[{run1}]"], tmp_path / "b")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_metrics(run2)["summary.mean_x"] == read_metrics(run1)["summary.mean_x"]


def test_out_of_range_value_fails_validation(tmp_path):
    proc, run_dir = run_cli([*DEMO, "pipeline.stages.summarise.threshold=2"], tmp_path)
    assert proc.returncode == 1
    assert "threshold=2" in read_metrics(run_dir)["error"]


def test_unknown_stage_in_skip_is_an_error(tmp_path):
    proc, run_dir = run_cli([*DEMO, "pipeline.skip=[mkae]"], tmp_path)
    assert proc.returncode == 1 and "mkae" in read_metrics(run_dir)["error"]


def test_gate_failure_exits_3_with_status_gated(tmp_path):
    proc, run_dir = run_cli([*DEMO, "+pipeline.stages.gate._target_=tests.core_stages.AlwaysGated"], tmp_path)
    assert proc.returncode == 3
    m = read_metrics(run_dir)
    assert m["status"] == "gated" and "too few" in m["error"]


def test_secret_never_written_to_run_folder(tmp_path):
    secret = "sk-or-v1-" + "0123456789abcdef" * 4
    proc, run_dir = run_cli(DEMO, tmp_path, env={"OPENROUTER_API_KEY": secret,
                                                  "CORE_TEST_LOG_ENV": "OPENROUTER_API_KEY"})
    assert proc.returncode == 0
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "run.log" for p in files)
    assert "env OPENROUTER_API_KEY=***" in (run_dir / "run.log").read_text()
    for p in files:
        assert secret.encode() not in p.read_bytes(), p


def test_multirun_seed_sweep_makes_job_folders_and_survives_a_failing_job(tmp_path):
    proc, sweep = run_cli(["-m", *DEMO, "seed=1,2", "pipeline.stages.summarise.fail=false,true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sweep.relative_to(tmp_path).parts[:3] == ("outputs", "multirun", "default")  # Hydra's default folder
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    statuses = []
    for j in jobs:
        assert (j / "timing.json").exists()
        statuses.append(read_metrics(j)["status"])
    assert sorted(statuses) == ["failed", "failed", "ok", "ok"]
    seeds = {read_metrics(j)["seed"] for j in jobs}
    assert seeds == {1, 2}


def test_help_lists_groups():
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "runner", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for group in ("provider", "dataset", "filters", "judge", "gate", "trainer", "student",
                  "consistency_distill", "pipeline", "hparams_search"):
        assert f"{group}:" in out.stdout, group
