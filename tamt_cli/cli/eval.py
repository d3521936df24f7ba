"""``tamt eval``: flags → :class:`~tamt_cli.specs.EvalSpec` → a checkpoint's task metrics, or a
subnetwork's held-out pre-training loss (``--objective``) → a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tamt_cli import specs
from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag
from tamt_cli.errors import UserError
from tamt_cli.specs import EvalSpec


def _run_or_task(attribute: str, objective: str | None = None) -> Any:
    """The fine-tuning run's value, else the task's; with --objective, ``objective``."""

    def text() -> str:
        task = f"--task: the fine-tuning run's, else {options.task_defaults(attribute)}"
        return task if objective is None else f"{task}; --objective: {objective}"

    return text


def _search_run(value: Any) -> str:
    """--objective on a search run (or its export) reads its corpus as the run did."""
    return f"a search run's or its export's, else {options.shown(value)}"


def _head(key: str) -> Any:
    return lambda: options.shown(options.head_defaults()[key])


FLAGS = (
    Flag("checkpoint", argument=True, complete=options.complete_models),
    Flag("task", required=True, more="(or --objective)", complete=options.complete_tasks),
    Flag("objective"),
    Flag("data_dir", shown="the hub", complete=options.complete_paths),
    Flag("corpus", shown=_search_run(specs.OBJECTIVE_CORPUS), complete=options.complete_corpora),
    Flag("split"),
    Flag("max_length", shown=_run_or_task("max_length", _search_run(specs.OBJECTIVE_MAX_LENGTH))),
    Flag("batch_size", shown=_run_or_task("batch_size", str(specs.OBJECTIVE_BATCH_SIZE))),
    Flag("doc_stride", shown=_run_or_task("doc_stride")),
    options.TASK_OPTION,
    Flag("held_out", shown=_search_run(specs.OBJECTIVE_HELD_OUT)),
    Flag("eval_blocks"),
    Flag("step", shown="the final mask"),
    Flag("head"),
    Flag("head_warmup_steps", shown=_head("head_warmup_steps")),
    Flag("head_warmup_lr", shown=_head("head_warmup_lr")),
    Flag("json_out", ("--json-out",), type=Path, shown="none", complete=options.complete_paths,
         help="also write the --json document to this file, whole or not at all (unlike a "
         "shell's >, which leaves an empty file when the job is killed); its folder must exist"),
    *options.RUN,
)  # fmt: skip


def run(values: dict[str, Any]) -> None:
    """Score a checkpoint on a task, or a subnetwork's pre-training loss (--objective)."""
    flags = {
        **options.spec_values(values, EvalSpec),
        "task_options": options.parse_pairs(values["task_option"], "--task-option"),
    }
    spec = specs.build(EvalSpec, values["spec"], flags)
    if (spec.task is None) == (spec.objective is None):
        objectives = "|".join(specs.OBJECTIVES)
        raise UserError(f"tamt eval needs either --task NAME or --objective {objectives}")
    json_out = values["json_out"]
    if json_out is not None:
        _check_json_out(json_out, spec, values["spec"])
    if values["dry_run"]:
        resolved = None
        if spec.objective is not None:
            from tamt_cli import evaluate

            resolved = evaluate.objective_settings(spec)
        output.show_spec(spec, values["as_json"], resolved)
        return
    from tamt_cli import evaluate

    result = evaluate.run(spec, output.err())
    if json_out is not None:
        import json

        from tamt_cli import files

        files.write_text(json_out, json.dumps(result, indent=2, default=str) + "\n")
    if values["as_json"]:
        output.emit_json(result)
    else:
        from tamt_cli.display import render_eval

        render_eval(result, output.out())


def _check_json_out(path: Path, spec: EvalSpec, spec_file: Path | None) -> None:
    """Refuse, before any work, a --json-out that is a folder, whose folder does not exist (a
    mistyped path is not made into folders), or that is a file this command reads."""
    from tamt_cli import files

    target = files.absolute(path)
    if target.is_dir():
        raise UserError(f"--json-out '{path}' is a folder; give the name of a file")
    if not target.parent.is_dir():
        problem = "is not a folder" if target.parent.exists() else "does not exist"
        raise UserError(f"--json-out '{path}': its folder '{path.parent}' {problem}")
    for source in (spec.checkpoint, spec.corpus, spec_file):
        if source is not None and target.resolve() == files.absolute(Path(source)).resolve():
            raise UserError(f"--json-out '{path}' is '{source}', which this command reads")


def register(app: typer.Typer) -> None:
    app.command("eval", cls=options.Command)(options.command(run, FLAGS, EvalSpec))
