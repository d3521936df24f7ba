"""The ``tamt`` command's entry point: on Linux with glibc, a command that trains runs with malloc
settings that keep its resident memory close to the memory in use (:mod:`tamt_cli.allocator`:
what they are, why, which commands, and when they are left alone), then the command line runs.

glibc reads these settings only when a process starts, so the process replaces itself once
(``exec``: same process id, same arguments, same environment plus the setting). Ctrl-C (SIGINT)
is held from just before the ``exec`` until the new process can report it: a new process dies
of a SIGINT silently until the interpreter has set up its handler, and raises it wherever it is
in the start-up after that. A Ctrl-C at any point from here on ends tamt with the usual line
and exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys

from tamt_cli import allocator


def main() -> int:
    try:
        _restart_if_it_pays()
        from tamt_cli.cli.app import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # before the command line runs: it reports its own
        sys.stderr.write("tamt: error: interrupted\n")
        sys.stderr.flush()
        return 130


def _restart_if_it_pays() -> None:
    """Replace the process with one that runs with the malloc settings, where the command line
    pays for it (:func:`tamt_cli.allocator.pays`); in the replaced one, let a Ctrl-C held
    through the restart through."""
    if not allocator.pays(sys.argv[1:]):
        return
    env = allocator.allocator_env(os.environ, allocator.glibc())
    if env is None:
        if os.environ.get("GLIBC_TUNABLES", "").endswith(allocator.TUNABLES) and _held():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # raises one that came
        return
    argv = getattr(sys, "orig_argv", None)  # the interpreter's own options included
    if not argv or not sys.executable:
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # if it cannot, it runs with the defaults
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _held() -> bool:
    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
