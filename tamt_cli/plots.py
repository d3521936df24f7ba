"""`tamt report --plots DIR`: PNG figures of a report document (matplotlib, the `plots` extra).

- ``score-<task>.png``: main metric vs sparsity, a line per method with a ±std band, the dense
  model's level dashed;
- ``heldout-<objective>-<task>.png``: held-out loss vs score of every subnetwork, with
  Spearman ρ;
- ``layer-sparsity.png``: achieved sparsity per layer of each subnetwork (a heat-map);
- ``mask-overlap.png``: Jaccard similarity of kept weights between the masks of each sparsity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tamt_cli.errors import UserError

MARKERS = "osD^vP*X"


def require() -> Any:
    """matplotlib's pyplot on the file-only backend, or a one-line error saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots needs matplotlib: pip install 'tamt-cli[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write(doc: dict[str, Any], folder: Path) -> list[Path]:
    """Every figure the document has data for; returns the files written."""
    plt = require()
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for task in sorted({r["task"] for r in doc["rows"]}):
        written.append(_score(plt, doc, task, folder / f"score-{task}.png"))
    for c in doc["correlations"]:
        path = folder / f"heldout-{c['objective']}-{c['task']}.png"
        written.append(_heldout(plt, doc, c, path))
    subnetworks = [subnetwork for subnetwork in doc["subnetworks"] if subnetwork["layers"]]
    if subnetworks:
        written.append(_layers(plt, subnetworks, folder / "layer-sparsity.png"))
    if doc["overlap"]:
        written.append(_overlap(plt, doc["overlap"], folder / "mask-overlap.png"))
    return written


def _methods(rows: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(r["method"])
    return seen


def _score(plt: Any, doc: dict[str, Any], task: str, path: Path) -> Path:
    rows = [r for r in doc["rows"] if r["task"] == task]
    metric = rows[0]["metric"].split("/")[-1]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, method in enumerate(m for m in _methods(rows) if m != "dense"):
        points = sorted(
            (r["sparsity"], r["mean"], r["std"] or 0.0)
            for r in rows
            if r["method"] == method and r["sparsity"] is not None
        )
        xs, means, stds = zip(*points, strict=True)
        (line,) = ax.plot(xs, means, marker=MARKERS[i % len(MARKERS)], label=method)
        low = [mean - std for mean, std in zip(means, stds, strict=True)]
        high = [mean + std for mean, std in zip(means, stds, strict=True)]
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    dense = next((r for r in rows if r["method"] == "dense"), None)
    if dense is not None:
        ax.axhline(dense["mean"], color="black", linestyle="--", linewidth=1.2, label="dense")
        if dense["std"]:
            ax.axhspan(
                dense["mean"] - dense["std"], dense["mean"] + dense["std"], color="grey", alpha=0.12
            )
    ax.set_xlabel("sparsity (fraction of masked weights pruned)")
    ax.set_ylabel(f"dev {metric} (best, mean ± std over seeds)")
    ax.set_title(f"{task}: transfer of subnetworks by sparsity")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(plt, fig, path)


def _heldout(plt: Any, doc: dict[str, Any], corr: dict[str, Any], path: Path) -> Path:
    task, objective = corr["task"], corr["objective"]
    rows = [
        r
        for r in doc["rows"]
        if r["task"] == task and r["method"] != "dense" and objective in r["heldout"]
    ]
    metric = rows[0]["metric"].split("/")[-1] if rows else "score"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, method in enumerate(_methods(rows)):
        mine = [r for r in rows if r["method"] == method]
        xs = [r["heldout"][objective] for r in mine]
        ys = [r["mean"] for r in mine]
        errors = [r["std"] or 0.0 for r in mine]
        ax.errorbar(xs, ys, yerr=errors, fmt=MARKERS[i % len(MARKERS)], capsize=3, label=method)
        for r, x, y in zip(mine, xs, ys, strict=True):  # methods' labels apart: points may meet
            ax.annotate(
                f"{r['sparsity']:g}", (x, y), textcoords="offset points",
                xytext=(6, 5 - 9 * i), fontsize="x-small", color=ax.lines[-1].get_color(),
            )  # fmt: skip
    rho = "undefined" if corr["rho"] is None else f"{corr['rho']:+.2f}"
    ax.set_xlabel(f"held-out {objective} loss (lower is closer to the dense model)")
    ax.set_ylabel(f"{task} dev {metric} (best, mean over seeds)")
    ax.set_title(f"{task}: pre-training loss vs transfer (Spearman ρ = {rho}, n = {corr['n']})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small", title="method (labels: sparsity)")
    return _save(plt, fig, path)


def _layer_order(name: str) -> tuple[int, int]:
    """Model order: the word embeddings, the layers, the pooler."""
    if name.isdigit():
        return (1, int(name))
    return (0, 0) if name == "embedding" else (2, 0)


def _layers(plt: Any, subnetworks: list[dict[str, Any]], path: Path) -> Path:
    columns = sorted(
        {k for subnetwork in subnetworks for k in subnetwork["layers"]}, key=_layer_order
    )
    values = [
        [subnetwork["layers"].get(c, float("nan")) for c in columns] for subnetwork in subnetworks
    ]
    height = 1.2 + 0.38 * len(subnetworks)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.75 * len(columns) + 2.5), height))
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"layer {c}" if c.isdigit() else c for c in columns], rotation=30)
    ax.set_yticks(range(len(subnetworks)))
    ax.set_yticklabels([subnetwork["name"] for subnetwork in subnetworks])
    kept = [_units_kept(subnetwork.get("units")) for subnetwork in subnetworks]
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                colour = "black" if value > 0.6 else "white"
                text = f"{value:.2f}" + kept[i].get(columns[j], "")
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label="sparsity")
    title = "Achieved sparsity per layer of each subnetwork"
    if any(kept):
        title += "\n(structured: units kept, n neurons, h heads)"
    ax.set_title(title)
    return _save(plt, fig, path)


