"""No import circles between tamt's modules, counting the imports inside functions (and under
``TYPE_CHECKING``) too: ruff, mypy and Python itself do not see a circle made by a
function-local import, so this test reads every module of ``tamt_cli`` with :mod:`ast` and looks
for one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tamt_cli"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__.py``)."""
    return {
        _module_name(p, package): p
        for p in sorted(package.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its text, at module level or in
    a function (``from tamt_cli import x`` imports the module ``tamt_cli.x`` when there is one,
    else the package)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.add(whole if whole in known else base)
    out = set()
    for target in found:
        # ``import tamt_cli.tasks.glue`` names the module; keep the longest known prefix
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, written
    without recursion), each sorted, and a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def path_through(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One circle through the component's first module, to name in the failure."""
    members = set(component)
    start = component[0]
    seen = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for child in sorted(edges[node] & members):
            if child == start:
                return [*seen[node], start]
            if child not in seen:
                seen[child] = [*seen[node], child]
                todo.append(child)
    return component  # pragma: no cover


def test_no_import_circles():
    edges = graph()
    named = [
        f"{' → '.join(path_through(edges, c))} (all of: {', '.join(c)})" for c in circles(edges)
    ]
    assert not named, "import circles in tamt_cli:\n" + "\n".join(named)


def test_the_reader_sees_function_local_imports_and_finds_a_circle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (package / "sub" / "c.py").write_text("def g():\n    from .. import a\n")
    (package / "d.py").write_text("import pkg.sub.c\nfrom pkg import names_not_a_module\n")
    edges = graph(package)
    assert edges["pkg.b"] == {"pkg.sub.c"}
    assert edges["pkg.sub.c"] == {"pkg.a"}
    assert edges["pkg.d"] == {"pkg.sub.c", "pkg"}
    assert circles(edges) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert path_through(edges, ["pkg.a", "pkg.b", "pkg.sub.c"]) == [
        "pkg.a",
        "pkg.b",
        "pkg.sub.c",
        "pkg.a",
    ]
