"""The layout shows the architecture: doggos/ in wings that import downwards only, no import cycle, the Streamlit side
in its own package, and nothing loose at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from doggos import WINGS

ROOT = Path(__file__).resolve().parent.parent
ON_TOP = {"doggos", "doggos.cli", "doggos.__main__"}  # the package and its entry points: they may import any wing
UI_ONLY = ("streamlit", "dashboard")  # what nothing in doggos/ may import


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path, known: set[str]) -> set[str]:
    """Every module `path` imports, at its top or inside a function (a lazy import is an arrow too), resolved to a
    module where it names one (`from doggos.base import store` is doggos.base.store)."""
    found = set()
    package = module_name(path, root).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path, root)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def import_graph(root: Path, top: str = "doggos") -> dict[str, set[str]]:
    """Module → the modules of `top` it imports (and any of UI_ONLY, named by their first part)."""
    paths = sorted((root / top).rglob("*.py"))
    known = {module_name(path, root) for path in paths}
    graph = {}
    for path in paths:
        targets = imports_of(path, root, known)
        graph[module_name(path, root)] = ({t for t in targets if t in known}
                                          | {t.split(".")[0] for t in targets if t.split(".")[0] in UI_ONLY})
    return graph


def wing_of(module: str, wings=WINGS) -> int | None:
    parts = module.split(".")
    return wings.index(parts[1]) if len(parts) > 1 and parts[1] in wings else None


def upward_arrows(graph: dict[str, set[str]], wings=WINGS) -> list[str]:
    """Imports from a lower wing into a higher one, into the top, or into the Streamlit side."""
    wrong = []
    for module, targets in sorted(graph.items()):
        if module in ON_TOP:
            continue
        for target in sorted(targets):
            if target in UI_ONLY:
                wrong.append(f"{module} imports {target}")
            elif target in ON_TOP - {"doggos"} or (wing_of(target, wings) or 0) > (wing_of(module, wings) or 0):
                wrong.append(f"{module} ({wings[wing_of(module, wings)]}) imports {target}, a wing above it")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the packages' own __init__ modules: `import doggos.base.x` runs doggos/__init__.py, which is
    no arrow between modules."""
    packages = {m for m in graph if (ROOT / Path(*m.split(".")) / "__init__.py").exists()}
    return {m: targets - packages for m, targets in graph.items() if m not in packages}


def test_no_wing_imports_a_wing_above_it_or_the_streamlit_side():
    assert upward_arrows(import_graph(ROOT)) == []


def test_no_import_cycle():
    assert cycles(_package_imports(import_graph(ROOT))) == []


def test_the_checks_catch_an_upward_arrow_and_a_cycle(tmp_path):
    """The two checks above, on a made-up package with one arrow against the grain and one cycle: they would fail."""
    files = {
        "doggos/__init__.py": "", "doggos/base/__init__.py": "", "doggos/runs/__init__.py": "",
        "doggos/base/records.py": "from doggos.runs import driver\n",  # upward: base → runs
        "doggos/runs/driver.py": "from doggos.base import records\n",
        "doggos/runs/steps.py": "def f():\n    from doggos.runs.manager import x\n",  # lazy, still an arrow
        "doggos/runs/manager.py": "import doggos.runs.steps\nimport streamlit\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert upward_arrows(graph, ("base", "runs")) == [
        "doggos.base.records (base) imports doggos.runs.driver, a wing above it",
        "doggos.runs.manager imports streamlit"]
    assert sorted(cycles(graph)) == [["doggos.base.records", "doggos.runs.driver"],
                                     ["doggos.runs.manager", "doggos.runs.steps"]]


def test_doggos_holds_its_entry_points_and_the_wings_only():
    loose = {p.name for p in (ROOT / "doggos").glob("*.py")} - {"__init__.py", "__main__.py", "cli.py"}
    assert not loose, f"modules loose in doggos/: {sorted(loose)}; each belongs in a wing"
    packages = {p.name for p in (ROOT / "doggos").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(WINGS)


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_says_what_it_holds_and_what_it_may_import(wing):
    docstring = ast.get_docstring(ast.parse((ROOT / "doggos" / wing / "__init__.py").read_text(encoding="utf-8")))
    assert docstring and docstring.startswith(f"The {wing} wing"), docstring
    below = WINGS[: WINGS.index(wing)]
    says = ("Imports no other wing" if not below else "Imports every other wing" if wing == WINGS[-1]
            else "Imports " + ", ".join(f"doggos.{w}" for w in below[:-1]) + (" and " if len(below) > 1 else "")
            + f"doggos.{below[-1]}")
    assert says in docstring, f"doggos/{wing}/__init__.py should say: {says}"


def test_the_top_level_holds_app_py_and_folders():
    loose = {p.name for p in ROOT.glob("*.py")} - {"app.py"}
    assert not loose, f"Python files loose at the top level: {sorted(loose)} (the Streamlit side lives in dashboard/)"
