"""Rich tables for people; the same data goes out as JSON with --json."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text


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
    captions = [units_line(report["units"])] if report.get("units") else []
    if absent:
        captions.append("not prunable: " + ", ".join(f"{n} ({why})" for n, why in absent.items()))
    if captions:
        table.caption = "\n".join(captions)
        table.caption_justify = "left"
    return table


def units_line(units: dict[str, Any]) -> str:
    """``units kept: neurons 32 of 64, heads 1 of 2 in every layer`` (the kept counts by layer
    where layers differ)."""
    parts = []
    for kind, kept in units["kept"].items():
        count = units["count"][kind]
        shown = str(kept[0]) if len(set(kept)) == 1 else "/".join(str(k) for k in kept)
        parts.append(f"{kind} {shown} of {count}")
    return f"units kept ({units['structure']}): " + ", ".join(parts) + " in every layer"


def plugins_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Installed plugins", title_justify="left")
    for col in ("kind", "name", "distribution", "version", "status", "structures", "about"):
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
            ", ".join(row["structures"] or ["-"]),
            about or "",
        )
    return table


def plugin_options_table(doc: dict[str, Any]) -> Group:
    """`tamt plugins NAME`: a method's or task's options, with types, defaults and help."""
    source = f"{doc['distribution'] or '?'} {doc['version'] or ''}".strip()
    head = Text.assemble((f"{doc['kind']} {doc['name']}", "bold"), f" ({source}): {doc['summary']}")
    if doc.get("structures"):
        head.append(f"\n--structure: {', '.join(doc['structures'])}")
    if not doc["options"]:
        return Group(head, Text("no options"))
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("option", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for option in doc["options"]:
        name = option["name"] + (f" ({option['flag']})" if option.get("flag") else "")
        default = "required" if option["required"] else _option_default(option["default"])
        if option.get("effective_default") is not None:  # a value the method fills in
            default = f"{option['effective_default']} (the method's)"
        table.add_row(name, option["type"], default, option["description"])
    return Group(head, table, Text(f"given as {doc['given_as']}"))


def _option_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != {} else "{}"


def print_yaml(console: Console, text: str) -> None:
    """YAML highlighted on a terminal; long lines wrap there, never cropped."""
    from rich.syntax import Syntax

    console.print(
        Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default", word_wrap=True)
    )


def result_table(result: dict[str, Any], title: str) -> Table:
    """A two-column table of a flat result object."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in result.items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    return table


