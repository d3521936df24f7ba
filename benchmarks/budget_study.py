"""The mask-training budget study: what `tamt report` gives, cut the way the question needs it.

Reads finished sweep directories (benchmarks/budget-grid.yaml, benchmarks/nm-grid.yaml) and
prints Markdown:

1. per sparsity, every subnetwork with its search settings (lr, steps, initial scores), held-out
   KD and MLM loss, SST-2 accuracy (best evaluation, mean ± sample std over seeds), its difference
   from OMP at that sparsity with Welch's t-test p-value (scipy), the difference paired seed by
   seed with the paired t-test's p-value, and the mean accuracy at every evaluation step (the
   fine-tuning curve);
2. Spearman ρ between held-out loss and accuracy over every subnetwork (scipy);
3. per kind of matrix and per layer, the share of OMP's kept weights each mask-trained or IMP
   mask dropped (with a local scope every matrix has the target sparsity, so masks differ only
   in which weights they keep).

4. with ``--plot FILE``, the mask-trained subnetworks' accuracy difference from OMP (mean ± the
   standard error of the difference) and their kept weights' Jaccard overlap with OMP's (as
   ``tamt report`` computes it), each
   against lr × steps: with AdamW a score moves by about the learning rate per step whatever its
   gradient, so lr × steps bounds how far any score can travel from where it started.

    python benchmarks/budget_study.py sweeps/budget-grid sweeps/nm-grid --plot budget.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from tamt_cli import artifacts, maskfile, report
from tamt_cli.masking import KINDS


def search_settings(run: Path) -> dict[str, Any]:
    """lr, steps and initial scores of a search run, as it ran (its spec, the method's defaults
    where the spec left them open)."""
    spec = yaml.safe_load((run / artifacts.SPEC_FILE).read_text())
    manifest = artifacts.read_manifest(run)
    method = manifest["method"]
    if method in {"omp", "random"}:
        return {"lr": "-", "steps": 0, "scores": "-"}
    steps = [m.get("step") for m in manifest.get("masks") or [] if m.get("step") is not None]
    options = spec.get("options") or {}
    scores = options.get("scores", "graded") if method in {"kd", "mlm", "mlm-kd"} else "-"
    lr = spec.get("lr")
    if lr is None and method in {"kd", "mlm", "mlm-kd"}:
        from tamt_cli.methods.mask_training import DEFAULTS

        lr = DEFAULTS[method]["lr"]
    return {"lr": "-" if lr is None else f"{lr:g}", "steps": max(steps or [0]), "scores": scores}


def curves(runs: list[str]) -> dict[int, float]:
    """Mean accuracy at each evaluation step over the seeds' fine-tuning runs."""
    at: dict[int, list[float]] = {}
    for run in runs:
        for file in Path(run).glob("**/metrics.jsonl"):
            for line in file.read_text().splitlines():
                record = json.loads(line)
                if "validation/accuracy" in record:
                    at.setdefault(int(record["step"]), []).append(record["validation/accuracy"])
    return {step: statistics.fmean(v) for step, v in sorted(at.items())}


