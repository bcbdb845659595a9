"""Train, dev and test share no question id, table or (under disjoint=schema) table schema; the
scored held-out set (eval_split) changes nothing about training; the data draw has its own seed."""
from __future__ import annotations

import polars as pl
import pytest

from runner.core.context import RunContext
from runner.core.stage import ConfigError
from runner.distill.load import LoadStage, WikiSqlDataset
from tests.conftest import requires_data


def pool(n_tables: int = 60, n_schemas: int = 12) -> tuple[pl.DataFrame, dict[str, str]]:
    """Tables t0..t59 in 12 schema groups (5 tables each), 3 questions per table."""
    rows = [{"question_id": f"q{t}-{k}", "table_id": f"t{t}", "question": f"question {k} on table {t}?"}
            for t in range(n_tables) for k in range(3)]
    return pl.DataFrame(rows), {f"t{t}": f"schema{t % n_schemas}" for t in range(n_tables)}


def split_sets(ds: WikiSqlDataset, questions, schemas):
    out = ds.sample(questions, schemas)
    return out.filter(pl.col("split") == "train"), out.filter(pl.col("split") == "eval")


@pytest.mark.parametrize("disjoint", ["schema", "table"])
def test_train_dev_and_test_are_disjoint(disjoint):
    questions, schemas = pool()
    train, dev = split_sets(WikiSqlDataset(n_train=20, n_eval=6, disjoint=disjoint), questions, schemas)
    train_t, test = split_sets(WikiSqlDataset(n_train=20, n_eval=6, disjoint=disjoint, eval_split="test"),
                               questions, schemas)
    assert train.equals(train_t)  # which held-out set is scored does not change training
    assert dev.height == test.height == 6
    for a, b in ((train, dev), (train, test), (dev, test)):
        assert not set(a["question_id"]) & set(b["question_id"])
        assert not set(a["table_id"]) & set(b["table_id"])
    if disjoint == "schema":
        sig = lambda df: {schemas[t] for t in df["table_id"]}  # noqa: E731
        assert not sig(train) & sig(dev) and not sig(train) & sig(test) and not sig(dev) & sig(test)
        assert dev["schema_seen"].to_list() == [False] * 6
    else:  # 5 tables per schema: a held-out table's schema is almost surely also a train table's
        assert dev["schema_seen"].any()


def test_the_draw_has_its_own_seed():
    questions, schemas = pool()
    a = WikiSqlDataset(n_train=20, n_eval=6, seed=0).sample(questions, schemas)
    b = WikiSqlDataset(n_train=20, n_eval=6, seed=0).sample(questions, schemas)
    c = WikiSqlDataset(n_train=20, n_eval=6, seed=1).sample(questions, schemas)
    assert a.equals(b) and not a.equals(c)


def test_unknown_split_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="eval_split"):
        WikiSqlDataset(eval_split="train").validate()
    with pytest.raises(ConfigError, match="disjoint"):
        WikiSqlDataset(disjoint="row").validate()


@requires_data
@pytest.mark.parametrize("disjoint", ["schema", "table"])
def test_real_data_schema_seen_rate(tmp_path, session_cache, disjoint):
    ctx = RunContext.create(tmp_path / "run", cache_dir=session_cache)
    stage = LoadStage(WikiSqlDataset(n_train=3000, n_eval=300, disjoint=disjoint))
    stage.name = "load"
    stage.validate(ctx)
    with ctx.timer.stage("load"):
        stage.run(ctx)
    m = ctx.metrics.as_dict()
    assert m["load.eval"] == 300 and m["load.disjoint"] == disjoint and m["load.eval_split"] == "dev"
    if disjoint == "schema":
        assert m["load.eval_schema_seen_rate"] == 0.0
    else:  # WikiSQL: most held-out tables have a schema twin among 3,000 train questions' tables
        assert m["load.eval_schema_seen_rate"] > 0.2
