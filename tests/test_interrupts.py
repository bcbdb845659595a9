"""Ctrl-C / SIGTERM: metrics.json + timing.json with status=interrupted, one line, exit 130; the
rerun resumes from the response cache (answers received before the interrupt are never re-sent)."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.cli_tmp import cli_env, cmd, metrics, newest_run, run_in_tmp
from tests.conftest import requires_data
from tests.providers.openai_server import Action, LoopbackServer

KEY_ENV, KEY = "RUNNER_TEST_DUMMY_KEY", "sk-test-dummy-key-0123456789"


def start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    (tmp_path / "cwd").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd(args), cwd=tmp_path / "cwd", env=cli_env(tmp_path, **{KEY_ENV: KEY}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, sig=signal.SIGINT) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out[-2000:], err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    return out, err


def cached(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "cache" / "responses.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


@requires_data
def test_sigint_during_the_teacher_then_rerun_sends_no_answered_request_again(tmp_path):
    slow = lambda prompt, attempt: Action(delay_s=0.25)  # noqa: E731 - 50 rows / 2 in flight: ~6 s
    args = ["+experiment=wikisql_smoke", "trainer=none", "gate=off", "gate.pilot_size=0", "provider=litellm",
            "provider.model=openai/loopback", "provider.concurrency=2", f"provider.api_key_env={KEY_ENV}"]
    with LoopbackServer(slow) as srv:
        proc = start([*args, f"provider.api_base={srv.api_base}"], tmp_path)
        wait_for(lambda: srv.total >= 8, 60, "teacher requests")
        out, err = interrupt(proc)
        run_dir = newest_run(tmp_path / "cwd")
        m = metrics(run_dir)
        assert m["status"] == "interrupted" and m["failed_stage"] == "teacher"
        assert "interrupted by SIGINT during stage teacher" in m["error"]
        assert (run_dir / "timing.json").exists() and "teacher" in (run_dir / "timing.json").read_text()
        assert "status=interrupted" in out + err
        answered = cached(tmp_path)
        assert 6 <= answered < 50
        first = dict(srv.counts)

        srv.plan = lambda prompt, attempt: Action()
        time.sleep(1.1)  # a new run folder (Hydra names it by the second)
        proc2, run2 = run_in_tmp([*args, f"provider.api_base={srv.api_base}"], tmp_path, **{KEY_ENV: KEY})
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    m2 = metrics(run2)
    assert m2["status"] == "ok" and m2["teacher.cache_hits"] == answered
    assert m2["teacher.requests"] == 50 - answered
    resent = [p for p, n in srv.counts.items() if n > 1]
    assert len(resent) <= 2 and all(first[p] == 1 for p in resent)  # only those in flight at the interrupt


@requires_data
def test_sigint_during_training_writes_interrupted_metrics_and_rerun_uses_the_cache(tmp_path):
    args = ["+experiment=wikisql_smoke", "student.size=tiny", "trainer=torch", "trainer.max_steps=100000",
            "pipeline.skip=[student_pre,student_post,compare]"]
    proc = start(args, tmp_path)

    def training() -> bool:
        logs = list((tmp_path / "cwd" / "outputs").glob("**/run.log"))
        return bool(logs) and "stage train: start" in logs[0].read_text()

    wait_for(training, 120, "the train stage")
    time.sleep(1.0)
    out, err = interrupt(proc)
    # student_init and the trainer loaded/saved models: transformers' bars and warnings stay off the console
    assert "Loading weights" not in out + err and "Warning" not in out + err
    m = metrics(newest_run(tmp_path / "cwd"))
    assert m["status"] == "interrupted" and m["failed_stage"] == "train"
    assert m["teacher.requests"] == 50  # the teacher side finished before the interrupt
    time.sleep(1.1)
    proc2, run2 = run_in_tmp(["+experiment=wikisql_smoke", "trainer=none"], tmp_path)
    m2 = metrics(run2)
    assert proc2.returncode == 0 and m2["teacher.requests"] == 0 and m2["teacher.cache_hits"] == 50


@requires_data
def test_sigterm_is_an_interrupt_too(tmp_path):
    proc = start(["+experiment=wikisql_smoke", "student.size=tiny", "trainer=torch", "trainer.max_steps=100000",
                  "pipeline.skip=[student_pre,student_post,compare]"], tmp_path)
    wait_for(lambda: any("stage train: start" in p.read_text()
                         for p in (tmp_path / "cwd" / "outputs").glob("**/run.log")), 120, "the train stage")
    interrupt(proc, signal.SIGTERM)
    m = metrics(newest_run(tmp_path / "cwd"))
    assert m["status"] == "interrupted" and "SIGTERM" in m["error"] and m["failed_stage"] == "train"


@requires_data
def test_an_interrupt_stops_a_sweep(tmp_path):
    proc = start(["-m", "+experiment=wikisql_smoke", "student.size=tiny", "trainer=torch", "trainer.max_steps=100000",
                  "pipeline.skip=[student_pre,student_post,compare]", "seed=1,2"], tmp_path)
    logs = lambda: list((tmp_path / "cwd" / "outputs" / "multirun").glob("**/run.log"))  # noqa: E731
    wait_for(lambda: any("stage train: start" in p.read_text() for p in logs()), 120, "job 0 training")
    time.sleep(2.0)  # into the training loop itself (max_steps=100000), past the stage's imports
    interrupt(proc)
    jobs = sorted(p.parent for p in (tmp_path / "cwd" / "outputs" / "multirun").glob("**/metrics.json"))
    assert len(jobs) == 1 and metrics(jobs[0])["status"] == "interrupted"  # job 1 never started
    assert len(logs()) == 1