def _units_kept(units: dict[str, Any] | None) -> dict[str, str]:
    """A structured subnetwork's units kept per layer as a second line of its cells:
    ``\n512n 6h`` (none for a mask of weights)."""
    if not units:
        return {}
    out = {}
    for i, layer in enumerate(units.get("layers") or []):
        parts = [f"{kept[i]}{kind[0]}" for kind, kept in units["kept"].items() if i < len(kept)]
        out[str(layer)] = "\n" + " ".join(parts)
    return out


def _overlap(plt: Any, overlap: list[dict[str, Any]], path: Path) -> Path:
    levels = sorted(
        {o["sparsity"] for o in overlap}, key=lambda level: -1 if level is None else level
    )
    fig, axes = plt.subplots(
        1, len(levels), figsize=(4.2 * len(levels) + 1.5, 4.4), squeeze=False, layout="constrained"
    )
    image = None
    for ax, level in zip(axes[0], levels, strict=True):
        pairs = [o for o in overlap if o["sparsity"] == level]
        names: list[str] = []
        for o in pairs:
            for n in (o["a"], o["b"]):
                if n not in names:
                    names.append(n)
        short = [n.split()[0] for n in names]
        matrix = [[1.0 if a == b else float("nan") for b in names] for a in names]
        for o in pairs:
            i, j = names.index(o["a"]), names.index(o["b"])
            value = o["kept_jaccard"] if o["kept_jaccard"] is not None else float("nan")
            matrix[i][j] = matrix[j][i] = value
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(short, rotation=30)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(short)
        for i in range(len(names)):
            for j in range(len(names)):
                value = matrix[i][j]
                if value == value:
                    colour = "black" if value > 0.6 else "white"
                    ax.text(
                        j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour
                    )
        where = "masks of mixed sparsity" if level is None else f"masks at sparsity {level:g}"
        ax.set_title(f"Kept-weight overlap, {where}")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="Jaccard similarity of kept weights")
    return _save(plt, fig, path, tight=False)


def _save(plt: Any, fig: Any, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
