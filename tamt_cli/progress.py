"""Progress on the console: the training loop's bar (or plain lines in a log) and the bars of
scoring a task's eval splits, both drawn by :func:`bar`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from rich.console import Console

from tamt_cli import verbosity

#: how the progress display names a figure of the metrics log, where the log's name alone would
#: mislead (the log keeps its names): a search's held-out loss is that of the mask in training,
#: whose sparsity the line shows beside it, not of the exact-sparsity mask the run ends with
LABELS = {"eval_loss": "eval_loss (training mask)"}


class Steps(Protocol):
    """What a progress display reads of a loop (an :class:`~tamt_cli.engine.Loop`)."""

    max_steps: int
    description: str


def bar(
    console: Console, *, figures: bool = False, eta: bool = False, transient: bool = False
) -> Any:
    """A rich progress bar: description, bar, done/total, elapsed time; ``figures``: a text field
    of the task's figures; ``eta``: the time left; ``transient``: gone when it ends."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns: list[str | ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if figures:
        columns.append(TextColumn("{task.fields[figures]}"))
    columns.append(TimeElapsedColumn())
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return RichProgress(*columns, console=console, transient=transient)


class Progress:
    """Progress of a loop on the main process. On a terminal, a live bar with the loss and the
    method's figures; elsewhere (a log file, a batch job, CI) or with ``TAMT_NO_PROGRESS=1``, one
    plain, full line every ``--log-every`` steps and after every evaluation. Nothing under ``-q``.
    """

    def __init__(self, console: Console, loop: Steps, start: int, enabled: bool) -> None:
        self.console = console
        self.loop = loop
        self.start = start
        self.notes: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        if not enabled or console.quiet:
            self.mode = None
        else:
            self.mode = "bar" if verbosity.live(console) else "lines"
        if self.mode != "bar":
            return
        self._bar = bar(console, figures=True, eta=True)
        self._task = self._bar.add_task(
            loop.description, total=loop.max_steps, completed=start, figures=""
        )

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mode == "bar":
            self._bar.__exit__(*exc)

    def advance(self, steps: int = 1, **figures: Any) -> None:
        if self.mode == "bar":
            text = _figures({**figures, **self.notes})
            self._bar.update(self._task, advance=steps, figures=text)

    def line(self, step: int, row: dict[str, Any]) -> None:
        """A logged row as one plain line: step/total, the figures, the latest evaluation,
        seconds so far and the time left."""
        if self.mode == "lines":
            self._say(step, {k: v for k, v in {**row, **self.notes}.items() if k != "seconds"})

    def note(self, step: int, **figures: Any) -> None:
        """Figures of an evaluation: shown with every later step (a line of their own now)."""
        self.notes.update(figures)
        if self.mode == "lines":
            self._say(step, figures)

    def _say(self, step: int, figures: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        left = elapsed / done * (self.loop.max_steps - step) if done > 0 else None
        text = _figures(figures)
        eta = duration(left) if left is not None else "?"
        line = (
            f"{self.loop.description}  step {step}/{self.loop.max_steps}  {text}  "
            f"{elapsed:.1f} s  ETA {eta}"
        )
        # soft_wrap: the line is printed whole, never wrapped or cut to the console's width
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def scoring(
    console: Console, totals: Mapping[str, int], show: bool = True
) -> Iterator[Callable[[str, int], None] | None]:
    """A bar per eval split (``totals``: split → features to score) while a model is scored, on
    a terminal only; yields ``advance(split, n)``, or None when nothing is shown."""
    if not show or not verbosity.live(console):
        yield None
        return
    with bar(console, transient=True) as shown:
        ids = {split: shown.add_task(f"scoring {split}", total=n) for split, n in totals.items()}
        yield lambda split, n: shown.advance(ids[split], n)


def duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on (rounded to the second): the training loop's
    time left, a sweep's cell times and time left."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _figures(figures: Mapping[str, Any]) -> str:
    """``loss 0.3868  sparsity 0.7000``: each figure by its :data:`LABELS` name."""
    return "  ".join(f"{LABELS.get(k, k)} {_fmt(v)}" for k, v in figures.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4 or math.isnan(value)):
            return f"{value:.2e}"
        return f"{value:.4f}"
    return str(value)
