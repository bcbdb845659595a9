"""python -m runner.report on real run and sweep folders of the core demo pipeline."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner.report import build_report
from runner.report.build import lower_is_better
from runner.report.plots import categorical_axis, pareto_front, stage_colours
from tests.conftest import REPO, read_metrics, run_cli

# Absolute: the CLI runs from a temporary folder (tests.conftest.run_cli).
DEMO = [f"hydra.searchpath=[file://{REPO}/tests/conf]", "pipeline=core_demo"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """4 jobs: make.n in {10, 20} x threshold in {0.5, 1.5}; threshold 1.5 fails validation."""
    tmp = tmp_path_factory.mktemp("report")
    proc, sweep = run_cli([*DEMO, "-m", "pipeline.stages.make.n=10,20", "pipeline.stages.summarise.threshold=0.5,1.5"],
                          tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_report_rows_equal_each_jobs_metrics(sweep):
    report = build_report([sweep], plot=False)
    assert len(report.rows) == 4
    assert report.columns[:4] == ["job", "status", "pipeline.stages.make.n", "pipeline.stages.summarise.threshold"]
    assert report.runs.fixed == {"pipeline": "core_demo"}
    for row in report.rows:
        m = read_metrics(sweep / row["job"])
        assert row["status"] == m["status"]
        for col in report.columns:
            if col in m:
                assert row[col] == m[col], (row["job"], col)
    with open(sweep / "report.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    md = (sweep / "report.md").read_text()
    assert "4 job(s): 2 failed, 2 ok" in md and "`pipeline=core_demo`" in md


def test_failed_jobs_show_status_and_error(sweep):
    report = build_report([sweep], metrics=["summary.mean_x"], plot=False)
    failed = [r for r in report.rows if r["status"] == "failed"]
    assert len(failed) == 2
    assert all(r["pipeline.stages.summarise.threshold"] == 1.5 and "threshold" in r["error"] for r in failed)
    assert all(r["summary.mean_x"] is None for r in failed)  # not measured, not 0


def test_where_sort_and_metric_globs(sweep):
    report = build_report([sweep], metrics=["summary.*", "make.rows"], where="status = 'ok'",
                          sort='"make.rows" DESC', plot=False)
    assert [r["make.rows"] for r in report.rows] == [20, 10]
    assert "summary.mean_x" in report.columns and "error" in report.columns
    with pytest.raises(ValueError, match="matches no column"):
        build_report([sweep], metrics=["nope.*"], plot=False)
    with pytest.raises(ValueError, match="Columns:"):
        build_report([sweep], where="no_such_column > 1", plot=False)


def test_cli_prints_table_and_writes_plots(sweep, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "runner.report", str(sweep / "*"), "--metrics", "summary.mean_x",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 job(s)" in proc.stdout and "failed" in proc.stdout
    plots = {p.name for p in (out / "report_plots").iterdir()}
    assert "summary.mean_x__vs__pipeline.stages.make.n.png" in plots
    assert "stage_times.png" in plots
    assert "pareto__summary.mean_x__vs__run.wall_s.png" in plots
    assert (out / "report.csv").exists() and "![stage_times]" in (out / "report.md").read_text()


def test_report_on_a_single_run(tmp_path):
    proc, run_dir = run_cli([*DEMO, "seed=7"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = build_report([run_dir])
    assert len(report.rows) == 1 and report.rows[0]["job"] == "."
    assert report.rows[0]["seed"] == 7 and report.rows[0]["summary.mean_x"] == read_metrics(run_dir)["summary.mean_x"]
    # One job: the stage breakdown only (a single point per metric plots nothing).
    assert [p.name for p in (run_dir / "report_plots").iterdir()] == ["stage_times.png"]
    stages = {s["stage"]: s["wall_s"] for s in report.runs.stages}
    assert set(stages) == {"make", "summarise"} and all(v > 0 for v in stages.values())


def test_missing_folder_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runner.report", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no metrics.json" in proc.stdout


def test_pareto_front():
    # (cost, quality): (3, 0.5) is beaten by (1, 0.6); (2, 0.9) and (1, 0.6) and (4, 0.95) are not.
    pts = [(1.0, 0.6), (2.0, 0.9), (3.0, 0.5), (4.0, 0.95)]
    assert pareto_front(pts, higher_is_better=True) == [0, 1, 3]
    assert pareto_front([(1.0, 0.2), (2.0, 0.1), (3.0, 0.3)], higher_is_better=False) == [0, 1]


def test_gated_job_appears_with_status_and_error(tmp_path):
    proc, sweep = run_cli([*DEMO, "-m", "+pipeline.stages.gate._target_=tests.core_stages.AlwaysGated",
                           "pipeline.skip=[gate],[]"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = build_report([sweep], metrics=["summary.mean_x"], sort="status", plot=False)
    assert [r["status"] for r in report.rows] == ["gated", "ok"]
    gated = report.rows[0]
    assert "too few rows" in gated["error"] and gated["pipeline.skip"] == "[]"
    assert "1 gated, 1 ok" in (sweep / "report.md").read_text()


def test_report_survives_markup_in_overrides_and_errors(tmp_path):
    # An absolute path in brackets is a rich closing tag ([/abs/path]): it must print as text.
    first, run1 = run_cli(DEMO, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    proc, run2 = run_cli([*DEMO, "pipeline.skip=[make]", f"pipeline.reuse_from=[{run1}]",
                          "pipeline.stages.summarise.threshold=2"], tmp_path / "b")
    assert proc.returncode == 1 and read_metrics(run2)["status"] == "failed"
    out = subprocess.run([sys.executable, "-m", "runner.report", str(run1), str(run2), "--out", str(tmp_path / "r")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "2 job(s)" in out.stdout and "failed" in out.stdout
    assert f"[{run1}]" in (tmp_path / "r" / "report.csv").read_text()


def _job(folder: Path, metrics: dict, overrides: list[str], stages: dict[str, float] | None = None) -> Path:
    """A job folder as the runner writes it (metrics.json, timing.json, .hydra/overrides.yaml)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"status": "ok", **metrics}))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    stages = stages or {"a": 1.0}
    (folder / "timing.json").write_text(json.dumps({"stages": {k: {"wall_s": v} for k, v in stages.items()},
                                                    "total_wall_s": sum(stages.values()) + 0.5}))
    return folder


