"""python -m runner.report on real run and sweep folders of the core demo pipeline."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from runner.report import build_report
from runner.report.plots import pareto_front
from tests.conftest import REPO, read_metrics, run_cli

DEMO = ["hydra.searchpath=[file://tests/conf]", "pipeline=core_demo"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """4 jobs: make.n in {10, 20} x threshold in {0.5, 1.5}; threshold 1.5 fails validation."""
    tmp = tmp_path_factory.mktemp("report")
    proc, _ = run_cli([*DEMO, "-m", "pipeline.stages.make.n=10,20", "pipeline.stages.summarise.threshold=0.5,1.5"],
                      tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "multirun"


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
    proc, _ = run_cli([*DEMO, "-m", "+pipeline.stages.gate._target_=tests.core_stages.AlwaysGated",
                       "pipeline.skip=[gate],[]"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = build_report([tmp_path / "multirun"], metrics=["summary.mean_x"], sort="status", plot=False)
    assert [r["status"] for r in report.rows] == ["gated", "ok"]
    gated = report.rows[0]
    assert "too few rows" in gated["error"] and gated["pipeline.skip"] == "[]"
    assert "1 gated, 1 ok" in (tmp_path / "multirun" / "report.md").read_text()
