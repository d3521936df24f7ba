"""The README's command blocks, so that CI and the tests run what a user reads.

A block is a fenced code block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in README.md.
``python tests/readme.py NAME [--replace LINE NEW]...`` prints its shell text; each ``--replace``
swaps the one line whose command (the text before a trailing ``# comment``) is exactly ``LINE``
for ``NEW``, and fails when no line or several lines match (so a README edit cannot silently
drop a swap).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_COMMENT = re.compile(r"\s+#.*$")


def block(name: str, readme: Path = README) -> str:
    """The shell text of the README block marked ``name`` (its fenced code, fences removed)."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(rf"^<!-- {re.escape(name)} -->\n(.*?)^<!-- /{re.escape(name)} -->", text,
                      re.S | re.M)  # fmt: skip
    if match is None:
        raise LookupError(f"README.md has no block marked <!-- {name} --> … <!-- /{name} -->")
    code = _FENCE.findall(match.group(1))
    if len(code) != 1:
        raise LookupError(f"the README block {name!r} holds {len(code)} code blocks, not one")
    return code[0]


def command(line: str) -> str:
    """A shell line without its trailing comment and surrounding blanks."""
    return _COMMENT.sub("", line).strip()


def replace(text: str, old: str, new: str) -> str:
    """``text`` with its one line whose command is ``old`` replaced by ``new``."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if command(line) == old]
    if len(hits) != 1:
        raise LookupError(f"{len(hits)} lines of the block run {old!r}; expected exactly one")
    lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Print the shell text of a README block.")
    parser.add_argument("name")
    parser.add_argument("--replace", nargs=2, action="append", default=[], metavar=("LINE", "NEW"))
    args = parser.parse_args(argv)
    try:
        text = block(args.name)
        for old, new in args.replace:
            text = replace(text, old, new)
    except LookupError as e:
        print(f"readme.py: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
