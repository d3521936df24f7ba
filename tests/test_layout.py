"""docs/architecture.md names every module of tamt_cli, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_layout_table_matches_the_tree():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("# How the code is laid out", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.M)
    package = ROOT / "tamt_cli"
    tree = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert set(listed) == tree
