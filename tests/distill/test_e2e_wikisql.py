"""End to end through the CLI on the real WikiSQL data with the simulated teacher."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import REPO, read_metrics, requires_data, run_cli

pytestmark = requires_data

TEACHER_STAGES = ["load", "hash", "prompt", "teacher", "clean", "execute", "judge", "gate", "filter", "export"]
REQUIRED_KEYS = ["teacher.total", "teacher.exec_pass_rate", "teacher.gold_match_rate", "teacher.judge_mean",
                 "teacher.empty_rate", "distilled.count", "distilled.keep_rate", "distilled.exec_pass_rate",
                 "distilled.gold_match_rate", "distilled.judge_mean", "gate.passed", "run.samples_per_hour",
                 "teacher.provider", "teacher.model", "teacher.requests", "teacher.cache_hits", "teacher.errors",
                 "teacher.tokens_in", "teacher.tokens_out", "teacher.cost_usd", "prompt.mean_tokens",
                 "hash.duplicates", "teacher_eval.exec_pass_rate"]
TEACHER_COLUMNS = ["sample_id", "split", "table_id", "question", "system", "user", "generation", "clean_sql",
                   "exec_pass", "exec_error", "gold_match", "judge_score", "keep", "reject_reason", "latency_s",
                   "tokens_in", "tokens_out", "cost_usd", "attempts", "cache_hit", "error", "gold_sql"]


def _student_off() -> list[str]:
    """trainer=none where the student engineers provide it (it switches their stages off)."""
    return ["trainer=none"] if (REPO / "conf" / "trainer" / "none.yaml").exists() else []


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", *_student_off()], tmp, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, run_dir


def test_smoke_metrics_artifacts_and_timing(smoke):
    _, run_dir = smoke
    m = read_metrics(run_dir)
    assert m["status"] == "ok"
    missing = [k for k in REQUIRED_KEYS if k not in m]
    assert not missing, missing
    assert m["teacher.provider"] == "simulated" and m["teacher.simulated"] is True
    assert m["teacher.total"] == 40 and m["teacher_eval.total"] == 10
    assert m["teacher.requests"] == 50 and m["teacher.cache_hits"] == 0  # fresh cache: everything sent
    timing = json.loads((run_dir / "timing.json").read_text())
    assert [s for s in timing["stages"] if s in TEACHER_STAGES] == TEACHER_STAGES
    art = run_dir / "artifacts"
    for name in ("prompts.parquet", "database.json", "teacher.parquet", "distilled.parquet", "train.jsonl",
                 "valid.jsonl", "quality_teacher.json", "quality_distilled.json", "gate_report.json"):
        assert (art / name).exists(), name
    teacher = pl.read_parquet(art / "teacher.parquet")
    assert set(TEACHER_COLUMNS) <= set(teacher.columns)
    assert set(teacher["split"].unique()) == {"train", "eval"}
    # Eval rows are answered but never distilled; tables of the two splits are disjoint.
    assert not teacher.filter(pl.col("split") == "eval")["keep"].any()
    train_tables = set(teacher.filter(pl.col("split") == "train")["table_id"])
    assert train_tables.isdisjoint(set(teacher.filter(pl.col("split") == "eval")["table_id"]))
    # keep rate is relative to every teacher train row, not to already-filtered rows.
    kept = int(teacher.filter(pl.col("split") == "train")["keep"].sum())
    assert m["distilled.count"] == kept
    assert m["distilled.keep_rate"] == pytest.approx(kept / m["teacher.total"])
    # An empty answer never counts as executable.
    assert not teacher.filter(pl.col("clean_sql") == "")["exec_pass"].any()


def test_smoke_chat_files(smoke):
    _, run_dir = smoke
    art = run_dir / "artifacts"
    distilled = pl.read_parquet(art / "distilled.parquet")
    lines = [json.loads(x) for f in ("train.jsonl", "valid.jsonl") for x in (art / f).read_text().splitlines()]
    assert len(lines) == distilled.height > 0
    for rec in lines:
        roles = [msg["role"] for msg in rec["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert rec["messages"][2]["content"].upper().startswith("SELECT")
    assert set(distilled["target"]) <= set(distilled["clean_sql"])
    prompts = pl.read_parquet(art / "prompts.parquet")
    assert {"sample_id", "split", "system", "user", "gold_sql", "gold_result", "prompt_tokens"} <= set(prompts.columns)
    assert Path(json.loads((art / "database.json").read_text())["path"]).exists()


def test_rerun_with_changed_filter_sends_no_teacher_request(smoke, tmp_path):
    tmp, first = smoke
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", *_student_off(), "filters.require_gold=true"],
                            tmp_path, cache_dir=tmp / "cache", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["teacher.requests"] == 0 and m["teacher.cache_hits"] == 50
    assert m["teacher.exec_pass_rate"] == read_metrics(first)["teacher.exec_pass_rate"]  # same answers
    assert m["filter.reject.gold_mismatch"] > 0
    assert m["distilled.gold_match_rate"] == 1.0


def test_llm_judge_through_the_engine(tmp_path):
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", *_student_off(), "judge=llm", "gate.pilot_size=0"],
                            tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["judge.kind"] == "llm"
    teacher = pl.read_parquet(run_dir / "artifacts" / "teacher.parquet")
    answered = teacher.filter(pl.col("clean_sql") != "")
    assert m["judge.requests"] == answered.height  # one judge request per non-empty answer
    scores = answered["judge_score"].drop_nulls()
    assert scores.len() == answered.height and scores.min() >= 0 and scores.max() <= 1
    # The simulated judge tracks correctness: gold-matching rows score higher on average.
    good = answered.filter(pl.col("gold_match"))["judge_score"].mean()
    bad = answered.filter(~pl.col("gold_match"))["judge_score"].mean()
    assert good > bad


def test_config_errors_fail_before_any_work(tmp_path):
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", "dataset.n_train=0"], tmp_path, timeout=60)
    assert proc.returncode == 1
    m = read_metrics(run_dir)
    assert "dataset.n_train" in m["error"] and "teacher.requests" not in m
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", "dataset.data_dir=/nonexistent/data"],
                            tmp_path / "b", timeout=60)
    assert proc.returncode == 1
    err = read_metrics(run_dir)["error"]
    assert "/nonexistent/data/wikisql" in err and "python -m runner.data wikisql" in err


@pytest.mark.slow
def test_wikisql_1k_end_to_end(tmp_path):
    proc, run_dir = run_cli(["+experiment=wikisql_1k", *_student_off(), "pipeline.stages.teacher.progress=false"],
                            tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and m["teacher.provider"] == "simulated"
    assert m["load.train"] == 1000 and m["load.eval"] == 1000
    assert m["teacher.total"] + m["teacher_eval.total"] + m["hash.duplicates"] == 2000
    # The default simulated teacher is of roughly the published quality (exec ~0.93, gold ~0.45).
    assert 0.85 <= m["teacher.exec_pass_rate"] <= 0.97
    assert 0.35 <= m["teacher.gold_match_rate"] <= 0.65
    assert m["gate.passed"] is True and m["distilled.exec_pass_rate"] == 1.0
    assert m["distilled.count"] == m["distilled.train_rows"] + m["distilled.valid_rows"]
    # the main job says what its student cannot show, and where to go instead; the teacher is simulated
    assert any("wikisql_full" in n for n in m["run.notices"]) and any("SIMULATED" in n for n in m["run.notices"])
    assert m["exec_error.unknown_column"] == 0  # the simulator never double-quotes a value (measured, not absent)
    assert m["teacher.cost_usd"] is None and "simulated" in m["teacher.cost_reason"]
    assert m["teacher.setup_s"] is not None and m["teacher.generation_wall_s"] > 0
