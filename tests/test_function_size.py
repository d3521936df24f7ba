"""No function in tamt_cli is longer than a reader takes in at once, except those listed here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tamt_cli"

#: lines from ``def`` to the function's last line, docstring and nested functions included
MAX_LINES = 80

#: ``"module:function"`` (``Class.method``, ``outer.inner`` for nested ones) → why it is longer
ALLOWED: dict[str, str] = {}


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """Every function and method under ``tree``, nested ones too: its name and length."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + node.name
            yield name, (node.end_lineno or node.lineno) - node.lineno + 1
            yield from functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, prefix + node.name + ".")
        else:
            yield from functions(node, prefix)


def lengths() -> dict[str, int]:
    """``"module:function"`` → lines, for every function in tamt_cli."""
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, lines in functions(tree):
            found[f"{module}:{name}"] = lines
    return found


def test_no_function_is_over_the_limit():
    too_long = {
        name: lines
        for name, lines in lengths().items()
        if lines > MAX_LINES and name not in ALLOWED
    }
    listed = ", ".join(f"{name} ({lines})" for name, lines in sorted(too_long.items()))
    assert not too_long, f"over {MAX_LINES} lines (split them, or say why in ALLOWED): {listed}"


def test_every_allowed_function_is_still_over_the_limit():
    """An exception whose function was split or removed leaves the list."""
    found = lengths()
    stale = sorted(name for name in ALLOWED if found.get(name, 0) <= MAX_LINES)
    assert not stale, f"no longer over {MAX_LINES} lines, remove from ALLOWED: {', '.join(stale)}"


def test_nested_functions_and_methods_are_measured():
    tree = ast.parse(
        "class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n"
    )
    assert dict(functions(tree)) == {"A.m": 4, "A.m.inner": 2}
