"""Errors that reach the user as one line and an exit code."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


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
_ENVIRONMENT_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "Permission denied",
    "Read-only file system",
    "File too large",
)


def environment_fault(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` (or what caused it) is a fault of the machine
    (disk full, no permission, read-only file system), else None.

    Libraries that write files (safetensors, torch) sometimes wrap the ``OSError`` in their own
    exception types, so the message text is looked at as well."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            reason = current.strerror or first_line(current)
            where = current.filename
            return f"{reason}: '{where}'" if where else reason
        text = str(current)
        for known in _ENVIRONMENT_TEXTS:
            if known in text:
                return f"{known} ({first_line(current)})"
        current = current.__cause__ or current.__context__
    return None


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
