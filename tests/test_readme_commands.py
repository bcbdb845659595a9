"""The README and docs/*.md are executable: every `python -m runner ...` and `make ...` line of their
fenced code blocks runs as written, in a temporary copy of the working tree, with Hydra's default
output folders. A command shown in several files runs once.

Only size overrides are appended (SIZES, by experiment), never `hydra.*.dir`: the point is to run
the command a user types (a sweep on the default sweep folder once failed for every user while
tests that set hydra.sweep.dir passed). Placeholders for earlier runs (RUN_DIR, the dated example
folders) are replaced by a real run made earlier in the session. The runs live in one clone per
session (tests/docs_clone.py): a command runs once, and an end-to-end test that checks what the same
command writes reads that run. Commands that need a real key, a server, a GPU or an optional extra
are listed in SKIP with the reason. A command for a cluster (`hydra/launcher=slurm_gpu`,
`cache.backend=postgres`) runs on the loopback SLURM cluster and PostgreSQL server the tests start
(tests/services/), skipped with the reason where they cannot run (CI requires them).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO, requires_data
from tests.docs_clone import DocsClone, argv_of, shared_root
from tests.docs_clone import experiment as experiment_of

# One worker runs this whole module (make test: --dist loadfile): a command with a placeholder reads
# the run an earlier command made in the session's clone (tests/docs_clone.py).
pytestmark = [requires_data, pytest.mark.xdist_group("readme_commands")]

# Substring of a command -> why it is not run here.
SKIP = {
    "make test": "recursion: `make test` runs this very suite",
    "provider=openrouter": "needs OPENROUTER_API_KEY and network",
    "provider=openai": "needs OPENAI_API_KEY and network",
    "provider=litellm": "needs a real provider key (ANTHROPIC_API_KEY) and network",
    "provider=ollama": "needs a running Ollama server with the model pulled",
    "provider=vllm": "needs a vLLM server (a GPU)",
    "hydra/launcher=ray": "needs the optional ray extra",
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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> DocsClone:
    return DocsClone(shared_root(tmp_path_factory))


def _whole(folder: Path) -> bool:
    """A run that ran every stage itself: one that skipped stages does not hold every artifact,
    so it cannot stand in for an earlier run."""
    overrides = [folder / ".hydra" / "overrides.yaml", *folder.glob("*/.hydra/overrides.yaml")]
    return not any("pipeline.skip" in f.read_text() for f in overrides if f.exists())


def _earlier(clone: DocsClone, experiment: str, sweep: bool, whole: bool = True) -> Path:
    """The newest run (or sweep) folder of the experiment made by an earlier case, a whole one when
    it stands in for a reused run (a report reads any); made now when this case runs alone (-k)."""
    accept = _whole if whole else (lambda folder: True)
    if not clone.find(experiment, sweep, accept):
        run = clone.run(argv_of(f"python -m runner {'-m ' if sweep else ''}+experiment={experiment}"))
        assert run.returncode == 0, run.stderr[-3000:]
    return clone.find(experiment, sweep, accept)[-1].relative_to(clone.dir)


def _substitute(cmd: str, workdir: DocsClone) -> str:
    # a report reads the sweep the page's command just made, pipeline.skip or not
    whole = not cmd.startswith("python -m runner.report")
    for placeholder, (experiment, sweep) in PLACEHOLDERS.items():
        if placeholder in cmd:
            cmd = cmd.replace(placeholder, str(_earlier(workdir, experiment, sweep, whole)))
    if DATE_GLOB in cmd:
        day = _earlier(workdir, "wikisql_1k", True, whole).parts[3]
        cmd = cmd.replace(DATE_GLOB, DATE_GLOB.replace("2026-11-22", day))
    return cmd


def _check_outputs(cmd: str, folder: Path | None, workdir: DocsClone) -> None:
    """A new run/sweep folder of the command's experiment under the default outputs/, every job ok."""
    sweep = bool({"-m", "--multirun"} & set(shlex.split(cmd)[3:]))  # after `python -m runner`
    assert folder, f"no new {'sweep' if sweep else 'run'} folder under {workdir.dir / 'outputs'}"
    assert folder.relative_to(workdir.dir).parts[1 + sweep] == experiment_of(cmd)
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
def test_readme_command(cmd: str, workdir: DocsClone, request):
    reason = next((why for key, why in SKIP.items() if key in cmd), None)
    if reason:
        pytest.skip(reason)
    cmd = _substitute(cmd, workdir)
    argv = argv_of(cmd)
    run = workdir.run(argv, env=_services_env(cmd, request))
    assert run.returncode == 0, f"{shlex.join(argv)}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    if cmd.startswith("python -m runner.report"):
        target = workdir.dir / shlex.split(cmd)[3] if "*" not in cmd else None
        assert "job(s)" in run.stdout
        assert target is None or (target / "report.md").exists()
    else:
        _check_outputs(cmd, run.folder, workdir)
    if "hydra/launcher=slurm" in cmd:  # the jobs really ran as SLURM tasks, one log each
        jobs = list(run.folder.glob("*/metrics.json"))
        assert len(list(run.folder.glob(".submitit/*/*_log.out"))) == len(jobs) > 1, run.folder
    if cmd == "python -m runner +experiment=wikisql_1k":
        _check_summary(run.stdout)


def _services_env(cmd: str, request) -> dict[str, str]:
    """What a cluster command finds in a user's shell: SLURM's client config and the cache URL
    (docs/cluster.md exports RUNNER_CACHE_URL before the command)."""
    env: dict[str, str] = {}
    if "hydra/launcher=slurm" in cmd:
        env.update(request.getfixturevalue("slurm").client_env)  # skips (or fails in CI) without SLURM
    if "cache.backend=postgres" in cmd:
        env["RUNNER_CACHE_URL"] = request.getfixturevalue("pg_url")
    return env


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
