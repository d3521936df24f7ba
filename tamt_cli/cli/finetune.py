"""``tamt finetune``: flags → :class:`~tamt_cli.specs.FinetuneSpec` → fine-tuning with the mask
held fixed, seed by seed → the metrics table.

Where the task chooses a value (lr, batch size, epochs, length, evaluation cadence), ``--help``
states every built-in task's, as the task declares it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag
from tamt_cli.errors import UserError
from tamt_cli.specs import FinetuneSpec


def _task(attribute: str) -> Any:
    return lambda: options.task_defaults(attribute)


def _cadence() -> str:
    """The evaluation interval: the task's, raised so a run evaluates at most so many times."""
    from tamt_cli.tasks.base import MAX_EVALUATIONS

    return (
        f"{options.task_defaults('eval_every')} (raised to ⌈steps / {MAX_EVALUATIONS}⌉ where "
        f"a run would evaluate more than {MAX_EVALUATIONS} times)"
    )


def _first_seed() -> str:
    seeds = FinetuneSpec.model_fields["seeds"].get_default(call_default_factory=True)
    return options.shown(seeds[0])


FLAGS = (
    Flag(
        "subnetwork",
        argument=True,
        more="(with --resume: the run's)",
        complete=options.complete_models,
    ),
    Flag("task", more="(with --resume: the run's)", complete=options.complete_tasks),
    Flag("model", complete=options.complete_models),
    Flag("data_dir", shown="the hub", complete=options.complete_paths),
    Flag("seed", type=int, help="fine-tuning seed", shown=_first_seed()),
    Flag("seeds", type=str, help="several seeds, e.g. 1,2,3", shown="--seed"),
    Flag("lr", shown=_task("lr")),
    Flag("warmup_ratio"),
    Flag("batch_size", shown=_task("batch_size")),
    Flag("grad_accum"),
    Flag("epochs", shown=_task("epochs")),
    Flag("max_length", shown=_task("max_length")),
    Flag("doc_stride", shown=_task("doc_stride")),
    Flag("train_size", shown="all"),
    Flag("eval_every", shown=_cadence),
    Flag("save_every"),
    Flag("keep_checkpoints"),
    Flag("mixed_precision"),
    options.TASK_OPTION,
    Flag("out", shown="runs/finetune-<task>-<time>", complete=options.complete_paths),
    options.REPORT_TO,
    *options.push_flags("one seed's folder (--push-seed)"),
    Flag(
        "push_seed",
        ("--push-seed",),
        type=int,
        shown="none",
        panel=options.HUB,
        help="--push-to-hub: the seed whose folder is uploaded (none: the first seed)",
    ),
    Flag(
        "resume",
        type=Path,
        complete=options.complete_paths,
        help="continue an interrupted run: its finished seeds are kept, the others go on from "
        "their last checkpoint",
    ),
    *options.RUN,
)


def _seeds(values: dict[str, Any]) -> list[int] | None:
    """``--seeds 1,2,3``, else ``--seed``, as a list (None: neither given)."""
    seeds = values["seeds"]
    if seeds is not None:
        try:
            return [int(seed) for seed in seeds.split(",") if seed.strip()]
        except ValueError:
            raise UserError(f"--seeds takes comma-separated integers, got '{seeds}'") from None
    return None if values["seed"] is None else [values["seed"]]


def run(values: dict[str, Any]) -> None:
    """Fine-tune a subnetwork on a GLUE task or SQuAD with its mask held fixed."""
    from tamt_cli import specs

    flags = {
        **options.spec_values(values, FinetuneSpec),
        "seeds": _seeds(values),
        "task_options": options.parse_pairs(values["task_option"], "--task-option"),
    }
    if values["push_seed"] is not None and values["push_to_hub"] is None:
        raise UserError("--push-seed applies to --push-to-hub REPO_ID, which was not given")
    push = options.push_target(values, values["push_seed"])
    from tamt_cli import finetune as finetuning

    resume = values["resume"]
    if resume is not None:
        spec = finetuning.resumed_spec(resume, values["spec"], flags)
    else:
        spec = specs.build(FinetuneSpec, values["spec"], flags)
    if values["dry_run"]:
        output.show_spec(spec, values["as_json"], finetuning.planned(spec))
        return
    result = finetuning.run(spec, output.err(), resume=resume is not None, push=push)
    if values["as_json"]:
        output.emit_json(result)
    else:
        from tamt_cli.display import render_finetune

        render_finetune(result, output.out())
        if result.get("hub"):
            hub = result["hub"]
            output.out().print(f"{hub['folder']} pushed to [bold]{hub['url']}[/bold]")


def register(app: typer.Typer) -> None:
    app.command("finetune", cls=options.Command)(options.command(run, FLAGS, FinetuneSpec))
