"""Held-out overlap is impossible by construction: no eval question is also a train question, so
no prompt can be in both splits (even with rows_k=0, where two tables with the same columns and
the same question render one identical prompt)."""
from __future__ import annotations

import polars as pl

from runner.core.context import RunContext
from runner.distill.load import HashStage, LoadStage, WikiSqlDataset
from runner.distill.prompt import PromptStage
from tests.conftest import requires_data


def test_a_question_on_two_tables_never_straddles_the_split():
    # Every table asks the same two questions: each one is on an eval table, so train must skip it.
    rows = [{"question_id": f"q{t}-{k}", "table_id": f"t{t}", "question": q}
            for t in range(40) for k, q in enumerate(["How many wins?", f"Only on table {t}?"])]
    ds = WikiSqlDataset(n_train=30, n_eval=6, seed=1)
    out = ds.sample(pl.DataFrame(rows))
    train, ev = out.filter(pl.col("split") == "train"), out.filter(pl.col("split") == "eval")
    assert train.height == 30 and ev.height == 6
    assert set(train["question"]).isdisjoint(set(ev["question"]))
    assert ds.skipped_overlap > 0


@requires_data
def test_no_prompt_in_both_splits_with_rows_k_0_on_real_data(tmp_path, session_cache):
    ctx = RunContext.create(tmp_path / "run", cache_dir=session_cache)
    stages = [("load", LoadStage(WikiSqlDataset(n_train=8000, n_eval=1000))), ("hash", HashStage()),
              ("prompt", PromptStage({"rows_k": 0}))]
    for name, stage in stages:
        stage.name = name
        stage.validate(ctx)
        with ctx.timer.stage(name):
            stage.run(ctx)
    prompts = ctx.store.read("prompts")
    train = set(prompts.filter(pl.col("split") == "train")["user"])
    ev = set(prompts.filter(pl.col("split") == "eval")["user"])
    assert len(train) > 7000 and len(ev) > 900
    assert not train & ev
    assert ctx.metrics.get("load.skipped_overlap") >= 1  # the seed-0 draw had one such question


def test_n_train_all_takes_every_question_off_the_eval_tables():
    rows = [{"question_id": f"q{t}-{k}", "table_id": f"t{t}", "question": q}
            for t in range(40) for k, q in enumerate(["How many wins?", f"Only on table {t}?"])]
    ds = WikiSqlDataset(n_train="all", n_eval=6, seed=1)
    out = ds.sample(pl.DataFrame(rows))
    train, ev = out.filter(pl.col("split") == "train"), out.filter(pl.col("split") == "eval")
    test = WikiSqlDataset(n_train="all", n_eval=6, seed=1, eval_split="test").sample(pl.DataFrame(rows))
    # both held-out sets (dev, scored here, and test) are kept out of training
    held_out = set(ev["table_id"]) | set(test.filter(pl.col("split") == "eval")["table_id"])
    # every question on a table held out by neither, except those asked on a held-out table too
    expected = sum(1 for r in rows if r["table_id"] not in held_out and r["question"] != "How many wins?")
    assert train.height == expected == 40 - len(held_out)
    assert not set(train["table_id"]) & held_out


def test_n_train_must_be_a_positive_integer_or_all():
    import pytest

    from runner.core.stage import ConfigError

    for bad in (0, -3, "most", 2.5):
        with pytest.raises(ConfigError, match="n_train"):
            WikiSqlDataset(n_train=bad, n_eval=6).validate()
