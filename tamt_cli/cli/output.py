"""What the commands print: one JSON document or a table on stdout, notes and progress on
stderr, and the resolved spec of ``--dry-run``.

stdout is data: where it is not a terminal (a file, a pipe, a batch job's log), nothing written
to it is wrapped or cut to a width, so every value and every table row is whole on its line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: the width of stdout where it is not a terminal: wider than any line a command writes, so that
#: tables keep every column whole on one line and text is never wrapped
UNBOUNDED = 1_000_000


def is_terminal() -> bool:
    """Whether stdout is a terminal (not a file or a pipe)."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty is not None and isatty())


def out() -> Any:
    """The stdout console of results: the terminal's width on a terminal; elsewhere unbounded,
    so nothing is wrapped or cropped. Emoji codes are never replaced (``2:4:`` stays text)."""
    from rich.console import Console

    if is_terminal():
        return Console(emoji=False)
    return Console(emoji=False, width=UNBOUNDED, soft_wrap=True)


def err() -> Any:
    """The stderr console of progress and notes (silent under ``-q``)."""
    from tamt_cli import verbosity

    return verbosity.console()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def present(result: Any, as_json: bool, table: str) -> None:
    """``result`` as one JSON document on stdout, or as the table ``tamt_cli.display.<table>``
    makes of it."""
    if as_json:
        emit_json(result)
    else:
        from tamt_cli import display

        out().print(getattr(display, table)(result))


#: the head of the comment block in which ``--dry-run`` shows the resolved values
RESOLVED_HEAD = (
    "# resolved: what the method or task uses where the spec leaves a value open (comments: "
    "--spec reads this file back as it is)"
)


def resolved_comments(resolved: dict[str, Any]) -> str:
    """``resolved`` as YAML in comment lines, after :data:`RESOLVED_HEAD`."""
    import yaml

    text = yaml.safe_dump(resolved, sort_keys=False, width=float("inf"), allow_unicode=True)
    return RESOLVED_HEAD + "\n" + "".join(f"#   {line}\n" for line in text.splitlines())


def show_spec(spec: Any, as_json: bool, resolved: dict[str, Any] | None = None) -> None:
    """The validated spec, a file ``--spec`` accepts back, and after it, as YAML comments, the
    values the method or task will use where the spec leaves them open. With ``--json``: the
    spec's fields with ``resolved`` beside them (a document for programs, not a spec file)."""
    if as_json:
        shown = spec.model_dump(mode="json")
        emit_json({**shown, "resolved": resolved} if resolved else shown)
        return
    text = spec.to_yaml()
    if resolved:
        text += resolved_comments(resolved)
    if is_terminal():
        from tamt_cli.display import print_yaml

        print_yaml(out(), text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
