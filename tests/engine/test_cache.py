"""The durable response cache on both backends (SQLite files, a PostgreSQL server): keys,
persistence, several processes writing and claiming at once, crash and rerun, dead claims."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.engine import Request, generate
from runner.engine.backend import open_cache, use_server
from runner.engine.cache import request_key
from runner.engine.types import Completion
from tests.engine.http_provider import LoopbackHttp
from tests.providers.openai_server import Action, LoopbackServer

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    name: str
    cache_dir: Path
    url: str | None

    def open(self):
        return open_cache(self.cache_dir)

    def child(self, code: str, *args: str) -> subprocess.Popen:
        """A process that opens the same cache the way a sweep job does (cache.backend chosen per run)."""
        prelude = "import sys\nfrom runner.engine.backend import open_cache, use_server\nuse_server(sys.argv[2] or None)\n"
        return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), str(self.cache_dir),
                                 self.url or "", *args], cwd=REPO, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})

    def insert_claim(self, cache, key: str, host: str, pid: int, expires_at: float, live_session: int = 0) -> None:
        """A claim row as another job would have left it (expires_at in epoch seconds)."""
        if self.name == "sqlite":
            cache.db.execute("INSERT INTO claims VALUES (?, 'ghost', ?, ?, ?)", (key, host, pid, expires_at))
        else:
            cache.db.execute("INSERT INTO runner_claims VALUES (%s, 'ghost', %s, %s, %s, %s)",
                             (key, host, pid, live_session, expires_at))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    use_server(url)
    yield Backend(request.param, tmp_path, url)
    use_server(None)


def test_key_is_canonical_and_sensitive():
    ident = {"kind": "litellm", "model": "m", "params": {"temperature": 0.0, "max_tokens": 5}}
    msgs = [{"role": "user", "content": "hi"}]
    reordered = {"params": {"max_tokens": 5, "temperature": 0.0}, "model": "m", "kind": "litellm"}
    assert request_key(ident, msgs) == request_key(reordered, msgs)
    assert request_key(ident, msgs) != request_key({**ident, "model": "m2"}, msgs)
    assert request_key(ident, msgs) != request_key(ident, [{"role": "user", "content": "hi!"}])


def test_put_get_roundtrip_keeps_unknowns(backend):
    c = backend.open()
    c.put("k1", Completion("a", 1, 2, None), 0.5, "m")
    c.put("k2", Completion("b", None, None, 0.25), None, "m")
    c.close()
    got = backend.open().get_many(["k1", "k2", "missing"])
    assert got["k1"] == (Completion("a", 1, 2, None), 0.5)
    assert got["k2"] == (Completion("b", None, None, 0.25), None)
    assert "missing" not in got


def test_many_keys_beyond_sqlite_parameter_limit(backend):
    c = backend.open()
    for i in range(1200):
        c.put(f"k{i}", Completion(str(i)), None, "m")
    assert len(c.get_many([f"k{i}" for i in range(1300)])) == 1200 == len(c)


_WRITER = """
    from runner.engine.types import Completion
    c = open_cache(sys.argv[1])
    for i in range(int(sys.argv[3]), int(sys.argv[4])):
        c.put(f"k{i}", Completion(f"v{i}"), 0.0, "m")
"""


def test_several_processes_write_at_once(backend):
    # Overlapping ranges, like sweep jobs sharing prompts: no lock errors, nothing lost.
    procs = [backend.child(_WRITER, str(lo), str(lo + 400)) for lo in (0, 200, 400)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    got = backend.open().get_many([f"k{i}" for i in range(800)])
    assert len(got) == 800 and got["k555"][0].text == "v555"


def test_claims_let_one_process_send_and_others_wait(backend):
    a, b = backend.open(), backend.open()
    assert a.claim("k", ttl_s=60)
    assert not b.claim("k", ttl_s=60)  # a is sending it: b must wait, not pay again
    a.put("k", Completion(text="SELECT 1"), 0.1, "m")  # the answer releases the claim
    assert b.get_many(["k"])["k"][0].text == "SELECT 1"
    assert not b.claim("k", ttl_s=60)  # answered between b's lookup and its claim: never sent twice
    assert b.claim("other", ttl_s=60) and not a.claim("other", ttl_s=60)
    b.release("other")  # an error releases it: the next process may try
    assert a.claim("other", ttl_s=60)


def test_claim_of_a_dead_process_or_expired_is_taken_over(backend):
    c, holder = backend.open(), backend.open()  # holder: a live session, so only the rule under test applies
    live = holder.db.execute("SELECT pg_backend_pid()").fetchone()[0] if backend.name == "postgres" else 0
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: never a live process
    backend.insert_claim(c, "k", socket.gethostname(), dead_pid, 1e18, live)
    assert c.claim("k", ttl_s=60)
    backend.insert_claim(c, "e", "elsewhere", 1, 0, live)  # another host's claim, expired long ago
    assert c.claim("e", ttl_s=60)
    backend.insert_claim(c, "busy", "elsewhere", 1, time.time() + 3600, live)  # another host, live, unexpired
    assert not c.claim("busy", ttl_s=60)


_HOLDER = """
    c = open_cache(sys.argv[1])
    c.host = "node-b"  # a job on another host: its pid means nothing here
    assert c.claim("k", ttl_s=3600)
    print("claimed", flush=True)
    __import__("time").sleep(120)
