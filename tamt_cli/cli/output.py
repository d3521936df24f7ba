"""What the commands print: one JSON document or a table on stdout, notes and progress on
stderr, and the resolved spec of ``--dry-run``."""

from __future__ import annotations

import json
import sys
from typing import Any


def out() -> Any:
    """The stdout console of results."""
    from rich.console import Console

    return Console()


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


def show_spec(spec: Any, as_json: bool, resolved: dict[str, Any] | None = None) -> None:
    """The validated spec, and under ``resolved`` the values the method or task will use where
    the spec leaves them open."""
    if as_json:
        shown = spec.model_dump(mode="json")
        emit_json({**shown, "resolved": resolved} if resolved else shown)
    else:
        import yaml

        from tamt_cli.display import print_yaml

        text = spec.to_yaml()
        if resolved:
            text += yaml.safe_dump({"resolved": resolved}, sort_keys=False, width=1000)
        print_yaml(out(), text)
