"""The ``tamt`` command line: flags → spec → run → present, one module per command.

Heavy libraries (torch, transformers, datasets) are imported only inside the commands that
compute, so ``tamt --help``, ``tamt plugins`` and ``--dry-run`` answer at once.
"""

from tamt_cli.cli.app import app, main

__all__ = ["app", "main"]
