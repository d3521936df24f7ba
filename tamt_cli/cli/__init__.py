"""The ``tamt`` command line: flags → spec → run → present, one module per command.

Heavy libraries (torch, transformers, datasets) are imported only inside the commands that
compute, so ``tamt --help``, ``tamt plugins`` and ``--dry-run`` answer at once.

``main`` lives in :mod:`tamt_cli.cli.app` (with the Typer ``app``); it is named here too
(``from tamt_cli.cli import main``, as plugins' tests run tamt), loaded on first use so that
importing one command's module does not import every command through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tamt_cli.cli.app"), name)
    raise AttributeError(f"module 'tamt_cli.cli' has no attribute '{name}'")
