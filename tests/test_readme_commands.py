"""The README and docs/*.md are executable: every `python -m runner ...` and `make ...` line of their
fenced code blocks runs as written, in a temporary copy of the working tree, with Hydra's default
output folders. A command shown in several files runs once.

Only size overrides are appended (SIZES, by experiment), never `hydra.*.dir`: the point is to run
the command a user types (a sweep on the default sweep folder once failed for every user while
tests that set hydra.sweep.dir passed). Placeholders for earlier runs (RUN_DIR, the dated example
folders) are replaced by a real run made earlier in this module. Commands that need a real key, a
server, a GPU or an optional extra are listed in SKIP with the reason.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, output_folders, requires_data

# One worker runs this whole module (make test: --dist loadfile): a command with a placeholder reads
# the run an earlier command made in this module's working copy.
pytestmark = [requires_data, pytest.mark.xdist_group("readme_commands")]

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
_FULL = [*_TEXT2SQL[1:], "trainer.max_steps=4", "trainer.eval_every=2", "trainer.dev_rows=8",
         "trainer.warmup_steps=1"]
# Smoke sizes appended to a command, by experiment.
SIZES = {"wikisql_1k": _TEXT2SQL, "wikisql_smoke": _TEXT2SQL, "burgers_cd": _CD,
         "burgers_cd_smoke": _CD, "burgers_cd_seed_v1v2": _CD, "wikisql_logit_kd": _LOGIT_KD,
         "wikisql_full": ["dataset.n_train=60", *_FULL], "wikisql_scaling": ["dataset.n_train=40,60", *_FULL],
         # one seed of the presets' two: the second proves nothing more at smoke size
         "wikisql_filter_ablation": ["dataset.n_train=60", "seed=0", *_FULL],
         "wikisql_logit_kd_full": ["dataset.n_train=60", "seed=0", *_FULL],
         # one lambda of the three: lambda = 0 is the logit-KD commands above
         "wikisql_gkd_full": ["dataset.n_train=60", "seed=0", "trainer.kd.on_policy=1",
                              "trainer.kd.sample_max_new_tokens=8", *_FULL]}
OWN_TRAINER = ("wikisql_full", "wikisql_scaling", "wikisql_filter_ablation", "wikisql_logit_kd_full",
               "wikisql_gkd_full")
SWEEPER_SIZES = ["hydra.sweeper.n_trials=2"]

# Substring of a command -> why it is not run here.
SKIP = {
    "make test": "recursion: `make test` runs this very suite",
    "provider=openrouter": "needs OPENROUTER_API_KEY and network",
    "provider=openai": "needs OPENAI_API_KEY and network",
    "provider=litellm": "needs a real provider key (ANTHROPIC_API_KEY) and network",
    "provider=ollama": "needs a running Ollama server with the model pulled",
    "provider=vllm": "needs a vLLM server (a GPU)",
    "hydra/launcher=ray": "needs the optional ray extra",
    "hydra/launcher=slurm": "needs a SLURM cluster",
    "logger=mlflow": "needs the optional mlflow extra",
}

# Example folders in the README and docs -> (experiment, sweep?) of a real earlier run that replaces them.
# The sweep folder comes first: it contains the single-run example as a substring.
PLACEHOLDERS = {
    "outputs/multirun/wikisql_1k/2026-11-22/10-00-00": ("wikisql_1k", True),
    "outputs/multirun/wikisql_logit_kd/2026-11-22/10-00-00": ("wikisql_logit_kd", True),
    "outputs/wikisql_logit_kd/2026-11-22/10-00-00": ("wikisql_logit_kd", False),
    "outputs/wikisql_1k/2026-11-22/10-00-00": ("wikisql_1k", False),
    "outputs/multirun/wikisql_logit_kd_full/2026-11-22/10-00-00": ("wikisql_logit_kd_full", True),
    "outputs/multirun/wikisql_gkd_full/2026-11-22/10-00-00": ("wikisql_gkd_full", True),
    "outputs/wikisql_full/2026-11-22/10-00-00": ("wikisql_full", False),
    "outputs/multirun/wikisql_scaling/2026-11-22/10-00-00": ("wikisql_scaling", True),
    "outputs/multirun/wikisql_filter_ablation/2026-11-22/10-00-00": ("wikisql_filter_ablation", True),
    "RUN_DIR": ("burgers_cd", False),
}
DATE_GLOB = "outputs/multirun/*/2026-11-22/*"  # a glob over one day's sweeps: today's here


_COMMAND = re.compile(r"(python -m runner|make)\b")


def readme_commands(text: str) -> list[str]:
    """Command lines of the fenced code blocks: continuations joined, trailing comments dropped.
    A line the shell cannot split (prose or printed output in a ```text block, e.g. an apostrophe)
    is no command, unless it starts like one: then the split error is raised."""
    out = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            try:
                line = shlex.join(shlex.split(line, comments=True))  # the shell's view: quotes kept, # dropped
            except ValueError:
                if _COMMAND.match(line.strip()):
                    raise
                continue
            if _COMMAND.match(line):
                out.append(line)
    return out


# README first, then the pages in reading order, so the runs a later page reuses (a wikisql_full run
# for logit KD) are made by the page that shows them, not made twice.
_FIRST = ("configuration.md", "text2sql.md", "students.md")


def _reading_order(page: Path) -> tuple[int, str]:
    return (_FIRST.index(page.name) if page.name in _FIRST else len(_FIRST), page.name)


DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"), key=_reading_order)]


def doc_commands(files: list[Path]) -> dict[str, str]:
    """command -> the first file (relative to the repo) that shows it; identical commands run once."""
    found: dict[str, str] = {}
    for f in files:
        for cmd in readme_commands(f.read_text()):
            found.setdefault(cmd, str(f.relative_to(REPO)))
    return found


SOURCES = doc_commands(DOC_FILES)
# Reports last (a stable sort): a report's placeholder reads a sweep that a run command of some page makes.
COMMANDS = sorted(SOURCES, key=lambda c: c.startswith("python -m runner.report"))


def _experiment(cmd: str) -> str:
    m = re.search(r"\+experiment=(\w+)", cmd) or re.search(r"EXPERIMENT=(\w+)", cmd)
    return m.group(1) if m else "wikisql_1k"  # the Makefile's default


def _sizes(cmd: str) -> list[str]:
    sizes = list(SIZES.get(_experiment(cmd), []))
    if _experiment(cmd).startswith("wikisql") and "trainer=none" not in cmd and _experiment(cmd) not in OWN_TRAINER:
        sizes += _TRAIN
    if "hparams_search=" in cmd:
        sizes += SWEEPER_SIZES
    return sizes


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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("readme") / "clone"
    d.mkdir()
    _copy_tree(d)
    return d


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNNER_CACHE_DIR": str(cwd.parent / "cache")}
    env.pop("PYTHONPATH", None)  # `python -m runner` must import the copy's package, as in a clone
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _argv(cmd: str) -> list[str]:
    argv = shlex.split(cmd)
    if argv[0] == "python":  # what `. .venv/bin/activate && python` is
        argv[0] = sys.executable
    return argv


def _whole(folder: Path) -> bool:
    """A run that ran every stage itself: one that skipped stages does not hold every artifact,
    so it cannot stand in for an earlier run."""
    overrides = [folder / ".hydra" / "overrides.yaml", *folder.glob("*/.hydra/overrides.yaml")]
    return not any("pipeline.skip" in f.read_text() for f in overrides if f.exists())


def _earlier(workdir: Path, experiment: str, sweep: bool) -> Path:
    """The newest whole run (or sweep) folder of the experiment made by an earlier case; made now
    when this case runs alone (-k)."""
    found = [p for p in output_folders(workdir, sweep, 0.0)
             if p.relative_to(workdir).parts[1 + sweep] == experiment and _whole(p)]
    if not found:
        base = ["-m"] if sweep else []
        base_cmd = f"python -m runner {' '.join(base)} +experiment={experiment}"
        proc = _run([*_argv(base_cmd), *_sizes(base_cmd)], workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        found = [p for p in output_folders(workdir, sweep, 0.0)
                 if p.relative_to(workdir).parts[1 + sweep] == experiment and _whole(p)]
    return found[-1].relative_to(workdir)


def _substitute(cmd: str, workdir: Path) -> str:
    for placeholder, (experiment, sweep) in PLACEHOLDERS.items():
        if placeholder in cmd:
            cmd = cmd.replace(placeholder, str(_earlier(workdir, experiment, sweep)))
    if DATE_GLOB in cmd:
        day = _earlier(workdir, "wikisql_1k", True).parts[3]
        cmd = cmd.replace(DATE_GLOB, DATE_GLOB.replace("2026-11-22", day))
    return cmd


def _check_outputs(cmd: str, workdir: Path, since: float) -> None:
    """A new run/sweep folder of the command's experiment under the default outputs/, every job ok."""
    sweep = bool({"-m", "--multirun"} & set(shlex.split(cmd)[3:]))  # after `python -m runner`
    folders = output_folders(workdir, sweep, since)
    assert folders, f"no new {'sweep' if sweep else 'run'} folder under {workdir / 'outputs'}"
    folder = folders[-1]
    assert folder.relative_to(workdir).parts[1 + sweep] == _experiment(cmd)
    jobs = sorted(p.parent for p in folder.glob("*/metrics.json")) if sweep else [folder]
    assert jobs, f"no job folders in {folder}"
    for job in jobs:
        m = json.loads((job / "metrics.json").read_text())
        assert m["status"] == "ok", (job, m.get("error"))


def _case_id(cmd: str) -> str:
    """`<file>:<command>`, e.g. `docs/students.md:runner_+experiment=wikisql_full` (README.md: no prefix)."""
    source = SOURCES.get(cmd, "README.md")
    prefix = "" if source == "README.md" else source.removeprefix("docs/") + ":"
    return prefix + re.sub(r"[^\w=.,+-]+", "_", cmd.replace("python -m ", ""))[:90]


@pytest.mark.parametrize("cmd", COMMANDS, ids=[_case_id(c) for c in COMMANDS])
def test_readme_command(cmd: str, workdir: Path):
    reason = next((why for key, why in SKIP.items() if key in cmd), None)
    if reason:
        pytest.skip(reason)
    cmd = _substitute(cmd, workdir)
    since = time.time() - 0.05
    if cmd.startswith("make "):
        argv = [*shlex.split(cmd), f"ARGS={' '.join(_sizes(cmd))}"]
    else:
        argv = [*_argv(cmd), *(_sizes(cmd) if not cmd.startswith("python -m runner.report") else [])]
    proc = _run(argv, workdir)
    assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    if cmd.startswith("python -m runner.report"):
        target = workdir / shlex.split(cmd)[3] if "*" not in cmd else None
        assert "job(s)" in proc.stdout
        assert target is None or (target / "report.md").exists()
    else:
        _check_outputs(cmd, workdir, since)
    if cmd == "python -m runner +experiment=wikisql_1k":
        _check_summary(proc.stdout)


def _check_summary(stdout: str) -> None:
    """The main job's end-of-run summary fits a screen (<= 30 lines at 80 columns) and shows the
    headline student rate with its interval beside its baselines, and the paired tests."""
    lines = stdout[stdout.index("run wikisql_1k - "):].rstrip("\n").splitlines()
    on_screen = sum(max(1, -(-len(line) // 80)) for line in lines)  # a long line wraps on a terminal
    assert on_screen <= 30, "\n".join(lines)
    header = next(line for line in lines if line.startswith("metric "))
    assert header.split()[-3:] == ["before", "teacher", "constant"], header
    row = next(line for line in lines if line.startswith("student_post.gold_match_rate"))
    assert len(re.findall(r"\d\.\d+", row)) >= 6, row  # value, its interval, and the three baselines
    assert any(line.startswith("paired, student_post vs teacher on ") and "McNemar p=" in line for line in lines)
    assert any(line.startswith("stages: load ") for line in lines) and lines[-2].startswith("outputs: ")


def test_readme_commands_are_found_and_flags_come_first():
    """The extraction sees the blocks of the README and of docs/; no command puts a flag after an
    override (Hydra rejects it)."""
    assert any("make run" in c for c in COMMANDS) and any(" -m " in c for c in COMMANDS)
    assert any(src.startswith("docs/") for src in SOURCES.values())
    for cmd in COMMANDS:
        if cmd.startswith("python -m runner "):
            args = shlex.split(cmd)[3:]
            first_override = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
            assert not any(a.startswith("-") for a in args[first_override:]), cmd
