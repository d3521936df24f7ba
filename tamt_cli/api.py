"""The public plugin API of tamt: the one module a plugin imports from ``tamt_cli``.

API version 1. A plugin declares the version it was built for on its class (``tamt_api = 1``);
``tamt plugins`` lists a plugin built for another major version as ``incompatible`` and using it
exits with code 2. Everything importable from here is stable within a major version; the rest of
``tamt_cli`` may change.

Light names (importing them costs nothing):

* :data:`API_VERSION`, :class:`UserError` (a one-line error for the user, exit code 2),
  :func:`did_you_mean`
* methods: :class:`Method` (the protocol), :class:`SearchJob` (what ``search`` receives),
  :class:`NoOptions`
* tasks: :class:`Task` (the protocol), :class:`TaskBase` (a base class with the shared
  plumbing), :class:`Defaults` (a task's fine-tuning defaults), :func:`model_inputs`,
  :func:`create_task` (a registered task, constructed with its options)

Named functions and classes that load torch on first use — reach for them inside
``search``/``load``/``encode``, not at module level, so that ``tamt plugins`` stays fast:

* masks: :func:`prunable_weights`, :func:`magnitude_scores`, :func:`random_scores`,
  :func:`masks_from_scores`, :func:`local_masks`, :func:`prune_count`, :func:`check_fits`,
  :func:`attach_masks`, :func:`bake_masks`, :func:`sparsity_report`, :func:`pruned_fraction`
* the training loop: :class:`Engine` (the type of ``SearchJob.engine``: ``fit``, ``reduce``
  over processes, ``is_main``, ``device``), :class:`Loop`, :class:`Hooks`, :func:`linear_schedule`
* pre-training losses: :class:`PretrainingLoss`
* models: :func:`load_task_model` (a task's model from ``SearchJob.ref``, its head seeded) and
  :func:`load_tokenizer`, both with tamt's offline handling and one-line errors
* task models and data: :class:`Batcher`, :class:`TaskLoss`, :func:`subset`,
  :func:`quiet_libraries` (no load reports or progress bars from transformers and datasets)
* mask files: :func:`load_masks`, :func:`save_masks`

Plugins written for API 1 before these names existed reach whole modules as attributes
(``api.masking``, ``api.engine``, ``api.objectives``, ``api.pretraining``, ``api.artifacts``,
``api.finetune``, ``api.transfer``); those keep working within API 1, but new plugins import the
names above, which do not tie them to tamt's module layout. (``api.artifacts`` and
``api.pretraining`` hold what the modules of those names held when API 1 began: today's
``artifacts``, ``files`` and ``maskfile``; ``pretraining``, ``mlm_head`` and ``methods._common``.)
"""

from __future__ import annotations

import functools
import importlib
import types
from typing import Any

from tamt_cli.errors import UserError, did_you_mean
from tamt_cli.methods.base import Method, NoOptions, SearchJob
from tamt_cli.registry import API_VERSION, create_task
from tamt_cli.tasks.base import Defaults, Task, TaskBase, model_inputs

#: public name → the module that defines it (imported on first use)
_NAMED = {
    **dict.fromkeys(
        (
            "prunable_weights",
            "magnitude_scores",
            "random_scores",
            "masks_from_scores",
            "local_masks",
            "prune_count",
            "check_fits",
            "attach_masks",
            "bake_masks",
            "sparsity_report",
            "pruned_fraction",
        ),
        "tamt_cli.masking",
    ),
    **dict.fromkeys(("Engine", "Loop", "Hooks", "linear_schedule"), "tamt_cli.engine"),
    "PretrainingLoss": "tamt_cli.objectives",
    **dict.fromkeys(("load_task_model", "load_tokenizer"), "tamt_cli.models"),
    "TaskLoss": "tamt_cli.task_model",
    **dict.fromkeys(("Batcher", "subset"), "tamt_cli.task_data"),
    "quiet_libraries": "tamt_cli.verbosity",
    **dict.fromkeys(("load_masks", "save_masks"), "tamt_cli.maskfile"),
}
#: module attributes of API 1 kept for plugins that use them (not in ``__all__``): name → module
_API1_MODULES = {
    "masking": "tamt_cli.masking",
    "engine": "tamt_cli.engine",
    "objectives": "tamt_cli.objectives",
    "finetune": "tamt_cli.finetune",
    "transfer": "tamt_cli.task_model",  # the task model's module, under its earlier name
}

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
    *sorted(_NAMED),
]


#: API 1 modules whose names now live in several modules: attribute → those modules
_API1_SPLIT = {
    "artifacts": ("tamt_cli.maskfile", "tamt_cli.files", "tamt_cli.artifacts"),
    "pretraining": ("tamt_cli.methods._common", "tamt_cli.mlm_head", "tamt_cli.pretraining"),
}


@functools.cache
def _api1_split(name: str) -> types.ModuleType:
    """``api.<name>`` of API 1: the public names of the modules in :data:`_API1_SPLIT` that now
    hold what ``tamt_cli.<name>`` held when API 1 began, in one module."""
    module = types.ModuleType(f"tamt_cli.api.{name}", f"tamt_cli.{name} of API 1")
    for source in map(importlib.import_module, _API1_SPLIT[name]):
        module.__dict__.update((k, v) for k, v in vars(source).items() if not k.startswith("_"))
    return module


def __getattr__(name: str) -> Any:
    if name in _NAMED:
        return getattr(importlib.import_module(_NAMED[name]), name)
    if name in _API1_MODULES:
        return importlib.import_module(_API1_MODULES[name])
    if name in _API1_SPLIT:
        return _api1_split(name)
    raise AttributeError(f"module 'tamt_cli.api' has no attribute '{name}'")
