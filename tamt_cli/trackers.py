"""Experiment trackers (``--report-to``): which exist, which are installed, and a run's metrics
and spec sent to them through Accelerate. The names here are the only list of them: the specs'
``report_to`` field, the command line and ``tamt env`` read it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from tamt_cli.errors import UserError

#: the experiment trackers ``--report-to`` takes; the package each needs has its name
Name = Literal["tensorboard", "wandb", "mlflow", "trackio"]
#: a value of ``--report-to``: a tracker, ``all`` (every one installed) or ``none``
Tracker = Literal[Name, "all", "none"]
NAMES: tuple[str, ...] = get_args(Name)
CHOICES: tuple[str, ...] = get_args(Tracker)
#: the project name trackers file the runs under
PROJECT = "tamt"


def installed_trackers(names: Sequence[str]) -> list[str]:
    """The trackers of ``--report-to`` (``all``: every one installed; ``none``: none), each
    checked to be installed."""
    from accelerate.tracking import get_available_trackers

    available = {str(t.value if hasattr(t, "value") else t) for t in get_available_trackers()}
    wanted: list[str] = []
    for name in names:
        if name == "all":
            wanted += [t for t in NAMES if t in available and t not in wanted]
        elif name != "none" and name not in wanted:
            if name not in NAMES:
                raise UserError(
                    f"--report-to: unknown tracker '{name}'; valid: {', '.join(CHOICES)}"
                )
            if name not in available:
                raise UserError(
                    f"--report-to {name}: the {name} package is not installed (pip install {name})"
                )
            wanted.append(name)
    return wanted


def start(
    accelerator: Any, names: Sequence[str], run_dir: Path, name: str, config: Mapping[str, Any]
) -> None:
    """Start the trackers ``names`` for the run written to ``run_dir`` (named ``name`` there,
    with ``config`` as its configuration). File-writing trackers (TensorBoard) write in
    ``run_dir``."""
    accelerator.project_configuration.logging_dir = str(run_dir)
    runs = {"wandb": {"name": name, "dir": str(run_dir)}, "mlflow": {"run_name": name}}
    runs["trackio"] = {"name": name}
    accelerator.init_trackers(
        PROJECT,
        config=tracker_config(config),
        init_kwargs={k: v for k, v in runs.items() if k in names},
    )


def log(accelerator: Any, row: Mapping[str, Any], step: int, prefix: str = "") -> None:
    """The numbers of a metrics row (flags and text left out), their names after ``prefix``."""
    values = {prefix + k: v for k, v in row.items() if _loggable(v)}
    accelerator.log(values, step=step)


def stop(accelerator: Any) -> None:
    """End the trackers' run (files closed)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def tracker_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A run's spec as flat tracker configuration: nested fields as ``options/name``, lists and
    other values as text, unset fields left out."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(tracker_config(value, f"{name}/"))
        elif value is None:
            continue
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def _loggable(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