TEXT2SQL = {"load.pool": 5000, "teacher.total": 40, "teacher.tokens_in": 9000, "teacher.gold_match_rate": 0.5,
            "teacher.exec_pass_rate": 0.9, "teacher.empty_rate": 0.02, "distilled.gold_match_rate": 0.6,
            "distilled.exec_pass_rate": 1.0, "distilled.keep_rate": 0.8, "student_post.gold_match_rate": 0.1,
            "student_post.exec_pass_rate": 0.7, "run.wall_s": 10.0, "teacher.cost_usd": None,
            "teacher.simulated": True, "compare.constant_baseline_exec_pass_rate": 0.6}


def test_default_metrics_are_the_family_short_list(tmp_path):
    for i, seed in enumerate((1, 2)):
        _job(tmp_path / str(i), {**TEXT2SQL, "seed": seed, "run.wall_s": 10.0 + i}, [f"seed={seed}"])
    report = build_report([tmp_path], plot=False)
    metrics = [c for c in report.columns if c not in ("job", "status", "seed")]
    # the simulated flag first, the constant baseline beside the student's figures
    assert metrics == ["teacher.simulated", "teacher.gold_match_rate", "teacher.exec_pass_rate",
                       "distilled.gold_match_rate", "distilled.exec_pass_rate", "distilled.keep_rate",
                       "student_post.gold_match_rate", "student_post.exec_pass_rate",
                       "compare.constant_baseline_exec_pass_rate", "run.wall_s", "teacher.cost_usd"]
    assert all(row["teacher.simulated"] is True for row in report.rows)
    assert "load.pool" in build_report([tmp_path], metrics=["*"], plot=False).columns  # all, on request
    cd = tmp_path / "cd"
    for i in range(2):
        _job(cd / str(i), {"cd.nrmse_student_1step": 0.04 + i / 100, "cd.nrmse_teacher": 0.042, "cd.grid": 64,
                           "cd.sampling_speedup": 30.0, "cd.distill_wall_s": 5.0, "run.wall_s": 9.0},
             [f"consistency_distill.N={10 + 8 * i}"])
    assert [c for c in build_report([cd], plot=False).columns if c.startswith(("cd.", "run."))] == \
        ["cd.nrmse_student_1step", "cd.nrmse_teacher", "cd.sampling_speedup", "cd.distill_wall_s", "run.wall_s"]


