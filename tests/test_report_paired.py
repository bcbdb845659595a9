"""runner.report --baseline (paired differences, row mismatches) and the over-seeds table, on real
runs of the smoke job (simulated teacher, trainer=none, 40 eval rows) and of the core demo."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from runner.core.stats import paired_bootstrap, rate_with_ci, t_ppf, wilson
from runner.report import build_report
from runner.report.paired import eval_sets
from tests.conftest import REPO, read_metrics, requires_data, run_cli

SMOKE = ["+experiment=wikisql_smoke", "trainer=none", "dataset.n_eval=40"]
DEMO = [f"hydra.searchpath=[file://{REPO}/tests/conf]", "pipeline=core_demo"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A seed sweep (seed=1,2: the same rows, dataset.seed is fixed), one run with another simulated
    teacher (provider.sim_seed=7: same rows, other answers) and one on another draw of the rows
    (dataset.seed=5)."""
    tmp = tmp_path_factory.mktemp("paired")
    cache = tmp / "cache"
    proc, sweep = run_cli([*SMOKE, "-m", "seed=1,2"], tmp / "sweep", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, other = run_cli([*SMOKE, "seed=1", "provider.sim_seed=7"], tmp / "other", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, moved = run_cli([*SMOKE, "seed=1", "dataset.seed=5"], tmp / "moved", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"jobs": job_dirs(sweep), "sweep": sweep, "other": other, "moved": moved}


def teacher_eval(run: Path) -> pl.DataFrame:
    df = pl.read_parquet(run / "artifacts" / "teacher.parquet").filter(pl.col("split") == "eval")
    return df.select("sample_id", "gold_match", "exec_pass").sort("sample_id")


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner.report", *args, "--no-plots"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@requires_data
def test_baseline_prints_paired_differences(smoke, tmp_path):
    base, other = smoke["jobs"][0], smoke["other"]
    proc = report_cli("--baseline", str(base), str(other), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    with open(tmp_path / "report_paired.csv") as f:
        got = {r["metric"]: r for r in csv.DictReader(f)}
    assert set(got) == {"teacher_eval.gold_match_rate", "teacher_eval.exec_pass_rate"}
    # Independently from the parquet files: same 40 rows, joined by sample_id.
    a, b = teacher_eval(base), teacher_eval(other)
    assert a["sample_id"].to_list() == b["sample_id"].to_list() and a.height == 40
    assert not a["gold_match"].equals(b["gold_match"])  # another teacher: the answers differ
    for col in ("gold_match", "exec_pass"):
        x, y = a[col].cast(int).to_numpy(), b[col].cast(int).to_numpy()
        row = got[f"teacher_eval.{col}_rate"]
        base_only, run_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        k, n = min(base_only, run_only), base_only + run_only
        p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        assert (int(row["n"]), int(row["baseline_only"]), int(row["run_only"])) == (40, base_only, run_only)
        assert float(row["baseline"]) == pytest.approx(x.mean())
        assert float(row["baseline"]) == pytest.approx(read_metrics(base)[f"teacher_eval.{col}_rate"])
        assert float(row["value"]) == pytest.approx(read_metrics(other)[f"teacher_eval.{col}_rate"])
        assert float(row["diff"]) == pytest.approx((run_only - base_only) / 40)
        assert float(row["p_mcnemar"]) == pytest.approx(p)
        # rows in sample_id order, seed 0: the interval is reproducible from the rows alone
        _, lo, hi = paired_bootstrap(x, y)
        assert (float(row["diff_lo"]), float(row["diff_hi"])) == pytest.approx((lo, hi))
        assert lo <= float(row["diff"]) <= hi
    assert "paired against the baseline" in proc.stdout and "teacher_eval.gold_match_rate" in proc.stdout
    assert "## Paired against the baseline" in (tmp_path / "report.md").read_text()


@requires_data
def test_baseline_over_other_rows_exits_non_zero_naming_the_mismatch(smoke, tmp_path):
    base, job2 = smoke["jobs"]
    assert set(teacher_eval(base)["sample_id"]) == set(teacher_eval(job2)["sample_id"])  # seed: same rows
    ids_a, ids_b = set(teacher_eval(base)["sample_id"]), set(teacher_eval(smoke["moved"])["sample_id"])
    assert ids_a != ids_b  # dataset.seed=5 draws other eval rows
    proc = report_cli("--baseline", str(base), str(smoke["sweep"]), str(smoke["moved"]), "--out", str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("rows differ: "))
    assert line.endswith(f"{smoke['moved'].name}: teacher_eval holds other eval rows than the baseline "
                         f"({len(ids_a - ids_b)} only in the baseline, {len(ids_b - ids_a)} only in this run); "
                         "not compared"), line
    # the same runs without --baseline: a plain report, as before
    assert report_cli(str(smoke["sweep"]), "--out", str(tmp_path / "plain")).returncode == 0
    # a baseline that names several runs is refused
    many = report_cli("--baseline", str(smoke["sweep"]), str(smoke["other"]), "--out", str(tmp_path / "x"))
    assert many.returncode == 2 and "2 runs found there" in many.stdout


@requires_data
def test_seed_sweep_is_summarised_over_seeds(smoke):
    report = build_report([smoke["sweep"]], plot=False)
    assert report.seed_keys == [] and report.seeds  # one setting: the two seeds
    values = {r["metric"]: r for r in report.seeds}
    m1, m2 = (read_metrics(j) for j in smoke["jobs"])
    for metric in ("teacher.gold_match_rate", "distilled.keep_rate"):
        x = np.array([m1[metric], m2[metric]])
        r = values[metric]
        assert r["n"] == 2 and r["mean"] == pytest.approx(x.mean()) and r["sd"] == pytest.approx(x.std(ddof=1))
        # two seeds: half-width = t(0.975, 1)·sd/√2 = 12.706·sd/√2
        assert r["hi"] - r["mean"] == pytest.approx(12.7062 * x.std(ddof=1) / math.sqrt(2), rel=1e-4)
    assert "teacher.simulated" not in values  # a flag, not a number to average
    with open(smoke["sweep"] / "report_seeds.csv") as f:
        assert {r["metric"] for r in csv.DictReader(f)} == set(values)
    assert "## Over seeds" in (smoke["sweep"] / "report.md").read_text()


def test_seeds_grouped_by_the_other_swept_values(tmp_path):
    proc, sweep = run_cli([*DEMO, "-m", "seed=1,2", "pipeline.stages.make.n=10,20"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run([sys.executable, "-m", "runner.report", str(sweep), "--metrics", "summary.mean_x",
                          "--no-plots"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "over seeds" in out.stdout
    report = build_report([sweep], metrics=["summary.mean_x"], plot=False)
    assert report.seed_keys == ["pipeline.stages.make.n"]
    by_n: dict[int, list[float]] = {}
    for job in job_dirs(sweep):
        m = read_metrics(job)
        by_n.setdefault(m["make.rows"], []).append(m["summary.mean_x"])
    assert sorted(by_n) == [10, 20] and all(len(v) == 2 for v in by_n.values())
    assert len(report.seeds) == 2
    for r in report.seeds:
        x = np.array(by_n[r["pipeline.stages.make.n"]])
        assert r["metric"] == "summary.mean_x" and r["n"] == 2 and r["mean"] == pytest.approx(x.mean())
        half = t_ppf(0.975, 1) * x.std(ddof=1) / math.sqrt(2)
        assert (r["lo"], r["hi"]) == pytest.approx((x.mean() - half, x.mean() + half))
    # two jobs of one seed (seed not swept among them): no seeds table
    one_seed = [j for j in job_dirs(sweep) if read_metrics(j)["seed"] == 1]
    assert len(one_seed) == 2 and build_report(one_seed, plot=False).seeds == []


def _parquet(folder: Path, name: str, rows: list[tuple], split: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols = {"sample_id": [r[0] for r in rows], "gold_match": [r[1] for r in rows], "exec_pass": [r[2] for r in rows]}
    if split:
        cols["split"] = [r[3] for r in rows]
    pl.DataFrame(cols, schema_overrides={"gold_match": pl.Boolean, "exec_pass": pl.Boolean}).write_parquet(
        folder / f"{name}.parquet")


def test_eval_sets_naming_split_nulls_and_reused_artifacts(tmp_path):
    old, run = tmp_path / "old", tmp_path / "run"
    # The reused run holds the teacher (both splits) and a train-only table.
    _parquet(old / "artifacts", "teacher", [("a", True, True, "eval"), ("t", True, True, "train")], split=True)
    _parquet(old / "artifacts", "teacher_exec", [("a", False, False, "eval")], split=True)  # an earlier copy
    _parquet(old / "artifacts", "distilled", [("t", True, True, "train")], split=True)
    _parquet(run / "artifacts", "student_post", [("a", None, True), ("b", True, False)])
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(json.dumps({"pipeline": {"reuse_from": [str(old)]}}))
    sets = eval_sets(run)
    assert list(sets) == ["teacher_eval", "student_post"]
    assert sets["teacher_eval"].rows() == [("a", True, True)]          # eval split, from `teacher`
    assert sets["student_post"]["gold_match"].to_list() == [False, True]  # null counts as a failure


def test_ci95_keys_load_as_pairs_and_stay_out_of_the_default_columns(tmp_path):
    # metrics.json as runner.core.stats.rate_with_ci writes it: key and key_ci95 = [lo, hi] (null: no rows)
    for i, (k, n) in enumerate(((3, 10), (0, 0))):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        metrics: dict = {"status": "ok"}
        rate_with_ci(metrics, "x.pass_rate", k, n)
        (job / "metrics.json").write_text(json.dumps(metrics))
        (job / ".hydra" / "overrides.yaml").write_text(f"- x.n={n}\n")
    report = build_report([tmp_path], plot=False)
    assert "x.pass_rate" in report.columns and "x.pass_rate_ci95" not in report.columns
    rows = build_report([tmp_path], metrics=["*_ci95"], plot=False).rows
    assert rows[0]["x.pass_rate_ci95"] == pytest.approx(list(wilson(3, 10))) and rows[1]["x.pass_rate_ci95"] is None


def _job(root: Path, name: str, rows: dict[str, tuple[int, int]]) -> Path:
    """A run folder whose student_post.parquet holds {sample_id: (gold_match, exec_pass)}."""
    art = root / name / "artifacts"
    art.mkdir(parents=True)
    pl.DataFrame({"sample_id": list(rows), "gold_match": [bool(g) for g, _ in rows.values()],
                  "exec_pass": [bool(e) for _, e in rows.values()]}).write_parquet(art / "student_post.parquet")
    return root / name


def test_settings_are_paired_row_by_row_pooled_over_seeds(tmp_path):
    from runner.report.pooled import pooled_pairs

    ids = [f"s{i}" for i in range(40)]
    # reference: right on the first 10 rows (both seeds); setting: right on the first 30 rows at seed 0
    # and the first 20 at seed 1 -> per-row means differ by 1 on rows 10-19 and by 0.5 on rows 20-29
    groups = {
        "filters=none": {0: _job(tmp_path, "a0", {s: (i < 10, 1) for i, s in enumerate(ids)}),
                         1: _job(tmp_path, "a1", {s: (i < 10, 1) for i, s in enumerate(ids)})},
        "filters=default": {0: _job(tmp_path, "b0", {s: (i < 30, 1) for i, s in enumerate(ids)}),
                            1: _job(tmp_path, "b1", {s: (i < 20, 1) for i, s in enumerate(ids)}),
                            2: _job(tmp_path, "b2", {s: (1, 1) for s in ids})},  # no reference: not pooled
    }
    table = {r["metric"]: r for r in pooled_pairs(groups)}
    gold = table["student_post.gold_match_rate"]
    assert gold["reference"] == "filters=none" and gold["setting"] == "filters=default"
    assert gold["seeds"] == 2 and gold["rows"] == 40
    assert gold["reference_mean"] == 0.25 and gold["mean"] == 0.625
    assert abs(gold["diff"] - (10 * 1 + 10 * 0.5) / 40) < 1e-12 and 0 < gold["lo"] < gold["diff"] < gold["hi"]
    ex = table["student_post.exec_pass_rate"]
    assert ex["diff"] == ex["lo"] == ex["hi"] == 0.0
    # a seed whose rows differ between the two settings is left out, and counted
    groups["filters=default"][1] = _job(tmp_path, "b1x", {f"x{i}": (1, 1) for i in range(40)})
    gold = {r["metric"]: r for r in pooled_pairs(groups)}["student_post.gold_match_rate"]
    assert gold["seeds"] == 1 and gold["seeds_skipped"] == 1 and abs(gold["diff"] - 0.5) < 1e-12
