"""How the rooms depend on each other: the import direction, no cycles, no side effects at import, small
modules, and no generic room that names a landscape."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "study"
MODULES = {
    ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
    for p in ROOT.rglob("*.py")
}
#: a room -> the rooms of ``study`` it may import (besides itself)
BELOW = {
    "study.record": set(),
    "study.errors": set(),
    "study.landscapes": set(),
    "study.training": {"study.landscapes"},
}


def imports(path: Path) -> set[str]:
    """Every ``study`` module a file imports, at the top, inside functions or for type checking."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("study"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("study")}
    return {m for m in found if m in MODULES}


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("lower", sorted(BELOW))
def test_lower_rooms_import_nothing_above_them(lower: str) -> None:
    for module, path in MODULES.items():
        if room(module) != lower:
            continue
        above = {m for m in imports(path) if room(m) != lower and room(m) not in BELOW[lower]}
        assert not above, f"{module} imports {sorted(above)}"


def test_no_import_cycles() -> None:
    graph = {m: imports(p) - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_over_400_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_importing_the_library_changes_no_global_state() -> None:
    names = sorted(m for m in MODULES if m != "study.__main__")
    code = (
        "import os, sys\n"
        "import matplotlib, mlflow, optuna, pandas, ray, sklearn, torch  # their import effects are theirs\n"
        "env = dict(os.environ); level = optuna.logging.get_verbosity()\n"
        f"for name in {names!r}:\n"
        "    __import__(name)\n"
        "assert dict(os.environ) == env, sorted(set(os.environ.items()) ^ set(env.items()))\n"
        "assert optuna.logging.get_verbosity() == level, 'optuna verbosity changed'\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported (it picks a global backend)'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
