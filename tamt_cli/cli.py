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
    add_completion=False,
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


class Objective(str, Enum):
    mlm = "mlm"
    kd = "kd"
    mlm_kd = "mlm-kd"


SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="spec file (YAML, JSON or TOML) with this command's fields; flags given here win",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="print the resolved, validated spec and stop")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]


def _out() -> Any:
    from rich.console import Console

    return Console()


def _err() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _show_spec(spec: Any, as_json: bool) -> None:
    if as_json:
        _emit_json(spec.model_dump(mode="json"))
    else:
        from tamt_cli.display import print_yaml

        print_yaml(_out(), spec.to_yaml())


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
) -> None:
    """Find winning lottery tickets in BERT: search masks, extract subnetworks, transfer them."""


@app.command()
def search(
    method: Annotated[
        str | None, typer.Option("--method", "-m", help="pruning method (see `tamt plugins`)")
    ] = None,
    sparsity: Annotated[
        float | None,
        typer.Option("--sparsity", "-s", help="fraction of masked weights pruned, in (0, 1)"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="hub id, local folder, or `demo` [default: bert-base-uncased]"),
    ] = None,
    scope: Annotated[
        Scope | None,
        typer.Option(help="local: every matrix at the target; global: overall [default: local]"),
    ] = None,
    embeddings: Annotated[
        bool | None,
        typer.Option(
            "--embeddings/--no-embeddings", help="mask the word embeddings [default: yes]"
        ),
    ] = None,
    pooler: Annotated[
        bool | None, typer.Option("--pooler/--no-pooler", help="mask the pooler [default: yes]")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed [default: 0]")] = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory [default: runs/<method>-s<sparsity>-<time>]")
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(help="random: copy this mask file's per-matrix sparsity (= -o like=PATH)"),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="method option name=value (repeatable)"),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(
            help="training text: wikitext-103, wikitext-2, demo, or files/globs (quote globs; "
            "comma-separated) [default: wikitext-103]",
            rich_help_panel="Training",
        ),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="tokens per block [128]", rich_help_panel="Training")
    ] = None,
    held_out: Annotated[
        float | None,
        typer.Option(help="held-out fraction of a local corpus [0.05]", rich_help_panel="Training"),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="optimiser steps [method default]", rich_help_panel="Training"),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="blocks per step, all processes [16]", rich_help_panel="Training"),
    ] = None,
    grad_accum: Annotated[
        int | None,
        typer.Option(help="micro-batches per step [1]", rich_help_panel="Training"),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="learning rate [method default]", rich_help_panel="Training"),
    ] = None,
    head_lr: Annotated[
        float | None, typer.Option(help="MLM-head learning rate", rich_help_panel="Training")
    ] = None,
    head_warmup_steps: Annotated[
        int | None,
        typer.Option(
            help="steps fitting a missing MLM head on the frozen model [300]",
            rich_help_panel="Training",
        ),
    ] = None,
    clip: Annotated[
        float | None, typer.Option(help="gradient-norm clip [1.0]", rich_help_panel="Training")
    ] = None,
    log_every: Annotated[
        int | None, typer.Option(help="log every N steps [10]", rich_help_panel="Training")
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(help="held-out loss every N steps [max-steps/10]", rich_help_panel="Training"),
    ] = None,
    eval_blocks: Annotated[
        int | None,
        typer.Option(help="held-out blocks per evaluation [64]", rich_help_panel="Training"),
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(
            help="checkpoint and mask every N steps [max-steps/10]", rich_help_panel="Training"
        ),
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(help="resumable checkpoints kept [1]", rich_help_panel="Training"),
    ] = None,
    mixed_precision: Annotated[
        Precision | None, typer.Option(help="no, fp16 or bf16", rich_help_panel="Training")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="mask training: initial mask, magnitude or random (= -o init=...)",
            rich_help_panel="Training",
        ),
    ] = None,
    reset_every: Annotated[
        int | None,
        typer.Option(
            help="mask training: exact-sparsity threshold reset interval (= -o reset_every=N)",
            rich_help_panel="Training",
        ),
    ] = None,
    objective: Annotated[
        Objective | None,
        typer.Option(
            help="imp: the training objective, mlm (default), kd or mlm-kd (= -o objective=...)",
            rich_help_panel="IMP",
        ),
    ] = None,
    steps_per_round: Annotated[
        int | None,
        typer.Option(
            help="imp: training steps between prunings (= -o steps_per_round=N)",
            rich_help_panel="IMP",
        ),
    ] = None,
    prune_fraction: Annotated[
        float | None,
        typer.Option(
            help="imp: fraction of the original weights pruned per round [0.1]",
            rich_help_panel="IMP",
        ),
    ] = None,
    rewind_step: Annotated[
        int | None,
        typer.Option(
            help="imp: rewind to the weights after this many steps instead of the pre-trained",
            rich_help_panel="IMP",
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="methods that fine-tune (e.g. movement): the task (= -o task=...)",
            rich_help_panel="Task-driven methods",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="the task's local data (= -o data_dir=...)", rich_help_panel="Task-driven methods"
        ),
    ] = None,
    train_size: Annotated[
        int | None,
        typer.Option(
            help="a seeded subset of the task's training examples",
            rich_help_panel="Task-driven methods",
        ),
    ] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option(
            "--task-option",
            help="an option of the task, name=value (repeatable)",
            rich_help_panel="Task-driven methods",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue an interrupted run from its last checkpoint"),
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
        "model": model,
        "scope": scope.value if scope else None,
        "embeddings": embeddings,
        "pooler": pooler,
        "seed": seed,
        "out": out,
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
        "clip": clip,
        "log_every": log_every,
        "eval_every": eval_every,
        "eval_blocks": eval_blocks,
        "save_every": save_every,
        "keep_checkpoints": keep_checkpoints,
        "mixed_precision": mixed_precision.value if mixed_precision else None,
    }
    if resume is not None:
        resolved = searching.resumed_spec(resume, spec, flags)
    else:
        resolved = specs.build(specs.SearchSpec, spec, flags)
    method_obj, resolved = searching.resolve(resolved)
    if dry_run:
        _show_spec(resolved, as_json)
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
    run: Annotated[Path | None, typer.Argument(help="a search run directory")] = None,
    sparsity: Annotated[
        float | None, typer.Option(help="the run's mask at this sparsity (runs with several)")
    ] = None,
    step: Annotated[int | None, typer.Option(help="the mask saved at this training step")] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="write a plain Hugging Face folder with the zeros baked in"),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="replace an existing --export folder that is a tamt run or export"
        ),
    ] = False,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Take an exact-sparsity mask from a run; with --export, a subnetwork checkpoint."""
    from tamt_cli import extract as extracting
    from tamt_cli import specs

    flags = {"run": run, "sparsity": sparsity, "step": step, "export": export}
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
        typer.Argument(help="search run, exported subnetwork, mask file (with --model) or model"),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="downstream task, e.g. sst2, mnli, squad")
    ] = None,
    model: Annotated[str | None, typer.Option(help="model for a bare mask file")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="local task data (GLUE TSV, SQuAD JSON)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="fine-tuning seed [default: 1]")] = None,
    seeds: Annotated[str | None, typer.Option(help="several seeds, e.g. 1,2,3")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate [task default]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size [task default]")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs [task default]")] = None,
    max_length: Annotated[int | None, typer.Option(help="max tokens [task default]")] = None,
    doc_stride: Annotated[int | None, typer.Option(help="SQuAD doc stride [128]")] = None,
    train_size: Annotated[int | None, typer.Option(help="seeded training subset size")] = None,
    eval_every: Annotated[int | None, typer.Option(help="evaluate every N steps")] = None,
    mixed_precision: Annotated[Precision | None, typer.Option(help="no, fp16 or bf16")] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option("--task-option", help="an option of the task, name=value (repeatable)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output directory")] = None,
    spec: SpecOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a subnetwork on a GLUE task or SQuAD with its mask held fixed."""
    from tamt_cli import specs

    seed_list: list[int] | None = None
    if seeds is not None:
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
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
    }
    resolved = specs.build(specs.FinetuneSpec, spec, flags)
    if dry_run:
        _show_spec(resolved, as_json)
        return
    from tamt_cli import finetune as finetuning

    result = finetuning.run(resolved, _err())
    if as_json:
        _emit_json(result)
    else:
        finetuning.render(result, _out())


