"""The package's import structure: every module imports alone, and no two modules import each other in a cycle.

Imports inside functions count (they run as soon as the function does); imports under
`if TYPE_CHECKING:` do not.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rmtension"


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, known: set[str], importer: str | None = None) -> set[str]:
    """The rmtension modules that `source` imports, at any depth except under `if TYPE_CHECKING:`.

    With `importer` (the module `source` is), also the packages those imports run first: importing
    `a.b.c` runs `a.b`'s `__init__` unless `importer` lives inside `a.b` (then it already ran)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from rmtension import dist` imports the module rmtension.run.dist
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    parents = set()
    if importer is not None:
        for m in found:
            for i in range(2, m.count(".") + 1):
                package = ".".join(m.split(".")[:i])
                if not (importer + ".").startswith(package + "."):
                    parents.add(package)
    return {m for m in found | parents if m in known}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle_and_nothing_in_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    src = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.q\ndef f():\n    from p import r\n"
    )
    assert imported_modules(src, {"p", "p.q", "p.r"}) == {"p.r"}
    known = {"a", "a.b", "a.b.c"}
    assert imported_modules("from a.b.c import d", known, importer="x.y") == {"a.b", "a.b.c"}
    assert imported_modules("from a.b.c import d", known, importer="a.b.e") == {"a.b.c"}


def import_graph(packages_run: bool = False) -> dict[str, set[str]]:
    """Every rmtension module -> the rmtension modules it imports (at any depth but `TYPE_CHECKING`),
    and with `packages_run` the packages whose `__init__` those imports run first."""
    known = set(module_names())
    graph = {}
    for name in known:
        path = PACKAGE.joinpath(*name.split(".")[1:])
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        source = file.read_text(encoding="utf-8")
        graph[name] = imported_modules(source, known, name if packages_run else None) - {name}
    return graph


def test_the_import_graph_has_no_cycles():
    graph = import_graph(packages_run=True)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


# One interpreter preloads the third-party packages, then forks a child per module that imports
# that rmtension module alone: what is tested is that no rmtension module depends on another having
# been imported first, and a fork costs milliseconds where a fresh interpreter costs seconds.
FORK_EACH = r"""
import importlib, json, os, sys, traceback
for dep in ("numpy", "scipy.stats", "pandas", "torch", "transformers", "accelerate", "matplotlib.pyplot",
            "safetensors.torch", "pydantic", "typer", "yaml", "tqdm.auto"):
    importlib.import_module(dep)
assert not any(m == "rmtension" or m.startswith("rmtension.") for m in sys.modules)
errors = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc()[-2000:].encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if status:
        errors[name] = text or f"exit status {status}"
print(json.dumps(errors))
"""


@pytest.fixture(scope="module")
def import_errors() -> dict[str, str]:
    res = subprocess.run(
        [sys.executable, "-c", FORK_EACH, *module_names()],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", module_names())
def test_every_module_imports_alone(import_errors, module):
    assert module not in import_errors, import_errors.get(module)


def test_a_module_that_fails_to_import_is_reported():
    res = subprocess.run(
        [sys.executable, "-c", FORK_EACH, "rmtension.cli", "rmtension.no_such_module"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    errors = json.loads(res.stdout.strip().splitlines()[-1])
    assert (
        list(errors) == ["rmtension.no_such_module"]
        and "ModuleNotFoundError" in errors["rmtension.no_such_module"]
    )


def test_every_config_field_has_a_docstring():
    from rmtension.config import StudyConfig
    from studykit import config_keys

    assert [key for key, doc in config_keys(StudyConfig) if not doc] == []


# The layers, from the top: apps (the CLI, the study that composes the stages, `api`, `bench`, `judge`, `loop`,
# and every `*.cli` module), the stages (one package each, `rmtension.study.STAGES`), and the shared core
# below them. An import may point down or stay within a stage package, never up or across stages.
CORE_PACKAGES = {"model", "run", "stats", "report", "judges", "policy", "trainer", "data"}
"""Core packages (`data`: its readers, formats and splits; its stage module is `data.stage`)."""
CORE_MODULES = {"config", "errors", "strict", "yaml_file"}
APPS = {"cli", "__main__", "study", "api", "bench", "judge", "loop"}
STAGE_PACKAGES = {
    "train",
    "eval",
    "tension",
    "conflict",
    "audit",
    "combine",
    "neurons",
    "ablation",
    "pm_halves",
    "bon",
    "rl",
}


def layer(module: str) -> tuple[int, str]:
    """(2 app | 1 stage | 0 core, the stage package) of an rmtension module."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in APPS or parts[-1] == "cli":
        return 2, ""
    if module == "rmtension.data.stage":
        return 1, "data"
    if top in STAGE_PACKAGES and parts[-1] != "config":  # a stage's config section is part of the core config
        return 1, top
    if top in CORE_PACKAGES or top in CORE_MODULES or len(parts) == 1 or parts[-1] == "config":
        return 0, ""
    raise AssertionError(f"{module}: not assigned to a layer (add its package to one of the sets above)")


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up a layer or from one stage package into another."""
    bad = []
    for name, deps in graph.items():
        (lo, own) = layer(name)
        for dep in sorted(deps):
            (ld, other) = layer(dep)
            if ld > lo or (lo == ld == 1 and own != other):
                bad.append(f"{name} -> {dep}")
    return sorted(bad)


def test_upward_arrows_are_found_in_a_planted_graph():
    graph = {
        "rmtension.stats.verdicts": {"rmtension.bon.claims"},  # core -> stage: up
        "rmtension.bon.claims": {"rmtension.rl.claims", "rmtension.stats.verdicts"},  # across stages
        "rmtension.rl.claims": {"rmtension.report.section"},  # down: fine
        "rmtension.study": {"rmtension.rl.stage"},  # app -> stage: fine
    }
    assert upward_arrows(graph) == [
        "rmtension.bon.claims -> rmtension.rl.claims",
        "rmtension.stats.verdicts -> rmtension.bon.claims",
    ]


def test_no_import_points_up_the_layers():
    assert upward_arrows(import_graph()) == []
    assert {layer(f"rmtension.{s}.stage") for s in STAGE_PACKAGES} == {(1, s) for s in STAGE_PACKAGES}
