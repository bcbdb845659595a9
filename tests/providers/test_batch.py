"""provider.mode=batch against a loopback server with the OpenAI files + batches endpoints."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.core.stage import ConfigError
from runner.engine import Request
from runner.providers.batch import generate_any
from runner.providers.litellm_provider import LiteLLMProvider
from tests.conftest import read_metrics, requires_data, run_cli
from tests.providers.batch_server import BatchServer
from tests.providers.openai_server import Action

REPO = Path(__file__).resolve().parents[2]


def flaky(prompt: str, attempt: int) -> Action:
    """One prompt in ten fails its first arrival (a failed batch item), then succeeds online."""
    bad = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10 == 0
    return Action("status", status=500) if bad and attempt == 1 else Action(text="SELECT COUNT(*) FROM t")


def provider(srv, **kw) -> LiteLLMProvider:
    return LiteLLMProvider("openai/loopback", api_base=srv.api_base, mode="batch", batch_poll_s=0.05,
                           backoff_base_s=0.01, **kw)


def test_batch_needs_cache_and_an_openai_compatible_endpoint():
    with pytest.raises(ConfigError, match="cache=true"):
        LiteLLMProvider("openai/x", api_base="http://h/v1", mode="batch", cache=False).validate()
    with pytest.raises(ConfigError, match="OpenAI files"):
        LiteLLMProvider("anthropic/claude-3-5-haiku-20241022", mode="batch").validate()
    with pytest.raises(ConfigError, match="provider.mode"):
        LiteLLMProvider("openai/x", mode="sometimes").validate()


@requires_data
def test_200_row_batch_run_completes(tmp_path):
    with BatchServer(flaky) as srv:
        proc, run_dir = run_cli(
            ["+experiment=wikisql_smoke", "trainer=none", "dataset.n_train=160", "dataset.n_eval=40",
             "gate.pilot_size=20", "gate.min_gold_match_rate=0", "gate.min_judge_mean=0", "provider=litellm",
             "provider.model=openai/loopback", f"provider.api_base={srv.api_base}", "provider.mode=batch",
             "provider.batch_poll_s=0.05", "provider.backoff_base_s=0.01"], tmp_path, timeout=400)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert len(srv.created) == 2  # the pilot's batch, then the rest's
        failed = sum(1 for n in srv.counts.values() if n == 2)
    m = read_metrics(run_dir)
    assert m["teacher.requests"] == 200 and m["teacher.errors"] == 0 and len(srv.counts) == 200
    assert failed > 0 and m["teacher.attempts"] == 200 + failed  # failed items resubmitted online once
    assert m["teacher.batch_status"] == "completed" and m["teacher.batch_resumed"] is False
    assert m["teacher.cost_usd"] is None and "no price" in m["teacher.batch_cost_basis"]


_CHILD = textwrap.dedent("""
    import sys
    from runner.engine import Request
    from runner.providers.batch import generate_any
    from runner.providers.litellm_provider import LiteLLMProvider
    p = LiteLLMProvider("openai/loopback", api_base=sys.argv[1], mode="batch", batch_poll_s=0.05)
    reqs = [Request(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(30)]
    generate_any(p, reqs, cache_dir=sys.argv[2], progress=False)
""")


def test_sigkill_while_polling_then_rerun_submits_no_second_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with BatchServer(hold=True) as srv:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, srv.api_base, str(tmp_path)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not (srv.created and sum("/batches/" in g for g in srv.gets) >= 3):
                assert child.poll() is None, child.stdout.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the child never polled its batch"
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert len(srv.created) == 1 and srv.total == 0  # in flight: nothing answered yet
        srv.release()
        reqs = [Request(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(30)]
        res = generate_any(provider(srv), reqs, cache_dir=tmp_path, progress=False)
        assert len(srv.created) == 1  # the same batch, picked up
        assert res.stats["batch_resumed"] is True and res.stats["requests"] == 30
        assert [r.text for r in res.responses] == [f"echo: q{i}" for i in range(30)]
        assert srv.total == 30  # each request answered once, by that batch
        again = generate_any(provider(srv), reqs, cache_dir=tmp_path, progress=False)
        assert again.stats["cache_hits"] == 30 and len(srv.created) == 1
