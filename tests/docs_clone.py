"""One copy of the working tree per test session where the documented commands run, with Hydra's
default output folders, shared by every pytest-xdist worker.

A command (with its size overrides) runs once per session: the README-commands test and an
end-to-end test that checks what the same command writes read one run instead of making two. Runs
of one experiment are serialised by a file lock (their folders are told apart by time); a worker
that wants a run another worker is making waits for it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO, output_folders

_TEXT2SQL = ["dataset.n_train=50", "dataset.n_eval=10", "gate.pilot_size=10", "gate.min_total=20",
             "student.size=tiny", "pipeline.stages.student_pre.max_new_tokens=8",
             "pipeline.stages.student_post.max_new_tokens=8"]
_TRAIN = ["trainer.torch.max_steps=2"]  # not valid with trainer=none (no trainer.torch there)
_CD = ["dataset.n_train=48", "dataset.n_test=16", "pipeline.net.width=32", "pipeline.net.depth=2",
       "pipeline.stages.operator.steps=20", "pipeline.stages.diffusion_teacher.steps=20",
       "consistency_distill.epochs=1", "pipeline.stages.cd_eval.curve_steps=[1,2]",
       "pipeline.stages.cd_eval.teacher_steps=3", "pipeline.stages.cd_eval.teacher_lowstep_steps=2",
       "pipeline.stages.cd_eval.ensemble_k=2", "pipeline.stages.cd_eval.timing_repeats=1",
       "pipeline.stages.cd_eval.min_timing_s=0.0"]
_LOGIT_KD = [*_TEXT2SQL, "pipeline.stages.kd_teacher_init.student.size=tiny",
             "pipeline.stages.kd_teacher_train.trainer.max_steps=2", "pipeline.stages.kd_teacher_eval.max_new_tokens=8"]
# wikisql_full and its sweeps select trainer=torch (keys trainer.X) and set their own n_train lists.
# 6 steps, validated every 3: tests/test_e2e_wikisql_full.py reads these runs (and runs its own
# KD commands at these sizes) and asserts on them.
FULL = [*_TEXT2SQL[1:], "trainer.max_steps=6", "trainer.eval_every=3", "trainer.dev_rows=8",
        "trainer.dev_max_new_tokens=8", "trainer.warmup_steps=2"]
# Smoke sizes appended to a command, by experiment.
SIZES = {"wikisql_1k": _TEXT2SQL, "wikisql_smoke": _TEXT2SQL, "burgers_cd": _CD,
         "burgers_cd_smoke": _CD, "burgers_cd_seed_v1v2": _CD, "wikisql_logit_kd": _LOGIT_KD,
         "wikisql_full": ["dataset.n_train=80", *FULL], "wikisql_scaling": ["dataset.n_train=40,80", *FULL],
         # one seed of the presets' two: the second proves nothing more at smoke size
         "wikisql_filter_ablation": ["dataset.n_train=80", "seed=0", *FULL],
         "wikisql_logit_kd_full": ["dataset.n_train=60", "seed=0", *FULL],
         # one lambda of the three: lambda = 0 is the logit-KD commands above
         "wikisql_gkd_full": ["dataset.n_train=60", "seed=0", "trainer.kd.on_policy=1",
                              "trainer.kd.sample_max_new_tokens=8", *FULL]}
OWN_TRAINER = ("wikisql_full", "wikisql_scaling", "wikisql_filter_ablation", "wikisql_logit_kd_full",
               "wikisql_gkd_full")
SWEEPER_SIZES = ["hydra.sweeper.n_trials=2"]


def experiment(cmd: str) -> str:
    m = re.search(r"\+experiment=(\w+)", cmd) or re.search(r"EXPERIMENT=(\w+)", cmd)
    return m.group(1) if m else "wikisql_1k"  # the Makefile's default


def sizes(cmd: str) -> list[str]:
    out = list(SIZES.get(experiment(cmd), []))
    if experiment(cmd).startswith("wikisql") and "trainer=none" not in cmd and experiment(cmd) not in OWN_TRAINER:
        out += _TRAIN
    if "hparams_search=" in cmd:
        out += SWEEPER_SIZES
    return out


def argv_of(cmd: str) -> list[str]:
    """The argv a documented command runs as here: `python` is this venv's, sizes appended."""
    if cmd.startswith("make "):
        return [*shlex.split(cmd), f"ARGS={' '.join(sizes(cmd))}"]
    argv = shlex.split(cmd)
    if argv[0] == "python":  # what `. .venv/bin/activate && python` is
        argv[0] = sys.executable
    return [*argv, *(sizes(cmd) if not cmd.startswith("python -m runner.report") else [])]


