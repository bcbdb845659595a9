"""Sandboxed execution of untrusted (teacher/student) SQL against a WikiSQL database.

Layers, each enough on its own for what it covers:
- the connection is read-only (URI mode=ro + PRAGMA query_only): no write reaches the file;
- an authorizer allows only reading (SELECT, reading columns, functions other than
  load_extension, recursive CTEs): writes, schema changes, ATTACH (also VACUUM INTO's
  route), PRAGMA and transactions are denied at prepare time;
- a progress handler aborts any statement past its time budget, and a row cap stops
  queries that return more rows than a WikiSQL answer can have;
- SQLite limits cap string/blob size (zeroblob(1e9)) and forbid attached databases;
- statements that are not queries (REINDEX, ANALYZE, EXPLAIN, BEGIN, ...) are refused before
  SQLite sees them: some of them need no write and would otherwise "pass" with no rows.

Error kinds (ExecResult.error_kind), in the order they are checked:
  empty               no SQL (None, "" or whitespace/comments only); never runs
  multiple_statements more than one statement; nothing runs (the cleaner keeps the first)
  denied              not a query, the authorizer refused an action, or SQLite refused a write
  timeout             the statement ran past timeout_s
  too_many_rows       more than max_rows result rows
  syntax              parse errors: syntax error, incomplete input, unrecognized token
  no_such_table       unknown table
  unknown_column      a name that is no column in scope, bare or double-quoted: double quotes
                      always mean an identifier here (SQL standard), never a string literal
  no_such_function    unknown function (or wrong number of arguments)
  other               anything else (type errors, too-big values, ...), message kept in `error`
"""
from __future__ import annotations

import re
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from runner.text2sql.connection import connect
from runner.text2sql.sql import quote_ident

ERROR_KINDS = ("empty", "multiple_statements", "denied", "timeout", "too_many_rows", "syntax",
               "no_such_table", "unknown_column", "no_such_function", "other")

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    sqlite3.SQLITE_RECURSIVE}
_DENIED_FUNCTIONS = {"load_extension"}
# Python 3.10 has no Connection.setlimit to cap value sizes: there, the functions that build a
# huge value from a small query are denied instead (no WikiSQL answer needs them).
_BIG_VALUE_FUNCTIONS = {"zeroblob", "randomblob", "printf", "format", "replace", "group_concat"}
_NOT_QUERIES = {"insert", "update", "delete", "replace", "drop", "create", "alter", "attach", "detach",
                "pragma", "vacuum", "reindex", "analyze", "begin", "commit", "end", "rollback",
                "savepoint", "release", "explain"}
_HAS_SETLIMIT = hasattr(sqlite3.Connection, "setlimit")
_WORD = re.compile(r"[A-Za-z]+")
# One SQLite token each: a string, a comment, a [..] or `..` identifier, or a "..." identifier
# (group 1). Scanning left to right like SQLite's own tokenizer keeps quotes inside strings and
# comments out of it.
_TOKENS = re.compile("'(?:[^']|'')*'"          # 'string' ('' escapes a quote)
                     r"|--[^\n]*|/\*.*?(?:\*/|\Z)"  # comments
                     r"|\[[^\]]*\]|`(?:[^`]|``)*`"   # [name], `name`
                     r'|"((?:[^"]|"")*)"',          # "name" (group 1)
                     re.S)
# VM instructions between progress-handler calls: ~tens of microseconds, so the budget is
# kept to well under a millisecond of overshoot while costing nothing measurable.
_PROGRESS_EVERY = 1000


@dataclass
class ExecResult:
    ok: bool
    rows: list[tuple] | None
    error_kind: str | None
    error: str | None
    elapsed_s: float


def _authorize(action: int, arg1, arg2, db_name, trigger) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        name = (arg2 or "").lower()
        if name in _DENIED_FUNCTIONS or (not _HAS_SETLIMIT and name in _BIG_VALUE_FUNCTIONS):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def classify_error(message: str) -> str:
    m = message.lower()
    if ("not authorized" in m or "authorization denied" in m or "readonly" in m or "read-only" in m
            or "prohibited" in m):
        return "denied"
    if "interrupted" in m:
        return "timeout"
    if "syntax error" in m or "incomplete input" in m or "unrecognized token" in m:
        return "syntax"
    if "no such table" in m:
        return "no_such_table"
    if "no such column" in m:
        return "unknown_column"
    if "no such function" in m or "wrong number of arguments" in m:
        return "no_such_function"
    if "one statement at a time" in m:
        return "multiple_statements"
    return "other"


