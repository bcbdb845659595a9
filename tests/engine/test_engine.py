"""The engine with in-process scripted providers: ordering, isolation, retries, cache, batching."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import polars as pl
import pytest

from runner.core.stage import ConfigError
from runner.engine import Completion, ProviderError, Request, generate, responses_frame
from runner.providers.base import Provider


class Scripted(Provider):
    """Answers `echo <content>`; `script[content]` lists per-attempt outcomes (an exception or a delay)."""

    kind = "scripted"

    def __init__(self, script=None, delay_s: float = 0.0, **kw):
        super().__init__("scripted-model", **{"backoff_base_s": 0.001, "backoff_max_s": 0.01, **kw})
        self.script = script or {}
        self.delay_s = delay_s
        self.calls: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0
        self.finished: list[str] = []

    async def acomplete(self, request: Request) -> Completion:
        content = request.messages[-1]["content"]
        n = self.calls[content] = self.calls.get(content, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            outcome = (self.script.get(content) or [])[n - 1:n]
            delay = outcome[0] if outcome and isinstance(outcome[0], (int, float)) else self.delay_s
            await asyncio.sleep(delay)
            if outcome and isinstance(outcome[0], BaseException):
                raise outcome[0]
            self.finished.append(content)
            return Completion(text=f"echo {content}", tokens_in=2, tokens_out=3, cost_usd=0.001)
        finally:
            self.in_flight -= 1


def reqs(contents) -> list[Request]:
    return [Request(id=f"id{i}", messages=[{"role": "user", "content": c}]) for i, c in enumerate(contents)]


def run(p, requests, tmp_path, **kw):
    return generate(p, requests, cache_dir=tmp_path, progress=False, **kw)


def test_one_response_per_request_in_order(tmp_path):
    p = Scripted({"a": [0.05], "c": [0.0]})  # a finishes last, but stays first
    res = run(p, reqs(["a", "b", "c", "d"]), tmp_path)
    assert [(r.id, r.text) for r in res.responses] == [("id0", "echo a"), ("id1", "echo b"),
                                                       ("id2", "echo c"), ("id3", "echo d")]
    s = res.stats
    assert (s["total"], s["requests"], s["attempts"], s["cache_hits"], s["errors"]) == (4, 4, 4, 0, 0)
    assert (s["tokens_in"], s["tokens_out"]) == (8, 12) and s["cost_usd"] == pytest.approx(0.004)


def test_failure_touches_only_its_own_row(tmp_path):
    p = Scripted({"bad": [ProviderError("bad_request", "nope")] * 5}, max_retries=3)
    res = run(p, reqs(["x", "bad", "y"]), tmp_path)
    x, bad, y = res.responses
    assert bad.error_kind == "bad_request" and bad.attempts == 1  # not retryable: one attempt
    assert x.text == "echo x" and y.text == "echo y"
    assert res.stats["errors"] == 1


def test_retryable_errors_retried_until_max_retries(tmp_path):
    p = Scripted({"a": [ProviderError("server", "503")] * 2, "b": [ProviderError("rate_limit", "429")] * 9},
                 max_retries=3)
    res = run(p, reqs(["a", "b"]), tmp_path)
    assert res.responses[0].text == "echo a" and res.responses[0].attempts == 3
    assert res.responses[1].error_kind == "rate_limit" and res.responses[1].attempts == 4  # 1 + 3 retries
    assert p.calls == {"a": 3, "b": 4} and res.stats["attempts"] == 7


def test_retry_after_is_honoured(tmp_path):
    p = Scripted({"a": [ProviderError("rate_limit", "429", retry_after=0.3)]})
    t0 = time.monotonic()
    res = run(p, reqs(["a"]), tmp_path)
    assert time.monotonic() - t0 >= 0.3 and res.responses[0].attempts == 2


def test_per_request_timeout(tmp_path):
    p = Scripted({"slow": [5.0]}, timeout_s=0.1, max_retries=1)
    t0 = time.monotonic()
    res = run(p, reqs(["slow", "fast"]), tmp_path)
    assert time.monotonic() - t0 < 2
    assert res.responses[0].text == "echo slow" and res.responses[0].attempts == 2
    assert res.responses[1].attempts == 1


def test_provider_bug_is_recorded_not_raised(tmp_path):
    p = Scripted({"a": [KeyError("boom")]}, max_retries=3)
    res = run(p, reqs(["a", "b"]), tmp_path)
    assert res.responses[0].error_kind == "other" and "KeyError" in res.responses[0].error
    assert res.responses[1].text == "echo b"


def test_sliding_window_bound_and_no_lockstep(tmp_path):
    # One slow request must not hold the others: lock-step batches of 4 would make 17 of the
    # fast ones wait for it; a sliding window finishes all 20 while it is still running.
    p = Scripted({"slow": [0.5]}, delay_s=0.01, concurrency=4)
    run(p, reqs(["slow"] + [f"f{i}" for i in range(20)]), tmp_path)
    assert p.max_in_flight == 4
    assert p.finished[-1] == "slow"


def test_cache_rerun_sends_nothing(tmp_path):
    run(Scripted(), reqs(["a", "b", "c"]), tmp_path)
    p = Scripted()
    res = run(p, reqs(["c", "a", "new"]), tmp_path)
    assert p.calls == {"new": 1}
    assert [r.cache_hit for r in res.responses] == [True, True, False]
    assert [r.attempts for r in res.responses] == [0, 0, 1]
    assert res.stats["cache_hits"] == 2 and res.stats["requests"] == 1
    assert res.stats["tokens_in"] == 2  # only what this call paid for


def test_errors_are_not_cached(tmp_path):
    run(Scripted({"a": [ProviderError("auth", "401")]}), reqs(["a", "b"]), tmp_path)
    p = Scripted()
    res = run(p, reqs(["a", "b"]), tmp_path)
    assert p.calls == {"a": 1} and res.responses[0].text == "echo a"


def test_cache_false_bypasses_cache(tmp_path):
    run(Scripted(), reqs(["a"]), tmp_path)
    p = Scripted(cache=False)
    run(p, reqs(["a"]), tmp_path)
    assert p.calls == {"a": 1}


def test_cache_key_changes_with_generation_params(tmp_path):
    run(Scripted(), reqs(["a"]), tmp_path)
    p = Scripted(temperature=0.7)
    run(p, reqs(["a"]), tmp_path)
    assert p.calls == {"a": 1}


def test_identical_prompts_sent_once(tmp_path):
    p = Scripted(cache=False)
    res = run(p, reqs(["a", "a", "b"]), tmp_path)
    assert p.calls == {"a": 1, "b": 1}
    assert [r.text for r in res.responses] == ["echo a", "echo a", "echo b"]
    assert res.stats["deduplicated"] == 1 and res.stats["requests"] == 2


def test_each_response_committed_as_it_arrives(tmp_path):
    seen = []

    class Watching(Scripted):
        async def acomplete(self, request):
            rows = sqlite3.connect(tmp_path / "responses.sqlite").execute("SELECT COUNT(*) FROM responses")
            seen.append(rows.fetchone()[0])  # what another process would see right now
            return await super().acomplete(request)

    run(Watching(concurrency=1), reqs(["a", "b", "c"]), tmp_path)
    assert seen == [0, 1, 2]


class Batched(Scripted):
    batched = True

    def __init__(self, **kw):
        super().__init__(batch_size=3, concurrency=1, **kw)
        self.batches: list[int] = []

    def complete_batch(self, requests):
        self.batches.append(len(requests))
        return [Completion(text=f"b {r.messages[-1]['content']}", tokens_in=1, tokens_out=1) for r in requests]


def test_batched_provider_uses_batches_and_same_accounting(tmp_path):
    p = Batched()
    res = run(p, reqs([str(i) for i in range(7)]), tmp_path)
    assert p.batches == [3, 3, 1]
    assert [r.text for r in res.responses] == [f"b {i}" for i in range(7)]
    assert res.stats["requests"] == 7 and res.stats["cost_usd"] is None  # cost not reported: unknown
    p2 = Batched()
    run(p2, reqs([str(i) for i in range(8)]), tmp_path)
    assert p2.batches == [1]  # 7 cached


def test_generate_inside_running_loop_and_thread(tmp_path):
    async def inside():
        return run(Scripted(), reqs(["a"]), tmp_path / "loop")

    assert asyncio.run(inside()).responses[0].text == "echo a"
    out = []
    t = threading.Thread(target=lambda: out.append(run(Scripted(), reqs(["b"]), tmp_path / "thread")))
    t.start()
    t.join()
    assert out[0].responses[0].text == "echo b"


def test_invalid_knob_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="provider.concurrency"):
        run(Scripted(concurrency=0), reqs(["a"]), tmp_path)


def test_responses_frame_columns_and_types(tmp_path):
    res = run(Scripted({"b": [ProviderError("auth", "401")]}), reqs(["a", "b"]), tmp_path)
    df = responses_frame(res.responses)
    assert df.columns == ["id", "text", "latency_s", "tokens_in", "tokens_out", "cost_usd", "attempts",
                          "cache_hit", "error", "error_kind"]
    assert df.schema["tokens_in"] == pl.Int64 and df.schema["cache_hit"] == pl.Boolean
    assert df["error_kind"].to_list() == [None, "auth"]
    assert responses_frame([]).height == 0


def test_no_progress_output_when_disabled(tmp_path, capsys):
    generate(Scripted(), reqs(["a"]), cache_dir=tmp_path, progress=True)  # stderr is not a TTY here
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_engine_failure_raises_instead_of_hanging(tmp_path, monkeypatch):
    from runner.engine import cache as cache_mod

    def full_disk(self, *a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache_mod.ResponseCache, "put", full_disk)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        run(Scripted(), reqs(["a", "b"]), tmp_path)
