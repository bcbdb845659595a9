"""Durable response cache: SQLite in WAL mode, one row per answered request.

The key is the sha256 of the canonical JSON of (provider.cache_identity(), messages), so it
changes with anything that changes the answer and never contains a secret. Every response is
committed the moment it arrives: a run killed at any point loses nothing already paid for.
WAL lets several processes (sweep jobs) read while one writes; writers wait on a busy timeout.

Parallel jobs (a sweep) that need the same answer must not both pay for it: before sending,
a job *claims* the key (table `claims`); another job that finds a live claim waits for the
answer instead of sending. A claim whose owner process is gone, or that is older than its
time to live, can be taken over, so a killed run never blocks the next one.

SQLite serves one machine. Jobs on several machines share a server instead (`cache.backend=postgres`,
runner.engine.cache_pg, same interface); runner.engine.backend.open_cache returns the one this run chose.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
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
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def request_key(identity: dict[str, Any], messages: list[dict[str, str]], sample: int = 0) -> str:
    body: dict[str, Any] = {"identity": identity, "messages": messages}
    if sample:  # sample 0 hashes exactly as before best-of-n existed: old caches stay valid
        body["sample"] = int(sample)
    canonical = json.dumps(body, sort_keys=True,
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
        self.db.executescript(_SCHEMA)
        self.owner = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()

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
        self.release(key)

    def claim(self, key: str, ttl_s: float) -> bool:
        """True when this cache handle may send `key` (it holds the claim); False when another
        live process is sending it right now (wait for its answer with get_many), or answered it."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")  # one writer decides at a time
        try:
            # Answered since the caller looked (its sender put it, then released the claim): not again.
            if self.db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None:
                self.db.execute("COMMIT")
                return False
            row = self.db.execute("SELECT owner, host, pid, expires_at FROM claims WHERE key = ?",
                                  (key,)).fetchone()
            if row is not None and row[0] != self.owner:
                owner, host, pid, expires_at = row
                dead = host == self.host and not _pid_alive(pid)
                if expires_at > now and not dead:
                    self.db.execute("COMMIT")
                    return False
            self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                            (key, self.owner, self.host, self.pid, now + ttl_s))
            self.db.execute("COMMIT")
            return True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def release(self, key: str) -> None:
        self.db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        try:
            self.db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        finally:
            self.db.close()
