"""Sweeps across processes and machines (docs/cluster.md), through the real CLI:
- 4 parallel jobs sharing one PostgreSQL cache send each teacher request once (the fake server counts);
- the same as a SLURM array job on a real single-node slurmctld + slurmd, with one failing job;
- a cache_dir on a network filesystem with a parallel launcher fails at validation, before the teacher.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from runner.report import build_report
from tests.conftest import read_metrics, requires_data, run_cli
from tests.providers.openai_server import Action, LoopbackServer

pytestmark = requires_data

# 4 jobs that ask the teacher the same 16 prompts (the fake teacher's SQL would not pass the gate).
SMOKE = ["+experiment=wikisql_smoke", "trainer=none", "gate=off", "dataset.n_train=12", "dataset.n_eval=4"]
FILTERS = ["filters.min_score=0.5,0.9", "filters.require_gold=false,true"]
PASSWORD = "pw-never-in-outputs-5d1f"  # trust auth ignores it; it must still never be written anywhere


def sql_plan(prompt: str, attempt: int) -> Action:
    return Action(text="SELECT COUNT(*) FROM t")


def teacher(srv: LoopbackServer) -> list[str]:
    return ["provider=litellm", "provider.model=openai/loopback", f"provider.api_base={srv.api_base}"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def assert_each_request_sent_once(srv: LoopbackServer, jobs: list[Path], cache_dir: Path) -> None:
    metrics = [read_metrics(j) for j in jobs]
    assert all(m["status"] == "ok" for m in metrics), [m.get("error") for m in metrics]
    twice = {p: c for p, c in srv.counts.items() if c != 1}
    assert srv.counts and not twice, f"sent more than once: {len(twice)} prompts"  # the server's own count
    per_job = {m["teacher.requests"] + m["teacher.cache_hits"] for m in metrics}
    assert per_job == {srv.total} == {len(srv.counts)}  # each job needed every prompt, sent once in all
    assert sum(m["teacher.requests"] for m in metrics) == srv.total
    assert not (cache_dir / "responses.sqlite").exists()  # the answers went to the server, not a file


def assert_no_secret_written(root: Path) -> None:
    leaked = [p for p in root.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert not leaked, leaked


@pytest.fixture(params=["slurm_gpu", "joblib"])
def launcher(request) -> tuple[list[str], dict[str, str]]:
    """The launcher's overrides and environment. One 4-process sweep is enough for the suite's time:
    the SLURM array where a cluster can run (CI), else the same jobs as joblib processes."""
    from tests.services.slurm_cluster import missing

    if request.param == "slurm_gpu":
        cluster = request.getfixturevalue("slurm")  # skips, saying why, where SLURM cannot run
        return ["hydra/launcher=slurm_gpu"], cluster.client_env  # the README's command, preset unchanged
    if missing() is None:
        pytest.skip("SLURM runs here: the slurm_gpu case runs this sweep, as one SLURM array")
    return ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"], {}


@pytest.mark.slow
def test_parallel_sweep_on_one_postgres_cache_sends_each_request_once(tmp_path, pg_url, launcher):
    # 4 jobs asking the same prompts at once, and a 5th whose invalid value fails it like any job.
    args, env = launcher
    with LoopbackServer(sql_plan) as srv:
        proc, sweep = run_cli([*SMOKE, "-m", *args, "cache.backend=postgres", *teacher(srv),
                               "filters.min_score=0.2,0.4,0.6,0.8,1.5"], tmp_path,
                              env={"RUNNER_CACHE_URL": with_password(pg_url), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]  # a failed job does not fail the sweep
    report = build_report([sweep], metrics=["teacher.requests"], plot=False)
    status = {r["filters.min_score"]: r["status"] for r in report.rows}
    assert status == {0.2: "ok", 0.4: "ok", 0.6: "ok", 0.8: "ok", 1.5: "failed"}
    jobs = job_dirs(sweep)
    bad = read_metrics(jobs[4])
    assert bad["failed_stage"] == "filter" and "min_score" in bad["error"]
    assert_each_request_sent_once(srv, jobs[:4], tmp_path / "cache")
    if args[0] == "hydra/launcher=slurm_gpu":  # they really were SLURM jobs: one array of 5 tasks
        logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
        assert len(logs) == 5 and len({p.parent.name.split("_")[0] for p in logs}) == 1, logs
    assert_no_secret_written(tmp_path)
    assert PASSWORD not in proc.stdout + proc.stderr
    print(f"\n{args[0]}: 4 jobs on postgres, requests sent {srv.total} = unique prompts {len(srv.counts)}")


def test_network_cache_dir_with_a_parallel_launcher_fails_before_the_teacher(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    fake = tmp_path / "mountinfo"  # the kernel's table, plus cache_dir as an NFS mount
    fake.write_text(Path("/proc/self/mountinfo").read_text()
                    + f"999 27 0:99 / {cache.resolve()} rw,relatime - nfs4 fileserver:/export rw,vers=4.2\n")
    with LoopbackServer(sql_plan) as srv:
        proc, sweep = run_cli([*SMOKE, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *teacher(srv),
                               "seed=1,2"], tmp_path, cache_dir=cache, env={"RUNNER_MOUNTINFO": str(fake)})
    assert srv.total == 0  # refused before any teacher request
    for job in job_dirs(sweep):
        m = read_metrics(job)
        assert m["status"] == "failed" and m["failed_stage"] == "config"
        assert f"cache_dir {cache.resolve()}" in m["error"] and "(nfs4 mounted at" in m["error"]
        assert "hydra/launcher=joblib" in m["error"] and "cache.backend=postgres" in m["error"]
    assert not (cache / "responses.sqlite").exists()
    assert len(job_dirs(sweep)) == 2, proc.stderr[-2000:]
