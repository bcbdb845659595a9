"""One SQLite file per set of WikiSQL tables, cached by content hash.

Text columns are declared `TEXT COLLATE NKEY`: every comparison, GROUP BY, DISTINCT, MIN/MAX
and ORDER BY on them goes through `nkey`, so `WHERE "player" = 'St. Louis'` finds TabFact's
`st louis` for gold and predicted SQL alike. The collation is registered by `connect()`; a
plain `sqlite3` shell cannot query text columns of these files ("no such collation sequence").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runner.core.artifacts import atomic_path
from runner.text2sql.connection import COLLATION, connect, nkey_collation  # noqa: F401 (re-exported)
from runner.text2sql.data import Table
from runner.text2sql.sql import column_names, quote_ident, table_name

# Bump when the file layout changes so cached files built by older code are not reused.
SCHEMA_VERSION = 1


def table_schema(table: Table) -> tuple[str, list[str], list[str]]:
    """(SQL table name, de-duplicated column names, 'text'/'real' types)."""
    return table_name(table.id), column_names(table.header), list(table.types)


def create_table_sql(table: Table, name: str | None = None) -> str:
    """Compact one-line CREATE TABLE for prompts (no COLLATE clause: it is an executor detail).
    `name`: the name the prompt uses for the table (an alias), default its SQL name."""
    real, cols, types = table_schema(table)
    name = name or real
    body = ", ".join(f"{quote_ident(c)} {t.upper()}" for c, t in zip(cols, types))
    return f"CREATE TABLE {name} ({body});"


def _ddl(table: Table) -> str:
    name, cols, types = table_schema(table)
    decl = [f"{quote_ident(c)} REAL" if t == "real" else f"{quote_ident(c)} TEXT COLLATE {COLLATION}"
            for c, t in zip(cols, types)]
    return f"CREATE TABLE {name} ({', '.join(decl)})"


def content_hash(tables: dict[str, Table]) -> str:
    h = hashlib.sha256(f"wikisql-sqlite-v{SCHEMA_VERSION}\n".encode())
    for tid in sorted(tables):
        t = tables[tid]
        h.update(json.dumps([t.id, t.header, t.types, t.rows], ensure_ascii=False,
                            separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()[:24]


def build_database(tables: dict[str, Table], cache_dir: Path) -> Path:
    """`<cache_dir>/db/<content-hash>.sqlite`, built once (temp file + rename) and then reused."""
    path = Path(cache_dir) / "db" / f"{content_hash(tables)}.sqlite"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for tid in tables:
        other = names.setdefault(table_name(tid), tid)
        if other != tid:
            raise ValueError(f"table ids {other!r} and {tid!r} map to the same SQL name {table_name(tid)}")
    with atomic_path(path) as tmp:
        _write_tables(tmp, tables)
    return path


def _write_tables(path: Path, tables: dict[str, Table]) -> None:
    con = connect(path, readonly=False)
    try:
        con.execute("PRAGMA journal_mode=OFF")  # a fresh temp file: a crash just discards it
        con.execute("PRAGMA synchronous=OFF")
        # One explicit transaction: in sqlite3's legacy mode every CREATE TABLE would commit
        # on its own (~6 ms each, minutes for 15k tables).
        con.isolation_level = None
        con.execute("BEGIN")
        for tid in sorted(tables):
            t = tables[tid]
            width = len(t.header)
            for i, row in enumerate(t.rows):
                if len(row) != width:
                    raise ValueError(f"table {tid} row {i} has {len(row)} cells, its header has {width}")
            con.execute(_ddl(t))
            con.executemany(f"INSERT INTO {table_name(tid)} VALUES ({', '.join('?' * width)})", t.rows)
        con.execute("COMMIT")
    finally:
        con.close()


