"""``tamt sweep``: a grid file → its plan of cells → the cells run, listed, or printed as one
command line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag
from tamt_cli.errors import UserError

FLAGS = (
    Flag("grid", argument=True, type=Path, required=True,
         help="grid file (YAML, JSON or TOML)"),
    Flag("out", type=Path, help="sweep directory",
         shown="the grid's out, else sweeps/<grid file name>"),
    Flag("print_commands", ("--print-commands",), switch=True,
         help="print one `tamt` command line per cell still to run (each writes its result "
         "itself), making the sweep directory for them if it is new"),
    Flag("fail_fast", ("--fail-fast",), switch=True, help="stop at the first failed cell"),
    Flag("dry_run", ("--dry-run",), switch=True,
         help="list the cells and what is done, run nothing"),
    Flag("shard", type=str, shown="every cell",
         help="K/N: run only the K-th of every N searches with the cells that read them, so N "
         "processes (or array jobs) share one sweep directory"),
    options.JSON,
)  # fmt: skip


def run(values: dict[str, Any]) -> None:
    """Run a grid: methods × sparsities searched once, fine-tuned on tasks × seeds."""
    from tamt_cli import sweep as sweeping

    grid, shard, as_json = values["grid"], values["shard"], values["as_json"]
    if grid is None:
        raise UserError("tamt sweep needs a grid file: tamt sweep GRID.yaml")
    parts = sweeping.parse_shard(shard) if shard is not None else None
    plan = sweeping.plan(grid, values["out"])
    if values["print_commands"]:
        with sweeping.hold(plan, parts):  # the folder the lines write into, made if new
            lines = sweeping.commands(_shard(plan, parts))
        for line in lines:
            typer.echo(line)
    elif values["dry_run"]:
        _shard(plan, parts)
        if as_json:
            output.emit_json(sweeping.listing(plan))
        else:
            sweeping.render_listing(plan, output.out())
    else:
        index = sweeping.run(plan, output.err(), fail_fast=values["fail_fast"], shard=parts)
        if as_json:
            output.emit_json(index)
        else:
            done = len(sweeping.shard_of(plan, parts))
            which = f" (shard {shard})" if shard else ""
            output.out().print(f"sweep complete{which}: {done} cells in [bold]{plan.out}[/bold]")


def _shard(plan: Any, parts: tuple[int, int] | None) -> Any:
    """``plan`` with the cells of shard ``parts`` only, after a note on each cell that runs
    again although its file is there."""
    from tamt_cli import sweep as sweeping
    from tamt_cli import verbosity

    if parts is not None:
        mine = sweeping.shard_of(plan, parts)
        plan.cells = [c for c in plan.cells if c.id in mine]
    for cell in plan.cells:
        if cell.note:
            verbosity.note(output.err(), cell.note)
    return plan


def register(app: typer.Typer) -> None:
    app.command("sweep", cls=options.Command)(options.command(run, FLAGS))