def welch(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if p != p else p


def paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float | None, int] | None:
    """Mean of the seed-by-seed differences of two rows over the seeds both have, with the
    paired t-test's p-value (scipy): a seed fixes the training subset, the classifier's
    initialisation and the data order, so pairing takes that variance out."""
    from scipy.stats import ttest_rel

    at = dict(zip(b["seeds"], b["values"], strict=True))
    pairs = [(v, at[s]) for s, v in zip(a["seeds"], a["values"], strict=True) if s in at]
    if len(pairs) < 2:
        return None
    diffs = [x - y for x, y in pairs]
    p = float(ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
    return statistics.fmean(diffs), (None if p != p else p), len(pairs)


def departure(run: Path, omp: Path, by: str = "kind") -> dict[str, float]:
    """Per kind of matrix (``by="kind"``) or per layer (``by="layer"``; embeddings and pooler
    under their kind): the share of the OMP mask's kept weights that ``run``'s mask prunes."""
    mine = maskfile.load_masks(run / artifacts.MASK_FILE)
    base = maskfile.load_masks(omp / artifacts.MASK_FILE)
    matrices = (artifacts.read_manifest(run).get("sparsity_report") or {}).get("matrices") or []
    key_of = {
        m["name"]: m["kind"] if by == "kind" or m["layer"] is None else f"L{m['layer']}"
        for m in matrices
    }
    kept: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for name, mask in mine.items():
        kind = key_of.get(name, "?")
        was = base[name].bool()
        kept[kind] = kept.get(kind, 0) + int(was.sum())
        dropped[kind] = dropped.get(kind, 0) + int((was & ~mask.bool()).sum())
    total = sum(dropped.values()) / max(1, sum(kept.values()))
    return {k: dropped[k] / kept[k] for k in kept if kept[k]} | {"all": total}


def table(header: list[str], rows: list[list[Any]]) -> str:
    return report.markdown(header, [[str(c) for c in row] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--plot", type=Path, help="write the budget figure (PNG) here")
    args = parser.parse_args()
    doc = report.build(report.read(args.sweeps))
    rows = [r for r in doc["rows"] if r["task"] == args.task]
    runs = {(s["method"], s["sparsity"]): Path(s["run"]) for s in doc["subnetworks"]}
    label = {(s["method"], s["sparsity"]): s["name"] for s in doc["subnetworks"]}
    kept = {frozenset((o["a"], o["b"])): o["kept_jaccard"] for o in doc["overlap"]}
    dense = next((r for r in rows if r["method"] == "dense"), None)
    if dense:
        print(
            f"dense: {dense['mean']:.2f} ± {dense['std'] or 0:.2f} "
            f"({len(dense['values'])} seeds; curve {fmt_curve(curves(dense['runs']))})\n"
        )
    points: list[dict[str, Any]] = []  # the budget figure's
    for sparsity in sorted({r["sparsity"] for r in rows if r["sparsity"] is not None}):
        omp = next((r for r in rows if r["method"] == "omp" and r["sparsity"] == sparsity), None)
        lines = []
        for r in sorted(
            (r for r in rows if r["sparsity"] == sparsity),
            key=lambda r: r["mean"],
            reverse=True,
        ):
            settings = search_settings(runs[(r["method"], sparsity)])
            delta = p = pair = None
            if omp is not None and r is not omp:
                delta = r["mean"] - omp["mean"]
                p = welch(r["values"], omp["values"])
                pair = paired(r, omp)
            if delta is not None and settings["lr"] != "-" and settings["scores"] != "-":
                se = (r["std"] or 0) ** 2 / len(r["values"])
                se += (omp["std"] or 0) ** 2 / len(omp["values"]) if omp else 0
                points.append(
                    {
                        "name": r["method"],
                        "sparsity": sparsity,
                        "travel": float(settings["lr"]) * settings["steps"],
                        "delta": delta,
                        "se": se**0.5,
                        "jaccard": kept[
                            frozenset((label[(r["method"], sparsity)], label[("omp", sparsity)]))
                        ],
                    }
                )
            lines.append(
                [
                    r["method"],
                    settings["lr"],
                    settings["steps"],
                    settings["scores"],
                    f"{r['heldout'].get('kd', float('nan')):.4f}",
                    f"{r['heldout'].get('mlm', float('nan')):.4f}",
                    f"{r['mean']:.2f} ± {r['std'] or 0:.2f}",
                    "-" if delta is None else f"{delta:+.2f}",
                    "-" if p is None else f"{p:.3f}",
                    fmt_pair(pair),
                    fmt_curve(curves(r["runs"])),
                ]
            )
        print(f"### Sparsity {sparsity:g}\n")
        header = ["subnetwork", "lr", "steps", "scores", "held-out KD", "held-out MLM"]
        header += [f"{args.task} acc", "Δ vs OMP", "p (Welch)", "Δ paired by seed (p, n)"]
        header += ["acc at each evaluation"]
        print(table(header, lines) + "\n")
    print("### Held-out loss against accuracy\n")
    for c in doc["correlations"]:
        if c["task"] == args.task and c["rho"] is not None:
            print(
                f"- {c['objective']}: Spearman ρ = {c['rho']:.3f} (p = {c['p']:.2g}, n = {c['n']})"
            )
    for by in ("kind", "layer"):
        print(f"\n### Where the masks depart from OMP's, per {by}\n")
        shares = {}
        for (name, sparsity), run in sorted(runs.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
            omp = runs.get(("omp", sparsity))
            if name not in {"omp", "random"} and omp is not None and sparsity is not None:
                shares[f"{name} s{sparsity:g}"] = departure(run, omp, by)
        keys = {k for share in shares.values() for k in share} - {"all"}
        columns = [k for k in KINDS if k in keys] + sorted(k for k in keys if k not in KINDS)
        lines = [
            [name, *(f"{share.get(k, 0):.3f}" for k in [*columns, "all"])]
            for name, share in shares.items()
        ]
        if lines:
            print(table(["mask", *columns, "all"], lines))
    if args.plot and points:
        plot(points, args.plot)


def plot(points: list[dict[str, Any]], path: Path) -> None:
    from tamt_cli import plots

    plt = plots.require()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for sparsity in sorted({p["sparsity"] for p in points}):
        mine = sorted((p for p in points if p["sparsity"] == sparsity), key=lambda p: p["travel"])
        xs = [p["travel"] for p in mine]
        left.errorbar(
            xs,
            [p["delta"] for p in mine],
            yerr=[p["se"] for p in mine],
            fmt="o",
            capsize=3,
            label=f"sparsity {sparsity:g}",
        )
        right.plot(xs, [p["jaccard"] for p in mine], "o", label=f"sparsity {sparsity:g}")
        for p in mine:
            for ax, key in ((left, "delta"), (right, "jaccard")):
                ax.annotate(
                    p["name"],
                    (p["travel"], p[key]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    left.axhline(0, color="grey", linestyle="--", linewidth=1)
    left.set_ylabel("SST-2 accuracy − OMP's (points; mean ± s.e.)")
    right.set_ylabel("kept weights shared with OMP (Jaccard)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("lr × steps (how far a score can move)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Mask-training budget: transfer and distance from the magnitude mask")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt_pair(pair: tuple[float, float | None, int] | None) -> str:
    if pair is None:
        return "-"
    delta, p, n = pair
    return f"{delta:+.2f} ({'-' if p is None else f'{p:.3f}'}, {n})"


def fmt_curve(curve: dict[int, float]) -> str:
    return " → ".join(f"{v:.1f}" for v in curve.values())


if __name__ == "__main__":
    main()
