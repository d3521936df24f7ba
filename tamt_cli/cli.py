"""The `tamt` command line: parse flags into a spec, call one function per command.

Heavy libraries (torch, transformers, datasets) are imported only inside the commands that
compute, so `tamt --help`, `tamt plugins` and `--dry-run` answer at once.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from tamt_cli import __version__
from tamt_cli.errors import Interrupted, UserError, environment_fault


class _Stopped(Exception):
    """An interruption on its way out of Typer, which would otherwise end it silently."""


class _Commands(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Stopped(str(exc) if isinstance(exc, Interrupted) else "interrupted") from None


app = typer.Typer(
    name="tamt",
    cls=_Commands,
    help="Find winning lottery tickets in BERT: search masks, extract subnetworks, transfer them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Scope(str, Enum):
    local = "local"
    global_ = "global"


class Kind(str, Enum):
    method = "method"
    task = "task"


class Precision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class ExportFormat(str, Enum):
    dense = "dense"
    compressed = "compressed"


class HeadChoice(str, Enum):
    shared = "shared"
    own = "own"


class Objective(str, Enum):
    mlm = "mlm"
    kd = "kd"
    mlm_kd = "mlm-kd"


def _default(value: object) -> str:
    """``[default: value]`` for help text (escaped: rich markup takes brackets for styles)."""
    return f"\\[default: {value}]"


REQUIRED = "\\[required]"
#: the help panel of the method options `tamt search` also takes as flags (`tamt plugins NAME`)
METHOD_PANEL = "Method options (= -o name=value; `tamt plugins METHOD` lists them all)"
TASK_DEFAULT = "the task's"
RUN_DEFAULT = "the fine-tuning run's, else the task's"


# -- shell completion (`tamt --install-completion`) -------------------------------------------


def _complete_paths(incomplete: str) -> list[str]:
    """Files and folders whose path starts with ``incomplete`` (folders end in ``/``)."""
    import glob

    found = sorted(glob.glob(glob.escape(os.path.expanduser(incomplete)) + "*"))
    return [f + os.sep if os.path.isdir(f) else f for f in found]


def _complete_models(incomplete: str) -> list[str]:
    return [name for name in ("demo",) if name.startswith(incomplete)] + _complete_paths(incomplete)


def _complete_corpora(incomplete: str) -> list[str]:
    names = ("wikitext-103", "wikitext-2", "demo")
    return [n for n in names if n.startswith(incomplete)] + _complete_paths(incomplete)


def _registered(kind: str, incomplete: str) -> list[str]:
    """Names of the installed methods or tasks, plugins included (entry points only: nothing is
    imported, so completion stays fast)."""
    from tamt_cli import registry

    return [name for name in registry.registry(kind).names() if name.startswith(incomplete)]


def _complete_methods(incomplete: str) -> list[str]:
    return _registered("method", incomplete)


def _complete_tasks(incomplete: str) -> list[str]:
    return _registered("task", incomplete)


SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="spec file (YAML, JSON or TOML) with this command's fields, required ones "
        f"included; flags given here win {_default('none')}",
        autocompletion=_complete_paths,
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="print the resolved, validated spec and stop")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
TaskOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--task-option",
        help=f"an option of the task, name=value (repeatable) {_default('none')}",
    ),
]
TRACKER_NAMES = ("tensorboard", "wandb", "mlflow", "trackio", "all", "none")


def _complete_trackers(incomplete: str) -> list[str]:
    done, _, last = incomplete.rpartition(",")
    return [f"{done},{t}" if done else t for t in TRACKER_NAMES if t.startswith(last)]


ReportToOpt = Annotated[
    str | None,
    typer.Option(
        "--report-to",
        help="experiment trackers for the metrics and the spec, comma-separated: tensorboard "
        "(written in the run directory), wandb, mlflow, trackio, all (those installed) or none "
        f"{_default('none')}",
        autocompletion=_complete_trackers,
    ),
]


def _out() -> Any:
    from rich.console import Console

    return Console()


def _err() -> Any:
    from tamt_cli import verbosity

    return verbosity.console()


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _present(result: Any, as_json: bool, table: str) -> None:
    """``result`` as one JSON document on stdout, or as the table ``tamt_cli.display.<table>``
    makes of it."""
    if as_json:
        _emit_json(result)
    else:
        from tamt_cli import display

        _out().print(getattr(display, table)(result))


def _show_spec(spec: Any, as_json: bool, resolved: dict[str, Any] | None = None) -> None:
    """The validated spec, and under ``resolved`` the values the method or task will use where
    the spec leaves them open."""
    if as_json:
        shown = spec.model_dump(mode="json")
        _emit_json({**shown, "resolved": resolved} if resolved else shown)
    else:
        import yaml

        from tamt_cli.display import print_yaml

        text = spec.to_yaml()
        if resolved:
            text += yaml.safe_dump({"resolved": resolved}, sort_keys=False, width=1000)
        print_yaml(_out(), text)


def _parse_options(pairs: list[str] | None, flag: str = "--option") -> dict[str, Any] | None:
    """``-o name=value`` pairs as a dict, values read as YAML scalars (5 → int, true → bool)."""
    if not pairs:
        return None
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{flag} takes name=value, got '{pair}'")
        try:
            options[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[name.strip()] = value
    return options


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tamt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="show the version"),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="errors and the result only")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="also the libraries' warnings and debug lines"),
    ] = False,
) -> None:
    """Find winning lottery tickets in BERT: search masks, extract subnetworks, transfer them."""
    from tamt_cli import verbosity

    if quiet and verbose:
        raise UserError("give -q/--quiet or -v/--verbose, not both")
    verbosity.set_level(verbosity.QUIET if quiet else verbosity.VERBOSE if verbose else 0)


@app.command()
def search(
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "-m",
            help=f"pruning method (see `tamt plugins`) {REQUIRED}",
            autocompletion=_complete_methods,
        ),
    ] = None,
    sparsity: Annotated[
        float | None,
        typer.Option(
            "--sparsity",
            "-s",
            help=f"fraction of masked weights pruned, in (0, 1) {REQUIRED} (random --like: "
            "optional)",
        ),
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            help="N:M: keep exactly N of every M consecutive weights along each matrix's input "
            f"dimension; implies --sparsity 1 − N/M (omp, random, mlm, kd, mlm-kd, imp) "
            f"{_default('none')}",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"hub id, local folder, or `demo` {_default('bert-base-uncased')}",
            autocompletion=_complete_models,
        ),
    ] = None,
    scope: Annotated[
        Scope | None,
        typer.Option(
            help=f"local: every matrix at the target; global: overall {_default('local')}"
        ),
    ] = None,
    embeddings: Annotated[
        bool | None,
        typer.Option(
            "--embeddings/--no-embeddings",
            help=f"mask the word embeddings {_default('--embeddings')}",
        ),
    ] = None,
    pooler: Annotated[
        bool | None,
        typer.Option("--pooler/--no-pooler", help=f"mask the pooler {_default('--pooler')}"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"random seed {_default(0)}")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help=f"run directory {_default('runs/<label or method>-s<sparsity>-<time>')}"),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            help="the name `tamt report` gives this subnetwork instead of the method's, e.g. "
            f"kd-long {_default('the method')}"
        ),
    ] = None,
    budget: Annotated[
        Budget | None,
        typer.Option(
            help="mask training: paper = the paper's protocol where not given (lr, steps for "
            "the sparsity, binary scores, resets, lr decay over 30k steps, batch 16 × 512) "
            f"{_default('default')}"
        ),
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(
            help="random: copy this mask file's per-matrix sparsity (= -o like=PATH) "
            f"{_default('none')}",
            autocompletion=_complete_paths,
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help=f"method option name=value (repeatable) {_default('none')}"
        ),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(
            help="training text: wikitext-103, wikitext-2, demo, or files/globs (quote globs; "
            f"comma-separated) {_default('wikitext-103')}",
            autocompletion=_complete_corpora,
            rich_help_panel="Training",
        ),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(help=f"tokens per block {_default(128)}", rich_help_panel="Training"),
    ] = None,
    held_out: Annotated[
        float | None,
        typer.Option(
            help=f"held-out fraction of a local corpus {_default(0.05)}", rich_help_panel="Training"
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="optimiser steps " + _default("the method's: 1000 for mask training"),
            rich_help_panel="Training",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help=f"blocks per step, all processes {_default(16)}", rich_help_panel="Training"
        ),
    ] = None,
    grad_accum: Annotated[
        int | None,
        typer.Option(help=f"micro-batches per step {_default(1)}", rich_help_panel="Training"),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="learning rate " + _default("the method's: 1e-3 mask training, 5e-5 imp"),
            rich_help_panel="Training",
        ),
    ] = None,
    head_lr: Annotated[
        float | None,
        typer.Option(
            help="MLM-head learning rate while the mask trains, 0 freezes it "
            + _default("5e-5 for a pre-trained head, 0 for a fitted one"),
            rich_help_panel="Training",
        ),
    ] = None,
    head_warmup_steps: Annotated[
        int | None,
        typer.Option(
            help=f"steps fitting a missing MLM head on the frozen model {_default(300)}",
            rich_help_panel="Training",
        ),
    ] = None,
    head_warmup_lr: Annotated[
        float | None,
        typer.Option(
            help=f"learning rate of that fit {_default('1e-3')}", rich_help_panel="Training"
        ),
    ] = None,
    clip: Annotated[
        float | None,
        typer.Option(help=f"gradient-norm clip {_default(1.0)}", rich_help_panel="Training"),
    ] = None,
    log_every: Annotated[
        int | None,
        typer.Option(
            help=f"log (and print a progress line) every N steps {_default(10)}",
            rich_help_panel="Training",
        ),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(
            help=f"held-out loss every N steps {_default('max-steps/10')}",
            rich_help_panel="Training",
        ),
    ] = None,
    eval_blocks: Annotated[
        int | None,
        typer.Option(
            help=f"held-out blocks per evaluation {_default(64)}", rich_help_panel="Training"
        ),
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(
            help=f"checkpoint and mask every N steps {_default('max-steps/10')}",
            rich_help_panel="Training",
        ),
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(help=f"resumable checkpoints kept {_default(1)}", rich_help_panel="Training"),
    ] = None,
    mixed_precision: Annotated[
        Precision | None,
        typer.Option(help=f"no, fp16 or bf16 {_default('no')}", rich_help_panel="Training"),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="mask training: initial mask, magnitude or random (= -o init=...) "
            f"{_default('magnitude')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    reset_every: Annotated[
        int | None,
        typer.Option(
            help="mask training: exact-sparsity threshold reset interval (= -o reset_every=N) "
            f"{_default(100)}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    objective: Annotated[
        Objective | None,
        typer.Option(
            help=f"imp: the training objective, mlm, kd or mlm-kd (= -o objective=...) "
            f"{_default('mlm')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    steps_per_round: Annotated[
        int | None,
        typer.Option(
            help=f"imp: training steps between prunings (= -o steps_per_round=N) {_default(100)}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    prune_fraction: Annotated[
        float | None,
        typer.Option(
            help=f"imp: fraction of the original weights pruned per round {_default(0.1)}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    rewind_step: Annotated[
        int | None,
        typer.Option(
            help="imp: rewind to the weights after this many steps instead of the pre-trained "
            f"{_default('0, the pre-trained weights')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    rewind: Annotated[
        bool | None,
        typer.Option(
            "--rewind/--no-rewind",
            help=f"imp: rewind the unpruned weights after every pruning {_default('rewind')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help="imp: lr decay over the whole run (run, as the reference code) or to zero in "
            f"every round (round) {_default('run')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="methods that fine-tune (e.g. movement): the task (= -o task=...) "
            f"{_default('none')}",
            autocompletion=_complete_tasks,
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"the task's local data (= -o data_dir=...) {_default('the hub')}",
            rich_help_panel=METHOD_PANEL,
            autocompletion=_complete_paths,
        ),
    ] = None,
    train_size: Annotated[
        int | None,
        typer.Option(
            help=f"a seeded subset of the task's training examples {_default('all')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option(
            "--task-option",
            help=f"an option of the task, name=value (repeatable) {_default('none')}",
            rich_help_panel=METHOD_PANEL,
        ),
    ] = None,
    report_to: ReportToOpt = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help=f"continue an interrupted run from its last checkpoint {_default('none')}",
            autocompletion=_complete_paths,
        ),
    ] = None,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Find a mask (a subnetwork) of a pre-trained model with a pruning method."""
    from tamt_cli import search as searching
    from tamt_cli import specs

    options = _parse_options(option) or {}
    method_flags = {
        "like": like,
        "init": init,
        "reset_every": reset_every,
        "objective": objective.value if objective else None,
        "steps_per_round": steps_per_round,
        "prune_fraction": prune_fraction,
        "rewind_step": rewind_step,
        "rewind": rewind,
        "schedule": schedule,
        "task": task,
        "data_dir": data_dir,
        "train_size": train_size,
        "task_options": _parse_options(task_option, "--task-option"),
    }
    for key, value in method_flags.items():
        if value is not None:
            options[key] = str(value) if isinstance(value, Path) else value
    flags = {
        "method": method,
        "sparsity": sparsity,
        "pattern": pattern,
        "model": model,
        "scope": scope.value if scope else None,
        "embeddings": embeddings,
        "pooler": pooler,
        "seed": seed,
        "out": out,
        "label": label,
        "budget": budget.value if budget else None,
        "options": options or None,
        "corpus": corpus,
        "max_length": max_length,
        "held_out": held_out,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "lr": lr,
        "head_lr": head_lr,
        "head_warmup_steps": head_warmup_steps,
        "head_warmup_lr": head_warmup_lr,
        "clip": clip,
        "log_every": log_every,
        "eval_every": eval_every,
        "eval_blocks": eval_blocks,
        "save_every": save_every,
        "keep_checkpoints": keep_checkpoints,
        "mixed_precision": mixed_precision.value if mixed_precision else None,
        "report_to": report_to,
    }
    if resume is not None:
        resolved = searching.resumed_spec(resume, spec, flags)
    else:
        resolved = specs.build(specs.SearchSpec, spec, flags)
    method_obj, resolved = searching.resolve(resolved)
    if dry_run:
        searching.advise(method_obj, resolved, _err())
        hook = getattr(method_obj, "resolved", None)
        _show_spec(resolved, as_json, hook(resolved) if hook is not None else None)
        return
    result = searching.run(resolved, method_obj, _err(), resume=resume is not None)
    if as_json:
        _emit_json(result)
    else:
        from tamt_cli.display import sparsity_table

        console = _out()
        console.print(sparsity_table(result["report"], f"Mask of {result['method']}"))
        console.print(f"run written to [bold]{result['run']}[/bold]")


@app.command()
def extract(
    run: Annotated[
        Path | None,
        typer.Argument(help=f"a search run directory {REQUIRED}", autocompletion=_complete_paths),
    ] = None,
    sparsity: Annotated[
        float | None,
        typer.Option(
            help=f"the run's mask at this sparsity (runs with several) {_default('the target')}"
        ),
    ] = None,
    step: Annotated[
        int | None,
        typer.Option(help=f"the mask saved at this training step {_default('the final mask')}"),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help=f"write a plain Hugging Face folder with the zeros baked in {_default('none')}",
            autocompletion=_complete_paths,
        ),
    ] = None,
    export_format: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            help="--export weights: dense (zeros in float32; plain transformers loads it) or "
            "compressed (sparse-bitmask: a bitmask and the kept values) " + _default("dense"),
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="replace an existing --export folder that is a tamt run or export "
            + _default("off"),
        ),
    ] = False,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Take an exact-sparsity mask from a run; with --export, a subnetwork checkpoint."""
    from tamt_cli import extract as extracting
    from tamt_cli import specs

    flags = {
        "run": run,
        "sparsity": sparsity,
        "step": step,
        "export": export,
        "format": export_format.value if export_format else None,
    }
    resolved = specs.build(specs.ExtractSpec, spec, flags)
    if dry_run:
        _show_spec(resolved, as_json)
        return
    result = extracting.run(resolved, _err(), overwrite=bool(overwrite))
    if as_json:
        _emit_json(result)
    else:
        from tamt_cli.display import sparsity_table

        console = _out()
        console.print(sparsity_table(result["report"], f"Mask {result['mask']}"))
        if result["export"]:
            console.print(f"subnetwork written to [bold]{result['export']}[/bold]")


@app.command()
def finetune(
    subnetwork: Annotated[
        str | None,
        typer.Argument(
            help=f"search run, exported subnetwork, mask file (with --model) or model {REQUIRED}",
            autocompletion=_complete_models,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help=f"downstream task, e.g. sst2, mnli, squad {REQUIRED}",
            autocompletion=_complete_tasks,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"model for a bare mask file {_default('none')}", autocompletion=_complete_models
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"local task data (GLUE TSV, SQuAD JSON) {_default('the hub')}",
            autocompletion=_complete_paths,
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"fine-tuning seed {_default(1)}")] = None,
    seeds: Annotated[
        str | None, typer.Option(help=f"several seeds, e.g. 1,2,3 {_default('--seed')}")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help=f"learning rate {_default(TASK_DEFAULT + ': 2e-5 GLUE')}")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"batch size {_default(TASK_DEFAULT + ': 32 GLUE')}")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option(help=f"epochs {_default(TASK_DEFAULT + ': 3 GLUE')}")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help=f"max tokens {_default(TASK_DEFAULT + ': 128 GLUE')}")
    ] = None,
    doc_stride: Annotated[
        int | None, typer.Option(help=f"SQuAD: tokens shared by windows {_default(128)}")
    ] = None,
    train_size: Annotated[
        int | None, typer.Option(help=f"seeded training subset size {_default('all')}")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help=f"evaluate every N steps {_default('once per epoch')}")
    ] = None,
    mixed_precision: Annotated[
        Precision | None, typer.Option(help=f"no, fp16 or bf16 {_default('no')}")
    ] = None,
    task_option: TaskOptionOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help=f"output directory {_default('runs/finetune-<task>-<time>')}",
            autocompletion=_complete_paths,
        ),
    ] = None,
    report_to: ReportToOpt = None,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a subnetwork on a GLUE task or SQuAD with its mask held fixed."""
    from tamt_cli import specs

    seed_list: list[int] | None = None
    if seeds is not None:
        try:
            seed_list = [int(seed) for seed in seeds.split(",") if seed.strip()]
        except ValueError:
            raise UserError(f"--seeds takes comma-separated integers, got '{seeds}'") from None
    elif seed is not None:
        seed_list = [seed]
    flags = {
        "subnetwork": subnetwork,
        "task": task,
        "model": model,
        "data_dir": data_dir,
        "seeds": seed_list,
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "max_length": max_length,
        "doc_stride": doc_stride,
        "train_size": train_size,
        "eval_every": eval_every,
        "mixed_precision": mixed_precision.value if mixed_precision else None,
        "task_options": _parse_options(task_option, "--task-option"),
        "out": out,
        "report_to": report_to,
    }
    resolved = specs.build(specs.FinetuneSpec, spec, flags)
    from tamt_cli import finetune as finetuning

    if dry_run:
        _show_spec(resolved, as_json, finetuning.planned(resolved))
        return

    result = finetuning.run(resolved, _err())
    if as_json:
        _emit_json(result)
    else:
        from tamt_cli.display import render_finetune

        render_finetune(result, _out())


