"""``docs/cli.md``: every command's ``--help``, as the command prints it at 100 columns.

Run ``python -m tamt_cli.cli.reference > docs/cli.md`` after changing an option; a test fails
while the file differs from what this prints.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import Any

WIDTH = 100

HEADER = f"""# Command reference

Every command's `--help`, generated: `python -m tamt_cli.cli.reference > docs/cli.md` writes this
file, and a test fails when it is stale. The defaults shown are the ones the code uses (the
`--help` test checks each of them). Help is printed at {WIDTH} columns here.
"""


def commands() -> list[list[str]]:
    """``[]`` for ``tamt`` itself, then every command and sub-command, in the order of
    ``tamt --help``."""
    import typer

    from tamt_cli.cli.app import app

    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        if hasattr(command, "list_commands"):  # a group (Typer's click, not always click's)
            context = command.context_class(command)
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                if sub is not None and not sub.hidden:
                    yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


@contextlib.contextmanager
def _plain_terminal() -> Iterator[None]:
    """Help rendered the same everywhere: a fixed width, no colours. Typer reads its width once,
    when it is imported, so it is set on the module for the while."""
    from typer import rich_utils

    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "TERM")}
    width, force = rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL
    os.environ.update({"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"})
    rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL = WIDTH, False
    try:
        yield
    finally:
        rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL = width, force
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def help_text(path: list[str]) -> str:
    """What ``tamt PATH --help`` prints, trailing spaces removed."""
    from tamt_cli.cli.app import main

    out = io.StringIO()
    with _plain_terminal(), contextlib.redirect_stdout(out):
        main([*path, "--help"])
    return "\n".join(line.rstrip() for line in out.getvalue().strip("\n").splitlines())


def render() -> str:
    parts = [HEADER]
    for path in commands():
        title = " ".join(["tamt", *path])
        parts.append(f"## `{title}`\n\n```text\n{help_text(path)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
