"""``tamt extract``: flags → :class:`~tamt_cli.specs.ExtractSpec` → an exact-sparsity mask from
a search run (and, with ``--export``, a subnetwork checkpoint) → its sparsity table."""

from __future__ import annotations

from typing import Any

import typer

from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag
from tamt_cli.specs import ExtractSpec

FLAGS = (
    Flag("run", argument=True, complete=options.complete_paths),
    Flag("sparsity", shown="the run's target"),
    Flag("step", shown="the final mask"),
    Flag("export", complete=options.complete_paths),
    Flag("format", ("--format",)),
    Flag("overwrite", ("--overwrite",), switch=True,
         help="replace an existing --export folder that is a tamt run or export"),
    *options.push_flags("the --export folder"),
    *options.RUN,
)  # fmt: skip


def run(values: dict[str, Any]) -> None:
    """Take an exact-sparsity mask from a run; with --export, a subnetwork checkpoint."""
    from tamt_cli import extract as extracting
    from tamt_cli import specs

    spec = specs.build(ExtractSpec, values["spec"], options.spec_values(values, ExtractSpec))
    push = options.push_target(values)
    if values["dry_run"]:
        output.show_spec(spec, values["as_json"])
        return
    result = extracting.run(spec, output.err(), overwrite=values["overwrite"], push=push)
    if values["as_json"]:
        output.emit_json(result)
    else:
        from tamt_cli.display import sparsity_table

        out = output.out()
        out.print(sparsity_table(result["report"], f"Mask {result['mask']}"))
        if result["export"]:
            out.print(f"subnetwork written to [bold]{result['export']}[/bold]")
        if result.get("hub"):
            out.print(f"pushed to [bold]{result['hub']['url']}[/bold]")


def register(app: typer.Typer) -> None:
    app.command("extract", cls=options.Command)(options.command(run, FLAGS, ExtractSpec))
