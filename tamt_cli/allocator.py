"""glibc's malloc settings for the ``tamt`` process: which C library this is, the environment to
run again with, and what this process runs with (for ``tamt env``). The entry point
(:mod:`tamt_cli.launch`) applies them; nothing here imports more than the standard library.

Mask training frees and remakes blocks of many sizes at every step (the masked copy of each
matrix, remade again in the backward pass, the scores' gradients), and glibc's defaults keep
much of what is freed: a `kd` search of a BERT-large-shaped model at batch 8 × 128 peaks at 1.39
times the resident memory of fine-tuning it. Without the per-thread cache of small blocks
(``tcache``: blocks held there are never merged with their free neighbours) and with blocks of
4 MiB or more always mapped on their own (given back when freed, rather than left in the heap
by glibc's rising threshold), it peaks at 1.21 times, for about 3% of a step's time
(docs/benchmarks.md: "Memory, and BERT-large's size").

glibc reads these settings (``GLIBC_TUNABLES``) only when a process starts, so the process
replaces itself once (``exec``: same process id, same arguments, same environment plus the
setting). Left alone: another platform or C library, a ``GLIBC_TUNABLES`` that already sets a
``glibc.malloc`` tunable, an allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc),
``TAMT_MALLOC=system``, and shell completion. What a run computes does not depend on any of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: the settings: no per-thread cache of small blocks; blocks of 4 MiB and more mapped on their own
TUNABLES = "glibc.malloc.tcache_count=0:glibc.malloc.mmap_threshold=4194304"


def glibc() -> str | None:
    """The C library's name and version (``glibc 2.36``), or None where it is not glibc."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    return name if name and name.startswith("glibc") else None


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
    """The C library and the malloc settings this process runs with (``tamt env``)."""
    return {
        "libc": glibc(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "ld_preload": os.environ.get("LD_PRELOAD"),
    }
