"""glibc's malloc settings for the ``tamt`` process: which C library this is, the environment to
run again with, and what this process runs with (for ``tamt env``). The entry point
(:mod:`tamt_cli.launch`) applies them; nothing here imports more than the standard library.

Mask training frees and remakes blocks of many sizes at every step (the masked copy of each
matrix, remade again in the backward pass, the scores' gradients), and glibc's defaults keep
much of what is freed: a `kd` search of a BERT-large-shaped model at batch 8 × 128 peaks at 1.39
times the resident memory of fine-tuning it. Without the per-thread cache of small blocks
(``tcache``: blocks held there are never merged with their free neighbours) it peaks at 1.21
times. tamt 0.2 also mapped every block of 4 MiB or more on its
own: the same 1.21 times, but each step then faulted in its large blocks afresh, and a default
`kd` search of the demo model took 9% longer a step (docs/benchmarks.md: "Memory, and
BERT-large's size", and "The default search's time").

glibc reads these settings (``GLIBC_TUNABLES``) only when a process starts, so the process
replaces itself once (``exec``: same process id, same arguments, same environment plus the
setting), which costs a second start of the interpreter (about 40 ms). Only the commands that
train pay it (:func:`pays`, read from the command line alone); every other command, ``--help``,
``--dry-run`` and shell completion run as they are. Left alone as well: another platform or C
library, a ``GLIBC_TUNABLES`` that already sets a ``glibc.malloc`` tunable, an allocator in
``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc), ``TAMT_MALLOC=system``. What a run computes does
not depend on any of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

#: the settings: no per-thread cache of small blocks
TUNABLES = "glibc.malloc.tcache_count=0"
#: the built-in methods that train nothing (a one-shot mask from the weights or at random)
ONE_SHOT = frozenset({"omp", "random"})
#: words after which a command runs nothing that trains: its help, its resolved spec, a listing
_NO_RUN = frozenset({"-h", "--help", "--dry-run", "--print-commands"})


def glibc() -> str | None:
    """The C library's name and version (``glibc 2.36``), or None where it is not glibc."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    return name if name and name.startswith("glibc") else None


def pays(args: Sequence[str]) -> bool:
    """Whether the command line ``args`` (``sys.argv[1:]``) runs a command that trains, or
    scores a masked model batch after batch, so that the settings are worth a second start:
    ``finetune``, ``sweep``, ``eval --objective``, and ``search`` unless the command line names
    a method in :data:`ONE_SHOT`. Only the words are read (no spec file, no plugin), so where they
    cannot tell, the settings are taken: a ``search`` whose method comes from ``--spec`` or
    ``--resume``, an ``eval --spec`` without ``--task``. ``bench`` runs as it is: it trains
    nothing, and its latencies are those of a process with glibc's defaults, as a served model
    has. ``--help``, ``--dry-run``, ``sweep --print-commands`` and the other commands run as
    they are."""
    words = list(args)
    if "--" in words:  # what follows is values, never options
        words = words[: words.index("--")]
    root = 0
    while root < len(words) and words[root].startswith("-"):  # -q, -v: they take no value
        root += 1
    if root == len(words) or "--version" in words[:root] or _NO_RUN.intersection(words):
        return False
    command, rest = words[root], words[root + 1 :]
    if command in ("finetune", "sweep"):
        return True
    if command == "eval":
        spec_only = _given(rest, "--spec") and not _given(rest, "--task")
        return _given(rest, "--objective") or spec_only
    if command == "search":
        return _value(rest, "--method", "-m") not in ONE_SHOT
    return False


def _given(words: Sequence[str], option: str) -> bool:
    return any(word == option or word.startswith(f"{option}=") for word in words)


def _value(words: Sequence[str], option: str, short: str) -> str | None:
    """The value of the last ``--option V``, ``--option=V``, ``-s V`` or ``-sV`` in ``words``."""
    value = None
    for i, word in enumerate(words):
        if word in (option, short):
            value = words[i + 1] if i + 1 < len(words) else None
        elif word.startswith(f"{option}="):
            value = word.partition("=")[2]
        elif word.startswith(short) and not word.startswith("--"):
            value = word[len(short) :]
    return value


def allocator_env(environ: Mapping[str, str], libc: str | None) -> dict[str, str] | None:
    """The environment to run again with, or None to run as it is."""
    if libc is None or environ.get("TAMT_MALLOC", "").lower() == "system":
        return None
    if any(key.startswith("_TAMT_COMPLETE") for key in environ):
        return None
    given = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in given:  # the user's own settings, or ours after the first start
        return None
    if "malloc" in environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc, mimalloc
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{given}:{TUNABLES}" if given else TUNABLES
    return env


def state() -> dict[str, Any]:
    """The C library and the malloc settings the commands that train run with (``tamt env``,
    which itself runs as it is)."""
    libc = glibc()
    env = allocator_env(os.environ, libc)
    return {
        "libc": libc,
        "glibc_tunables": (os.environ if env is None else env).get("GLIBC_TUNABLES"),
        "ld_preload": os.environ.get("LD_PRELOAD"),
    }
