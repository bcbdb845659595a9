"""SQLite connections with the NKEY collation: the only thing the executor needs from the database
layer, kept free of third-party imports so the executor runs (and is tested) on any Python >= 3.10."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from runner.text2sql.normalize import text_key

COLLATION = "NKEY"


def nkey_collation(a: str, b: str) -> int:
    # SQLite hands collations text only, so the str fast path of nkey is enough.
    ka, kb = text_key(a), text_key(b)
    return (ka > kb) - (ka < kb)


def connect(db_path: Path, readonly: bool = True) -> sqlite3.Connection:
    """A connection with the NKEY collation; read-only = URI mode=ro + PRAGMA query_only."""
    if readonly:
        if not Path(db_path).is_file():
            raise FileNotFoundError(f"SQLite database {db_path} does not exist")
        # immutable=1: the file is content-addressed and never rewritten, so SQLite may skip
        # file locking (faster, and it also makes the connection read-only).
        uri = f"file:{quote(str(Path(db_path).resolve()))}?mode=ro&immutable=1"
        con = sqlite3.connect(uri, uri=True)
        con.execute("PRAGMA query_only=ON")
    else:
        con = sqlite3.connect(str(db_path))
    con.create_collation(COLLATION, nkey_collation)
    return con
