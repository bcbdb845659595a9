"""The package's rooms import one way: no circles, no upward imports (imports inside functions count).

Layers, lowest first (a module may import its own room and any lower layer):
  core       runner.core, runner.data            run folder, stages' base, metrics, secrets, stats
  engine     runner.engine, runner.lm            generation engine; local causal LMs
  providers  runner.providers, runner.train      teacher clients; student trainers and KD
  task       runner.text2sql                     the Text2SQL domain (SQL, executor, grammar, simulated teacher)
  stages     runner.distill, runner.student, runner.cd   pipeline stages
  report     runner.report
  entry      runner (app, pipeline, summary, tracking, __main__, resolvers)
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "runner"
LAYERS = [
    ("core", ("runner.core", "runner.data")),
    ("engine", ("runner.engine", "runner.lm")),
    ("providers", ("runner.providers", "runner.train")),
    ("task", ("runner.text2sql",)),
    ("stages", ("runner.distill", "runner.student", "runner.cd")),
    ("report", ("runner.report",)),
    ("entry", ("runner",)),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest room prefix that holds `module`."""
    best, best_len = None, -1
    for i, (_, rooms) in enumerate(LAYERS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and len(room) > best_len:
                best, best_len = i, len(room)
    assert best is not None, module
    return best


def room_of(module: str) -> str:
    """The room a module belongs to: `runner.<folder>`, or `runner` for top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and (PKG / parts[1]).is_dir():
        return ".".join(parts[:2])
    return "runner"


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file, functions included)."""
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from runner.lm import constraint` imports the module runner.lm.constraint
                targets = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods] or [module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import runner.engine.types as x` -> the module itself
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("runner"):
                    edges[name].add(t)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = defaultdict(set)
    for a, bs in graph.items():
        for b in bs:
            if room_of(a) != room_of(b) and not b.startswith(room_of(a) + ".") and room_of(a) != "runner":
                rooms[room_of(a)].add(room_of(b))
    return rooms


def test_no_module_import_circle():
    assert find_cycle(import_graph()) is None, f"import circle: {' -> '.join(find_cycle(import_graph()))}"


def test_no_circle_between_rooms():
    cycle = find_cycle(room_graph(import_graph()))
    assert cycle is None, f"rooms import each other: {' -> '.join(cycle)}"


def test_imports_flow_down_the_layers():
    bad = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
           for a, bs in sorted(import_graph().items()) for b in sorted(bs) if layer_of(b) > layer_of(a)]
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_lm_and_train_import_no_task_room():
    bad = [f"{a} imports {b}" for a, bs in import_graph().items() if a.startswith(("runner.lm", "runner.train"))
           for b in bs if b.startswith(("runner.text2sql", "runner.distill", "runner.student", "runner.cd"))]
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_checker_finds_circles(graph, cycle):
    """The checks above would pass on an empty graph: show they see a circle when there is one."""
    assert find_cycle(graph) == cycle


def test_the_checker_sees_imports_inside_functions(tmp_path, monkeypatch):
    assert "runner.lm.constraint" in import_graph()["runner.lm.generate"]  # imported inside a function
    assert layer_of("runner.lm.generate") < layer_of("runner.text2sql.grammar")


def test_the_docs_target_table_names_every_conf_target_and_each_exists():
    """docs/architecture.md's table takes a newcomer from a config group to its class in one hop:
    every `_target_` of conf/ is in it, and every class and file it names exists."""
    import importlib
    import re

    root = PKG.parent
    doc = (root / "docs" / "architecture.md").read_text()
    targets = {m for f in (root / "conf").rglob("*.yaml")
               for m in re.findall(r"_target_:\s*(runner\.[\w.]+)", f.read_text())}
    assert targets, "no _target_ found in conf/"
    rows = [line for line in doc.splitlines() if line.startswith("|")]

    def listed(target: str) -> bool:  # in full, or as `module.First`, `Second` on one row
        module, _, name = target.rpartition(".")
        return any(target in r or (f"`{module}." in r and f"`{name}`" in r) for r in rows)

    missing = sorted(t for t in targets if not listed(t))
    assert not missing, f"conf targets absent from docs/architecture.md: {missing}"
    for dotted in set(re.findall(r"`(runner\.[\w.]+\.[A-Z]\w*)`", doc)):
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    for path in set(re.findall(r"`(runner/[\w/]+\.py)`", doc)):
        assert (root / path).is_file(), path
