"""tamt's cache: what is worth keeping across runs, and the names of its folders.

The cache is ``$TAMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tamt``, else ``~/.cache/tamt``::

    <cache>/
    ├── blocks/     corpora as token blocks (:mod:`tamt_cli.corpora`)
    ├── heads/      MLM heads fitted on models without one (:mod:`tamt_cli.pretraining`)
    └── features/   tokenised task data (:mod:`tamt_cli.task_data`)

Earlier versions kept all of it in one folder, ``$TAMT_CACHE_DIR`` or ``<XDG cache>/tamt/blocks``:
the token blocks at its top, ``heads/`` and ``features/`` inside it. The first time a process
asks for a folder of the cache, what that layout left is moved into this one (renames, on one
file system), so nothing cached before is lost: block files at the top of the cache go into
``blocks/`` while there is no ``blocks/``, and ``blocks/heads`` and ``blocks/features`` become
``heads/`` and ``features/`` while those do not exist.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path

#: the environment variable naming the cache
ENV = "TAMT_CACHE_DIR"
BLOCKS = "blocks"
HEADS = "heads"
FEATURES = "features"
FOLDERS = (BLOCKS, HEADS, FEATURES)
#: how a block file is named (its fingerprint), for moving the earlier layout's
_BLOCK_FILE = re.compile(r"[0-9a-f]{64}\.safetensors")


def root(cache_dir: Path | None = None) -> Path:
    """The cache: ``cache_dir``, else ``$TAMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tamt``
    (``~/.cache/tamt``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()) / "tamt"


def folder(name: str, cache_dir: Path | None = None) -> Path:
    """The cache's folder ``name`` (one of :data:`FOLDERS`), with what the earlier layout left
    moved in (see the module's docstring); it may not exist yet."""
    if name not in FOLDERS:
        raise ValueError(f"tamt's cache has no folder '{name}'")
    base = root(cache_dir)
    _adopt_earlier_layout(str(base))
    return base / name


@functools.cache
def _adopt_earlier_layout(base_name: str) -> None:
    """Move what the earlier layout left in ``base_name`` into the current one (once per
    process and cache; a move another process made first, or one that fails, is left)."""
    base = Path(base_name)
    blocks = base / BLOCKS
    with contextlib.suppress(OSError):
        if not blocks.exists() and base.is_dir():
            found = [p for p in base.iterdir() if _BLOCK_FILE.fullmatch(p.name) and p.is_file()]
            if found:
                blocks.mkdir(exist_ok=True)
            for path in found:
                with contextlib.suppress(OSError):
                    path.rename(blocks / path.name)
    for name in (HEADS, FEATURES):
        earlier, now = blocks / name, base / name
        with contextlib.suppress(OSError):
            if earlier.is_dir() and not earlier.is_symlink() and not now.exists():
                earlier.rename(now)
