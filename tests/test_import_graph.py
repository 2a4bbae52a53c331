"""The modules of htpdata import each other without a cycle, and the public names are exact.

The graph is built from the source (``ast``), not by importing. It holds every import that
runs: at module level and inside functions alike. A function-level import is still a dependency
(it is how an upper layer gets reached from a lower one, which is exactly what a cycle is); only
the place where it is paid changes (lazy imports keep fsspec, Rucio, uproot and the staging code
off the start-up path of ``import htpdata`` and the CLI). Imports under ``if TYPE_CHECKING:``
never run and are left out. Importing ``a.b.c`` from outside package ``a.b`` also runs
``a/b/__init__.py``: that edge is in the graph too (the root package ``htpdata`` excepted, which
every module's import runs first).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import htpdata
import htpdata.errors

SRC = Path(htpdata.__file__).resolve().parent
ROOT = "htpdata"


def _modules() -> dict[str, tuple[Path, str]]:
    """module name -> (file, the package its relative imports are relative to)."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = [ROOT, *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = ".".join(parts)
        else:
            package = ".".join(parts[:-1])
        out[".".join(parts)] = (path, package)
    return out


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    yield module
    for alias in node.names:  # ``from pkg import submodule``
        yield f"{module}.{alias.name}"


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (not those under ``if TYPE_CHECKING:``)."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, package) in mods.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, package):
                # A module's own packages are being imported already (``from . import x``
                # names a sibling, not the package's __init__).
                if target not in mods or target == mod or mod.startswith(target + "."):
                    continue
                graph[mod].add(target)
                # Packages whose __init__ runs on the way to target, from outside them.
                parts = target.split(".")
                for i in range(2, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in mods and not mod.startswith(parent + ".") and parent != mod:
                        graph[mod].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert graph["htpdata.fs"], "the graph is empty: the parser is broken"
    assert "htpdata.client" in graph["htpdata.fs"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lower_layers_do_not_reach_up() -> None:
    """The core (names, errors, config, replicas, reader, transports) never imports the client,
    the cache or the fsspec layer; the client never imports the fsspec layer."""
    graph = import_graph()
    reach: dict[str, set[str]] = {}

    def closure(m: str) -> set[str]:
        if m not in reach:
            reach[m] = set()
            for t in graph[m]:
                reach[m] |= {t, *closure(t)}
        return reach[m]

    core = ["htpdata.names", "htpdata.errors", "htpdata.config", "htpdata.replicas",
            "htpdata.reader", "htpdata.io", "htpdata.transports"]
    for m in core:
        assert not closure(m) & {"htpdata.client", "htpdata.cache", "htpdata.fs"}, m
    assert "htpdata.fs" not in closure("htpdata.client")


def _public(module: ModuleType) -> set[str]:
    """Names without a leading underscore that the module defines at top level (classes,
    functions, assignments); for a package, also what it imports from its own submodules
    (re-exports). Names a plain module imports for its own use are not public."""
    assert module.__file__ is not None
    path = Path(module.__file__)
    package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            # names served lazily: ``if attr == "gateway": ...``
            names |= {c.value for cmp in ast.walk(node) if isinstance(cmp, ast.Compare)
                      for c in cmp.comparators if isinstance(c, ast.Constant)
                      and isinstance(c.value, str)}
        elif isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif package and isinstance(node, ast.ImportFrom) and node.level:
            names |= {a.asname or a.name for a in node.names}

    return {n for n in names if not n.startswith("_") or n == "__version__"} - {"__all__"}


@pytest.mark.parametrize("module", [htpdata, htpdata.errors], ids=lambda m: m.__name__)
def test_all_is_the_public_names(module: ModuleType) -> None:
    """``__all__`` lists exactly the public names the module defines or re-exports."""
    listed = list(module.__all__)
    public = _public(module)
    assert sorted(set(listed) - public) == [], "in __all__ but not defined"
    assert sorted(public - set(listed)) == [], "public but missing from __all__"
    assert len(listed) == len(set(listed)), "listed twice"
