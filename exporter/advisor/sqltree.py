"""Walking pglast parse trees (flat, no recursion: a deep tree cannot exhaust the stack): shared by
the anti-pattern checks (statements.py) and the guard of ``--explain`` (guard.py)."""

from __future__ import annotations

from pglast import ast


def children(node):
    """The nodes directly under ``node``, in field order; lists of lists are looked into (a FROM
    clause's functions are a list of lists: ``RangeFunction.functions``)."""
    for name in getattr(type(node), "__slots__", ()):
        value = getattr(node, name, None)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, tuple):
            yield from _nodes(value)


def _nodes(items: tuple):
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, ast.Node):
                yield item
            elif isinstance(item, tuple):
                stack.append(iter(item))
                break
        else:
            stack.pop()


def walk(node):
    """Every node under ``node`` (itself included), depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(children(current))))
