"""The public plugin API of tamt: the one module a plugin imports from ``tamt_cli``.

API version 1. A plugin declares the version it was built for on its class (``tamt_api = 1``);
``tamt plugins`` lists a plugin built for another major version as ``incompatible`` and using it
exits with code 2. Everything importable from here is stable within a major version.

Light names (importing them costs nothing):

* :data:`API_VERSION`, :class:`UserError` (a one-line error for the user, exit code 2),
  :func:`did_you_mean`
* methods: :class:`Method` (the protocol), :class:`SearchJob` (what ``search`` receives),
  :class:`NoOptions`
* tasks: :class:`Task` (the protocol), :class:`TaskBase` (a base class with the shared
  plumbing), :class:`Defaults` (a task's fine-tuning defaults), :func:`model_inputs`,
  :func:`create_task` (a registered task, constructed with its options)

Heavy modules, imported on first use — reach for them inside ``search``/``load``/``encode``, not
at module level, so that ``tamt plugins`` stays fast:

* ``masking`` — prunable weights, exact-sparsity masks, attaching/baking masks, reports
* ``engine`` — the one training loop (``Engine``, ``Loop``, ``Hooks``, ``linear_schedule``)
* ``objectives`` — MLM and KD losses and ``PretrainingLoss``
* ``pretraining`` — corpora as token blocks, the MLM head and its warm-up, held-out loss
* ``artifacts`` — mask files, manifests, atomic writes
* ``finetune`` — fine-tuning a model on a task with a fixed mask
* ``transfer`` — task models, task data in batches (``Batcher``, ``subset``), ``TaskLoss``
"""

from __future__ import annotations

import importlib
from typing import Any

from tamt_cli.errors import UserError, did_you_mean
from tamt_cli.methods.base import Method, NoOptions, SearchJob
from tamt_cli.registry import API_VERSION
from tamt_cli.tasks.base import Defaults, Task, TaskBase, create_task, model_inputs

_HEAVY = {"masking", "engine", "objectives", "pretraining", "artifacts", "finetune", "transfer"}

__all__ = [
    "API_VERSION",
    "Defaults",
    "Method",
    "NoOptions",
    "SearchJob",
    "Task",
    "TaskBase",
    "UserError",
    "create_task",
    "did_you_mean",
    "model_inputs",
    *sorted(_HEAVY),
]


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        return importlib.import_module(f"tamt_cli.{name}")
    raise AttributeError(f"module 'tamt_cli.api' has no attribute '{name}'")