@app.command("eval")
def evaluate(
    checkpoint: Annotated[
        str | None,
        typer.Argument(
            help=f"fine-tuned run, subnetwork folder, or model {REQUIRED}",
            autocompletion=_complete_models,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help=f"downstream task to score {REQUIRED} (or --objective)",
            autocompletion=_complete_tasks,
        ),
    ] = None,
    objective: Annotated[
        Objective | None,
        typer.Option(help=f"pre-training loss proxy instead of a task {_default('none')}"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help=f"local task data {_default('the hub')}", autocompletion=_complete_paths),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(
            help=f"--objective: text whose held-out part is scored {_default('wikitext-103')}",
            autocompletion=_complete_corpora,
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help=f"split to score {_default('validation')}")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help=f"max tokens {_default(RUN_DEFAULT)}")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"batch size {_default(RUN_DEFAULT)}")
    ] = None,
    doc_stride: Annotated[
        int | None,
        typer.Option(help=f"SQuAD: tokens shared by windows {_default(RUN_DEFAULT)}"),
    ] = None,
    task_option: TaskOptionOpt = None,
    held_out: Annotated[
        float | None,
        typer.Option(help=f"--objective: held-out fraction of a local corpus {_default(0.05)}"),
    ] = None,
    eval_blocks: Annotated[
        int | None, typer.Option(help=f"--objective: held-out blocks scored {_default(256)}")
    ] = None,
    step: Annotated[
        int | None,
        typer.Option(help=f"a search run's mask at this step {_default('the final mask')}"),
    ] = None,
    head: Annotated[
        HeadChoice | None,
        typer.Option(
            help="--objective mlm: shared (the checkpoint's head, or one fitted once on the "
            "dense model: the same for every subnetwork) or own (a search run's trained head) "
            + _default("shared")
        ),
    ] = None,
    head_warmup_steps: Annotated[
        int | None,
        typer.Option(help=f"--objective mlm: steps fitting a missing head {_default(300)}"),
    ] = None,
    head_warmup_lr: Annotated[
        float | None, typer.Option(help=f"learning rate of that fit {_default('1e-3')}")
    ] = None,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score a checkpoint on a task, or a subnetwork's pre-training loss (--objective)."""
    from tamt_cli import specs

    flags = {
        "checkpoint": checkpoint,
        "task": task,
        "objective": objective.value if objective else None,
        "data_dir": data_dir,
        "corpus": corpus,
        "split": split,
        "max_length": max_length,
        "batch_size": batch_size,
        "doc_stride": doc_stride,
        "task_options": _parse_options(task_option, "--task-option"),
        "held_out": held_out,
        "eval_blocks": eval_blocks,
        "step": step,
        "head": head.value if head else None,
        "head_warmup_steps": head_warmup_steps,
        "head_warmup_lr": head_warmup_lr,
    }
    resolved = specs.build(specs.EvalSpec, spec, flags)
    if (resolved.task is None) == (resolved.objective is None):
        raise UserError("tamt eval needs either --task NAME or --objective mlm|kd|mlm-kd")
    if dry_run:
        _show_spec(resolved, as_json)
        return
    from tamt_cli import evaluate as evaluating

    result = evaluating.run(resolved, _err())
    if as_json:
        _emit_json(result)
    else:
        from tamt_cli.display import render_eval

        render_eval(result, _out())