"""


def test_claim_of_a_job_killed_on_another_host(backend):
    # SQLite can only wait for the time to live; Postgres sees the killed job's session end.
    child = backend.child(_HOLDER)
    assert child.stdout.readline().strip() == "claimed"
    c = backend.open()
    assert not c.claim("k", ttl_s=60)  # its holder is alive (on "node-b"): wait
    t0 = time.monotonic()
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = t0 + (10 if backend.name == "postgres" else 1)  # sqlite: still held 1 s on
    while not (taken := c.claim("k", ttl_s=60)) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert taken is (backend.name == "postgres")
    if taken:
        print(f"\nclaim (ttl 3600 s) of a job killed on another host taken over after {time.monotonic() - t0:.3f} s")


_GENERATE = """
    import json
    from runner.engine import Request, generate
    from tests.engine.http_provider import LoopbackHttp
    p = LoopbackHttp(sys.argv[3], concurrency=4)
    reqs = [Request(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(int(sys.argv[4]))]
    res = generate(p, reqs, cache_dir=sys.argv[1], progress=False)
    print(json.dumps(res.stats), flush=True)
"""


def requests(n: int) -> list[Request]:
    return [Request(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(n)]


def test_sigkill_mid_run_then_rerun_resends_nothing_answered(backend):
    n = 80  # ~2 s of work for the child: killed after 16 answers
    with LoopbackServer(lambda p, a: Action(delay_s=0.1)) as srv:
        child = backend.child(_GENERATE, srv.api_base, str(n))
        deadline = time.monotonic() + 60
        while srv.total < 16 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        first_counts = dict(srv.counts)
        answered = len(backend.open())
        assert 16 - 4 <= answered < n  # everything finished before the kill, minus the 4 in flight
        res = generate(LoopbackHttp(srv.api_base, concurrency=16), requests(n), cache_dir=backend.cache_dir, progress=False)
    resent = {p: c - first_counts.get(p, 0) for p, c in srv.counts.items()}
    assert sum(resent.values()) == n - answered == res.stats["requests"]
    assert all(resent[f"q{i}"] == 0 for i, r in enumerate(res.responses) if r.cache_hit)
    assert all(r.error is None for r in res.responses)


def test_two_processes_same_prompts_each_sent_once(backend):
    n = 40
    with LoopbackServer(lambda p, a: Action(delay_s=0.05)) as srv:
        kids = [backend.child(_GENERATE, srv.api_base, str(n)) for _ in range(2)]
        stats = [json.loads(k.communicate(timeout=120)[0].strip().splitlines()[-1]) for k in kids]
    assert [k.returncode for k in kids] == [0, 0]
    twice = {p: c for p, c in srv.counts.items() if c != 1}
    assert len(srv.counts) == n and not twice, f"sent more than once: {twice}"  # the server's own count
    assert sum(s["requests"] for s in stats) == n, stats
    assert sum(s["requests"] + s["cache_hits"] for s in stats) == 2 * n


def test_batch_id_registry_lives_beside_the_cache(backend):
    # A rerun on any node finds the unfinished batch holding its requests, so it never submits twice.
    from runner.providers.batch import BatchState

    state = BatchState.open(backend.cache_dir)
    assert type(state).__name__ == {"sqlite": "BatchState", "postgres": "PgBatchState"}[backend.name]
    state.record("h1", "batch_1", "file_1", ["a", "b", "c"])
    state.close()
    other = BatchState.open(backend.cache_dir)  # another process
    assert other.find("h2", {"a", "c"}) == "batch_1" and other.find("h3", {"a", "z"}) is None
    other.finish("batch_1", "completed")
    assert other.find("h1", {"a"}) is None
    other.close()
