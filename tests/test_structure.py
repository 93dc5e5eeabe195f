"""The package's import structure: no cycles, and a maths core that knows nothing of data loading.

Every import of a project module counts: at module level, inside a function, and under
`if TYPE_CHECKING:` too (such an import never runs, but two modules that name each other are
still one design in two files). The maths core (lattice, assignment, costs, losses,
perceptual) must not import any `neurosql_pl.datamodules` module.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.cli_args import REPO

PACKAGE_ROOTS = {"neurosql_pl": REPO / "src" / "neurosql_pl", "neurosql_pl.datamodules": REPO / "datamodules"}
MATHS_CORE = ("lattice", "assignment", "costs", "losses", "perceptual")


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package (datamodules included)."""
    files: dict[str, Path] = {}
    for package, root in PACKAGE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([package, *parts])] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that `name` imports anywhere in its file (resolved, relative imports
    and those under `if TYPE_CHECKING:` included)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # `from pkg.mod import Class` → pkg.mod
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    add(f"{base}.{alias.name}")
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_import_graph_is_read_correctly() -> None:
    graph = import_graph()
    assert "neurosql_pl.costs" in graph["neurosql_pl.losses"]  # a relative import
    assert "neurosql_pl.datamodules.errors" in graph["neurosql_pl.datamodules.download"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_under_type_checking_count(tmp_path: Path) -> None:
    """A cycle closed only by a type-checking import is still found."""
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    known = {"pkg.a", "pkg.b"}
    graph = {name: imported_modules(name, tmp_path / f"{name[4:]}.py", known) for name in known}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycle_among_the_project_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_maths_core_imports_no_datamodules_module() -> None:
    graph = import_graph()
    for core in MATHS_CORE:
        name = f"neurosql_pl.{core}"
        assert name in graph, f"{name} is missing"
        seen, todo = set(), [name]
        while todo:  # everything the core module imports, directly or through others
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        data = sorted(m for m in seen if m.startswith("neurosql_pl.datamodules"))
        assert not data, f"{name} imports {data}"