def _copy_tree(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files, like a clone with the working tree's edits.
    .venv holds links to the real venv's entries and its own fresh set-up stamp, so `make run`'s
    set-up is the no-op it is after `make` set up .venv, and never installs into the shared one."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    venv = dest / ".venv"
    venv.mkdir()
    for entry in (REPO / ".venv").iterdir():
        if entry.name != ".installed":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed").touch()  # newer than the copied pyproject.toml


@dataclass
class DocRun:
    returncode: int
    stdout: str
    stderr: str
    folder: Path | None  # the run (or sweep) folder the command made; None for a report


class DocsClone:
    def __init__(self, root: Path):
        self.root, self.dir = root, root / "clone"
        with self.lock("clone"):
            if not (self.dir / ".copied").exists():
                self.dir.mkdir(parents=True, exist_ok=True)
                _copy_tree(self.dir)
                (self.dir / ".copied").touch()

    @contextmanager
    def lock(self, name: str):
        """One lock per experiment: runs of different experiments go on side by side (their folders
        differ by name), two of one experiment one after the other (their folders differ by time)."""
        (self.root / "locks").mkdir(exist_ok=True)
        with open(self.root / "locks" / name, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def run(self, argv: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> DocRun:
        """Run argv in the clone (env: extra variables, e.g. a test cluster's), or return the run an
        earlier call of the same argv made."""
        # what picks the experiment and the folder: `python -m runner ARGS`, `make run ARGS=...`;
        # none for a report (it writes into the folder it reads)
        runner_args = argv[3:] if argv[1:3] == ["-m", "runner"] else argv[1:] if argv[0] == "make" else []
        sweep = argv[0] != "make" and bool({"-m", "--multirun"} & set(runner_args))
        name = experiment(" ".join(runner_args)) if runner_args else None
        key = hashlib.sha1("\0".join(argv).encode()).hexdigest()[:16]
        memo = self.root / "runs" / f"{key}.json"
        with self.lock(name or key):
            if memo.exists():
                d = json.loads(memo.read_text())
                return DocRun(d["rc"], d["stdout"], d["stderr"], Path(d["folder"]) if d["folder"] else None)
            since = time.time() - 0.05
            proc = self.call(argv, timeout, env)
            made = [p for p in output_folders(self.dir, sweep, since)
                    if name and p.relative_to(self.dir).parts[1 + sweep] == name]
            run = DocRun(proc.returncode, proc.stdout, proc.stderr, made[-1] if made else None)
            memo.parent.mkdir(exist_ok=True)
            memo.write_text(json.dumps({"argv": argv, "rc": run.returncode, "stdout": run.stdout,
                                        "stderr": run.stderr, "folder": str(run.folder) if run.folder else None}))
            return run

    def find(self, experiment_name: str, sweep: bool, accept=lambda folder: True) -> list[Path]:
        """Folders of the experiment's runs (or sweeps) in the clone, oldest first; none half-made."""
        with self.lock(experiment_name):
            return [p for p in output_folders(self.dir, sweep, 0.0)
                    if p.relative_to(self.dir).parts[1 + sweep] == experiment_name and accept(p)]

    def call(self, argv: list[str], timeout: float = 300,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "RUNNER_CACHE_DIR": str(self.root / "cache"), **(extra_env or {})}
        env.pop("PYTHONPATH", None)  # `python -m runner` must import the copy's package, as in a clone
        return subprocess.run(argv, cwd=self.dir, env=env, capture_output=True, text=True, timeout=timeout)


def shared_root(tmp_path_factory) -> Path:
    """The session's base temp folder, common to all xdist workers (each has its own below it)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "docs"
    root.mkdir(exist_ok=True)
    return root
