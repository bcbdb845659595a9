"""Provider failures say what they are: transport errors (refused, 401, 404) stop the run as
`failed` naming the error and endpoint, before any quality gate; mostly-errored teacher rows are
never `status=ok`, with or without the gate."""
from __future__ import annotations

import socket
import time

import polars as pl
import pytest

from runner.core.stage import StageFailed
from runner.engine import ProviderError, generate, responses_frame
from runner.engine.failures import check_errors
from runner.providers.litellm_provider import LiteLLMProvider
from tests.cli_tmp import metrics, run_in_tmp
from tests.conftest import requires_data
from tests.engine.test_engine import Scripted, reqs
from tests.providers.openai_server import Action, LoopbackServer

KEY_ENV, KEY = "RUNNER_TEST_DUMMY_KEY", "sk-test-dummy-key-0123456789"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def litellm_args(api_base: str, *extra: str) -> list[str]:
    return ["+experiment=wikisql_smoke", "trainer=none", "provider=litellm", "provider.model=openai/loopback",
            f"provider.api_base={api_base}", f"provider.api_key_env={KEY_ENV}", *extra]


@requires_data
def test_connection_refused_fails_fast_naming_the_error_and_endpoint(tmp_path):
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    t0 = time.monotonic()
    proc, run_dir = run_in_tmp(litellm_args(api_base), tmp_path, **{KEY_ENV: KEY})  # default retries/backoff
    wall = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr[-2000:]
    m = metrics(run_dir)
    assert m["status"] == "failed" and m["failed_stage"] == "teacher"
    assert "cannot connect" in m["error"] and "ConnectionRefusedError" in m["error"] and api_base in m["error"]
    assert "gate.pilot_passed" not in m  # stopped before the gate judged quality
    assert m["teacher.attempts"] <= 10  # the breaker: no retries of a refused connection
    logs = proc.stdout + proc.stderr + (run_dir / "run.log").read_text()
    assert "connect" in logs and KEY not in logs and KEY not in (run_dir / "metrics.json").read_text()
    assert wall <= 20, wall


@pytest.mark.parametrize("status,kind,words", [(401, "auth", "authentication failed"),
                                               (404, "not_found", "not found")])
def test_auth_and_not_found_are_transport_errors_with_the_fix(tmp_path, status, kind, words):
    with LoopbackServer(lambda prompt, attempt: Action("status", status=status)) as srv:
        p = LiteLLMProvider("openai/loopback", api_base=srv.api_base, concurrency=2, max_retries=3,
                            backoff_base_s=0.01)
        res = generate(p, reqs([f"q{i}" for i in range(20)]), cache_dir=tmp_path, progress=False)
    df = responses_frame(res.responses)
    assert df["error_kind"].to_list() == [kind] * 20
    assert 8 <= srv.total <= 10  # the breaker: 8 = max(8, 2 x concurrency) failures, + those in flight
    with pytest.raises(StageFailed, match=f"{words}.*20 of 20 pilot.*{srv.api_base}.*Fix: "):
        check_errors(df, provider=p, max_error_rate=0.2, phase="pilot", key="k")


def test_breaker_stays_closed_once_a_request_succeeded(tmp_path):
    p = Scripted({f"q{i}": [ProviderError("connection", "refused")] for i in range(1, 30)}, concurrency=1,
                 max_retries=0)
    res = generate(p, reqs([f"q{i}" for i in range(30)]), cache_dir=tmp_path, progress=False)
    assert res.stats["requests"] == 30 and res.stats["errors"] == 29  # every one was tried


def test_error_rate_above_the_limit_fails_below_passes():
    df = pl.DataFrame({"error": [None] * 8 + ["HTTP 500"] * 2, "error_kind": [None] * 8 + ["server"] * 2})
    check_errors(df, provider=Scripted(), max_error_rate=0.2, phase="teacher", key="k")  # 20 %: at the limit
    with pytest.raises(StageFailed, match=r"3 of 10 teacher requests \(30%\).*k=0.2"):
        check_errors(pl.concat([df.head(7), df.tail(2), df.tail(1)]), provider=Scripted(), max_error_rate=0.2,
                     phase="teacher", key="k")


@requires_data
def test_gate_off_with_every_request_failing_is_not_ok(tmp_path):
    with LoopbackServer(lambda prompt, attempt: Action("status", status=500)) as srv:
        proc, run_dir = run_in_tmp(litellm_args(srv.api_base, "gate=off", "gate.pilot_size=0",
                                                "provider.max_retries=0"),
                                   tmp_path, **{KEY_ENV: KEY})
    assert proc.returncode == 1, proc.stderr[-2000:]
    m = metrics(run_dir)
    assert m["status"] == "failed" and m["failed_stage"] == "teacher", m.get("error")
    assert m["teacher.error_rate"] == 1.0, m["error"]
    assert "pipeline.stages.teacher.max_error_rate=0.2" in m["error"]
