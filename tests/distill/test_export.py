"""Export: chat files, the hash split, and keep rate relative to the unfiltered teacher total."""
from __future__ import annotations

import json

import polars as pl
import pytest

from runner.core.context import RunContext
from runner.core.stage import ConfigError
from runner.distill.export import ExportStage, in_train


def test_hash_split_is_stable_and_close_to_the_ratio():
    ids = [f"id{i}" for i in range(4000)]
    share = sum(in_train(s, 0.9) for s in ids) / len(ids)
    assert 0.88 < share < 0.92
    assert [in_train(s, 0.9) for s in ids[:50]] == [in_train(s, 0.9) for s in ids[:50]]
    # Raising the ratio only moves rows from valid to train.
    assert all(in_train(s, 0.95) for s in ids if in_train(s, 0.9))


def _teacher(n_train=20, n_eval=5):
    rows = []
    for i in range(n_train + n_eval):
        split = "train" if i < n_train else "eval"
        keep = split == "train" and i % 4 != 0
        rows.append({"sample_id": f"s{i}", "split": split, "system": "Return only the SQL query.",
                     "user": f"CREATE TABLE t (\"a\" TEXT);\nQuestion: q{i}", "clean_sql": f'SELECT "a" FROM t -- {i}',
                     "gold_sql": 'SELECT "a" FROM t', "exec_pass": keep, "gold_match": keep and i % 3 == 0,
                     "judge_score": 1.0 if keep else 0.0, "keep": keep,
                     "reject_reason": None if keep else ("exec_fail" if split == "train" else "eval_split"),
                     "exec_error": None if keep else "syntax", "error": None})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("target", ["teacher", "gold"])
def test_export_files_and_quality(tmp_path, target):
    ctx = RunContext.create(tmp_path / "run", cache_dir=tmp_path / "cache")
    ctx.store.write("teacher_filtered", _teacher())
    with ctx.timer.stage("export"):
        ExportStage(train_ratio=0.5, target=target).run(ctx)
    root = ctx.store.root
    records = [json.loads(x) for f in ("train.jsonl", "valid.jsonl") for x in (root / f).read_text().splitlines()]
    assert len(records) == 15  # 20 train rows, every 4th rejected; eval rows never exported
    expected = {'SELECT "a" FROM t'} if target == "gold" else {f'SELECT "a" FROM t -- {i}' for i in range(20) if i % 4}
    assert {r["messages"][2]["content"] for r in records} == expected
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in records)
    assert ctx.metrics.get("distilled.count") == 15
    assert ctx.metrics.get("distilled.keep_rate") == pytest.approx(15 / 20)  # over every teacher train row
    q = json.loads((root / "quality_distilled.json").read_text())
    assert q["kept"] == 15 and q["teacher_total"] == 20 and q["exec_pass_rate"] == 1.0
    qt = json.loads((root / "quality_teacher.json").read_text())
    assert qt["total"] == 20 and qt["rejected"] == 5 and qt["reject_reasons"] == {"exec_fail": 5}
    assert qt["exec_error_kinds"] == {"syntax": 5} and qt["eval_split"]["total"] == 5
    assert ctx.store.read("teacher").height == 25


@pytest.mark.parametrize("kwargs", [{"train_ratio": 1.0}, {"train_ratio": 0}, {"target": "model"}])
def test_export_validation(tmp_path, kwargs):
    ctx = RunContext.create(tmp_path / "run", cache_dir=tmp_path / "cache")
    stage = ExportStage(**kwargs)
    stage.name = "export"
    with pytest.raises(ConfigError):
        stage.validate(ctx)
