"""How much tamt, and the libraries it drives, say on stderr.

``tamt -q``: errors and the result only. The default: tamt's progress and notes, no library
warnings or download bars. ``tamt -v``: library warnings and tamt's debug lines as well. A
``TRANSFORMERS_VERBOSITY`` set by the user is left as it is at every level.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

QUIET, NORMAL, VERBOSE = -1, 0, 1
_level = NORMAL

#: values of a yes/no environment variable that mean "yes" (in any case, as Hugging Face's
#: libraries read their own)
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
#: the libraries whose own warnings only ``-v`` shows
LIBRARIES = r"(torch|transformers|datasets|accelerate|huggingface_hub|safetensors)\b"


def flag(name: str) -> bool:
    """Whether the yes/no environment variable ``name`` is set to yes: ``1``, ``true``, ``yes``
    or ``on``; unset, empty, ``0``, ``false``, ``no``, ``off`` or anything else is no."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def level() -> int:
    return _level


def set_level(value: int) -> None:
    """Set the level for this command (``-q``/``-v``); Python warnings follow it."""
    global _level
    _level = value
    warnings.resetwarnings()
    if value == QUIET:
        warnings.simplefilter("ignore")
    elif value == NORMAL:
        # the libraries' deprecation notes and hints are not for the user of a command line
        warnings.filterwarnings("ignore", category=UserWarning, module=LIBRARIES)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def console() -> Any:
    """The stderr console of progress and notes (silent under ``-q``)."""
    from rich.console import Console

    return Console(stderr=True, quiet=_level == QUIET)


def live(console: Any) -> bool:
    """Whether progress may be a live bar: the console is a terminal, not silenced by ``-q``,
    and ``TAMT_NO_PROGRESS`` is not set to yes."""
    return bool(console.is_terminal) and not console.quiet and not flag("TAMT_NO_PROGRESS")


def note(console: Any, text: str) -> None:
    """A one-line note on ``console`` (nothing when it is None); ``text`` is printed as is, not
    read as markup."""
    if console is not None:
        from rich.markup import escape

        console.print(f"[yellow]note:[/] {escape(text)}")


def debug(console: Any, message: str) -> None:
    """A debug line, shown under ``-v`` only."""
    if _level >= VERBOSE:
        console.print(f"[dim]debug: {message}[/dim]", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """transformers at error level and datasets silent (it logs a file it cannot read at error
    level, before tamt's one-line error), with no progress bars of their own (load reports,
    download and tokenising bars), unless ``-v`` asked for them; a ``TRANSFORMERS_VERBOSITY``
    set by the user wins. Restored afterwards."""
    import datasets
    from transformers.utils import logging as hf_logging

    if _level >= VERBOSE:
        yield
        return
    user_set = bool(os.environ.get("TRANSFORMERS_VERBOSITY", "").strip())
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    datasets_logger = datasets.logging.get_logger("datasets")
    datasets_level = datasets_logger.level
    datasets_bars = datasets.is_progress_bar_enabled()
    if not user_set:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets_logger.setLevel(datasets.logging.CRITICAL + 1)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        datasets_logger.setLevel(datasets_level)
        if datasets_bars:
            datasets.enable_progress_bars()
