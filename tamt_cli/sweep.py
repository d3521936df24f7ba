"""`tamt sweep`: a grid of methods × sparsities × tasks × seeds, run cell by cell.

Every cell is an ordinary run made through the same functions as `tamt search`, `tamt finetune`
and `tamt eval --objective`, with a spec built from the grid. A sweep directory::

    sweeps/<grid>/
    ├── grid.yaml        the grid as last run
    ├── sweep.json       every cell: kind, what it is, its run, status, error, seconds
    ├── search/<method>-s<sparsity>/                a search run (one per method × sparsity)
    ├── heldout-<method>-s<sparsity>-<objective>.json   what `tamt eval --objective --json` prints
    └── finetune/<task>-<method>-s<sparsity>-seed<N>/   a fine-tuning run, one seed
        (the dense model: finetune/<task>-dense-seed<N>, heldout-dense-<objective>.json)

What is on disk decides what is done: a complete search or fine-tuning run (its manifest says
so), a held-out loss file that holds one (an empty or unreadable one is run again). Running a
sweep again skips those, resumes a search that was interrupted, and re-runs failed cells; a cell
whose settings changed since it ran is refused, so a sweep directory never mixes two settings
under one name.

The directory follows the rule of every output folder (:func:`check_dir`): it is made whole,
with its grid and index, under a temporary name (:func:`tamt_cli.files.staged_dir`), or it is a
tamt sweep's own (its index) or empty; never a folder of anything else, a symbolic link, or the
folder holding the grid file given. One process runs a sweep directory at a time, or one
process per shard (:func:`claim`).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from rich.console import Console

from tamt_cli import __version__, artifacts, files, specs, verbosity
from tamt_cli.errors import UserError, first_line
from tamt_cli.progress import duration
from tamt_cli.specs import EvalSpec, FinetuneSpec, SearchSpec, Spec, check_seeds, check_sparsity

INDEX_FORMAT = "tamt.sweep"
INDEX_VERSION = 1

#: spec fields the grid itself sets; a section naming one is refused
SET_BY_GRID = {
    "search": ("method", "sparsity", "model", "out", "label"),
    "finetune": ("subnetwork", "task", "model", "seeds", "out", "data_dir"),
    "heldout": ("checkpoint", "task", "step", "data_dir", "split"),
}


class CellsFailed(UserError):
    """Some cells of a sweep failed (each is recorded with its error); exit code 1."""

    exit_code = 1


class GridSpec(Spec):
    """A sweep: methods × sparsities searched once each, fine-tuned on tasks × seeds."""

    model: str = Field("bert-base-uncased", description="hub id, local folder, or `demo`")
    methods: list[str] = Field(min_length=1, description="pruning methods (any registered)")
    sparsities: list[float] = Field(min_length=1, description="target sparsities")
    tasks: list[str] = Field(default_factory=list, description="downstream tasks")
    seeds: list[int] = Field(default_factory=lambda: [1], description="fine-tuning seeds")
    dense: bool = Field(True, description="also fine-tune (and score) the dense model")
    search: dict[str, Any] = Field(default_factory=dict, description="search fields, all methods")
    methods_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per method: search fields, or else options of the method",
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named settings of a method, usable in methods: {name: {method: M, "
        "search fields or options of M}}; reports name the subnetwork after the variant",
    )
    finetune: dict[str, Any] = Field(default_factory=dict, description="fine-tuning fields")
    data: dict[str, Path] = Field(default_factory=dict, description="per task: local data dir")
    heldout: dict[str, Any] | None = Field(
        None, description="held-out pre-training loss: objective (one or a list) and eval fields"
    )
    structures: list[specs.Structure] = Field(
        default_factory=lambda: list[specs.Structure](["weights"]),
        description="what each method prunes (--structure): every method is searched with each; "
        "a structured subnetwork is named <method>-<structure>",
    )
    out: Path | None = Field(None, description="sweep directory [sweeps/<grid file name>]")

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, value: list[float]) -> list[float]:
        for sparsity in value:
            check_sparsity(sparsity)
        return _unique(value, "sparsities")

    @field_validator("methods", "tasks", "structures")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _unique(value, "names")

    _seeds = field_validator("seeds")(lambda v: check_seeds(v))


def _unique(value: list[Any], name: str) -> list[Any]:
    if len(set(value)) != len(value):
        raise ValueError(f"{name} repeat, got {value}")
    return value


@dataclass
class Cell:
    """One unit of work: a search, a held-out loss, or one fine-tuning seed."""

    id: str  # also the run's path relative to the sweep directory
    kind: Literal["search", "heldout", "finetune"]
    spec: Any  # SearchSpec | EvalSpec | FinetuneSpec
    method: str  # a method name, or "dense"
    sparsity: float | None
    needs: str | None = None  # the search cell it depends on
    task: str | None = None
    seed: int | None = None
    objective: str | None = None
    status: str = "pending"  # pending | partial | done | failed | skipped
    error: str | None = None
    seconds: float | None = None
    note: str | None = None  # why a cell that looks done on disk runs again
    method_obj: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        subnetwork = self.method if self.sparsity is None else f"{self.method} s{self.sparsity:g}"
        if self.kind == "search":
            return f"search {subnetwork}"
        if self.kind == "heldout":
            return f"held-out {self.objective} loss of {subnetwork}"
        return f"finetune {self.task} {subnetwork} seed {self.seed}"

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "sparsity": self.sparsity,
            "task": self.task,
            "seed": self.seed,
            "objective": self.objective,
            "needs": self.needs,
            "path": self.id,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
            "spec": comparable(self.spec),
        }


@dataclass
class Plan:
    grid: GridSpec
    out: Path
    cells: list[Cell]

    def cell(self, cell_id: str) -> Cell:
        return next(c for c in self.cells if c.id == cell_id)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.cells:
            counts[c.status] = counts.get(c.status, 0) + 1
        return counts

    def index(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "tamt_version": __version__,
            "updated": artifacts.timestamp(),
            "out": str(self.out),
            "grid": self.grid.model_dump(mode="json"),
            "counts": self.counts(),
            "cells": [c.record() for c in self.cells],
        }


# -- planning -------------------------------------------------------------------------------


def load_grid(path: Path) -> GridSpec:
    path = Path(path)
    if path.is_dir():
        if is_sweep(path):
            given = shlex.quote(str(path))
            raise UserError(
                f"grid file '{path}' is a sweep directory; tamt sweep takes a grid file (YAML, "
                f"JSON or TOML): tamt sweep GRID --out {given} continues this sweep, "
                f"tamt report {given} reads its results"
            )
        raise UserError(
            f"grid file '{path}' is a directory; tamt sweep takes a grid file (YAML, JSON or TOML)"
        )
    if not path.is_file():
        raise UserError(f"grid file '{path}' does not exist")
    return specs.build(GridSpec, path, {})


def plan(grid_file: Path, out: Path | None = None) -> Plan:
    """Every cell of the grid with its validated spec and its status on disk; checks everything
    that can be checked without computing (names, fields, options, model, data)."""
    from tamt_cli import registry

    grid = load_grid(grid_file)
    sweep_dir = Path(out or grid.out or Path(artifacts.SWEEPS) / grid_file.stem)
    where = "--out" if out else "the grid's out" if grid.out else "the sweep directory"
    for section, reserved in SET_BY_GRID.items():
        given = getattr(grid, section) or {}
        for name in reserved:
            if name in given:
                raise UserError(
                    f"grid {grid_file}: '{section}.{name}' is set by the grid itself; remove it"
                )
    methods = registry.methods()
    _check_variants(grid, grid_file, methods)
    for name in grid.methods:
        if name not in grid.variants:
            methods.get(name)  # unknown names: one line with "did you mean"
    used = {_base(grid, name) for name in grid.methods}
    for name in grid.methods_options:
        if name not in used:
            raise UserError(
                f"grid {grid_file}: methods_options names '{name}', which is not in methods "
                f"({', '.join(grid.methods)})"
            )
    _check_tasks(grid, grid_file)
    cells: list[Cell] = []
    for task in grid.tasks if grid.dense else []:
        cells += _finetune_cells(grid, task, None, artifacts.DENSE, None)
    objectives = _objectives(grid, grid_file)
    if grid.dense:
        cells += [_heldout_cell(grid, artifacts.DENSE, None, None, o) for o in objectives]
    for method, structure in _subnetworks(grid, grid_file):
        name = method if structure == "weights" else f"{method}-{structure}"
        for sparsity in grid.sparsities:
            search = _search_cell(grid, method, sparsity, structure)
            cells.append(search)
            cells += [_heldout_cell(grid, name, sparsity, search, o) for o in objectives]
            for task in grid.tasks:
                cells += _finetune_cells(grid, task, search, name, sparsity)
    for cell in cells:
        cell.spec = _place(cell, sweep_dir)
    check_dir(sweep_dir, grid_file, where)
    plan_ = Plan(grid, sweep_dir, cells)
    _read_statuses(plan_)
    return plan_


def _subnetworks(grid: GridSpec, grid_file: Path) -> list[tuple[str, str]]:
    """Every method (or variant) with every structure of the grid; with ``structures`` given,
    neither a variant nor ``methods_options`` may set a structure of its own."""
    if "structures" in grid.model_fields_set:
        settings = {**grid.variants, **grid.methods_options, "search": grid.search}
        for name, fields in settings.items():
            if "structure" in (fields or {}):
                raise UserError(
                    f"grid {grid_file}: '{name}' sets structure, which structures sets for "
                    "every method; remove one of the two"
                )
    return [(method, structure) for method in grid.methods for structure in grid.structures]


def _base(grid: GridSpec, name: str) -> str:
    """The registered method behind a name of ``methods`` (a variant's, or the name itself)."""
    return str(grid.variants[name]["method"]) if name in grid.variants else name


def _check_variants(grid: GridSpec, grid_file: Path, methods: Any) -> None:
    import re

    for name, settings in grid.variants.items():
        where = f"grid {grid_file}: variant '{name}'"
        if not re.match(specs.LABEL_PATTERN, name) or len(name) > specs.LABEL_MAX:
            raise UserError(
                f"{where}: a name is letters, digits and . _ + - (at most {specs.LABEL_MAX})"
            )
        if name in methods.names():
            raise UserError(f"{where} has the name of a method; call it something else")
        if not isinstance(settings, dict) or "method" not in settings:
            raise UserError(f"{where} names no method: give it method: NAME")
        if "label" in settings:
            raise UserError(f"{where}: 'label' is the variant's name; remove it")
        methods.get(str(settings["method"]))
        if name not in grid.methods:
            raise UserError(
                f"{where} is not in methods ({', '.join(grid.methods)}); add it or remove it"
            )


def _check_tasks(grid: GridSpec, grid_file: Path) -> None:
    from tamt_cli import hub
    from tamt_cli.registry import create_task

    options = grid.finetune.get("task_options") or {}
    for task in grid.tasks:
        create_task(task, options)
    for task, folder in grid.data.items():
        if task not in grid.tasks:
            raise UserError(
                f"grid {grid_file}: data names task '{task}', which is not in tasks "
                f"({', '.join(grid.tasks) or 'none'})"
            )
        if not folder.is_dir():
            raise UserError(
                f"grid {grid_file}: data dir '{folder}' of task '{task}' does not exist"
            )
    missing = [t for t in grid.tasks if t not in grid.data]
    if missing and not hub.usable():
        raise UserError(
            f"grid {grid_file}: no data dir for task '{missing[0]}' and the Hugging Face hub is "
            f"unreachable; add data: {{{missing[0]}: DIR}}"
        )


def _objectives(grid: GridSpec, grid_file: Path) -> list[str]:
    if grid.heldout is None:
        return []
    given = grid.heldout.get("objective", "kd")
    objectives = [given] if isinstance(given, str) else list(given or [])
    if not objectives:
        raise UserError(f"grid {grid_file}: heldout.objective names no objective")
    return objectives


def _search_cell(grid: GridSpec, method: str, sparsity: float, structure: str) -> Cell:
    """The search of ``method`` (a method or a variant's name) at ``sparsity`` with
    ``structure``: the grid's search fields, then the method's ``methods_options``, then the
    variant's settings."""
    from tamt_cli import search as searching

    base = _base(grid, method)
    name = method if structure == "weights" else f"{method}-{structure}"
    layers = [grid.methods_options.get(base, {})]
    if method in grid.variants:
        layers.append({k: v for k, v in grid.variants[method].items() if k != "method"})
    fields = set(SearchSpec.model_fields)
    shared = dict(grid.search)
    shared_options = dict(shared.pop("options", None) or {})
    data: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for layer in layers:
        data.update({k: v for k, v in layer.items() if k in fields and k != "options"})
        options.update(layer.get("options") or {})
        options.update({k: v for k, v in layer.items() if k not in fields})
    data.update(method=base, sparsity=sparsity, model=grid.model, out=Path("."))
    if structure != "weights":
        data["structure"] = structure
    if name != base:
        data["label"] = name
    where = f"grid, search cell {name} s{sparsity:g}"
    if data.get("budget", shared.get("budget")) == "paper":
        # the shared fields are the grid's defaults for every method: under the paper's budget
        # they yield to its values; a variant or methods_options entry sets its own
        budget_fields, budget_options = _budget_values(base, {**shared, **data}, where)
        shared = {k: v for k, v in shared.items() if k not in budget_fields}
        shared_options = {k: v for k, v in shared_options.items() if k not in budget_options}
    data = searching.trackers_where_trained({**shared, **data})
    options = {**shared_options, **options}
    if options:
        data["options"] = options
    spec = specs.validate(SearchSpec, data, where)
    try:
        method_obj, spec = searching.resolve(spec)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    cell_id = artifacts.sweep_search(artifacts.sweep_subnetwork(name, sparsity))
    return Cell(cell_id, "search", spec, name, sparsity, method_obj=method_obj)


def _budget_values(method: str, data: dict[str, Any], where: str) -> tuple[set[str], set[str]]:
    """The search fields and the options that ``--budget paper`` sets for ``method``."""
    from tamt_cli import registry

    hook = getattr(registry.methods().get(method), "paper_budget", None)
    if hook is None:  # the search refuses the budget, with the reason
        return set(), set()
    fields, options = hook(specs.validate(SearchSpec, data, where))
    return set(fields), set(options)


def _heldout_cell(
    grid: GridSpec, method: str, sparsity: float | None, search: Cell | None, objective: str
) -> Cell:
    data = {k: v for k, v in (grid.heldout or {}).items() if k != "objective"}
    data.update(objective=objective, checkpoint=grid.model)
    # one corpus and length for every row, the dense model's too (not each search run's own)
    data.setdefault("corpus", specs.OBJECTIVE_CORPUS)
    data.setdefault("max_length", specs.OBJECTIVE_MAX_LENGTH)
    data.setdefault("held_out", specs.OBJECTIVE_HELD_OUT)
    name = artifacts.sweep_subnetwork(method, sparsity)
    spec = specs.validate(EvalSpec, data, f"grid, heldout of {name}")
    return Cell(
        artifacts.sweep_heldout(name, objective),
        "heldout",
        spec,
        method,
        sparsity,
        needs=search.id if search else None,
        objective=objective,
    )


def _finetune_cells(
    grid: GridSpec, task: str, search: Cell | None, method: str, sparsity: float | None
) -> list[Cell]:
    name = artifacts.sweep_subnetwork(method, sparsity)
    cells = []
    for seed in grid.seeds:
        data = dict(grid.finetune)
        data.update(subnetwork=grid.model, task=task, seeds=[seed])
        if task in grid.data:
            data["data_dir"] = grid.data[task]
        spec = specs.validate(FinetuneSpec, data, f"grid, finetune {task} {name} seed {seed}")
        cells.append(
            Cell(
                artifacts.sweep_finetune(task, name, seed),
                "finetune",
                spec,
                method,
                sparsity,
                needs=search.id if search else None,
                task=task,
                seed=seed,
            )
        )
    return cells


def _place(cell: Cell, sweep_dir: Path) -> Any:
    """The cell's spec with its paths inside the sweep directory."""
    path = sweep_dir / cell.id
    subject = str(sweep_dir / cell.needs) if cell.needs else None
    if cell.kind == "search":
        return cell.spec.model_copy(update={"out": path})
    if cell.kind == "heldout":
        return cell.spec.model_copy(update={"checkpoint": subject or cell.spec.checkpoint})
    return cell.spec.model_copy(update={"out": path, "subnetwork": subject or cell.spec.subnetwork})


PATH_FIELDS = ("out", "subnetwork", "checkpoint")
#: fields that say what a complete run keeps on disk, not what it computes: a cell that ran
#: with another value is still done (searches of tamt 0.2 saved keep_checkpoints 1)
KEEPING_FIELDS = ("keep_checkpoints", "report_to")  # report_to: what watched it run


def comparable(spec: Any) -> dict[str, Any]:
    """A spec as JSON without the fields that only say where things are, ``auto`` mixed
    precision resolved (a run records the precision it used)."""
    from tamt_cli import precision

    dumped = spec.model_dump(mode="json")
    if dumped.get("mixed_precision") is not None:
        dumped["mixed_precision"] = precision.resolve(dumped["mixed_precision"])
    return {k: v for k, v in dumped.items() if k not in PATH_FIELDS}


def _read_index(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """The cells the sweep's index records, by id (none without an index)."""
    from tamt_cli import records

    path = sweep_dir / artifacts.SWEEP_INDEX
    if not path.is_file():
        return {}
    try:
        index = records.load(path, records.SweepIndex)
    except UserError as exc:
        raise UserError(f"{exc}; remove it to rebuild the sweep's index") from None
    return {cell.id: records.as_dict(cell) for cell in index.cells}


def _read_statuses(plan_: Plan) -> None:
    """Every cell's status as the disk and the index have it now."""
    recorded = _read_index(plan_.out)
    for cell in plan_.cells:
        cell.status, cell.error, cell.seconds, cell.note = "pending", None, None, None
        _status(cell, plan_.out, recorded.get(cell.id))


def _status(cell: Cell, sweep_dir: Path, recorded: dict[str, Any] | None) -> None:
    """Set ``cell.status`` from the disk (and a recorded failure); refuse a cell that already
    ran with other settings."""
    path = sweep_dir / cell.id
    ran: dict[str, Any] | None = None
    if cell.kind == "heldout":
        problem = _heldout_problem(path, cell.objective)
        if problem is None:
            cell.status = "done"
            ran = (recorded or {}).get("spec")
        elif os.path.lexists(path):
            cell.note = f"{cell.id} {problem}; running it again"
    elif path.exists():
        spec_file = path / artifacts.SPEC_FILE
        if spec_file.is_file():
            saved = specs.validate(type(cell.spec), specs.read_spec_file(spec_file), str(spec_file))
            ran = comparable(saved)
        manifest = _manifest_or_none(path)
        # a fine-tuning run made before runs said their status is complete
        default = "complete" if cell.kind == "finetune" else None
        complete = (manifest or {}).get("status", default) == "complete"
        cell.status = "done" if complete and manifest else "partial"
    if ran is not None:
        now = comparable(cell.spec)
        # fields this tamt has and the run's did not (a newer version's) are not compared
        changed = [
            k for k in sorted(ran) if k in now and k not in KEEPING_FIELDS and ran[k] != now[k]
        ]
        if changed:
            key = changed[0]
            raise UserError(
                f"the grid changes {key} of {cell.label} ({ran.get(key)!r} → {now.get(key)!r}), "
                f"which already ran in '{path}'; restore the grid, or sweep into another --out"
            )
    if cell.status == "pending" and recorded and recorded.get("status") in {"failed", "skipped"}:
        cell.status = recorded["status"]
        cell.error = recorded.get("error")
    if cell.status == "done" and recorded:
        cell.seconds = recorded.get("seconds")


def _manifest_or_none(path: Path) -> dict[str, Any] | None:
    """The manifest of a cell's run; None while it has none (a run stopped before writing it).
    A damaged one is an error naming it."""
    if not (path / artifacts.MANIFEST).is_file():
        return None
    return artifacts.read_manifest(path)


def _heldout_problem(path: Path, objective: str | None) -> str | None:
    """What keeps ``path`` from holding the held-out ``objective`` loss as `tamt eval
    --objective --json` prints it (None: nothing). A batch job killed while a shell redirected
    its output into the file leaves it empty or cut short."""
    import json

    from tamt_cli import records

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "is empty or unreadable"
    try:
        result = records.check(path, data, records.HeldOut)
    except UserError:
        return f"holds no held-out {objective} loss"
    if result.objective == objective and result.loss is not None:
        return None
    return f"holds no held-out {objective} loss"


# -- the sweep directory --------------------------------------------------------------------


def is_sweep(path: Path) -> bool:
    """Whether the folder ``path`` is a tamt sweep's (it holds a sweep index)."""
    return (Path(path) / artifacts.SWEEP_INDEX).is_file()


def _own(name: str) -> bool:
    """Whether ``name`` is one of the lock files a sweep keeps in its directory."""
    name = name.removesuffix(artifacts.HOLDER_SUFFIX)
    return name in {files.LOCK_FILE, artifacts.SWEEP_LOCK} or bool(_shard_of_lock(name))


def check_dir(sweep_dir: Path, grid_file: Path, where: str) -> None:
    """Refuse, before any work, a sweep directory that the rule of output folders forbids: a
    symbolic link, the folder holding the grid file given, a file, or a folder that holds
    anything but a tamt sweep (a new folder is made whole by :func:`hold`). ``where`` names
    what gave the folder (``--out``)."""
    path = files.absolute(sweep_dir)
    if path.is_symlink():
        raise UserError(
            f"{where} '{sweep_dir}' is a symbolic link; a sweep is written only into the "
            "folder itself: name it"
        )
    if path.resolve() in Path(grid_file).resolve().parents:
        raise UserError(
            f"{where} '{sweep_dir}' holds the grid file given ('{grid_file}'), and a sweep "
            "writes its own grid.yaml: keep the grid outside the sweep directory, or name "
            "another folder"
        )
    if not os.path.lexists(path):
        _wait_while_made(path)
    if not os.path.lexists(path):
        artifacts.check_output(sweep_dir, flag=where, sources=(grid_file,))
    elif not path.is_dir():
        raise UserError(f"{where} '{sweep_dir}' is not a folder; name a folder for the sweep")
    elif not is_sweep(path) and not all(_own(p.name) for p in path.iterdir()):
        raise UserError(
            f"{where} '{sweep_dir}' is not a tamt sweep (it has no {artifacts.SWEEP_INDEX}) "
            "and not empty; a sweep is written into a new or empty folder or its own: name "
            "another folder"
        )


def _wait_while_made(path: Path, seconds: float = 10.0) -> None:
    """Wait while another process makes the sweep directory ``path`` (its temporary folder is
    beside it): processes started together, shards, share the folder one of them makes."""
    deadline = time.monotonic() + seconds
    while not os.path.lexists(path) and files.busy(path) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def hold(plan_: Plan, shard: tuple[int, int] | None) -> Iterator[None]:
    """The sweep directory of ``plan_`` for this process while the block runs: made whole if
    new (its grid and index in a temporary folder renamed into place), taken with
    :func:`claim`, and the cells' statuses read again (another process may have run some)."""
    out = plan_.out
    if not os.path.lexists(out):
        try:
            with files.staged_dir(out) as stage:
                files.write_text(stage / artifacts.SWEEP_GRID, plan_.grid.to_yaml())
                files.write_json(stage / artifacts.SWEEP_INDEX, plan_.index())
        except UserError:
            if not is_sweep(out):
                raise
            # another process (a shard started with this one) made it meanwhile
    lock = claim(out, shard)
    try:
        if not is_sweep(out):  # an empty folder, from now on a sweep's
            with _index_lock(out):
                files.write_text(out / artifacts.SWEEP_GRID, plan_.grid.to_yaml())
                files.write_json(out / artifacts.SWEEP_INDEX, plan_.index())
        _read_statuses(plan_)
        yield
    finally:
        release(lock)


def _lock_name(shard: tuple[int, int] | None) -> str:
    return files.LOCK_FILE if shard is None else artifacts.SWEEP_SHARD_LOCK.format(*shard)


def _shard_of_lock(name: str) -> str | None:
    """``K/N`` of a shard's lock file name; None for any other name."""
    import re

    pattern = re.escape(artifacts.SWEEP_SHARD_LOCK).replace(r"\{\}", r"(\d+)")
    found = re.fullmatch(pattern, name)
    return f"{found[1]}/{found[2]}" if found else None


def claim(out: Path, shard: tuple[int, int] | None) -> Any:
    """Take the sweep directory ``out`` for this process until :func:`release`: a sweep
    without --shard alone, shard K/N beside the other shards only. A directory another live
    process holds is refused, naming that process."""
    mine = _lock_name(shard)
    lock = files.try_lock(out / mine)
    if lock is None:
        raise UserError(_in_use(out, mine))
    try:
        if shard is None:
            rivals = sorted(p.name for p in out.iterdir() if _shard_of_lock(p.name))
        else:
            rivals = [files.LOCK_FILE]
        for name in rivals:
            if _held(out / name):
                raise UserError(_in_use(out, name))
        holder = f"{os.getpid()} {_host()}\n"
        files.write_text(out / (mine + artifacts.HOLDER_SUFFIX), holder)
    except BaseException:
        files.release(lock, remove=True)
        raise
    return lock


def release(lock: Any) -> None:
    """Let go of the sweep directory taken with :func:`claim`."""
    import contextlib

    with contextlib.suppress(OSError):
        os.unlink(lock.lock_file + artifacts.HOLDER_SUFFIX)
    files.release(lock, remove=True)


def _host() -> str:
    import socket

    return socket.gethostname() or "this machine"


def _held(lock_file: Path) -> bool:
    """Whether a live process holds ``lock_file`` (an absent file: no)."""
    if not lock_file.is_file():
        return False
    lock = files.try_lock(lock_file)
    files.release(lock)
    return lock is None


def _in_use(out: Path, lock_name: str) -> str:
    shard = _shard_of_lock(lock_name)
    who = f"tamt sweep --shard {shard}" if shard else "another tamt sweep"
    return (
        f"sweep directory '{out}' is in use by {who} ({_holder(out / lock_name)}); wait for it "
        "to end, or run the sweep's parts side by side with --shard K/N"
    )


def _holder(lock_file: Path) -> str:
    """``pid N on HOST`` of the process holding ``lock_file``, as it recorded itself."""
    record = lock_file.with_name(lock_file.name + artifacts.HOLDER_SUFFIX)
    for _ in range(40):  # it writes the record just after taking the lock
        try:
            pid, host = record.read_text(encoding="utf-8").split()
            return f"pid {int(pid)} on {host}"
        except (OSError, ValueError):
            time.sleep(0.05)
    return "its process id unknown"


# -- running --------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` → (K, N), 1 ≤ K ≤ N."""
    k, sep, n = text.partition("/")
    if sep and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n):
        return int(k), int(n)
    raise UserError(f"--shard takes K/N with 1 ≤ K ≤ N, e.g. 1/2; got '{text}'")


def shard_of(plan_: Plan, shard: tuple[int, int] | None) -> set[str]:
    """The ids of the cells of shard ``K/N``: the K-th of every N groups, a group being a search
    with every cell that reads it (the dense model's cells are one group), in grid order."""
    if shard is None:
        return {c.id for c in plan_.cells}
    k, n = shard

    def group(c: Cell) -> str:
        return c.needs or (c.id if c.kind == "search" else artifacts.DENSE)

    groups = list(dict.fromkeys(group(c) for c in plan_.cells))  # in grid order
    mine = set(groups[k - 1 :: n])
    return {c.id for c in plan_.cells if group(c) in mine}


def run(
    plan_: Plan,
    console: Console,
    *,
    fail_fast: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Run every cell that is not done (of ``shard`` K/N only, when given), in dependency
    order, holding the sweep directory (:func:`hold`); returns the index."""
    with hold(plan_, shard):
        return _run(plan_, console, fail_fast=fail_fast, shard=shard)


def _run(
    plan_: Plan, console: Console, *, fail_fast: bool, shard: tuple[int, int] | None
) -> dict[str, Any]:
    out = plan_.out
    mine = shard_of(plan_, shard)

    def save() -> None:
        # shards share the index: each writes its own cells' records into the file on disk
        with _index_lock(out):
            index = plan_.index()
            if shard is not None:
                recorded = _read_index(out)
                index["cells"] = [
                    c if c["id"] in mine else recorded.get(c["id"], c) for c in index["cells"]
                ]
            files.write_json(out / artifacts.SWEEP_INDEX, index)

    with _index_lock(out):
        files.write_text(out / artifacts.SWEEP_GRID, plan_.grid.to_yaml())
    save()
    todo = [c for c in plan_.cells if c.status != "done" and c.id in mine]
    total, finished = len(mine), len(mine) - len(todo)
    timings: dict[str, list[float]] = {}
    for cell in todo:
        needed = plan_.cell(cell.needs) if cell.needs else None
        if needed is not None and needed.status != "done":
            cell.status, cell.error = "skipped", f"{needed.label} did not finish"
            finished += 1
            _line(console, finished, total, cell, "skipped", todo, timings)
            save()
            continue
        if cell.note:
            verbosity.note(console, cell.note)
        console.print(f"[dim]\\[{finished + 1}/{total}] {cell.label} …[/dim]")
        t0 = time.perf_counter()
        try:
            _run_cell(cell, out, console)
        except KeyboardInterrupt:
            cell.status, cell.error = "pending", None
            save()
            raise
        except Exception as exc:
            cell.status, cell.error = "failed", first_line(exc)
            if not isinstance(exc, UserError):
                cell.error = f"{type(exc).__name__}: {cell.error}"
        else:
            cell.status, cell.error = "done", None
        cell.seconds = round(time.perf_counter() - t0, 1)
        timings.setdefault(cell.kind, []).append(cell.seconds)
        finished += 1
        _line(console, finished, total, cell, cell.status, todo, timings)
        save()
        if cell.status == "failed" and fail_fast:
            index_file = out / artifacts.SWEEP_INDEX
            raise CellsFailed(f"{cell.label} failed: {cell.error} (--fail-fast; see {index_file})")
    index = plan_.index()
    failed = [c for c in plan_.cells if c.status in {"failed", "skipped"} and c.id in mine]
    if failed:
        raise CellsFailed(
            f"{len(failed)} of {len(mine)} cells did not finish, first {failed[0].label}: "
            f"{failed[0].error}; run the sweep again to retry them "
            f"(see {out / artifacts.SWEEP_INDEX})"
        )
    return index


@contextmanager
def _index_lock(out: Path) -> Iterator[None]:
    """Serialises writes of the index by the processes of one sweep (its shards)."""
    from filelock import FileLock

    with FileLock(str(out / artifacts.SWEEP_LOCK)):
        yield


def _run_cell(cell: Cell, out: Path, console: Console) -> None:
    if cell.kind == "search":
        from tamt_cli import search as searching

        if cell.status == "partial" and not getattr(cell.method_obj, "trains", False):
            raise UserError(f"'{cell.spec.out}' is an incomplete one-shot run; remove it")
        searching.run(cell.spec, cell.method_obj, console, resume=cell.status == "partial")
    elif cell.kind == "heldout":
        from tamt_cli import evaluate

        result = evaluate.run_objective(cell.spec, console)
        files.write_json(out / cell.id, result)
    else:
        from tamt_cli import finetune

        finetune.run(cell.spec, console, resume=cell.status == "partial")


def _line(
    console: Console,
    finished: int,
    total: int,
    cell: Cell,
    status: str,
    todo: list[Cell],
    timings: dict[str, list[float]],
) -> None:
    colour = {"done": "green", "failed": "red", "skipped": "yellow"}.get(status, "white")
    took = f" in {duration(cell.seconds)}" if cell.seconds is not None else ""
    error = f": {cell.error}" if cell.error else ""
    eta = _eta(todo, timings)
    console.print(
        f"\\[{finished}/{total}] [{colour}]{status}[/{colour}] {cell.label}{took}{error}"
        + (f" · ETA {duration(eta)}" if eta else "")
    )


def _eta(todo: list[Cell], timings: dict[str, list[float]]) -> float | None:
    """Seconds left: each remaining cell at the mean time of finished cells of its kind (of all
    finished cells when none of its kind has finished)."""
    every = [seconds for v in timings.values() for seconds in v]
    if not every:
        return None
    left = [c for c in todo if c.status in {"pending", "partial"}]
    means = {k: sum(v) / len(v) for k, v in timings.items()}
    overall = sum(every) / len(every)
    return sum(means.get(c.kind, overall) for c in left)


# -- what would run -------------------------------------------------------------------------


def listing(plan_: Plan) -> list[dict[str, Any]]:
    """The cells, for --dry-run: what each is and whether it is already done."""
    return [
        {k: v for k, v in c.record().items() if k != "spec"} | {"label": c.label}
        for c in plan_.cells
    ]


def render_listing(plan_: Plan, console: Console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"Sweep {plan_.out}: {len(plan_.cells)} cells",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("cell", "status", "run", "error"):
        table.add_column(col)
    colours = {"done": "green", "failed": "red", "skipped": "yellow", "partial": "cyan"}
    for c in plan_.cells:
        colour = colours.get(c.status, "white")
        table.add_row(c.label, f"[{colour}]{c.status}[/{colour}]", c.id, c.error or "")
    console.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(plan_.counts().items()))
    console.print(counts)


def commands(plan_: Plan) -> list[str]:
    """One plain `tamt` command line per cell still to run: searches first (every other cell
    depends on one of them), then held-out losses, then fine-tuning seed by seed (the first
    seed of every subnetwork before the second), so that a batch cut short is still a table.
    Every line writes its result itself, whole or not at all (`--out`, `--json-out`)."""
    order = {"search": 0, "heldout": 1, "finetune": 2}
    todo = [c for c in plan_.cells if c.status != "done"]
    todo.sort(key=lambda c: (order[c.kind], c.seed or 0))
    return [command(c, plan_.out) for c in todo]


def command(cell: Cell, sweep_dir: Path) -> str:
    spec = cell.spec
    if cell.kind in {"search", "finetune"} and cell.status == "partial":
        return f"tamt {cell.kind} --resume {shlex.quote(str(spec.out))}"
    set_fields = spec.model_dump(mode="json", exclude_unset=True)
    set_fields.update({k: v for k, v in spec.model_dump(mode="json").items() if k in PATH_FIELDS})
    words = ["tamt", {"search": "search", "finetune": "finetune", "heldout": "eval"}[cell.kind]]
    positional = {"finetune": "subnetwork", "heldout": "checkpoint"}.get(cell.kind)
    if positional:
        words.append(str(set_fields.pop(positional)))
    for name, value in set_fields.items():
        words += _flag(name, value)
    if cell.kind == "heldout":
        words += ["--json-out", str(sweep_dir / cell.id)]
    return " ".join(shlex.quote(w) for w in words)


def _flag(name: str, value: Any) -> list[str]:
    import json

    if value is None:
        return []
    flag = "--" + name.replace("_", "-")
    if name in {"options", "task_options"}:
        repeat = "-o" if name == "options" else "--task-option"
        return [w for k, v in value.items() for w in (repeat, f"{k}={_scalar(v)}")]
    if name == "seeds":
        return ["--seeds", ",".join(str(seed) for seed in value)]
    if name == "report_to":  # comma-separated on the command line; none for an empty list
        return [flag, ",".join(value) or "none"]
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, (dict, list)):
        return [flag, json.dumps(value)]
    return [flag, str(value)]


def _scalar(value: Any) -> str:
    import json

    if isinstance(value, str):
        return value
    return json.dumps(value)
