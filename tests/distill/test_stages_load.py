"""load/hash/prompt pieces: disjoint seeded sampling, content dedup, the prompt, quality rates."""
from __future__ import annotations

import polars as pl
import pytest

from runner.core.context import RunContext
from runner.core.stage import ConfigError
from runner.distill.load import HashStage, WikiSqlDataset, content_id
from runner.text2sql.data import Table
from runner.text2sql.judge import NoJudge, RuleJudge, parse_score
from runner.text2sql.prompt import PromptTemplate, token_counter
from runner.text2sql.quality import rates


def _questions(n_tables=60, per_table=4):
    rows = [{"question_id": f"q{t}-{k}", "table_id": f"1-{t}-1", "question": f"question {k} on {t}"}
            for t in range(n_tables) for k in range(per_table)]
    return pl.DataFrame(rows)


def test_sample_is_seeded_and_tables_are_disjoint():
    ds = WikiSqlDataset(n_train=50, n_eval=30, seed=3)
    a, b = ds.sample(_questions()), ds.sample(_questions())
    assert a.equals(b)
    train, ev = a.filter(pl.col("split") == "train"), a.filter(pl.col("split") == "eval")
    assert train.height == 50 and ev.height == 30
    assert set(train["table_id"]).isdisjoint(set(ev["table_id"]))
    other = WikiSqlDataset(n_train=50, n_eval=30, seed=4).sample(_questions())
    assert not other["question_id"].equals(a["question_id"])


def test_sample_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="n_train"):
        WikiSqlDataset(n_train=500, n_eval=30).sample(_questions())


def test_dataset_validation(tmp_path):
    with pytest.raises(ConfigError, match="n_eval"):
        WikiSqlDataset(n_eval=-1).validate()
    with pytest.raises(ConfigError, match="not found"):
        WikiSqlDataset(data_dir=str(tmp_path)).validate()


def test_content_id_ignores_case_spacing_and_punctuation():
    assert content_id("1-2-3", "Who is St. Louis' coach?") == content_id("1-2-3", "who is st louis coach")
    assert content_id("1-2-3", "Who?") != content_id("1-2-4", "Who?")


def test_hash_stage_removes_duplicate_content_under_different_ids(tmp_path):
    ctx = RunContext.create(tmp_path / "run", cache_dir=tmp_path / "cache")
    df = pl.DataFrame({"question_id": ["a", "b", "c"], "table_id": ["t1", "t1", "t2"],
                       "question": ["What year?", "what  year", "What year?"], "split": ["train"] * 3})
    ctx.store.write("questions", df)
    with ctx.timer.stage("hash"):
        HashStage().run(ctx)
    out = ctx.store.read("samples")
    assert out["question_id"].to_list() == ["a", "c"] and out.columns[0] == "sample_id"
    assert ctx.metrics.get("hash.duplicates") == 1


def test_prompt_is_compact_and_shows_k_rows():
    table = Table("1-1-1", ["player", "no.", "player"], ["text", "real", "text"],
                  [["ann", 1, "x" * 80], ["bob", 2, "y"], ["cy", 3, "z"], ["dee", 4, "w"]])
    system, user = PromptTemplate(rows_k=2, max_cell_chars=10).render(table, "  Who wears no. 2? ")
    assert system == "Return only the SQL query."
    assert user.startswith('CREATE TABLE table_1_1_1 ("player" TEXT, "no." REAL, "player_2" TEXT);')
    assert "bob | 2 | y" in user and "cy" not in user and "x" * 10 not in user
    assert user.endswith("Question: Who wears no. 2?")
    count, name = token_counter()
    assert count is not None and name == "tiktoken cl100k_base" and 0 < count(user) < len(user)


def test_rates_count_failures_in_the_denominator():
    df = pl.DataFrame({"clean_sql": ["SELECT 1", "", "SELECT 2", "SELECT 3"], "exec_pass": [True, False, True, None],
                       "gold_match": [True, False, False, None], "judge_score": [1.0, 0.0, 0.5, None],
                       "error": [None, "x", None, None]})
    r = rates(df)
    assert r["exec_pass_rate"] == 0.5 and r["gold_match_rate"] == 0.25 and r["empty_rate"] == 0.25
    assert r["judge_mean"] == 0.5 and r["judge_scored"] == 3 and r["error_rate"] == 0.25
    assert rates(df.head(0))["exec_pass_rate"] is None


def test_rule_and_no_judge_and_strict_score_parsing():
    df = pl.DataFrame({"exec_pass": [True, True, False], "gold_match": [True, False, False]})
    assert RuleJudge().score(df, None) == [1.0, 0.5, 0.0]
    assert NoJudge().score(df, None) == [None, None, None]
    assert parse_score('{"score": 0.7}') == (0.7, None)
    assert parse_score('The score is {"score": 0.7}') == (None, "not_json")
    assert parse_score('{"score": 1.5}') == (None, "score_out_of_range")
    assert parse_score('{"score": "high"}') == (None, "score_not_a_number")
    assert parse_score('[0.5]') == (None, "no_score_key")


@pytest.mark.parametrize("kwargs, match", [({"user": "{rows}\n{question}"}, "schema"),
                                           ({"user": "{schema}\n{question}"}, "rows_k"),
                                           ({"rows_k": -1}, "rows_k")])
def test_prompt_template_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PromptTemplate(**kwargs).validate("prompt")
    PromptTemplate(user="{schema}\n{question}", rows_k=0).validate("prompt")
