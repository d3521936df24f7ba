"""Errors that reach the user as one line and an exit code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class UserError(Exception):
    """Something the user asked for is wrong; shown as one line, exit code 2."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown(what: str, word: str, choices: Iterable[str]) -> UserError:
    """`unknown method 'ompp'; did you mean 'omp'? available: omp, random`."""
    choices = sorted(choices)
    available = ", ".join(choices) if choices else "none installed"
    hint = did_you_mean(word, choices) or ";"
    return UserError(f"unknown {what} '{word}'{hint} available: {available}")
