"""The protocol every pruning method implements, built-in or plugin.

A method is a class registered under the ``tamt.methods`` entry-point group::

    [project.entry-points."tamt.methods"]
    omp = "tamt_cli.methods.magnitude:OneShotMagnitude"

A one-shot method (omp, random) only computes. A method with ``trains = True`` runs the
training engine (``job.engine``: the loop, values reduced over processes with
``job.engine.reduce``, checkpoints), writes masks at checkpoints through ``job.run`` and resumes
when ``job.resume`` is set; its run directory exists from the start. It loads what else it needs
(a task model, the tokenizer) from ``job.ref`` through ``tamt_cli.api``, never straight from
transformers, so that offline use and errors behave as everywhere in tamt.

It has a one-line ``summary``, an ``Options`` pydantic model for its own settings (unknown
options are rejected; given on the command line as ``-o name=value`` or in a spec's
``options:``; ``tamt plugins --kind method NAME`` lists them with their types, defaults and
descriptions), is constructed with those validated options, and returns from ``search`` a
keep-mask (boolean tensor, ``True`` = kept) for every weight in ``job.weights``.

``tamt`` requires ``--sparsity`` before it calls the method, unless the method's optional
``needs_sparsity()`` returns False (``random --like`` copies another mask's); its
``sparsity_alternative`` names what stands in for it. A method whose class sets
``patterns = True`` takes ``--pattern N:M`` (``job.pattern``): every group of M consecutive
weights along a matrix's last dimension keeps exactly N; the others refuse it. A method whose
class sets ``structures`` to a tuple of ``--structure`` values besides ``weights`` (``neurons``,
``heads``, ``neurons+heads``; :mod:`tamt_cli.units`) prunes whole units when ``job.structure``
is one of them: it returns instead a keep-vector for each of ``job.units`` (by the group's name),
pruning exactly ``job.unit_counts[name]`` units of each, which tamt checks and expands into the
weight masks. A method that does not set it supports ``weights`` only. An optional
``check(spec)`` raises ``UserError`` for other specs the method cannot run (called after that,
before any compute and by ``--dry-run``). A training method may also have ``preflight(job)``:
checks that need the loaded model but no computation, run before its run directory is made,
so that a bad input leaves nothing behind. ``tamt`` checks that the
masks fit, measures their sparsity and writes the run; a method does no I/O of its own.

Method modules are imported by ``tamt plugins`` to report their status, so they should import
torch and other heavy libraries inside ``search``, not at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from tamt_cli.errors import UserError

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from transformers import PreTrainedModel

    from tamt_cli.artifacts import RunWriter
    from tamt_cli.engine import Engine
    from tamt_cli.masking import Prunable
    from tamt_cli.models import ModelRef
    from tamt_cli.specs import SearchSpec
    from tamt_cli.units import UnitGroup

#: what a method supports that does not say
WEIGHTS_ONLY = ("weights",)


class NoOptions(BaseModel):
    """Options of a method that has none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class SearchJob:
    """Everything a method's ``search`` may use. ``engine`` and ``run`` are given to training
    methods (``trains = True``) only: a one-shot method's are None."""

    spec: SearchSpec
    model: PreTrainedModel  # the pre-trained encoder, float32
    weights: list[Prunable]  # the matrices to mask, in model order
    console: Console
    ref: ModelRef  # the resolved --model: where the model (and its tokenizer) loads from
    notes: dict[str, Any] = field(default_factory=dict)  # method facts to record in the manifest
    targets: dict[str, float] | None = None  # per-matrix target sparsity, if not spec.sparsity
    units: list[UnitGroup] = field(default_factory=list)  # --structure: every layer's units
    # for training methods (``trains = True``) only:
    engine: Engine | None = None  # processes, the loop, reductions over processes, checkpoints
    run: RunWriter | None = None  # masks at steps, extra files, the manifest (set after preflight)
    resume: bool = False  # continue from the run's last checkpoint

    @property
    def sparsity(self) -> float:
        return sparsity_of(self.spec)

    @property
    def pattern(self) -> tuple[int, int] | None:
        """``--pattern N:M`` as ``(N, M)``, or None."""
        from tamt_cli.masking import parse_pattern

        return None if self.spec.pattern is None else parse_pattern(self.spec.pattern)

    @property
    def structure(self) -> str:
        """``--structure``: ``weights``, or the kinds of whole unit pruned."""
        return self.spec.structure

    @property
    def unit_counts(self) -> dict[str, int]:
        """Units to prune in each of ``units`` (by group name): ⌊n·s⌋ of the group's n."""
        from tamt_cli.units import prune_counts

        return prune_counts(self.units, self.sparsity)


@runtime_checkable
class Method(Protocol):
    """A pruning method: ``Method(options).search(job) -> {weight name: keep-mask}``."""

    summary: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, options: Any) -> None: ...

    def search(self, job: SearchJob) -> dict[str, torch.Tensor]: ...


def sparsity_of(spec: SearchSpec, alternative: str | None = None) -> float:
    """``spec.sparsity``; a one-line error when it was not given (``alternative``: what the
    method also accepts in its place)."""
    if spec.sparsity is None:
        also = f" (or {alternative})" if alternative else ""
        raise UserError(f"--sparsity is required for method '{spec.method}'{also}")
    return spec.sparsity


def check_spec(method: Any, spec: SearchSpec) -> None:
    """Reject a spec the method cannot run, before any compute: the checks every method shares,
    then the method's own ``check`` (``--pattern`` and ``--structure`` support are checked by
    the caller, which knows the methods that take them)."""
    needs = getattr(method, "needs_sparsity", None)
    if needs is None or needs():
        sparsity_of(spec, getattr(method, "sparsity_alternative", None))
    hook = getattr(method, "check", None)
    if hook is not None:
        hook(spec)


def structures_of(method: Any) -> tuple[str, ...]:
    """The ``--structure`` values a method (class or instance) takes."""
    return tuple(getattr(method, "structures", None) or WEIGHTS_ONLY)


def check_method(obj: Any) -> str:
    """Validate a loaded entry point against the protocol; return its summary."""
    if not isinstance(obj, type):
        raise TypeError(f"{obj!r} is not a class")
    if not callable(getattr(obj, "search", None)):
        raise TypeError(f"{obj.__name__} has no search(job) method")
    options = getattr(obj, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise TypeError(f"{obj.__name__}.Options is not a pydantic model")
    return str(getattr(obj, "summary", "") or "")
