"""The response cache and the batch-id registry on a PostgreSQL server, for jobs on several hosts.

Same interface as runner.engine.cache.ResponseCache (get_many, put, claim, release, close) and
runner.providers.batch.BatchState (find, record, finish, close). Every statement runs in autocommit:
an answer is durable on the server when put() returns, as with SQLite.

Claims: one row per key, taken by a single INSERT ... ON CONFLICT DO UPDATE ... WHERE, which the
server runs atomically per key, so two hosts can never both win. A held claim is taken over when
  - it expired (expires_at, by the server's clock: the hosts' clock skew does not matter),
  - its owner's database session is gone (the holder was killed on any host: the kernel closes its
    connection and the server ends that session at once, so its requests are free in seconds, not
    after the time to live; a host that vanishes without closing its sockets waits for the TTL),
  - or its owner process is dead on this host (the same rule as SQLite).
Tables are created on first use (under an advisory lock: concurrent CREATE IF NOT EXISTS can fail).
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Iterable

from runner.engine.cache import _pid_alive
from runner.engine.types import Completion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runner_responses (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in BIGINT, tokens_out BIGINT,
    cost_usd DOUBLE PRECISION, latency_s DOUBLE PRECISION, model TEXT, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS runner_claims (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    backend_pid INTEGER NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS runner_batches (
    set_hash TEXT PRIMARY KEY, batch_id TEXT NOT NULL, file_id TEXT, keys TEXT NOT NULL,
    status TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
"""
_SCHEMA_LOCK = 0x72756E6E  # advisory lock id ("runn"): one process creates the tables at a time
_NOW = "extract(epoch from clock_timestamp())"

# Insert the claim, or take over the holder's row when it is ours, expired or its session is gone.
_CLAIM = f"""
INSERT INTO runner_claims AS c (key, owner, host, pid, backend_pid, expires_at)
VALUES (%(key)s, %(owner)s, %(host)s, %(pid)s, pg_backend_pid(), {_NOW} + %(ttl)s)
ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, host = EXCLUDED.host, pid = EXCLUDED.pid,
    backend_pid = EXCLUDED.backend_pid, expires_at = EXCLUDED.expires_at
WHERE c.owner = EXCLUDED.owner OR c.expires_at <= {_NOW}
   OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.backend_pid)
RETURNING c.owner"""


def connect(url: str):
    import psycopg

    con = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="runner-cache")
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        con.execute(_SCHEMA)
    return con


def describe(url: str) -> str:
    """host:port/dbname of a URL, never its password: the only form of it that may be logged."""
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(url)
    return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', '')}"


class PgResponseCache:
    def __init__(self, url: str):
        self.db = connect(url)
        self.owner = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Completion, float | None]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple[Completion, float | None]] = {}
        if not keys:
            return found
        rows = self.db.execute("SELECT key, text, tokens_in, tokens_out, cost_usd, latency_s FROM runner_responses "
                               "WHERE key = ANY(%s)", (keys,)).fetchall()
        for key, text, t_in, t_out, cost, latency in rows:
            found[key] = (Completion(text=text, tokens_in=t_in, tokens_out=t_out, cost_usd=cost), latency)
        return found

    def put(self, key: str, completion: Completion, latency_s: float | None, model: str) -> None:
        self.db.execute(
            "INSERT INTO runner_responses VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
            "text = EXCLUDED.text, tokens_in = EXCLUDED.tokens_in, tokens_out = EXCLUDED.tokens_out, "
            "cost_usd = EXCLUDED.cost_usd, latency_s = EXCLUDED.latency_s, model = EXCLUDED.model, "
            "created_at = EXCLUDED.created_at",
            (key, completion.text, completion.tokens_in, completion.tokens_out, completion.cost_usd,
             latency_s, model, time.time()))
        self.release(key)

    def claim(self, key: str, ttl_s: float) -> bool:
        """True when this handle may send `key`; False while a live holder elsewhere is sending it,
        or when it is answered already."""
        args = {"key": key, "owner": self.owner, "host": self.host, "pid": self.pid, "ttl": float(ttl_s)}
        won = self.db.execute(_CLAIM, args).fetchone() is not None
        if not won:
            holder = self.db.execute("SELECT owner, host, pid FROM runner_claims WHERE key = %s", (key,)).fetchone()
            if holder is None:  # released between the two statements: try once more
                won = self.db.execute(_CLAIM, args).fetchone() is not None
            elif holder[1] == self.host and not _pid_alive(holder[2]):  # compare-and-swap on the dead holder's row
                won = self.db.execute(
                    f"UPDATE runner_claims SET owner = %(owner)s, host = %(host)s, pid = %(pid)s, "
                    f"backend_pid = pg_backend_pid(), expires_at = {_NOW} + %(ttl)s "
                    "WHERE key = %(key)s AND owner = %(old)s RETURNING owner", {**args, "old": holder[0]}
                ).fetchone() is not None
        if not won:
            return False
        # put() stores the answer before it releases the claim: one that arrived since the caller looked
        # is seen here and not paid for again (the caller then finds it with get_many).
        if self.db.execute("SELECT 1 FROM runner_responses WHERE key = %s", (key,)).fetchone() is None:
            return True
        self.release(key)
        return False

    def release(self, key: str) -> None:
        self.db.execute("DELETE FROM runner_claims WHERE key = %s AND owner = %s", (key, self.owner))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM runner_responses").fetchone()[0]

    def close(self) -> None:
        try:
            self.db.execute("DELETE FROM runner_claims WHERE owner = %s", (self.owner,))
        finally:
            self.db.close()


class PgBatchState:
    """The batch-id registry (runner.providers.batch.BatchState) in the same database."""

    def __init__(self, url: str):
        self.db = connect(url)

    def find(self, set_hash: str, keys: set[str]) -> str | None:
        rows = self.db.execute("SELECT batch_id, keys FROM runner_batches WHERE status = 'submitted' "
                               "ORDER BY set_hash = %s DESC, created_at DESC", (set_hash,)).fetchall()
        for batch_id, stored in rows:
            if keys <= set(json.loads(stored)):
                return batch_id
        return None

    def record(self, set_hash: str, batch_id: str, file_id: str, keys: list[str]) -> None:
        self.db.execute("INSERT INTO runner_batches VALUES (%s, %s, %s, %s, 'submitted', %s) ON CONFLICT (set_hash) "
                        "DO UPDATE SET batch_id = EXCLUDED.batch_id, file_id = EXCLUDED.file_id, keys = EXCLUDED.keys, "
                        "status = 'submitted', created_at = EXCLUDED.created_at",
                        (set_hash, batch_id, file_id, json.dumps(keys), time.time()))

    def finish(self, batch_id: str, status: str) -> None:
        self.db.execute("UPDATE runner_batches SET status = %s WHERE batch_id = %s", (f"done:{status}", batch_id))

    def close(self) -> None:
        self.db.close()
