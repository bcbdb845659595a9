import sqlite3

import pytest

from runner.text2sql.database import (
    build_database,
    connect,
    create_table_sql,
    table_schema,
)
from tests.text2sql.tiny_tables import DUPLICATE_HEADERS, PLAYERS, tables


@pytest.fixture
def db(tmp_path):
    return build_database(tables(), tmp_path)


def test_build_is_cached_by_content(tmp_path):
    first = build_database(tables(), tmp_path)
    assert first.parent == tmp_path / "db" and first.suffix == ".sqlite"
    mtime = first.stat().st_mtime_ns
    assert build_database(tables(), tmp_path) == first and first.stat().st_mtime_ns == mtime
    changed = tables()
    changed[PLAYERS.id] = type(PLAYERS)(**{**PLAYERS.__dict__, "rows": PLAYERS.rows[:2]})
    assert build_database(changed, tmp_path) != first
    assert sorted(p.name for p in (tmp_path / "db").iterdir() if p.name.startswith(".")) == []


def test_schema_uses_real_column_names_and_types(db):
    name, cols, types = table_schema(DUPLICATE_HEADERS)
    assert name == "table_2_1_1" and cols == ["name", "Name_2", "col2", "points"]
    assert types == ["text", "text", "text", "real"]
    con = connect(db)
    info = con.execute(f"PRAGMA table_info({name})").fetchall()
    assert [(r[1], r[2]) for r in info] == [("name", "TEXT"), ("Name_2", "TEXT"), ("col2", "TEXT"),
                                            ("points", "REAL")]
    ddl = con.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    assert '"name" TEXT COLLATE NKEY' in ddl and '"points" REAL' in ddl


def test_create_table_sql_for_prompts():
    sql = create_table_sql(PLAYERS)
    assert sql.startswith('CREATE TABLE table_1_10015132_11 ("player" TEXT, "no" REAL, ')
    assert '"school / club team" TEXT);' in sql and "COLLATE" not in sql and "\n" not in sql


def test_nkey_collation_matches_question_literals(db):
    con = connect(db)
    q = 'SELECT "player" FROM table_1_10015132_11 WHERE "school / club team" = ?'
    assert con.execute(q, ("St. Louis",)).fetchall() == [("st louis",)]
    q = 'SELECT "player" FROM table_1_10015132_11 WHERE "years in toronto" = \'1995-96\''
    assert con.execute(q).fetchall() == [("alvin robertson",)]
    q = 'SELECT COUNT(DISTINCT "nationality") FROM table_1_10015132_11 WHERE "nationality" != \'\''
    assert con.execute(q).fetchone() == (2,)
    assert con.execute('SELECT COUNT(*) FROM table_1_10015132_11 WHERE "player" = \'ST. LOUIS\'').fetchone() == (1,)


def test_real_columns_hold_numbers_and_nulls(db):
    con = connect(db)
    rows = con.execute('SELECT "no", typeof("no") FROM table_1_10015132_11').fetchall()
    assert rows == [(25.0, "real"), (31.0, "real"), (None, "null"), (7.5, "real"), (33.0, "real"),
                    (1.0, "real")]
    assert con.execute('SELECT "player" FROM table_1_10015132_11 WHERE "no" > 30').fetchall() == [
        ("shawn respert",), ("carlos rogers",)]


def test_readonly_connection_cannot_write(db):
    con = connect(db)
    with pytest.raises(sqlite3.OperationalError):
        con.execute("DELETE FROM table_2_1_1")
    with pytest.raises(sqlite3.OperationalError):
        con.execute("CREATE TABLE x (a)")
    assert connect(db, readonly=True).execute("PRAGMA query_only").fetchone() == (1,)


def test_bad_rows_are_rejected(tmp_path):
    bad = type(PLAYERS)(id="x", header=["a", "b"], types=["text", "text"], rows=[["only one"]])
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        build_database({"x": bad}, tmp_path)
    assert list((tmp_path / "db").iterdir()) == []  # the temp file is removed
