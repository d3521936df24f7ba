"""tamt: find winning lottery tickets in BERT-family models.

The commands are Python functions too (:mod:`tamt_cli.python_api`)::

    import tamt_cli as tamt

    run = tamt.search(model="demo", method="omp", sparsity=0.7)

``tamt_cli.search``, ``extract``, ``finetune`` and ``evaluate`` are the modules that hold those
commands; called, each runs its command through the Python API. Nothing heavy is imported until
a command runs.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__: str  # read when first asked for (module ``__getattr__``)

#: the command modules that are also the Python API's functions
_COMMANDS = ("search", "extract", "finetune", "evaluate")
_MODULES = frozenset(f"{__name__}.{name}" for name in _COMMANDS)
#: further names of the Python API, from the module that defines them (imported on first use)
_LAZY = {
    **dict.fromkeys(
        ("SearchResult", "ExtractResult", "FinetuneResult", "EvalResult", "Score", "SeedResult"),
        "tamt_cli.python_api",
    ),
    "UserError": "tamt_cli.errors",
}

__all__ = ["__version__", *_COMMANDS, *sorted(_LAZY)]


class _Command(types.ModuleType):
    """A command's module that runs the command when called: ``tamt_cli.search(...)`` is
    :func:`tamt_cli.python_api.search`."""

    def _function(self) -> Any:
        api = importlib.import_module("tamt_cli.python_api")
        return getattr(api, self.__name__.rpartition(".")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run this command (see ``help(tamt_cli.python_api)``)."""
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.signature(self._function())


class _Package(types.ModuleType):
    """The ``tamt_cli`` package: a command module bound to it (as every submodule is, once
    imported) becomes callable, however it was imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _COMMANDS:
            _callable(value)
        super().__setattr__(name, value)


def _callable(module: Any) -> Any:
    """``module`` made a :class:`_Command` when it is one of the command modules."""
    if type(module) is types.ModuleType and module.__name__ in _MODULES:
        module.__class__ = _Command
    return module


sys.modules[__name__].__class__ = _Package


def _version() -> str:
    """tamt's version, read from its installed metadata when first asked for: the ``tamt``
    command starts without ``importlib.metadata`` until it needs it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tamt-cli")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = found = _version()
        return found
    if name in _COMMANDS:  # not imported yet
        return _callable(importlib.import_module(f"{__name__}.{name}"))
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
