"""``tamt report``: finished runs → tables (and plots) of scores by method and sparsity, mask
overlap and held-out loss correlation, in the format asked for. Nothing is recomputed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import typer

from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag

Format = Literal["table", "md", "csv", "json"]

FLAGS = (
    Flag("paths", argument=True, type=list[Path], default=..., required=True,
         help="sweep directories, search/finetune runs, eval JSON, or mask files"),
    Flag("format", ("--format", "-f"), type=Format, default="table",
         help="a table on the terminal, Markdown, CSV or JSON"),
    Flag("plots", type=Path, help="write PNG figures into this folder (needs matplotlib)"),
)  # fmt: skip


def run(values: dict[str, Any]) -> None:
    """Tables (and plots) from finished runs: scores by method and sparsity, matching, mask
    overlap, held-out loss correlation. Nothing is recomputed."""
    from tamt_cli import report as reporting

    plots, form = values["plots"], values["format"]
    if plots is not None:
        from tamt_cli import plots as plotting

        plotting.require()
    inputs = reporting.read(values["paths"])
    doc = (
        reporting.compare_files(inputs.mask_files) if inputs.mask_files else reporting.build(inputs)
    )
    if form == "json":
        output.emit_json(doc)
    elif form == "csv":
        sys.stdout.write(reporting.to_csv(doc))
    elif form == "md":
        sys.stdout.write(reporting.to_markdown(doc))
    else:
        reporting.render(doc, output.out())
    if plots is not None and "rows" in doc:
        written = plotting.write(doc, plots)
        output.err().print(f"{len(written)} figures written to [bold]{plots}[/bold]")


def register(app: typer.Typer) -> None:
    app.command("report", cls=options.Command)(options.command(run, FLAGS))