@app.command()
def bench(
    subnetwork: Annotated[
        str | None,
        typer.Argument(
            help=f"search run, exported subnetwork, or mask file (with --model) {REQUIRED}",
            autocompletion=_complete_paths,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help=f"model of a bare mask file {_default('none')}"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"sequences per forward pass {_default(8)}")
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(help=f"tokens per sequence {_default('128; with --task, its length')}"),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option(help=f"timed forward passes per variant {_default(10)}")
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(help=f"untimed forward passes first {_default(2)}")
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"seed of the token ids {_default(0)}")] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="time the first --batch-size dev examples of this task, encoded as fine-tuning "
            f"encodes them, instead of random token ids {_default('none')}",
            autocompletion=_complete_tasks,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help=f"the task's local data {_default('the hub')}")
    ] = None,
    task_option: TaskOptionOpt = None,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sizes on disk (dense, compressed) and inference latency of a subnetwork against its dense
    model, on the sparse kernels this machine has."""
    from tamt_cli import specs

    flags = {
        "subnetwork": subnetwork,
        "model": model,
        "batch_size": batch_size,
        "max_length": max_length,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "task": task,
        "data_dir": data_dir,
        "task_options": _parse_options(task_option, "--task-option"),
    }
    resolved = specs.build(specs.BenchSpec, spec, flags)
    if dry_run:
        _show_spec(resolved, as_json)
        return
    from tamt_cli import bench as benching

    _present(benching.run(resolved, _err()), as_json, "bench_table")


@app.command()
def sweep(
    grid: Annotated[
        Path | None, typer.Argument(help=f"grid file (YAML, JSON or TOML) {REQUIRED}")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="sweep directory " + _default("the grid's out, else sweeps/<grid file name>")
        ),
    ] = None,
    print_commands: Annotated[
        bool,
        typer.Option(
            "--print-commands", help="print one `tamt` command line per cell still to run"
        ),
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="stop at the first failed cell")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the cells and what is done, run nothing")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: run only the K-th of every N searches with the cells that read them, "
            "so N processes (or array jobs) share one sweep directory "
            f"{_default('every cell')}"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a grid: methods × sparsities searched once, fine-tuned on tasks × seeds."""
    from tamt_cli import sweep as sweeping

    if grid is None:
        raise UserError("tamt sweep needs a grid file: tamt sweep GRID.yaml")
    parts = sweeping.parse_shard(shard) if shard is not None else None
    plan = sweeping.plan(grid, out)
    if parts is not None and (print_commands or dry_run):
        mine = sweeping.shard_of(plan, parts)
        plan.cells = [c for c in plan.cells if c.id in mine]
    if print_commands:
        for line in sweeping.commands(plan):
            typer.echo(line)
        return
    if dry_run:
        if as_json:
            _emit_json(sweeping.listing(plan))
        else:
            sweeping.render_listing(plan, _out())
        return
    index = sweeping.run(plan, _err(), fail_fast=fail_fast, shard=parts)
    if as_json:
        _emit_json(index)
    else:
        done = len(sweeping.shard_of(plan, parts))
        which = f" (shard {shard})" if shard else ""
        _out().print(f"sweep complete{which}: {done} cells in [bold]{plan.out}[/bold]")