def render_eval(result: dict[str, Any], console: Console) -> None:
    """`tamt eval`: a task's metrics per split, or the held-out loss of ``--objective``."""
    if "objective" in result:
        console.print(result_table(result, f"Held-out {result['objective']} loss"))
        return
    table = Table(
        title=f"{result['task']} on {result['checkpoint']}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("split", "examples", "metric", "value"):
        table.add_column(col, justify="left" if col in {"split", "metric"} else "right")
    for split, row in result["splits"].items():
        for i, (name, value) in enumerate(row["metrics"].items()):
            table.add_row(split if i == 0 else "", str(row["examples"]) if i == 0 else "", name,
                          _value(value))  # fmt: skip
    console.print(table)
    sparsity = result.get("mask_sparsity")
    shown = "dense (no mask)" if sparsity is None else f"{sparsity:.2%}"
    console.print(f"mask sparsity {shown}")


def render_finetune(result: dict[str, Any], console: Console) -> None:
    """`tamt finetune`: best and final scores per seed, mean ± std over seeds."""
    sparsity = result.get("mask_sparsity")
    shown = "dense" if sparsity is None else f"mask sparsity {sparsity:.2%}"
    table = Table(
        title=f"{result['task']}: {result['subnetwork']} ({shown})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption=f"best: highest {result['selected_by']} over the evaluations (the paper "
        "reports it); final: after the last step (the saved weights)",
        caption_justify="left",
    )
    columns = [(split, name) for split, metrics in result["best"].items() for name in metrics]
    several = len(result["best"]) > 1
    table.add_column("seed", justify="right")
    table.add_column("best step", justify="right")
    for split, name in columns:
        label = f"{split}/{name}" if several else name
        table.add_column(f"{label} best", justify="right")
        table.add_column(f"{label} final", justify="right")
    table.add_column("seconds", justify="right")
    for r in result["runs"]:
        cells = [str(r["seed"]), str(r["best"]["step"])]
        for split, name in columns:
            cells += [
                _value(r["best"]["metrics"][split][name]),
                _value(r["final"]["metrics"][split][name]),
            ]
        table.add_row(*cells, f"{r['seconds']:.0f}")
    if len(result["runs"]) > 1:
        table.add_section()
        cells = ["mean ± std", ""]
        for split, name in columns:
            for which in ("best", "final"):
                stat = result[which][split][name]
                cells.append(plus_minus(stat["mean"], stat["std"]))
        table.add_row(*cells, "", style="bold")
    console.print(table)
    console.print(f"fine-tuned models in [bold]{result['out']}[/bold]")


def _value(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def env_table(report: dict[str, Any]) -> Table:
    """`tamt env`: one section per concern, ready to paste into a bug report."""
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
    table.add_row("mixed precision auto", acc["mixed_precision_auto"])
    alloc = report["allocator"]
    malloc = alloc["glibc_tunables"] or "defaults"
    if alloc["ld_preload"]:
        malloc += f" (LD_PRELOAD {alloc['ld_preload']})"
    table.add_row("malloc", f"{alloc['libc'] or 'not glibc'}: {malloc}")
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
    """`tamt cache list`: the size of the cached blocks per corpus, of the fitted heads and of
    the tokenised data per task."""
    table = Table(title=f"tamt cache {summary['path']}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("corpus", "files", "size"):
        table.add_column(col, justify="left" if col == "corpus" else "right")
    for row in summary["corpora"]:
        table.add_row(row["corpus"], str(row["files"]), human_bytes(row["bytes"]))
    table.add_section()
    files = sum(r["files"] for r in summary["corpora"])
    table.add_row("total", str(files), human_bytes(summary["bytes"]), style="bold")
    return table


def _inputs(result: dict[str, Any]) -> str:
    inputs = result.get("inputs") or {}
    if inputs.get("kind") == "task":
        return f"{inputs['task']} {inputs['split']}, {inputs['tokens']} real tokens"
    return "random ids"


def bench_table(result: dict[str, Any]) -> Group:
    """Sizes, then latency of every way of running the subnetwork, then the kernels."""
    sizes = result["sizes"]
    head = Text(
        f"{result['subnetwork']} over {result['model']}: sparsity {result['sparsity']:.3f}"
        + (f", pattern {result['pattern']}" if result["pattern"] else "")
        + f"; batch {result['batch_size']} × {result['max_length']} tokens ({_inputs(result)}), "
        f"{result['repeats']} runs, {result['threads']} threads, {result['device']}\n"
        f"model.safetensors: dense {sizes['dense_bytes'] / 1e6:.1f} MB, compressed "
        f"{sizes['compressed_bytes'] / 1e6:.1f} MB ({sizes['ratio']:.3f})" + _sliced_sizes(result)
    )
    table = Table(title="Latency", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("variant", "device", "median ms", "q1–q3 ms", "min–max ms", "speed-up", "max |Δ|"):
        left = col in {"variant", "device"}
        table.add_column(col, justify="left" if left else "right", no_wrap=True)
    for row in result["latency"]:
        diff = row["max_abs_diff"]
        table.add_row(
            row["name"],
            row["device"],
            f"{row['median_ms']:.2f}",
            f"{row['q1_ms']:.2f}–{row['q3_ms']:.2f}",
            f"{row['min_ms']:.2f}–{row['max_ms']:.2f}",
            f"{row['speedup']:.2f}×",
            "-" if diff is None else f"{diff:.2e}",
        )
    kernels = Table(title="Sparse kernels", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("kernel", "what", "here", "note"):
        kernels.add_column(col)
    for k in result["kernels"]:
        kernels.add_row(k["name"], k["what"], "yes" if k["available"] else "no", k["note"])
    parts: list[Any] = [head, table, kernels]
    parts += [Text(note) for note in result["notes"]]
    return Group(*parts)


def _sliced_sizes(result: dict[str, Any]) -> str:
    """The sliced model's file size and parameters against the dense model's, if timed."""
    sizes = result["sizes"]
    if "sliced_bytes" not in sizes:
        return ""
    params = sizes["parameters"]
    return (
        f", sliced ({result['structure']}) {sizes['sliced_bytes'] / 1e6:.1f} MB "
        f"({sizes['sliced_ratio']:.3f}); parameters: dense {params['dense']:,}, sliced "
        f"{params['sliced']:,} ({params['sliced'] / params['dense']:.3f})"
    )


# -- figures for people ---------------------------------------------------------------------


def plus_minus(mean: float | None, std: float | None) -> str:
    """``81.25 ± 0.43``; the mean alone for one seed (``std`` None); ``-`` for no mean."""
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def human_bytes(n: int | None) -> str:
    """``512 B``, ``1.5 KiB`` … ``2.0 GiB`` (``-`` for None)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover
