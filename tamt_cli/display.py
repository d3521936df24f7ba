"""Rich tables for people; the same data goes out as JSON with --json."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def sparsity_table(report: dict[str, Any], title: str = "Sparsity") -> Table:
    """Per kind (with the spread over its matrices) and overall."""
    from tamt_cli.masking import KIND_NAMES

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("kind", "n", "weights", "pruned", "sparsity", "min", "max"):
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for kind, row in report["kinds"].items():
        per = [m["sparsity"] for m in report["matrices"] if m["kind"] == kind]
        table.add_row(
            KIND_NAMES.get(kind, kind),
            str(row["matrices"]),
            f"{row['numel']:,}",
            f"{row['pruned']:,}",
            f"{row['sparsity']:.3%}",
            f"{min(per):.3%}",
            f"{max(per):.3%}",
        )
    overall = report["overall"]
    table.add_section()
    table.add_row(
        "overall",
        str(len(report["matrices"])),
        f"{overall['numel']:,}",
        f"{overall['pruned']:,}",
        f"{overall['sparsity']:.3%}",
        "",
        "",
        style="bold",
    )
    absent = report.get("not_prunable") or {}
    if absent:
        table.caption = "not prunable: " + ", ".join(f"{n} ({why})" for n, why in absent.items())
        table.caption_justify = "left"
    return table


def plugins_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Installed plugins", title_justify="left")
    for col in ("kind", "name", "distribution", "version", "status", "about"):
        table.add_column(col)
    for row in rows:
        status = row["status"]
        style = "green" if status == "ok" else "red"
        about = row["summary"] if status == "ok" else row["error"]
        table.add_row(
            row["kind"],
            row["name"],
            row["distribution"] or "-",
            row["version"] or "-",
            f"[{style}]{status}[/{style}]",
            about or "",
        )
    return table


def print_yaml(console: Console, text: str) -> None:
    from rich.syntax import Syntax

    console.print(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))


def result_table(result: dict[str, Any], title: str) -> Table:
    """A two-column table of a flat result object."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in result.items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    return table
