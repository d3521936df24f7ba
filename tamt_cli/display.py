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


def env_table(report: dict[str, Any]) -> Table:
    """`tamt env`: one section per concern, ready to paste into a bug report."""
    from tamt_cli.environment import human_bytes

    table = Table(title="tamt environment", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("tamt", report["tamt"])
    table.add_row("python", f"{report['python']} ({report['executable']})")
    table.add_row("platform", report["platform"])
    table.add_section()
    for name, version in report["libraries"].items():
        table.add_row(name, version or "[red]not installed[/red]")
    trackers = [f"{n} {v}" for n, v in report["trackers"].items() if v]
    table.add_row("trackers", ", ".join(trackers) or "none installed")
    table.add_section()
    acc = report["accelerators"]
    cuda = (
        f"yes, CUDA {acc['cuda_version']}: " + ", ".join(acc["cuda_devices"])
        if acc["cuda"]
        else "no"
    )
    table.add_row("cuda", cuda)
    table.add_row("mps", "yes" if acc["mps"] else "no")
    table.add_row("cpu threads", str(acc["cpu_threads"]))
    table.add_section()
    for row in report["plugins"]:
        status = (
            row["status"]
            if row["status"] == "ok"
            else f"[red]{row['status']}[/red]: {row['error']}"
        )
        source = f"{row['distribution'] or '?'} {row['version'] or ''}".strip()
        table.add_row(f"{row['kind']} {row['name']}", f"{status} ({source})")
    table.add_section()
    for name, place in report["caches"].items():
        table.add_row(f"cache {name}", f"{place['path']} ({human_bytes(place['bytes'])})")
    table.add_section()
    state = report["hub"]
    if state["offline_mode"]:
        reach = "offline mode (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE or TRANSFORMERS_OFFLINE)"
    elif state["reachable"] is None:
        reach = "not checked"
    else:
        reach = "[green]reachable[/green]" if state["reachable"] else "[red]unreachable[/red]"
    proxy = ", through a proxy" if state["proxy"] else ""
    table.add_row("hub", f"{state['endpoint']}: {reach}{proxy}")
    return table


def cache_table(summary: dict[str, Any]) -> Table:
    """`tamt cache list`: the size of the cached blocks per corpus."""
    from tamt_cli.environment import human_bytes

    table = Table(
        title=f"Token-block cache {summary['path']}", title_justify="left", box=box.SIMPLE_HEAD
    )
    for col in ("corpus", "files", "size"):
        table.add_column(col, justify="left" if col == "corpus" else "right")
    for row in summary["corpora"]:
        table.add_row(row["corpus"], str(row["files"]), human_bytes(row["bytes"]))
    table.add_section()
    files = sum(r["files"] for r in summary["corpora"])
    table.add_row("total", str(files), human_bytes(summary["bytes"]), style="bold")
    return table
