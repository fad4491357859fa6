"""Every ```python block of docs/*.md and README.md compiles, and imports every module it uses: a
snippet may lean on names of the reader's program (``app``, ``dsn``), never on a module it forgot
to import (``os.environ`` without ``import os``)."""

from __future__ import annotations

import ast
import builtins
import importlib.util
import re

import pytest

from conftest import ROOT

pytestmark = pytest.mark.fast

BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)


def snippets() -> list:
    return list(_snippets())


def _snippets():
    for path in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the first line of code
            yield pytest.param(match.group(1), f"{path.relative_to(ROOT)}:{line}",
                               id=f"{path.relative_to(ROOT)}:{line}")


def unbound_names(tree: ast.AST) -> set[str]:
    """Names read somewhere in ``tree`` and bound nowhere in it (imports, assignments, defs,
    arguments, loop and ``with`` targets), builtins left out. Scopes are not told apart: enough to
    catch a missing import."""
    bound, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return read - bound


def test_unbound_names_finds_a_missing_import():
    tree = ast.parse('import sys\nx = os.environ["A"]\nprint(sys.argv, app, [y for y in x])\n')
    assert unbound_names(tree) == {"os", "app"}


def test_there_are_snippets_to_check():
    assert len(list(snippets())) >= 4


@pytest.mark.parametrize("code,where", snippets())
def test_snippet_compiles_and_imports_the_modules_it_uses(code, where):
    tree = ast.parse(code, filename=where)  # a SyntaxError names the file and line
    compile(tree, where, "exec")
    modules = sorted(name for name in unbound_names(tree) if importlib.util.find_spec(name) is not None)
    assert not modules, f"{where}: uses {', '.join(modules)} without importing it"
