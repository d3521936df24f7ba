"""Errors that reach the user as one line and an exit code."""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
from collections.abc import Iterable, Iterator, Mapping


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def refused_pickle(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` would not read a pickle, in one line."""
    if "Unsupported global" in str(exc):
        return "it holds objects other than tensors and plain values, which tamt does not unpickle"
    return "it is not a readable tensor file"


class UserError(Exception):
    """Something the user asked for is wrong; shown as one line, exit code 2."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """An interruption with a word on what was kept (e.g. how to resume); exit code 130."""


#: What the machine, not the program, got wrong: no space, no permission, read-only.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
    | {errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EMFILE}
)
#: the same faults as the libraries that wrap them in their own exceptions word them
_ENVIRONMENT_TEXTS = {
    os.strerror(number): number
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EFBIG)
}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, in turn."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def fault_of_machine(exc: BaseException) -> tuple[int, str | None, BaseException] | None:
    """``(errno, file name or None, the exception that says so)`` when ``exc`` (or what caused
    it) is a fault of the machine (disk full, no permission, read-only file system), else None.
    Libraries that write files (safetensors) wrap the ``OSError`` in their own exceptions,
    naming no file, so their message text is looked at as well."""
    for current in _causes(exc):
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            return current.errno, _text(current.filename), current
        text = str(current)
        for known, number in _ENVIRONMENT_TEXTS.items():
            if known in text:
                return number, None, current
    return None


def _text(filename: object) -> str | None:
    if isinstance(filename, str | bytes | os.PathLike):
        return os.fsdecode(filename)
    return None


def environment_fault(exc: BaseException, where: object = None) -> str | None:
    """A one-line description when ``exc`` (or what caused it) is a fault of the machine
    (disk full, no permission, read-only file system), else None. It names the file the fault
    met, else ``where`` (the output being written), as the user gave it (:func:`shown_path`)."""
    fault = fault_of_machine(exc)
    if fault is None:
        return None
    number, filename, said = fault
    path = filename if filename is not None else _text(where)
    reason = os.strerror(number)
    if path:
        return f"{reason}: {shown_path(path)}"
    return reason if isinstance(said, OSError) else f"{reason} ({first_line(said)})"


# -- what the command line gave, for errors that meet it ------------------------------------

#: while a command runs: each path-like value it was given (also as an absolute path) → the
#: option that gave it and the value as given
_GIVEN: dict[str, tuple[str, str]] = {}


@contextlib.contextmanager
def given(values: Mapping[str, str]) -> Iterator[None]:
    """While the block runs, an error naming one of ``values`` (option → value as given) names
    the option too: ``File name too long: --model '…'``."""
    saved = dict(_GIVEN)
    for option, value in values.items():
        for form in {value, os.path.normpath(value), os.path.abspath(os.path.expanduser(value))}:
            _GIVEN.setdefault(form, (option, value))
    try:
        yield
    finally:
        _GIVEN.clear()
        _GIVEN.update(saved)


def shown_path(path: object) -> str:
    """``'path'`` quoted, or ``--out 'path'`` when it is what an option gave (:func:`given`)."""
    text = _text(path) or str(path)
    known = (_GIVEN.get(text) or _GIVEN.get(os.path.normpath(text))) if text else None
    if known is not None:
        return f"{known[0]} '{known[1]}'"
    return f"'{text}'"


# -- one line on the terminal ----------------------------------------------------------------

#: the longest value an error line repeats whole (a long path stays whole); a longer one is
#: shortened in the middle
LONGEST_VALUE = 200
#: what a shortened value keeps of each end
KEPT = 50


def shorten(value: str) -> str:
    """``value`` if it is at most :data:`LONGEST_VALUE` characters, else its two ends around an
    ellipsis: ``aaaa…aaaa`` (the caller adds the length, see :func:`one_line`)."""
    if len(value) <= LONGEST_VALUE:
        return value
    return f"{value[:KEPT]}…{value[-KEPT:]}"


#: a quoted value: quotes not inside a word (``model's`` is no quote), anything but the quote
#: and a line break between them
_QUOTED = re.compile(rf"""(?<!\w)(['"])([^'"\n]{{{LONGEST_VALUE + 1},}}?)\1(?!\w)""")
_LONG_WORD = re.compile(rf"\S{{{LONGEST_VALUE + 1},}}")


def one_line(message: str) -> str:
    """``message`` as the one line tamt prints: its lines joined, and every value longer than
    :data:`LONGEST_VALUE` (quoted, or a run of characters without a space) shortened in the
    middle, with its length: ``'aaaa…aaaa' (100,000 characters)``."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())

    def quoted(match: re.Match[str]) -> str:
        quote, value = match.group(1), match.group(2)
        return f"{quote}{shorten(value)}{quote} ({len(value):,} characters)"

    def word(match: re.Match[str]) -> str:
        text = match.group(0)
        return f"{shorten(text)} ({len(text):,} characters)"

    return _LONG_WORD.sub(word, _QUOTED.sub(quoted, line))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown(kind: str, word: str, choices: Iterable[str]) -> UserError:
    """`unknown method 'ompp'; did you mean 'omp'? available: omp, random`."""
    choices = sorted(choices)
    available = ", ".join(choices) if choices else "none installed"
    hint = did_you_mean(word, choices) or ";"
    return UserError(f"unknown {kind} '{word}'{hint} available: {available}")
