"""How much tamt, and the libraries it drives, say on stderr.

``tamt -q``: errors and the result only. The default: tamt's progress and notes, no library
warnings or download bars. ``tamt -v``: library warnings and tamt's debug lines as well. A
``TRANSFORMERS_VERBOSITY`` set by the user is left as it is at every level.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

QUIET, NORMAL, VERBOSE = -1, 0, 1
_level = NORMAL

#: values of a yes/no environment variable that mean "yes" (in any case, as Hugging Face's
#: libraries read their own)
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
#: the libraries whose own warnings only ``-v`` shows
LIBRARIES = r"(torch|transformers|datasets|accelerate|huggingface_hub|safetensors)\b"
#: the variables by which Hugging Face's libraries start with their progress bars off
BAR_VARIABLES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")
#: what undoes the libraries' bars turned off by the last ``-q`` of this process
_undo: list[Callable[[], Any]] = []


def flag(name: str) -> bool:
    """Whether the yes/no environment variable ``name`` is set to yes: ``1``, ``true``, ``yes``
    or ``on``; unset, empty, ``0``, ``false``, ``no``, ``off`` or anything else is no."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def level() -> int:
    return _level


def set_level(value: int) -> None:
    """Set the level for this command (``-q``/``-v``); Python warnings follow it, and under
    ``-q`` no library draws a progress bar of its own (see :func:`library_bars`)."""
    global _level
    _level = value
    library_bars(value != QUIET)
    warnings.resetwarnings()
    if value == QUIET:
        warnings.simplefilter("ignore")
    elif value == NORMAL:
        # the libraries' deprecation notes and hints are not for the user of a command line
        warnings.filterwarnings("ignore", category=UserWarning, module=LIBRARIES)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def library_bars(show: bool) -> None:
    """Hugging Face's libraries' own progress bars (a checkpoint's "Writing model shards",
    downloads, dataset maps) off for the rest of the command, or, with ``show``, back as they
    were before an earlier command of this process turned them off. Off through the variables
    the libraries read when imported (and the processes tamt starts inherit), and through their
    switches where they are imported already; a variable the user set is left alone."""
    while _undo:
        _undo.pop()()
    if show:
        return
    for name in BAR_VARIABLES:
        if name not in os.environ:
            os.environ[name] = "1"
            _undo.append(functools.partial(os.environ.pop, name, None))
    if "transformers" in sys.modules:  # its switch turns huggingface_hub's off as well
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            _undo.append(hf_logging.enable_progress_bar)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub_utils

        if not hub_utils.are_progress_bars_disabled():
            hub_utils.disable_progress_bars()
            _undo.append(hub_utils.enable_progress_bars)
    if "datasets" in sys.modules:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            _undo.append(datasets.enable_progress_bars)


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
