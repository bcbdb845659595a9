"""Durable response cache: SQLite in WAL mode, one row per answered request.

The key is the sha256 of the canonical JSON of (provider.cache_identity(), messages), so it
changes with anything that changes the answer and never contains a secret. Every response is
committed the moment it arrives: a run killed at any point loses nothing already paid for.
WAL lets several processes (sweep jobs) read while one writes; writers wait on a busy timeout.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from runner.engine.types import Completion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd REAL,
    latency_s REAL,
    model TEXT,
    created_at REAL NOT NULL
)
"""


def request_key(identity: dict[str, Any], messages: list[dict[str, str]]) -> str:
    canonical = json.dumps({"identity": identity, "messages": messages}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    FILENAME = "responses.sqlite"

    def __init__(self, cache_dir: Path | str, *, busy_timeout_s: float = 60.0):
        self.path = Path(cache_dir) / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, each put is its own transaction (durable on return).
        self.db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (SIGKILL); only an OS crash may lose the tail.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Completion, float | None]]:
        """{key: (completion, original latency_s)} for the keys present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple[Completion, float | None]] = {}
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i:i + 500]
            rows = self.db.execute(
                f"SELECT key, text, tokens_in, tokens_out, cost_usd, latency_s FROM responses "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, text, t_in, t_out, cost, latency in rows:
                found[key] = (Completion(text=text, tokens_in=t_in, tokens_out=t_out, cost_usd=cost), latency)
        return found

    def put(self, key: str, completion: Completion, latency_s: float | None, model: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, completion.text, completion.tokens_in, completion.tokens_out, completion.cost_usd,
             latency_s, model, time.time()))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()
