"""The Python API: ``tamt search``, ``extract``, ``finetune`` and ``eval`` as functions, for
notebooks and scripts::

    import tamt_cli as tamt

    kd = tamt.search(model="demo", method="kd", sparsity=0.7, corpus="demo", max_steps=300)
    sub = tamt.extract(kd, export="subnetworks/kd")
    tuned = tamt.finetune(sub, task="sst2", data_dir="glue/SST-2", seeds=[1, 2, 3])
    tuned.mean, tuned.std

Each function takes its command's spec fields (:mod:`tamt_cli.specs`) as keyword arguments, with
the defaults and checks of the command's flags; ``spec=`` reads a spec file first, as ``--spec``
does, and the arguments given win. A wrong value raises :class:`~tamt_cli.errors.UserError` with
the one line the command would print. Runs are written where the command writes them, progress
and notes go to stderr as the command shows them (``quiet=True``: nothing), and each function
returns a frozen dataclass; its ``raw`` is what the command prints with ``--json``. A result
goes where the next step takes a run or a folder: ``tamt.extract(kd)``, ``tamt.finetune(sub)``.

A loaded ``transformers`` model goes where a model id does (``model=`` of search and finetune,
the subnetwork of finetune, the checkpoint of evaluate), with its tokenizer as ``tokenizer=``.
It is saved (``save_pretrained``) to a temporary folder that the command reads, which costs the
time and disk of one copy of the weights, and the run records it as an in-memory model
(``in_memory`` in its manifests), never by that folder. A search keeps the copy in its run
directory (``model/``), since extracting, fine-tuning and scoring the run load those weights.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from tamt_cli import artifacts, files, specs
from tamt_cli.errors import UserError, unknown
from tamt_cli.specs import EvalSpec, ExtractSpec, FinetuneSpec, SearchSpec

S = TypeVar("S", bound=BaseModel)

#: where a search run keeps the copy of the in-memory model it was made from
MODEL_COPY = "model"
#: text, spec and manifest files larger than this are not looked through for the temporary
#: folder of an in-memory model (run records are far smaller)
_RECORD_LIMIT = 4 << 20


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchResult:
    """A search run: where it is, and how sparse its mask is (overall and per kind of matrix:
    ``Q``, ``K``, ``V``, ``AO``, ``I``, ``O``, ...)."""

    run: Path
    method: str
    model: str
    sparsity: float
    by_kind: dict[str, float]
    report: dict[str, Any] = field(repr=False)
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> SearchResult:
        report = raw["report"]
        return cls(
            run=Path(raw["run"]),
            method=raw["method"],
            model=raw["model"],
            sparsity=report["overall"]["sparsity"],
            by_kind=_by_kind(report),
            report=report,
            raw=raw,
        )


@dataclass(frozen=True)
class ExtractResult:
    """An exact-sparsity mask taken from a search run, and the exported subnetwork (a plain
    Hugging Face folder) when one was asked for."""

    run: Path
    mask: Path
    step: int | None
    export: Path | None
    format: str | None
    sparsity: float
    by_kind: dict[str, float]
    report: dict[str, Any] = field(repr=False)
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> ExtractResult:
        report = raw["report"]
        return cls(
            run=Path(raw["run"]),
            mask=Path(raw["mask"]),
            step=raw.get("step"),
            export=Path(raw["export"]) if raw.get("export") else None,
            format=raw.get("format"),
            sparsity=report["overall"]["sparsity"],
            by_kind=_by_kind(report),
            report=report,
            raw=raw,
        )


@dataclass(frozen=True)
class Score:
    """A score over seeds: mean, sample standard deviation (None for one seed), the values."""

    mean: float
    std: float | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class SeedResult:
    """One fine-tuning seed: its folder (a plain Hugging Face model) and its scores, by
    ``split/metric``, at its best evaluation and at its end."""

    seed: int
    folder: Path
    best: dict[str, float]
    final: dict[str, float]
    best_step: int
    steps: int


@dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuning run: the best scores of each seed, and their mean and standard deviation
    over seeds, by ``split/metric``; ``mean`` and ``std`` are those of ``selected_by`` (the
    score that picks each seed's best evaluation, e.g. ``validation/accuracy``)."""

    run: Path
    task: str
    subnetwork: str
    method: str | None
    mask_sparsity: float | None
    selected_by: str
    seeds: dict[int, SeedResult]
    best: dict[str, Score]
    final: dict[str, Score]
    raw: dict[str, Any] = field(repr=False)

    @property
    def mean(self) -> float:
        return self.best[self.selected_by].mean

    @property
    def std(self) -> float | None:
        return self.best[self.selected_by].std

    @classmethod
    def of(cls, raw: dict[str, Any]) -> FinetuneResult:
        seeds = {
            run["seed"]: SeedResult(
                seed=run["seed"],
                folder=Path(run["folder"]),
                best=_flat(run["best"]["metrics"]),
                final=_flat(run["final"]["metrics"]),
                best_step=run["best"]["step"],
                steps=run["steps"],
            )
            for run in raw["runs"]
        }
        return cls(
            run=Path(raw["out"]),
            task=raw["task"],
            subnetwork=raw["subnetwork"],
            method=raw.get("method"),
            mask_sparsity=raw.get("mask_sparsity"),
            selected_by=raw["selected_by"],
            seeds=seeds,
            best=_scores(raw["best"]),
            final=_scores(raw["final"]),
            raw=raw,
        )