class Budget(str, Enum):
    default = "default"
    paper = "paper"


class ReportFormat(str, Enum):
    table = "table"
    md = "md"
    csv = "csv"
    json = "json"


@app.command()
def report(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help=f"sweep directories, search/finetune runs, eval JSON, or mask files {REQUIRED}"
        ),
    ],
    format: Annotated[
        ReportFormat,
        typer.Option("--format", "-f", help=f"table, md, csv or json {_default('table')}"),
    ] = ReportFormat.table,
    plots: Annotated[
        Path | None,
        typer.Option(
            help=f"write PNG figures into this folder (needs matplotlib) {_default('none')}"
        ),
    ] = None,
) -> None:
    """Tables (and plots) from finished runs: scores by method and sparsity, matching, mask
    overlap, held-out loss correlation. Nothing is recomputed."""
    from tamt_cli import report as reporting

    if plots is not None:
        from tamt_cli import plots as plotting

        plotting.require()
    inputs = reporting.read(paths)
    if inputs.mask_files:
        doc = reporting.compare_files(inputs.mask_files)
    else:
        doc = reporting.build(inputs)
    if format is ReportFormat.json:
        _emit_json(doc)
    elif format is ReportFormat.csv:
        sys.stdout.write(reporting.to_csv(doc))
    elif format is ReportFormat.md:
        sys.stdout.write(reporting.to_markdown(doc))
    else:
        reporting.render(doc, _out())
    if plots is not None and "rows" in doc:
        written = plotting.write(doc, plots)
        _err().print(f"{len(written)} figures written to [bold]{plots}[/bold]")