def test_pareto_plot_uses_each_metrics_direction(tmp_path, monkeypatch):
    from runner.report import plots
    calls = []
    real = plots.quality_vs_cost
    monkeypatch.setattr(plots, "quality_vs_cost", lambda rows, q, c, hib, chib, out:
                        calls.append((q, c, hib, chib)) or real(rows, q, c, hib, chib, out))
    for i in range(3):
        _job(tmp_path / str(i), {**TEXT2SQL, "teacher.empty_rate": i / 10, "run.wall_s": 5.0 + i},
             [f"filters.min_score={i / 4}"])
    build_report([tmp_path], quality="teacher.empty_rate", costs=["run.wall_s", "teacher.exec_pass_rate"])
    assert calls == [("teacher.empty_rate", "run.wall_s", False, False),
                     ("teacher.empty_rate", "teacher.exec_pass_rate", False, True)]
    calls.clear()
    build_report([tmp_path])  # no optimized_metric: the family's quality metric, higher is better
    assert calls[0][:3] == ("student_post.gold_match_rate", "run.wall_s", True)


@pytest.mark.parametrize("metric, lower", [
    ("teacher.empty_rate", True), ("teacher.error_rate", True), ("teacher.errors", True), ("run.wall_s", True),
    ("teacher.cost_usd", True), ("cd.nrmse_student_1step", True), ("teacher.latency_p95_s", True),
    ("train.final_loss", True), ("teacher.gold_match_rate", False), ("distilled.keep_rate", False),
    ("student_post.rows_per_s", False), ("cd.sampling_speedup", False), ("run.samples_per_hour", False)])
def test_metric_direction(metric, lower):
    assert lower_is_better(metric) is lower


def test_categorical_axes_and_distinct_stage_colours():
    assert categorical_axis([2, 1, 2]) == [1, 2]              # seed / integer sweeps: categories
    assert categorical_axis([10, 9]) == [9, 10]               # sorted as numbers
    assert categorical_axis([0.3, 0.5]) is None               # real-valued: a number line
    assert categorical_axis(list(range(30))) is None          # a wide int range (Optuna): a number line
    assert categorical_axis(["beta", "uniform"]) == ["beta", "uniform"]
    assert categorical_axis([True, False]) == [False, True]
    colours = stage_colours(16)                               # Text2SQL: 15 stages + other
    assert len(set(colours)) == 16 and colours[-1] == (0.6, 0.6, 0.6, 1.0)
    assert len(set(stage_colours(30))) == 30


def test_student_plots_carry_the_teacher_and_constant_baseline_lines(tmp_path, monkeypatch):
    from runner.report import plots

    seen = []
    real = plots.metric_vs_param
    monkeypatch.setattr(plots, "metric_vs_param", lambda rows, m, p, out, refs=(): seen.append((m, p, refs, rows))
                        or real(rows, m, p, out, refs))
    for i, n in enumerate((1000, 4000, "all")):
        _job(tmp_path / str(i), {**TEXT2SQL, "student_post.gold_match_rate": 0.1 * (i + 1),
                                 "compare.teacher_gold_match_rate": 0.46,
                                 "compare.constant_baseline_gold_match_rate": 0.01}, [f"dataset.n_train={n}"])
    report = build_report([tmp_path])
    gold = [s for s in seen if s[0] == "student_post.gold_match_rate"]
    assert gold and gold[0][2] == ("compare.teacher_gold_match_rate", "compare.constant_baseline_gold_match_rate")
    assert all(r["compare.teacher_gold_match_rate"] == 0.46 for r in gold[0][3])  # values reach the plot
    assert (report.out_dir / "report_plots" / "student_post.gold_match_rate__vs__dataset.n_train.png").exists()


def test_a_simulated_teachers_reference_line_says_so():
    from runner.report.plots import reference_label

    sim, real = [{"teacher.simulated": True}], [{"teacher.simulated": False}]
    assert reference_label("compare.teacher_gold_match_rate", sim) == \
        "compare.teacher_gold_match_rate (SIMULATED teacher)"
    assert reference_label("compare.teacher_gold_match_rate", real) == "compare.teacher_gold_match_rate"
    assert reference_label("compare.constant_baseline_gold_match_rate", sim) == "compare.constant_baseline_gold_match_rate"