def _skip_noise(sql: str, skip: str = ";(") -> str:
    """`sql` without leading whitespace, comments and `skip` characters (a linear scan)."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace() or sql[i] in skip:
            i += 1
        elif sql.startswith("--", i):
            nl = sql.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            break
    return sql[i:]


_WITH = re.compile(r"with(\s+recursive)?\b", re.I)


def bind_alias(sql: str, alias: str, table: str) -> str:
    """`sql` with `alias` bound to `table` by a leading CTE (merged into the query's own WITH).

    Prompts can then name every question's table `t`: the same SQL text runs against the row's
    real table, and nothing is written to the database (no views, no rewriting of the query)."""
    cte = f"{quote_ident(alias)} AS (SELECT * FROM main.{quote_ident(table)})"
    body = _skip_noise(sql, skip="")
    m = _WITH.match(body)
    if m:
        return f"{body[:m.end()]} {cte},{body[m.end():]}"
    return f"WITH {cte}\n{body}"


def identifiers_only(sql: str) -> str:
    """`sql` with every double-quoted name rewritten as a backtick-quoted one.

    SQLite reads a double-quoted name that matches no column as a string literal (its legacy
    "DQS" behaviour): `SELECT "nope" FROM t WHERE "nope" = 1` would run and pass. A backtick
    name has no such fallback, so an unknown one fails with "no such column" on every SQLite
    and Python (setconfig, which can switch DQS off, exists only from Python 3.12)."""
    if '"' not in sql:
        return sql

    def swap(m: re.Match) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)
        return "`" + name.replace('""', '"').replace("`", "``") + "`"

    return _TOKENS.sub(swap, sql)


def _is_blank(sql: str) -> bool:
    # Comments-only input is as empty as whitespace: sqlite3 would "run" it and return nothing.
    return not _skip_noise(sql, skip=";")


class SqlExecutor:
    def __init__(self, db_path: Path, timeout_s: float = 1.0, max_rows: int = 1000,
                 gold_cache_size: int = 100_000, table_alias: str | None = None):
        self.db_path = Path(db_path)
        self.table_alias = table_alias  # see bind_alias: the table name prompts use for every question
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self.gold_cache_size = int(gold_cache_size)
        self._gold_cache: OrderedDict[tuple[str, str], ExecResult] = OrderedDict()
        self._deadline = 0.0
        self._con = connect(self.db_path, readonly=True)
        self._con.isolation_level = None  # sqlite3 must never issue an implicit BEGIN of its own
        if _HAS_SETLIMIT:  # Python >= 3.11; the authorizer denies ATTACH on every version
            self._con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            self._con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000_000)
        self._con.set_authorizer(_authorize)
        self._con.set_progress_handler(self._over_budget, _PROGRESS_EVERY)
        if hasattr(self._con, "setconfig"):  # Python >= 3.12: SQLite's own switch, a second layer
            self._con.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, False)

    def _over_budget(self) -> int:
        return 1 if time.perf_counter() > self._deadline else 0

    def execute(self, sql: str | None, table: str | None = None) -> ExecResult:
        """Run one query. With `table_alias` set and `table` given, the alias names that table."""
        t0 = time.perf_counter()
        if sql is not None and not isinstance(sql, str):
            return ExecResult(False, None, "other", f"SQL must be a string, got {type(sql).__name__}", 0.0)
        if sql is None or _is_blank(sql):
            return ExecResult(False, None, "empty", "no SQL to execute", 0.0)
        first = _WORD.match(_skip_noise(sql))
        if first and first.group(0).lower() in _NOT_QUERIES:
            return ExecResult(False, None, "denied", f"only queries are run, not {first.group(0).upper()}",
                              time.perf_counter() - t0)
        self._deadline = t0 + self.timeout_s
        cur = None
        try:
            sql = identifiers_only(sql)
            bound = bind_alias(sql, self.table_alias, table) if self.table_alias and table else sql
            cur = self._con.execute(bound)
            rows = cur.fetchmany(self.max_rows + 1)
        except (sqlite3.Warning, sqlite3.ProgrammingError) as e:
            kind = classify_error(str(e))
            return ExecResult(False, None, kind, str(e), time.perf_counter() - t0)
        except sqlite3.Error as e:
            kind = classify_error(str(e))
            if kind == "timeout":
                msg = f"interrupted after {time.perf_counter() - t0:.3f}s (budget {self.timeout_s}s)"
                return ExecResult(False, None, kind, msg, time.perf_counter() - t0)
            return ExecResult(False, None, kind, str(e), time.perf_counter() - t0)
        except Exception as e:  # e.g. a non-str argument, undecodable text: still a result, not a crash
            return ExecResult(False, None, "other", f"{type(e).__name__}: {e}", time.perf_counter() - t0)
        finally:
            if cur is not None:
                cur.close()
        elapsed = time.perf_counter() - t0
        if len(rows) > self.max_rows:
            return ExecResult(False, None, "too_many_rows", f"more than {self.max_rows} rows", elapsed)
        return ExecResult(True, rows, None, None, elapsed)

    def execute_gold(self, sql: str, table: str | None = None) -> ExecResult:
        """`execute` with an LRU cache keyed by (database, table, SQL): gold queries repeat.

        The cached ExecResult is shared between calls: treat its rows as read-only."""
        key = (str(self.db_path), table or "", sql)
        hit = self._gold_cache.get(key)
        if hit is not None:
            self._gold_cache.move_to_end(key)
            return hit
        result = self.execute(sql, table)
        if result.error_kind != "timeout":  # a timeout may pass on a less loaded machine
            self._gold_cache[key] = result
            if len(self._gold_cache) > self.gold_cache_size:
                self._gold_cache.popitem(last=False)
        return result

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "SqlExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
