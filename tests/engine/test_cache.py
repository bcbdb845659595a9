"""The durable response cache: keys, persistence, several processes writing at once."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from runner.engine.cache import ResponseCache, request_key
from runner.engine.types import Completion

REPO = Path(__file__).resolve().parents[2]


def test_key_is_canonical_and_sensitive():
    ident = {"kind": "litellm", "model": "m", "params": {"temperature": 0.0, "max_tokens": 5}}
    msgs = [{"role": "user", "content": "hi"}]
    reordered = {"params": {"max_tokens": 5, "temperature": 0.0}, "model": "m", "kind": "litellm"}
    assert request_key(ident, msgs) == request_key(reordered, msgs)
    assert request_key(ident, msgs) != request_key({**ident, "model": "m2"}, msgs)
    assert request_key(ident, msgs) != request_key(ident, [{"role": "user", "content": "hi!"}])


def test_put_get_roundtrip_keeps_unknowns(tmp_path):
    c = ResponseCache(tmp_path)
    c.put("k1", Completion("a", 1, 2, None), 0.5, "m")
    c.put("k2", Completion("b", None, None, 0.25), None, "m")
    c.close()
    got = ResponseCache(tmp_path).get_many(["k1", "k2", "missing"])
    assert got["k1"] == (Completion("a", 1, 2, None), 0.5)
    assert got["k2"] == (Completion("b", None, None, 0.25), None)
    assert "missing" not in got


def test_many_keys_beyond_sqlite_parameter_limit(tmp_path):
    c = ResponseCache(tmp_path)
    for i in range(1200):
        c.put(f"k{i}", Completion(str(i)), None, "m")
    assert len(c.get_many([f"k{i}" for i in range(1300)])) == 1200


_WRITER = textwrap.dedent("""
    import sys
    from runner.engine.cache import ResponseCache
    from runner.engine.types import Completion
    c = ResponseCache(sys.argv[1])
    for i in range(int(sys.argv[2]), int(sys.argv[3])):
        c.put(f"k{i}", Completion(f"v{i}"), 0.0, "m")
""")


def test_several_processes_write_at_once(tmp_path):
    # Overlapping ranges, like sweep jobs sharing prompts: no lock errors, nothing lost.
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(lo), str(lo + 400)], cwd=REPO)
             for lo in (0, 200, 400)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    got = ResponseCache(tmp_path).get_many([f"k{i}" for i in range(800)])
    assert len(got) == 800 and got["k555"][0].text == "v555"


def test_claims_let_one_process_send_and_others_wait(tmp_path):
    from runner.engine.cache import ResponseCache
    from runner.engine.types import Completion

    a, b = ResponseCache(tmp_path), ResponseCache(tmp_path)
    assert a.claim("k", ttl_s=60)
    assert not b.claim("k", ttl_s=60)  # a is sending it: b must wait, not pay again
    a.put("k", Completion(text="SELECT 1"), 0.1, "m")  # the answer releases the claim
    assert b.get_many(["k"])["k"][0].text == "SELECT 1"
    assert b.claim("other", ttl_s=60) and not a.claim("other", ttl_s=60)
    b.release("other")  # an error releases it: the next process may try
    assert a.claim("other", ttl_s=60)


def test_claim_of_a_dead_process_or_expired_is_taken_over(tmp_path):
    import socket

    from runner.engine.cache import ResponseCache

    c = ResponseCache(tmp_path)
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: never a live process
    c.db.execute("INSERT INTO claims VALUES ('k', 'ghost', ?, ?, 1e18)", (socket.gethostname(), dead_pid))
    assert c.claim("k", ttl_s=60)
    c.db.execute("INSERT INTO claims VALUES ('e', 'ghost', 'elsewhere', 1, 0)")  # expired long ago
    assert c.claim("e", ttl_s=60)
