import pytest

from runner.text2sql.cleaner import clean_sql

Q = 'SELECT "player" FROM table_1 WHERE "school" = \'utah\''


@pytest.mark.parametrize("text,sql,removed", [
    (Q, Q, ()),
    (Q + ";", Q, ()),
    (f"```sql\n{Q}\n```", Q, ("fenced",)),
    (f"```SQLite\n{Q};\n```", Q, ("fenced",)),
    (f"```\n{Q}\n```", Q, ("fenced",)),
    (f"`{Q}`", Q, ("fenced",)),
    (f"```sql\n{Q}", Q, ("fenced",)),  # unterminated fence (cut at max tokens)
    (f"Here is the query:\n```sql\n{Q}\n```\nIt returns the player.", Q, ("fenced", "prose", "trailing")),
    (f"<think>The user wants to select the player.\nSELECT nothing</think>\n{Q}", Q, ("think",)),
    (f"<think>\nreasoning\n</think>\n\n```sql\n{Q}\n```", Q, ("think", "fenced")),
    (f"reasoning the template opened</think>{Q}", Q, ("think",)),
    (f"SQL: {Q}", Q, ("prefix",)),
    (f"SQL Query:\n{Q}", Q, ("prefix",)),
    (f"To answer, we select the player from Utah.\n{Q}", Q, ("prose",)),
    (f"{Q}\n\nThis query returns the player whose school is Utah.", Q, ("trailing",)),
    (f"{Q};\nExplanation: filters on school.", Q, ("trailing",)),
    (f"{Q}; DROP TABLE table_1;", Q, ("multi_statement",)),
    (f"{Q};\nSELECT 1", Q, ("multi_statement",)),
])
def test_clean_sql(text, sql, removed):
    result = clean_sql(text)
    assert result.sql == sql
    assert set(result.removed) == set(removed)


def test_multiline_sql_is_kept_whole():
    text = "```sql\nSELECT \"a\"\nFROM t\nWHERE \"b\" > 3\n  AND \"c\" = 'x'\n```"
    assert clean_sql(text).sql == "SELECT \"a\"\nFROM t\nWHERE \"b\" > 3\n  AND \"c\" = 'x'"


def test_semicolons_and_keywords_inside_literals_do_not_split():
    q = "SELECT \"name\" FROM t WHERE \"note\" = 'a; DROP TABLE t' AND \"x\" = 'select'"
    assert clean_sql(q) == clean_sql(q + ";")
    assert clean_sql(q).sql == q and clean_sql(q).removed == ()


@pytest.mark.parametrize("text", [None, "", "   \n\t", "I cannot answer that.", "```\n```",
                                  "<think>SELECT a FROM t WHERE", "<think>only thoughts</think>"])
def test_no_sql_gives_empty(text):
    result = clean_sql(text)
    assert result.sql == ""
    assert "empty" in result.removed


def test_lowercase_sql_is_found():
    assert clean_sql("the answer is:\nselect a from t").sql == "select a from t"


def test_with_cte_is_kept():
    q = "WITH x AS (SELECT 1 AS v) SELECT v FROM x"
    assert clean_sql(f"```sql\n{q}\n```").sql == q


@pytest.mark.parametrize("text", ["<think>" * 20000, "</think>" * 20000, "```" * 20000, "a:\n" * 30000,
                                  "SELECT '" + "'" * 50000, ("word " * 20 + "\n") * 3000])
def test_hostile_generations_are_cleaned_in_linear_time(text):
    import time

    t0 = time.perf_counter()
    clean_sql(text)
    # linear: ~10 ms here; a quadratic scan of these 60-200k characters takes minutes. The bound is
    # loose so that a machine busy with other tests cannot fail it.
    assert time.perf_counter() - t0 < 5.0
