"""The sandboxed executor: error kinds, hostile SQL, the gold cache, and gold replay on real data."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from runner.text2sql.data import Table, find_data_root, load_questions, load_tables
from runner.text2sql.database import build_database, table_schema
from runner.text2sql.executor import ERROR_KINDS, SqlExecutor
from runner.text2sql.scoring import gold_result_matches
from runner.text2sql.sql import parse_number, render_sql
from tests.conftest import requires_data
from tests.text2sql.tiny_tables import tables

# WikiSQL's largest TabFact table has 48 rows: a 7-way self join of it has 48**7 ~ 5.9e11 rows.
BIG = Table(id="3-48-1", header=["n", "name"], types=["real", "text"],
            rows=[[i, f"name {i}"] for i in range(48)])
BUDGET = 0.25
SLACK = 0.35  # scheduling noise on a shared 2-core machine


@pytest.fixture
def db(tmp_path):
    return build_database({**tables(), BIG.id: BIG}, tmp_path)


@pytest.fixture
def ex(db):
    with SqlExecutor(db, timeout_s=BUDGET, max_rows=1000) as executor:
        yield executor


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reads_work(ex):
    r = ex.execute('SELECT "player" FROM table_1_10015132_11 WHERE "nationality" = \'Serbia\'')
    assert r.ok and r.rows == [("aleksandar radojević",)] and r.error_kind is None and r.elapsed_s >= 0
    r = ex.execute('WITH x AS (SELECT MAX("no") AS m FROM table_1_10015132_11) SELECT m FROM x;')
    assert r.ok and r.rows == [(33.0,)]


@pytest.mark.parametrize("sql,kind", [
    (None, "empty"), ("", "empty"), ("  \n\t ", "empty"), (";", "empty"), ("-- nothing\n", "empty"),
    ("/* c */", "empty"),
    ("SELEC player FROM table_2_1_1", "syntax"), ("SELECT 'open", "syntax"), ("SELECT (1", "syntax"),
    ("SELECT nope FROM table_2_1_1", "unknown_column"),
    ("SELECT * FROM table_missing", "no_such_table"),
    ("SELECT no_such_fn(1)", "no_such_function"),
    ("SELECT 1; SELECT 2", "multiple_statements"),
])
def test_error_kinds(ex, sql, kind):
    r = ex.execute(sql)
    assert not r.ok and r.rows is None and r.error_kind == kind and r.error
    assert kind in ERROR_KINDS


@pytest.mark.parametrize("sql", [
    'SELECT "nope" FROM table_2_1_1 WHERE "nope" = 1',            # the student's constant query
    'SELECT "nope" FROM table_2_1_1',
    'SELECT "player" FROM table_1_10015132_11 WHERE "nationality" = "serbia"',  # a "value"
    'SELECT COUNT(*) FROM table_1_10015132_11 WHERE "Nationality " = \'serbia\'',
])
def test_unknown_double_quoted_name_is_unknown_column(ex, sql):
    # SQLite's legacy default reads an unknown "name" as the string 'name' and the query "runs":
    # double quotes are identifiers here, as in the SQL standard, on every Python.
    r = ex.execute(sql)
    assert not r.ok and r.error_kind == "unknown_column", r
    assert r.rows is None


def test_quoted_names_that_exist_and_quotes_inside_strings_still_work(ex):
    r = ex.execute('SELECT "player" FROM "table_1_10015132_11" WHERE "nationality" = \'serbia\'')
    assert r.ok and r.rows == [("aleksandar radojević",)]
    # a double quote inside a string literal or a comment is not an identifier
    r = ex.execute('SELECT \'say "hi"\' AS "x y" /* "nope" */ -- "nope"\n')
    assert r.ok and r.rows == [('say "hi"',)]
    # an escaped quote inside a name, and a name that needs the backtick escaped
    with_alias = ex.execute('SELECT "n" AS "a""b", "n" AS "c`d" FROM table_3_48_1 LIMIT 1')
    assert with_alias.ok and with_alias.rows == [(0.0, 0.0)]


def test_table_alias_binding_keeps_identifier_semantics(db):
    with SqlExecutor(db, timeout_s=BUDGET, table_alias="t") as ex:
        ok = ex.execute('SELECT "player" FROM "t" WHERE "nationality" = \'serbia\'', table="table_1_10015132_11")
        assert ok.ok and ok.rows == [("aleksandar radojević",)]
        bad = ex.execute('SELECT "date" FROM t WHERE "date" = \'1\'', table="table_1_10015132_11")
        assert bad.error_kind == "unknown_column"


def test_row_cap(db):
    with SqlExecutor(db, timeout_s=BUDGET, max_rows=10) as small:
        assert small.execute("SELECT * FROM table_3_48_1 LIMIT 10").ok
        r = small.execute("SELECT * FROM table_3_48_1")
        assert not r.ok and r.error_kind == "too_many_rows"


SEVEN_WAY = "FROM table_3_48_1 a, table_3_48_1 b, table_3_48_1 c, table_3_48_1 d, table_3_48_1 e, " \
            "table_3_48_1 f, table_3_48_1 g"


def hostile(tmp: Path) -> list[tuple[str, str]]:
    return [
        ("DROP TABLE table_2_1_1", "denied"),
        ("DELETE FROM table_2_1_1", "denied"),
        ("INSERT INTO table_2_1_1 VALUES ('x', 'y', 'z', 3)", "denied"),
        ("UPDATE table_2_1_1 SET points = 0", "denied"),
        ("REPLACE INTO table_2_1_1 VALUES ('x', 'y', 'z', 3)", "denied"),
        ("WITH x AS (SELECT 1) DELETE FROM table_2_1_1", "denied"),
        (f"ATTACH DATABASE '{tmp / 'evil.db'}' AS evil", "denied"),
        ("PRAGMA query_only = OFF", "denied"),
        ("PRAGMA writable_schema = ON", "denied"),
        ("CREATE TABLE evil (a)", "denied"),
        ("CREATE TEMP TABLE evil (a)", "denied"),
        ("CREATE VIEW v AS SELECT 1", "denied"),
        ("CREATE TRIGGER t AFTER INSERT ON table_2_1_1 BEGIN DELETE FROM table_2_1_1; END", "denied"),
        ("ALTER TABLE table_2_1_1 RENAME TO gone", "denied"),
        ("SELECT load_extension('/tmp/evil.so')", "denied"),
        (f"VACUUM INTO '{tmp / 'copy.db'}'", "denied"),
        ("VACUUM", "denied"),
        ("REINDEX", "denied"),
        ("EXPLAIN SELECT 1", "denied"),
        ("/* hidden */ (DROP TABLE table_2_1_1)", "denied"),
        ("ANALYZE", "denied"),
        ("BEGIN IMMEDIATE", "denied"),
        ("SELECT 1; DROP TABLE table_2_1_1", "multiple_statements"),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", "timeout"),
        (f"SELECT count(*) {SEVEN_WAY}", "timeout"),
        (f"SELECT * {SEVEN_WAY}", "too_many_rows"),
        # too big for SQLITE_LIMIT_LENGTH; Python 3.10 has no setlimit and denies the function
        ("SELECT length(zeroblob(2000000000))", "other" if hasattr(sqlite3.Connection, "setlimit") else "denied"),
    ]


def test_hostile_sql_changes_nothing_and_stays_within_budget(db, ex, tmp_path):
    before = sha256(db)
    files_before = sorted(p.name for p in db.parent.iterdir())
    for sql, kind in hostile(tmp_path):
        t0 = time.perf_counter()
        r = ex.execute(sql)
        wall = time.perf_counter() - t0
        assert not r.ok and r.error_kind == kind, (sql, r)
        assert wall < BUDGET + SLACK, (sql, wall)
        assert sha256(db) == before, sql
    assert sorted(p.name for p in db.parent.iterdir()) == files_before
    assert not (tmp_path / "evil.db").exists() and not (tmp_path / "copy.db").exists()
    # The connection is still usable and the data intact.
    assert ex.execute("SELECT count(*) FROM table_2_1_1").rows == [(2,)]


def test_gold_cache_is_lru_and_skips_timeouts(db):
    with SqlExecutor(db, timeout_s=BUDGET, gold_cache_size=2) as ex:
        a, b, c = ("SELECT 1", "SELECT 2", "SELECT 3")
        ra = ex.execute_gold(a)
        assert ex.execute_gold(a) is ra
        ex.execute_gold(b)
        ex.execute_gold(a)  # a is now the most recent; b is evicted by c
        ex.execute_gold(c)
        assert ex.execute_gold(a) is ra
        assert list(k[-1] for k in ex._gold_cache) == [c, a]
        slow = f"SELECT count(*) {SEVEN_WAY}"
        assert ex.execute_gold(slow).error_kind == "timeout"
        assert all(k[1] != slow for k in ex._gold_cache)


# ---- gold replay on the real data -------------------------------------------------------------

SHARD_TABLES = 1000  # SQLite's CREATE TABLE cost grows with the schema size: 15k tables in one
# file take ~30 s to build, in shards of 1,000 about 5 s. Each shard is a normal cached database.


@pytest.fixture(scope="session")
def replay_set(session_cache):
    """All matched questions with their gold SQL, grouped by the sharded database holding the table."""
    root = find_data_root(None)
    questions = load_questions(root, source="tabfact", matched_only=True)
    all_tables = load_tables(root, set(questions["table_id"].unique().to_list()))
    ids = sorted(all_tables)
    shard_of, dbs = {}, []
    for start in range(0, len(ids), SHARD_TABLES):
        chunk = {tid: all_tables[tid] for tid in ids[start:start + SHARD_TABLES]}
        dbs.append(build_database(chunk, session_cache))
        shard_of.update(dict.fromkeys(chunk, len(dbs) - 1))
    items: list[list[tuple]] = [[] for _ in dbs]
    for qid, tid, sel, agg, conds, gold in questions.select(
            "question_id", "table_id", "sel", "agg", "conds", "gold_result").iter_rows():
        name, cols, types = table_schema(all_tables[tid])
        conds = json.loads(conds)
        sql = render_sql(name, cols, types, sel, agg, conds)
        items[shard_of[tid]].append((qid, sql, json.loads(gold), all_tables[tid], conds))
    return dbs, items, questions.height


def miss_cause(table: Table, conds: list, result) -> str:
    if not result.ok:
        return f"execution error: {result.error_kind}"
    if any(table.types[c] == "text" and op in (1, 2) for c, op, _ in conds):
        return "'>'/'<' on a text column: nkey order here, lower() order in the README's build"
    if any(table.types[c] == "real" and parse_number(v) is None for c, op, v in conds):
        return ("real column, literal not a plain number whose sign or separator TabFact's cell lost "
                "('−0.247' vs 0.247, '2*512' vs 2512)")
    return "other"


@requires_data
def test_gold_replay_reproduces_gold_results(replay_set):
    dbs, items, total = replay_set
    t0 = time.perf_counter()
    misses: list[tuple[str, str, str]] = []
    for db, shard in zip(dbs, items):
        with SqlExecutor(db) as ex:
            for qid, sql, gold, table, conds in shard:
                result = ex.execute(sql)
                if not (result.ok and gold_result_matches(result.rows, gold)):
                    misses.append((miss_cause(table, conds, result), qid, sql))
    elapsed = time.perf_counter() - t0
    rate = 1 - len(misses) / total
    print(f"\ngold replay: {total - len(misses)}/{total} = {rate:.4%} reproduce gold_result "
          f"({len(dbs)} databases, {total / elapsed:,.0f} queries/s incl. comparison)")
    for cause, n in Counter(m[0] for m in misses).most_common():
        print(f"  {n:4d}  {cause}")
        for _, qid, sql in [m for m in misses if m[0] == cause][:3]:
            print(f"        {qid}: {sql}")
    assert total == 44_965
    assert rate >= 0.995


def test_table_alias_binds_each_rows_real_table(tmp_path):
    """Prompts name every table `t`; the executor binds `t` to the row's table without writing."""
    from runner.text2sql.data import Table
    from runner.text2sql.executor import bind_alias

    a = Table("1-1", ["player", "pts"], ["text", "real"], [["st louis", 3], ["bo", 5]], None)
    b = Table("1-2", ["player", "pts"], ["text", "real"], [["x", 7]], None)
    db = build_database({"1-1": a, "1-2": b}, tmp_path)
    before = db.read_bytes()
    with SqlExecutor(db, table_alias="t") as ex:
        assert ex.execute("""SELECT "pts" FROM t WHERE "player" = 'St. Louis'""", "table_1_1").rows == [(3.0,)]
        assert ex.execute('SELECT "pts" FROM t', "table_1_2").rows == [(7.0,)]
        assert ex.execute('-- c\nWITH u AS (SELECT "pts" FROM t) SELECT max("pts") FROM u', "table_1_1").rows == [(5.0,)]
        assert ex.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2) "
                          "SELECT count(*) FROM n, t", "table_1_1").rows == [(4,)]
        assert ex.execute('SELECT "pts" FROM table_1_2').rows == [(7.0,)]  # real names still work
        assert ex.execute("DROP TABLE t", "table_1_1").error_kind == "denied"
        assert ex.execute_gold('SELECT "pts" FROM t', "table_1_1").rows != ex.execute_gold('SELECT "pts" FROM t', "table_1_2").rows
    assert db.read_bytes() == before
    assert bind_alias("SELECT 1", "t", "x").startswith('WITH "t" AS (SELECT * FROM main."x")')