@app.command("eval")
def evaluate(
    checkpoint: Annotated[
        str | None, typer.Argument(help="fine-tuned run, subnetwork folder, or model")
    ] = None,
    task: Annotated[str | None, typer.Option(help="downstream task to score")] = None,
    objective: Annotated[
        Objective | None, typer.Option(help="pre-training loss proxy instead of a task")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local task data")] = None,
    corpus: Annotated[
        str | None, typer.Option(help="--objective: text whose held-out part is scored")
    ] = None,
    split: Annotated[str | None, typer.Option(help="split to score [validation]")] = None,
    max_length: Annotated[int | None, typer.Option(help="max tokens")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    doc_stride: Annotated[int | None, typer.Option(help="SQuAD: tokens shared by windows")] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option("--task-option", help="an option of the task, name=value (repeatable)"),
    ] = None,
    held_out: Annotated[
        float | None, typer.Option(help="--objective: held-out fraction of a local corpus")
    ] = None,
    eval_blocks: Annotated[
        int | None, typer.Option(help="--objective: held-out blocks scored [256]")
    ] = None,
    step: Annotated[int | None, typer.Option(help="a search run's mask at this step")] = None,
    head_warmup_steps: Annotated[
        int | None, typer.Option(help="--objective mlm: steps fitting a missing head [300]")
    ] = None,
    head_lr: Annotated[float | None, typer.Option(help="learning rate of that fit")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the head fit [0]")] = None,
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
        "head_warmup_steps": head_warmup_steps,
        "head_lr": head_lr,
        "seed": seed,
    }
    resolved = specs.build(specs.EvalSpec, spec, flags)
    if (resolved.task is None) == (resolved.objective is None):
        raise UserError("tamt eval needs either --task NAME or --objective mlm|kd|mlm-kd")
    if dry_run:
        _show_spec(resolved, as_json)
        return
    if resolved.task is not None:
        from tamt_cli import finetune as finetuning

        result = finetuning.evaluate(resolved, _err())
        if as_json:
            _emit_json(result)
        else:
            finetuning.render(result, _out())
        return
    from tamt_cli import evaluate as evaluating

    result = evaluating.run_objective(resolved, _err())
    if as_json:
        _emit_json(result)
    else:
        from tamt_cli.display import result_table

        _out().print(result_table(result, f"Held-out {result['objective']} loss"))


@app.command()
def plugins(
    kind: Annotated[Kind | None, typer.Option(help="only methods or only tasks")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List installed methods and tasks, where they come from, and which failed to load."""
    from tamt_cli import registry

    kinds = [kind.value] if kind else ["method", "task"]
    rows = [p.as_dict() for k in kinds for p in registry.registry(k).all()]
    if as_json:
        _emit_json(rows)
    else:
        from tamt_cli.display import plugins_table

        _out().print(plugins_table(rows))


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
