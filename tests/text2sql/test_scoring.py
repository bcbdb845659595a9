import polars as pl
import pytest

from runner.text2sql.database import build_database
from runner.text2sql.executor import SqlExecutor
from runner.text2sql.scoring import (
    gold_result_matches,
    results_match,
    score_predictions,
    sql_tokens,
    token_f1,
)
from tests.text2sql.tiny_tables import tables


def test_order_insensitive_multiset():
    assert results_match([("a",), ("b",)], [("b",), ("a",)])
    assert not results_match([("a",), ("a",), ("b",)], [("a",), ("b",), ("b",)])  # duplicates count
    assert not results_match([("a",)], [("a",), ("a",)])
    assert results_match([("a", 1), ("b", 2)], [("b", 2), ("a", 1)])
    assert not results_match([("a", 2), ("b", 1)], [("b", 2), ("a", 1)])  # rows, not columns, are units


def test_order_matters_only_when_asked():
    assert results_match([(1,), (2,)], [(2,), (1,)], ordered=False)
    assert not results_match([(1,), (2,)], [(2,), (1,)], ordered=True)
    assert results_match([(1,), (2.0000001,)], [(1.0,), (2,)], ordered=True)


def test_numbers():
    assert results_match([(1,)], [(1.0,)])
    assert results_match([(100.00005,)], [(100.0,)])  # relative 5e-7 < 1e-6
    assert not results_match([(100.001,)], [(100.0,)])  # relative 1e-5
    assert results_match([(0.0,)], [(0,)]) and not results_match([(0.0,)], [(1e-9,)])
    assert results_match([("13",)], [(13.0,)])  # text that is the number
    assert not results_match([("13 apples",)], [(13,)])


def test_text_by_nkey_and_nulls():
    assert results_match([("St. Louis",)], [("st louis",)])
    assert results_match([("1995-96",)], [("1995 - 96",)])
    assert not results_match([("st louis",)], [("st paul",)])
    assert results_match([(None,)], [(None,)])
    assert not results_match([(None,)], [("",)]) and not results_match([(None,)], [(0,)])


def test_failed_prediction_never_matches():
    assert not results_match(None, [("a",)]) and not results_match(None, None)
    assert results_match([], [])  # two empty results agree (a query that finds nothing, correctly)


def test_gold_result_matches():
    assert gold_result_matches([("united states",), (7.5,)], [7.5, "United States"])
    assert gold_result_matches([(1,)], "[1.0]")  # JSON text as stored in load_questions
    assert not gold_result_matches([("a", "b")], ["a"])  # the gold result is one column
    assert not gold_result_matches(None, ["a"])


@pytest.fixture
def executor(tmp_path):
    with SqlExecutor(build_database(tables(), tmp_path), timeout_s=0.5) as ex:
        yield ex


GOLD = 'SELECT "player" FROM table_1_10015132_11 WHERE "position" = \'Guard\''


def test_score_predictions(executor):
    texts = [
        GOLD,                                                           # identical
        f"```sql\n{GOLD.replace('Guard', 'guard')};\n```",              # fenced, literal case differs
        'SELECT "player" FROM table_1_10015132_11 WHERE "no" < 32 AND "position" = \'guard\'',  # same rows
        'SELECT "player" FROM table_1_10015132_11',                     # runs, wrong rows
        "",                                                             # empty
        None,                                                           # no generation at all
        "I don't know",                                                 # no SQL
        "SELECT nope FROM table_1_10015132_11",                         # error
        f"{GOLD}; DROP TABLE table_1_10015132_11",                      # second statement removed
    ]
    df = pl.DataFrame({"sample_id": [f"s{i}" for i in range(len(texts))], "gold_sql": [GOLD] * len(texts),
                       "text": texts}, schema={"sample_id": pl.String, "gold_sql": pl.String, "text": pl.String})
    out = score_predictions(df, executor)
    assert out["exec_pass"].to_list() == [True, True, True, True, False, False, False, False, True]
    assert out["gold_match"].to_list() == [True, True, True, False, False, False, False, False, True]
    assert out["exec_error"].to_list() == [None] * 4 + ["empty"] * 3 + ["unknown_column", None]
    assert out["clean_removed"].to_list()[1] == ["fenced"]
    assert out["clean_removed"].to_list()[8] == ["multi_statement"]
    assert out["clean_sql"].to_list()[4:7] == ["", "", ""]
    assert out.schema["clean_removed"] == pl.List(pl.String) and out.height == len(texts)


def test_order_by_in_gold_makes_order_matter(executor):
    gold = 'SELECT "player" FROM table_1_10015132_11 WHERE "no" > 20 ORDER BY "no"'
    df = pl.DataFrame({"sample_id": ["a", "b"], "gold_sql": [gold, gold], "generation": [
        gold, 'SELECT "player" FROM table_1_10015132_11 WHERE "no" > 20 ORDER BY "no" DESC']})
    assert score_predictions(df, executor, text_col="generation")["gold_match"].to_list() == [True, False]


def test_missing_columns_are_named(executor):
    with pytest.raises(ValueError, match="gold_sql"):
        score_predictions(pl.DataFrame({"sample_id": ["a"], "text": ["SELECT 1"]}), executor)


def test_sql_tokens_and_f1():
    assert sql_tokens('SELECT "Player" FROM t WHERE "School" = \'St. Louis\';') == [
        "select", "player", "from", "t", "where", "school", "=", "'stlouis'"]
    assert sql_tokens("select player from t where no >= 13.0") == sql_tokens('SELECT "player" FROM t WHERE no >= 13')
    assert token_f1(GOLD, GOLD.lower()) == 1.0
    assert token_f1("", GOLD) == 0.0 and token_f1("DROP", GOLD) == 0.0
    pred = 'SELECT "player" FROM table_1_10015132_11'
    p, g = 4, len(sql_tokens(GOLD))  # all 4 predicted tokens are in the gold
    assert token_f1(pred, GOLD) == pytest.approx(2 * (4 / p) * (4 / g) / (4 / p + 4 / g))
