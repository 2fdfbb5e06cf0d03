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
#: every room of ``study``, lowest first, as docs/DESIGN.md draws them: a room imports only rooms of
#: lower layers (the commands at the top import anything); ``study`` itself (the package) is no room
LAYERS: list[set[str]] = [
    {"study.record", "study.errors", "study.telemetry", "study.choices", "study.progress"},
    {"study.expressions"},
    {"study.landscapes"},
    {"study.training"},
    {"study.diagnostics"},
    {"study.procedures"},
    {"study.runs"},
    {"study.spec_fields"},
    {"study.spec"},
    {"study.spec_memory"},
    {"study.reports"},
    {"study.tracking"},
    {"study.dispatch"},
    {"study.search"},
]
COMMANDS = {
    "study.cli",
    "study.cli_hunt",
    "study.cli_report",
    "study.cli_cluster",
    "study.cli_gpu",
    "study.certify",
    "study.bench",
}
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}
#: a landscape's report module (named by its registry entry, imported only by study.reports.extension)
#: builds on the generic report room, so it may import the rooms the report does
REPORT_PLUGIN_MAY_IMPORT = {"study.reports", "study.record", "study.diagnostics"}
#: generic rooms: they serve every landscape and must not name one
GENERIC_ROOMS = (
    "study.reports",
    "study.search",
    "study.tracking",
    "study.dispatch",
    "study.diagnostics",
    "study.training",
    "study.record",
)
LANDSCAPE_NAMES = ("teacher_student", "deep_linear", "piecewise_linear", "classification")
#: (module, literal): where a generic room may name a landscape, and why
NAMING_ALLOWED = {
    # schema-1 runs files did not record their landscape: the reader tells it from the columns each wrote
    ("study.record.schema", "classification"),
    ("study.record.schema", "teacher_student"),
    ("study.record.schema", "piecewise_linear"),
    ("study.record.schema", "deep_linear"),
}


def report_plugins() -> set[str]:
    from study.landscapes.registry import LANDSCAPES

    return {entry.report for entry in LANDSCAPES.values() if entry.report}


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


def test_every_room_has_its_place_in_the_layers() -> None:
    rooms = {room(m) for m in MODULES} - {"study"}
    assert rooms == set(LAYER) | COMMANDS, sorted(rooms ^ (set(LAYER) | COMMANDS))


@pytest.mark.parametrize("lower", sorted(LAYER))
def test_rooms_import_only_rooms_below_them(lower: str) -> None:
    plugins = report_plugins()
    below = {name for name, i in LAYER.items() if i < LAYER[lower]} | {"study"}
    for module, path in MODULES.items():
        if room(module) != lower:
            continue
        allowed = below | (REPORT_PLUGIN_MAY_IMPORT if module in plugins else set())
        above = {m for m in imports(path) if room(m) != lower and room(m) not in allowed}
        assert not above, f"{module} imports {sorted(above)}"


def test_report_plugins_exist_and_are_reached_only_through_the_registry() -> None:
    plugins = report_plugins()
    assert plugins and plugins <= set(MODULES), plugins - set(MODULES)
    for module, path in MODULES.items():
        assert not imports(path) & plugins, f"{module} imports {sorted(imports(path) & plugins)}"


#: what a generic engine may know of the landscapes room: the protocols, never a landscape
LANDSCAPE_PROTOCOLS = {"study.landscapes.base", "study.landscapes.kernels"}


def test_training_imports_no_landscape() -> None:
    """The engines ask a landscape for its kernels (``descent_kernel()``, ``cuda_descent()``) through
    the protocols; a kernel lives with its landscape, so no module of ``study.training`` imports one."""
    for module, path in MODULES.items():
        if room(module) == "study.training":
            landscapes = {m for m in imports(path) if room(m) == "study.landscapes"}
            extra = landscapes - LANDSCAPE_PROTOCOLS
            assert not extra, f"{module} imports {sorted(extra)}"


def landscape_literals(path: Path) -> set[str]:
    """The landscape names a file holds as string literals outside docstrings: a literal that is a name,
    or a word of one (``f"{x} == 'teacher_student'"``); prose such as "critical-point classification" in
    a docstring chooses nothing."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = set(node.value.replace("'", " ").replace('"', " ").split())
            found |= {name for name in LANDSCAPE_NAMES if name in words}
    return found


def test_no_generic_room_names_a_landscape() -> None:
    named = {
        (module, name)
        for module, path in MODULES.items()
        if room(module) in GENERIC_ROOMS
        for name in landscape_literals(path)
    }
    assert named - NAMING_ALLOWED == set(), sorted(named - NAMING_ALLOWED)


def test_the_naming_check_sees_a_branch_on_a_landscape(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text('def f(hunt):\n    return hunt.landscape == "teacher_student"\n')
    assert landscape_literals(source) == {"teacher_student"}


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
