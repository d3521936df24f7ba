"""``tamt bench``: flags → :class:`~tamt_cli.specs.BenchSpec` → file sizes and inference
latency of a subnetwork against its dense model → a table or JSON."""

from __future__ import annotations

from typing import Any

import typer

from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag
from tamt_cli.specs import BenchSpec


def _length() -> str:
    from tamt_cli.bench import DEFAULT_LENGTH

    return f"{DEFAULT_LENGTH}; with --task, {options.task_defaults('max_length')}"


FLAGS = (
    Flag("subnetwork", argument=True, complete=options.complete_paths),
    Flag("model"),
    Flag("batch_size"),
    Flag("max_length", shown=_length),
    Flag("repeats"),
    Flag("warmup"),
    Flag("seed"),
    Flag("task", complete=options.complete_tasks),
    Flag("data_dir", shown="the hub", complete=options.complete_paths),
    options.TASK_OPTION,
    *options.RUN,
)


def run(values: dict[str, Any]) -> None:
    """Sizes on disk (dense, compressed) and inference latency of a subnetwork against its dense
    model, on the sparse kernels this machine has."""
    from tamt_cli import specs

    flags = {
        **options.spec_values(values, BenchSpec),
        "task_options": options.parse_pairs(values["task_option"], "--task-option"),
    }
    spec = specs.build(BenchSpec, values["spec"], flags)
    if values["dry_run"]:
        output.show_spec(spec, values["as_json"])
        return
    from tamt_cli import bench

    output.present(bench.run(spec, output.err()), values["as_json"], "bench_table")


def register(app: typer.Typer) -> None:
    app.command("bench", cls=options.Command)(options.command(run, FLAGS, BenchSpec))