def _complete_plugins(incomplete: str) -> list[str]:
    return sorted(set(_complete_methods(incomplete)) | set(_complete_tasks(incomplete)))


@app.command()
def plugins(
    name: Annotated[
        str | None,
        typer.Argument(
            help=f"one method or task: list its options {_default('list every plugin')}",
            autocompletion=_complete_plugins,
        ),
    ] = None,
    kind: Annotated[
        Kind | None, typer.Option(help=f"only methods or only tasks {_default('both')}")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List installed methods and tasks, where they come from, and which failed to load; with a
    NAME, that method's or task's options (types, defaults, descriptions)."""
    from tamt_cli import registry

    if name is not None:
        _present(registry.describe(name, kind.value if kind else None), as_json,
                 "plugin_options_table")  # fmt: skip
        return
    kinds = [kind.value] if kind else ["method", "task"]
    rows = [p.as_dict() for k in kinds for p in registry.registry(k).all()]
    _present(rows, as_json, "plugins_table")


@app.command("env")
def env(
    as_json: JsonOpt = False,
    no_hub: Annotated[
        bool, typer.Option("--no-hub", help="do not try to reach the Hugging Face hub")
    ] = False,
) -> None:
    """Versions, accelerators, plugins, caches and hub access: what a bug report needs."""
    from tamt_cli import environment

    _present(environment.report(check_hub=not no_hub), as_json, "env_table")


cache_app = typer.Typer(
    help="tamt's cache of tokenised corpora, of MLM heads fitted on models without one and of "
    "tokenised task data (`TAMT_CACHE_DIR`, else `$XDG_CACHE_HOME/tamt/blocks`, else "
    "`~/.cache/tamt/blocks`).",
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.callback()
def _cache(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """tamt's cache of tokenised corpora, fitted MLM heads and tokenised task data: `tamt cache`
    lists it."""
    if ctx.invoked_subcommand is None:
        cache_list(as_json)


@cache_app.command("list")
def cache_list(as_json: JsonOpt = False) -> None:
    """The cached token blocks, by corpus, the fitted MLM heads and the tokenised task data, by
    task, with their size."""
    from tamt_cli import environment

    _present(environment.cache_summary(), as_json, "cache_table")


@cache_app.command("clear")
def cache_clear(
    corpus: Annotated[
        str | None,
        typer.Option(
            help=f"only this corpus, as `tamt cache list` names it {_default('every corpus')}"
        ),
    ] = None,
    heads: Annotated[
        bool, typer.Option("--heads", help="only the MLM heads fitted on models without one")
    ] = False,
    features: Annotated[
        bool, typer.Option("--features", help="only the tokenised task data (fine-tuning, eval)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove cached token blocks, fitted MLM heads and tokenised task data (rebuilt when next
    needed)."""
    from tamt_cli import display, environment

    result = environment.clear_cache(corpus, heads=heads, features=features)
    if as_json:
        _emit_json(result)
    else:
        size = display.human_bytes(result["bytes"])
        _out().print(f"removed {result['files']} file(s), {size}, from {result['path']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one line on stderr and an exit code
    (0 ok, 2 a user error or a fault of the machine such as a full disk, 1 an internal error,
    130 interrupted)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="tamt", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
        return exc.exit_code
    except (KeyboardInterrupt, _Stopped) as exc:
        _fail(str(exc) if isinstance(exc, Interrupted | _Stopped) else "interrupted")
        return 130
    except Exception as exc:
        # Typer's parser exceptions (Click's, or Typer's own copy of them), matched by name so
        # that either parser works.
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "Exit" in kinds:
            return int(getattr(exc, "exit_code", 0))
        if "Abort" in kinds:
            _fail("interrupted")
            return 130
        if "UsageError" in kinds:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "tamt"
            if not exc.format_message():  # type: ignore[attr-defined]
                return 2  # bare `tamt`: the help was printed
            _fail(f"{where}: {exc.format_message()} (see `{where} --help`)")  # type: ignore[attr-defined]
            return 2
        if os.environ.get("TAMT_DEBUG"):
            raise
        fault = environment_fault(exc)  # disk full, no permission: the machine, not tamt
        if fault is not None:
            _fail(fault)
            return 2
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(f"internal error: {type(exc).__name__}: {first} (TAMT_DEBUG=1 shows the traceback)")
        return 1
    return result if isinstance(result, int) else 0


def _fail(message: str) -> None:
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    sys.stderr.write(f"tamt: error: {line}\n")
    sys.stderr.flush()
