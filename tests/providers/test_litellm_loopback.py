"""litellm provider + engine against a real loopback HTTP server (no network, no key).

Every test runs on both wire paths of the provider (provider.client): litellm's acompletion and
the light OpenAI-compatible client that `auto` picks for an api_base server.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.core.stage import ConfigError
from runner.engine import Request, generate
from runner.providers.litellm_provider import LiteLLMProvider
from tests.providers.openai_server import Action, LoopbackServer

REPO = Path(__file__).resolve().parents[2]


CLIENT = "auto"  # set per test by the `client` fixture


@pytest.fixture(params=["http", "litellm"], autouse=True)
def client(request, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CLIENT", request.param)
    return request.param


def provider(srv: LoopbackServer, **kw) -> LiteLLMProvider:
    kw = {"concurrency": 8, "max_retries": 3, "timeout_s": 5.0, "backoff_base_s": 0.01,
          "backoff_max_s": 0.05, "client": CLIENT, **kw}
    return LiteLLMProvider("openai/loopback", api_base=srv.api_base, **kw)


def test_auto_takes_the_light_client_only_for_an_openai_compatible_api_base():
    assert LiteLLMProvider("openai/m", api_base="http://127.0.0.1:1/v1").wire == "http"
    assert LiteLLMProvider("hosted_vllm/m", api_base="http://127.0.0.1:1/v1").wire == "http"
    assert LiteLLMProvider("openai/gpt-4o-mini").wire == "litellm"  # hosted: litellm maps params per model
    assert LiteLLMProvider("anthropic/claude-3-5-haiku-20241022", api_base="http://x/v1").wire == "litellm"
    with pytest.raises(ConfigError, match="provider.client=litellm"):
        LiteLLMProvider("anthropic/claude-3-5-haiku-20241022", client="http").validate()
    with pytest.raises(ConfigError, match="one of auto, litellm, http"):
        LiteLLMProvider("openai/m", client="fast").validate()


def test_light_client_prices_from_litellms_map(tmp_path, client):
    """A model litellm knows is priced on both paths, the same way (usage x the map's unit prices)."""
    with LoopbackServer() as srv:
        p = LiteLLMProvider("openai/gpt-4o-mini", api_base=srv.api_base, client=client, max_retries=0)
        res = generate(p, requests(2), cache_dir=tmp_path, progress=False)
    from runner.providers.litellm_client import load_litellm

    per_in, per_out = load_litellm().cost_per_token(model="openai/gpt-4o-mini", prompt_tokens=1, completion_tokens=1)
    for r in res.responses:
        assert r.cost_usd == pytest.approx(r.tokens_in * per_in + r.tokens_out * per_out, rel=1e-6)
        assert r.cost_usd > 0


def requests(n: int, prefix: str = "q") -> list[Request]:
    return [Request(id=f"r{i}", messages=[{"role": "user", "content": f"{prefix}{i}"}]) for i in range(n)]


def by_attempt(*actions: Action):
    """Plan: the k-th arrival of every prompt gets actions[k-1]; later arrivals succeed."""
    return lambda prompt, attempt: actions[attempt - 1] if attempt <= len(actions) else Action()


def test_success_records_usage_and_unknown_cost(tmp_path):
    with LoopbackServer() as srv:
        res = generate(provider(srv), requests(5), cache_dir=tmp_path, progress=False)
    assert [r.text for r in res.responses] == [f"echo: q{i}" for i in range(5)]
    assert all(r.attempts == 1 and r.error is None and r.tokens_out > 0 for r in res.responses)
    assert srv.total == 5
    assert res.stats["requests"] == 5 and res.stats["attempts"] == 5 and res.stats["errors"] == 0
    assert res.stats["tokens_in"] == sum(r.tokens_in for r in res.responses)
    # The loopback model has no price in litellm's map: cost is unknown (None), never 0.
    assert res.stats["cost_usd"] is None and all(r.cost_usd is None for r in res.responses)


def test_429_with_retry_after_then_success(tmp_path):
    with LoopbackServer(by_attempt(Action("status", status=429, retry_after=0.4))) as srv:
        t0 = time.monotonic()
        res = generate(provider(srv), requests(3), cache_dir=tmp_path, progress=False)
        wall = time.monotonic() - t0
    assert all(r.error is None and r.attempts == 2 for r in res.responses)
    assert srv.total == 6
    assert wall >= 0.4  # Retry-After honoured (backoff alone would be <= 0.05 s)


def test_500s_retried_then_given_up(tmp_path):
    plan = lambda prompt, attempt: (Action("status", status=500) if prompt == "q0" or attempt <= 2
                                    else Action())
    with LoopbackServer(plan) as srv:
        res = generate(provider(srv, max_retries=2), requests(4), cache_dir=tmp_path, progress=False)
    bad, *good = res.responses
    assert bad.error_kind == "server" and bad.text is None and bad.attempts == 3
    assert all(r.error is None and r.attempts == 3 for r in good)  # two 500s, then success
    assert srv.counts == {f"q{i}": 3 for i in range(4)}
    assert res.stats["errors"] == 1 and res.stats["attempts"] == 12


def test_timeout_then_success(tmp_path):
    with LoopbackServer(by_attempt(Action("hang", delay_s=1.5))) as srv:
        res = generate(provider(srv, timeout_s=0.3), requests(2), cache_dir=tmp_path, progress=False)
    assert all(r.error is None and r.attempts == 2 for r in res.responses)


def test_malformed_json_retried_and_recorded(tmp_path):
    plan = lambda prompt, attempt: Action("malformed") if prompt == "q1" or attempt == 1 else Action()
    with LoopbackServer(plan) as srv:
        res = generate(provider(srv, max_retries=1), requests(3), cache_dir=tmp_path, progress=False)
    assert res.responses[1].error_kind == "malformed" and res.responses[1].attempts == 2
    assert res.responses[0].text == "echo: q0" and res.responses[2].text == "echo: q2"


def mixed_faults(rate: float, seed: int = 0):
    kinds = [Action("status", status=429, retry_after=0.01), Action("status", status=503),
             Action("hang", delay_s=2.0), Action("malformed")]

    def plan(prompt: str, attempt: int) -> Action:
        rng = random.Random(f"{seed}:{prompt}:{attempt}")
        return rng.choice(kinds) if rng.random() < rate else Action(delay_s=rng.uniform(0, 0.02))
    return plan


def test_mixed_faults_every_row_accounted_once(tmp_path):
    n = 120
    # A 1 s timeout against 2 s hangs: a tighter one (0.3 s) also fired, on a loaded machine, before
    # the server had read a healthy request, and the server then saw fewer attempts than were made.
    with LoopbackServer(mixed_faults(0.2)) as srv:
        res = generate(provider(srv, concurrency=16, max_retries=1, timeout_s=1.0), requests(n),
                       cache_dir=tmp_path, progress=False)
    assert [r.id for r in res.responses] == [f"r{i}" for i in range(n)]  # none lost, same order
    for i, r in enumerate(res.responses):
        assert r.attempts == srv.counts[f"q{i}"]  # what the server saw is what was recorded
        if r.error is None:
            assert r.text == f"echo: q{i}"
        else:
            assert r.text is None and r.error_kind in {"rate_limit", "server", "timeout", "malformed"}
    errors = sum(r.error is not None for r in res.responses)
    assert 0 < errors < n * 0.2  # ~ 0.2^2 of rows fail twice; the rest completed
    assert srv.total == res.stats["attempts"] == sum(r.attempts for r in res.responses)


def test_concurrency_bound_never_exceeded(tmp_path):
    with LoopbackServer(lambda p, a: Action(delay_s=0.05)) as srv:
        generate(provider(srv, concurrency=5), requests(40), cache_dir=tmp_path, progress=False)
    assert 2 <= srv.max_in_flight <= 5


def test_rpm_limit_paces_requests(tmp_path):
    with LoopbackServer() as srv:
        generate(provider(srv, concurrency=8, rpm=120), requests(9), cache_dir=tmp_path, progress=False)
    # Least-squares slope of arrival time vs index (robust to one late first connection).
    xs, ts = list(range(len(srv.arrivals))), srv.arrivals
    mx, mt = sum(xs) / len(xs), sum(ts) / len(ts)
    seconds_per_request = sum((x - mx) * (t - mt) for x, t in zip(xs, ts)) / sum((x - mx) ** 2 for x in xs)
    rate_per_min = 60 / seconds_per_request
    assert abs(rate_per_min - 120) / 120 < 0.10, rate_per_min
    assert (ts[-1] - ts[0]) >= 8 * 0.5 * 0.9  # and never a burst: 9 requests span ~4 s


def test_missing_key_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNNER_TEST_MISSING_KEY", raising=False)
    with LoopbackServer() as srv:
        p = provider(srv, api_key_env="RUNNER_TEST_MISSING_KEY")
        with pytest.raises(ConfigError, match="RUNNER_TEST_MISSING_KEY"):
            p.validate()
        with pytest.raises(ConfigError, match="RUNNER_TEST_MISSING_KEY"):
            generate(p, requests(3), cache_dir=tmp_path, progress=False)
    assert srv.total == 0


def test_key_value_never_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_TEST_KEY", "sk-secret-value-123456")
    with LoopbackServer() as srv:
        generate(provider(srv, api_key_env="RUNNER_TEST_KEY"), requests(2), cache_dir=tmp_path, progress=False)
    assert all(b"sk-secret-value" not in f.read_bytes() for f in tmp_path.iterdir() if f.is_file())


_CHILD = textwrap.dedent("""
    import sys
    from runner.engine import Request, generate
    from runner.providers.litellm_provider import LiteLLMProvider
    p = LiteLLMProvider("openai/loopback", api_base=sys.argv[1], concurrency=4, max_retries=0, client=sys.argv[4])
    reqs = [Request(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(int(sys.argv[3]))]
    generate(p, reqs, cache_dir=sys.argv[2], progress=False)
""")


def test_sigkill_mid_run_then_rerun_resends_nothing_answered(tmp_path):
    n = 120  # ~3 s of work for the child: killed after ~0.5 s even on a busy machine
    with LoopbackServer(lambda p, a: Action(delay_s=0.1)) as srv:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, srv.api_base, str(tmp_path), str(n), CLIENT],
                                 cwd=REPO, env=env)
        deadline = time.monotonic() + 60
        while srv.total < 20 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        first_counts = dict(srv.counts)
        db = sqlite3.connect(tmp_path / "responses.sqlite")
        answered = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        db.close()
        # Everything the server finished before the kill, minus at most the 4 in flight, was kept.
        assert 20 - 4 <= answered < n

        res = generate(provider(srv, concurrency=16, max_retries=0), requests(n), cache_dir=tmp_path,
                       progress=False)
    resent = {p: c - first_counts.get(p, 0) for p, c in srv.counts.items()}
    assert sum(resent.values()) == n - answered == res.stats["requests"]
    assert res.stats["cache_hits"] == answered
    cached_prompts = {f"q{i}" for i, r in enumerate(res.responses) if r.cache_hit}
    assert all(resent[p] == 0 for p in cached_prompts)  # nothing already answered is sent again
    assert all(r.error is None for r in res.responses)


def test_params_reach_the_server_as_the_openai_sdk_sends_them(tmp_path):
    bodies = []

    def plan(prompt, attempt, body):
        bodies.append(body)
        return Action()

    with LoopbackServer(plan) as srv:
        p = provider(srv, temperature=0.5, max_tokens=33, params={"extra_body": {"top_k": 5}})
        res = generate(p, requests(1), cache_dir=tmp_path, progress=False)
    assert res.responses[0].error is None
    body = bodies[0]
    assert body["model"] == "loopback" and body["temperature"] == 0.5 and body["max_tokens"] == 33
    assert body["top_k"] == 5 and "extra_body" not in body