@dataclass(frozen=True)
class EvalResult:
    """Scores of a checkpoint: a task's metrics (by name; ``split/metric`` when several splits
    were scored), or with an objective its held-out loss (``metrics["loss"]``)."""

    checkpoint: str
    task: str | None
    objective: str | None
    split: str
    examples: int
    metrics: dict[str, float]
    mask_sparsity: float | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def loss(self) -> float | None:
        return self.metrics.get("loss") if self.objective else None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> EvalResult:
        metrics = raw["metrics"] if "metrics" in raw else {"loss": raw["loss"]}
        return cls(
            checkpoint=raw["checkpoint"],
            task=raw.get("task"),
            objective=raw.get("objective"),
            split=raw["split"],
            examples=raw["examples"],
            metrics=dict(metrics),
            mask_sparsity=raw.get("mask_sparsity"),
            raw=raw,
        )


def _by_kind(report: dict[str, Any]) -> dict[str, float]:
    return {kind: row["sparsity"] for kind, row in report.get("kinds", {}).items()}


def _flat(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{split}/{name}": v for split, values in metrics.items() for name, v in values.items()}


def _scores(by_split: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Score]:
    return {
        f"{split}/{name}": Score(s["mean"], s["std"], tuple(s["values"]))
        for split, metrics in by_split.items()
        for name, s in metrics.items()
    }


# -- the commands ---------------------------------------------------------------------------


def search(
    *,
    spec: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | SearchResult | None = None,
    tokenizer: Any = None,
    quiet: bool = False,
    **fields: Any,
) -> SearchResult:
    """``tamt search``: find a mask of a pre-trained model with a pruning method and write its
    run directory. ``resume=RUN`` continues an interrupted training run (``--resume``)."""
    from tamt_cli import search as searching

    with _session(quiet) as console, _InMemory("tamt.search", tokenizer, console) as memory:
        given = _arguments(fields, memory, models=("model",))
        if resume is not None:
            if memory.saved:
                raise UserError(
                    "tamt.search: resume= continues a run with the model it began with; "
                    "leave model= out"
                )
            run_spec = searching.resumed_spec(
                Path(_where(resume, "resume", "tamt.search")), _path(spec), given
            )
        else:
            run_spec = memory.save(_spec(SearchSpec, search, spec, given))
        method, run_spec = searching.resolve(run_spec)
        out = Path(run_spec.out or ".")
        new = not os.path.lexists(out)
        try:
            raw = searching.run(run_spec, method, console, resume=resume is not None)
        finally:
            if memory.saved and new and out.is_dir():  # kept: a run ended early may resume
                memory.keep(out)
        return SearchResult.of(memory.relabelled(raw))


def extract(
    run: str | os.PathLike[str] | SearchResult | None = None,
    *,
    spec: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    **fields: Any,
) -> ExtractResult:
    """``tamt extract``: an exact-sparsity mask from a search run; with ``export=DIR``, a
    plain Hugging Face folder of the subnetwork. ``overwrite=True`` replaces an existing
    export folder that is a tamt run or export (``--overwrite``)."""
    from tamt_cli import extract as extracting

    with _session(quiet) as console, _InMemory("tamt.extract", None, console) as memory:
        given = _arguments({"run": run, **fields}, memory, places=("run",))
        run_spec = _spec(ExtractSpec, extract, spec, given)
        return ExtractResult.of(extracting.run(run_spec, console, overwrite=overwrite))


def finetune(
    subnetwork: Any = None,
    *,
    spec: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    quiet: bool = False,
    **fields: Any,
) -> FinetuneResult:
    """``tamt finetune``: fine-tune a subnetwork (a search run, an export, a mask file with
    ``model=``, or a model) on a task with its mask held fixed, once per seed (``seeds=[1, 2]``
    or one ``seeds=1``)."""
    from tamt_cli import finetune as finetuning

    with _session(quiet) as console, _InMemory("tamt.finetune", tokenizer, console) as memory:
        given = _arguments(
            {"subnetwork": subnetwork, **fields}, memory, models=("subnetwork", "model")
        )
        if isinstance(given.get("seeds"), int):
            given["seeds"] = [given["seeds"]]
        run_spec = memory.save(_spec(FinetuneSpec, finetune, spec, given))
        raw = finetuning.run(run_spec, console)
        if memory.saved:
            memory.record(Path(raw["out"]))
        return FinetuneResult.of(memory.relabelled(raw))


def evaluate(
    checkpoint: Any = None,
    *,
    spec: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    quiet: bool = False,
    **fields: Any,
) -> EvalResult:
    """``tamt eval``: a fine-tuned checkpoint's metrics on a task (``task=``), or a
    subnetwork's held-out pre-training loss (``objective=``)."""
    from tamt_cli import evaluate as evaluating

    with _session(quiet) as console, _InMemory("tamt.evaluate", tokenizer, console) as memory:
        given = _arguments({"checkpoint": checkpoint, **fields}, memory, models=("checkpoint",))
        run_spec = _spec(EvalSpec, evaluate, spec, given)
        if (run_spec.task is None) == (run_spec.objective is None):
            objectives = "|".join(specs.OBJECTIVES)
            raise UserError(f"tamt.evaluate needs either task=NAME or objective={objectives}")
        run_spec = memory.save(run_spec)
        return EvalResult.of(memory.relabelled(evaluating.run(run_spec, console)))


# -- arguments ------------------------------------------------------------------------------


def _spec(cls: type[S], function: Callable[..., Any], spec_file: Any, given: dict[str, Any]) -> S:
    """The validated spec, as the command builds it from ``--spec`` and its flags; an unknown
    or missing argument is named as the argument it is."""
    call = f"tamt.{function.__name__}"
    for name in given:
        if name not in cls.model_fields:
            raise unknown(f"{call} argument", name, inspect.signature(function).parameters)
    path = _path(spec_file)
    in_file = specs.read_spec_file(path) if path is not None else {}
    for name, info in cls.model_fields.items():
        if info.is_required() and given.get(name) is None and in_file.get(name) is None:
            raise UserError(f"{call} needs {name}= (or a spec= file that gives '{name}')")
    return specs.build(cls, path, given)


def _path(value: Any) -> Path | None:
    return None if value is None else Path(os.fspath(value))


def _where(value: Any, name: str, call: str, loaded: bool = False) -> str:
    """The folder an earlier call's result stands for, or a path given as it is."""
    if isinstance(value, SearchResult):
        return str(value.run)
    if isinstance(value, ExtractResult):
        if value.export is None:
            raise UserError(
                f"{call}: {name}= is an extract without an export; extract with export=DIR, "
                f"or give the run ('{value.run}')"
            )
        return str(value.export)
    if isinstance(value, FinetuneResult):
        return str(value.run)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        return value
    model = ", or a loaded transformers model (with tokenizer=)" if loaded else ""
    raise UserError(
        f"{call}: {name}= takes a path or a hub id, or an earlier call's result{model}; got a "
        f"{type(value).__name__}"
    )


def _arguments(
    values: Mapping[str, Any],
    memory: _InMemory,
    *,
    models: tuple[str, ...] = (),
    places: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The arguments given (None: not given) as a command's flags take them: paths and earlier
    results as text; a loaded model (which the arguments ``models`` take) as ``memory``'s label
    until it is saved; ``places``: arguments that take an earlier result as well as a path."""
    given: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in models and _is_model(value):
            value = memory.take(name, value)
        elif name in models or name in places:
            value = _where(value, name, memory.call, loaded=name in models)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        given[name] = value
    if memory.tokenizer is not None and not memory.saved:
        raise UserError(
            f"{memory.call}: tokenizer= goes with a loaded model; a model id or folder brings "
            "its own tokenizer"
        )
    return given


def _is_model(value: Any) -> bool:
    """Whether ``value`` is a loaded ``transformers`` model (transformers is imported only
    where one was made, so it is looked for, never imported, here)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(value, transformers.PreTrainedModel)


@contextlib.contextmanager
def _session(quiet: bool) -> Iterator[Any]:
    """The stderr console of one call, showing what the command line shows by default (with
    ``quiet``: nothing, as ``-q``); the warning filters and tamt's level are restored after."""
    from tamt_cli import verbosity

    before = verbosity.level()
    with warnings.catch_warnings():
        verbosity.set_level(verbosity.QUIET if quiet else max(before, verbosity.NORMAL))
        try:
            yield verbosity.console()
        finally:
            verbosity.set_level(before)


# -- loaded models --------------------------------------------------------------------------


class _InMemory:
    """The loaded model of one call: given as :attr:`label` while the arguments are checked,
    then saved with its tokenizer to a temporary folder that the command reads, removed
    afterwards unless a search run keeps it. What the run writes names it as :attr:`label` (or
    the run's copy), never by that folder."""

    def __init__(self, call: str, tokenizer: Any, console: Any) -> None:
        self.call, self.tokenizer, self.console = call, tokenizer, console
        self.saved: dict[str, dict[str, Any]] = {}  # argument name → what was given
        self.model: Any = None
        self.folder: Path | None = None  # the temporary folder while it exists
        self.given = ""  # that folder as the command was given it
        self.label = ""

    def __enter__(self) -> _InMemory:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, trace: object) -> None:
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        if isinstance(exc, UserError) and self.saved:  # the message names what was given
            message = str(exc)
            for old in self._old():
                message = message.replace(old, self.label)
            if message != str(exc):
                raise UserError(message) from None

    def take(self, name: str, model: Any) -> str:
        """Take ``model`` for the argument ``name``; returns its :attr:`label`."""
        kind = type(model).__name__
        if self.tokenizer is None:
            raise UserError(
                f"{self.call}: {name}= is a loaded {kind}; give its tokenizer as tokenizer= "
                "too (it is saved with the model for every later step)"
            )
        if not hasattr(self.tokenizer, "save_pretrained"):
            raise UserError(
                f"{self.call}: tokenizer= takes a transformers tokenizer, got a "
                f"{type(self.tokenizer).__name__}"
            )
        if self.saved:
            raise UserError(
                f"{self.call}: give one loaded model; save the other (save_pretrained) and "
                "give its folder"
            )
        self.model = model
        source = str(getattr(model, "name_or_path", "") or "") or None
        if source and Path(source).is_absolute() and _inside(source, tempfile.gettempdir()):
            source = None  # a temporary folder says nothing once it is gone
        self.label = f"<in-memory {kind}>"
        self.saved[name] = {
            "class": kind,
            "tokenizer": type(self.tokenizer).__name__,
            "loaded_from": source,
        }
        return self.label

    def save(self, spec: S) -> S:
        """``spec`` (checked) with the model saved to a temporary folder, in its place."""
        if self.model is None:
            return spec
        name = next(iter(self.saved))
        self.folder = Path(tempfile.mkdtemp(prefix="tamt-model-"))
        self.given = str(self.folder)
        with self.console.status(f"saving the loaded {type(self.model).__name__}"):
            self.model.save_pretrained(self.given)
            self.tokenizer.save_pretrained(self.given)
        return spec.model_copy(update={name: self.given})

    def keep(self, run: Path) -> None:
        """Move the saved model into the search run ``run`` and name it there."""
        assert self.folder is not None
        copy = run / MODEL_COPY
        shutil.move(str(self.folder), str(copy))
        self.label = str(copy)
        self.record(run, skip=copy)
        self.folder = None

    def record(self, root: Path, skip: Path | None = None) -> None:
        """Rewrite the run's specs, manifests and cards under ``root``: the temporary folder
        becomes :attr:`label`; each manifest records the in-memory model."""
        import json

        import yaml

        found = {name: {**entry, "recorded_as": self.label} for name, entry in self.saved.items()}
        for path in sorted(root.rglob("*")):
            if (skip is not None and _inside(str(path), str(skip))) or not path.is_file():
                continue
            if path.stat().st_size > _RECORD_LIMIT:
                continue
            if path.suffix == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
                new = self.relabelled(data)
                if path.name == artifacts.MANIFEST and isinstance(new, dict):
                    new = {**new, "in_memory": found}
                if new != data:
                    files.write_json(path, new)
            elif path.suffix in {".yaml", ".yml"}:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                new = self.relabelled(data)
                if new != data:
                    files.write_text(path, yaml.safe_dump(new, sort_keys=False))
            elif path.suffix == ".md":
                text = original = path.read_text(encoding="utf-8")
                for old in self._old():
                    text = text.replace(old, self.label)
                if text != original:
                    files.write_text(path, text)

    def relabelled(self, value: Any) -> Any:
        """``value`` with every mention of the temporary folder (as a whole string or the start
        of a path) in terms of :attr:`label`."""
        if not self.given:
            return value
        if isinstance(value, str):
            for old in self._old():
                if value == old or value.startswith(old + os.sep):
                    return self.label + value[len(old) :]
            return value
        if isinstance(value, dict):
            return {k: self.relabelled(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.relabelled(v) for v in value]
        return value

    def _old(self) -> list[str]:
        """The temporary folder as it was given and resolved, longest first."""
        if not self.given:
            return []
        return sorted({self.given, str(Path(self.given).resolve())}, key=len, reverse=True)


def _inside(path: str, folder: str) -> bool:
    resolved, root = Path(path).resolve(), Path(folder).resolve()
    return resolved == root or root in resolved.parents


# -- signatures: the spec fields as keyword arguments, for help() and completion ------------


def _signature(function: Callable[..., Any], cls: type[BaseModel]) -> inspect.Signature:
    """``function``'s signature with ``**fields`` spelled out as ``cls``'s fields, each with
    its default (required ones have none; a ``spec=`` file may give them)."""
    own = inspect.signature(function)
    first = [p for p in own.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    rest = [p for p in own.parameters.values() if p.kind is p.KEYWORD_ONLY]
    taken = {p.name for p in first}
    fields = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty
            if info.is_required()
            else info.get_default(call_default_factory=True),
            annotation=info.annotation,
        )
        for name, info in cls.model_fields.items()
        if name not in taken
    ]
    return own.replace(parameters=[*first, *fields, *rest])


for _function, _cls in (
    (search, SearchSpec),
    (extract, ExtractSpec),
    (finetune, FinetuneSpec),
    (evaluate, EvalSpec),
):
    setattr(_function, "__signature__", _signature(_function, _cls))  # noqa: B010
