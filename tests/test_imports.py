"""No import cycle in exporter/: the graph of every module's imports, read with ``ast`` (module-level
and function-level imports alike, relative ones resolved), has no cycle. A function-level import
that closes a cycle works only as long as nobody moves it to the top; what two modules share
belongs in a third. Imports under ``if TYPE_CHECKING:`` are not edges: they never run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.fast

PACKAGE = "exporter"


def module_names(root: Path) -> dict[str, Path]:
    """``{"exporter.advisor.cli": path, "exporter.advisor": .../__init__.py, ...}``."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of ``from [.. ]X import ...`` written in ``module``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    package = parts if is_package else parts[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _ours(name: str, modules: dict) -> str | None:
    """``name``, or the longest prefix of it that is one of ours (``import a.b.c`` when c is not)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST):
    """Every node of ``tree`` but the bodies of ``if TYPE_CHECKING:`` (their ``else`` stays)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _type_checking(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, modules: dict) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its text (the package itself, when
    it imports one of its own names, is not an edge: no cycle through a module's own package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            # from X import y: the submodule X.y when there is one, else X's own name y
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(target for target in (_ours(name, modules) for name in names) if target and target != module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan's, iterative), each
    as one cycle through it, starting at its first module by name."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(_one_cycle(graph, component))
    return sorted(components)


def _one_cycle(graph: dict, component: set) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    first = min(component)
    paths, seen = [[first]], {first}
    while paths:
        path = paths.pop(0)
        for succ in sorted(graph[path[-1]] & component):
            if succ == first:
                return path + [first]
            if succ not in seen:
                seen.add(succ)
                paths.append(path + [succ])
    raise AssertionError(f"no cycle through {first} in {sorted(component)}")


def test_exporter_has_no_import_cycle():
    found = cycles(import_graph())
    # one cycle per strongly connected component: fixing it may show the next one in it
    assert found == [], "import cycles in exporter/:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The checker itself: module-level, function-level, relative and ``from package import module``
    imports all make edges, and a cycle through them is found and shown."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import exporter.sub.b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..d import thing\n")
    (pkg / "d.py").write_text("from exporter import a\nthing = 1\n")
    (pkg / "e.py").write_text("from .sub.b import f\nimport json\nif TYPE_CHECKING:\n    from . import a\n"
                              "if typing.TYPE_CHECKING:\n    import exporter.d\nelse:\n    import exporter.sub\n")
    graph = import_graph(tmp_path)
    assert graph["exporter.sub.b"] == {"exporter.sub.c"} and graph["exporter.sub.c"] == {"exporter.d"}
    assert graph["exporter.d"] == {"exporter.a"} and graph["exporter.e"] == {"exporter.sub.b", "exporter.sub"}
    assert cycles(graph) == [["exporter.a", "exporter.sub.b", "exporter.sub.c", "exporter.d", "exporter.a"]]
    (pkg / "d.py").write_text("thing = 1\n")
    assert cycles(import_graph(tmp_path)) == []
