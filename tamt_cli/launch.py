"""The ``tamt`` command's entry point: on Linux with glibc, the process runs with malloc settings
that keep its resident memory close to the memory in use (:mod:`tamt_cli.allocator`: what they
are, why, and when they are left alone), then the command line runs.

glibc reads these settings only when a process starts, so the process replaces itself once
(``exec``: same process id, same arguments, same environment plus the setting).
"""

from __future__ import annotations

import contextlib
import os
import sys

from tamt_cli import allocator


def main() -> int:
    env = allocator.allocator_env(os.environ, allocator.glibc())
    argv = getattr(sys, "orig_argv", None)  # the interpreter's own options included
    if env is not None and argv and sys.executable:
        with contextlib.suppress(OSError):  # if it cannot, it runs with the defaults
            os.execve(sys.executable, argv, env)
    from tamt_cli.cli.app import main as cli_main

    return cli_main()
