"""Fidelity: the paper's ordering of subnetworks in held-out pre-training loss, per sparsity.

For every sparsity, method and seed it runs `tamt search` through the real command line, then
`tamt eval --objective kd` and `--objective mlm` (every subnetwork scored with the same MLM
head: the checkpoint's, or the one fitted once on the dense model with the searches' settings).
Mask training gets the step budget IMP needs for the same sparsity ((10·s − 1) rounds' worth of
`--steps-per-round`), as in the paper. It prints, per sparsity and method: held-out KD and MLM
loss (mean over seeds), the Jaccard overlap of the kept weights with OMP's mask, the Jaccard
overlap of the weights two seeds flipped relative to OMP (how reproducible the search is), and
search seconds; then whether the paper's ordering holds in each held-out loss, with the mask
trained on that loss first (kd < IMP < OMP < random in KD loss, mlm < … in MLM loss), and
which pairs break it.

    python benchmarks/fidelity.py --steps-per-round 10 --batch-size 8 --max-length 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import SHARED, tamt  # the same subprocess helper

#: name → (method, extra search flags)
METHODS = {
    "kd": ("kd", []),
    "mlm": ("mlm", []),
    "imp": ("imp", []),
    "imp-norewind": ("imp", ["-o", "rewind=false"]),
    "omp": ("omp", []),
    "random": ("random", []),
}
TRAINED = {"kd", "mlm", "imp", "imp-norewind"}


def jaccard(a, b) -> float:
    """|a ∩ b| / |a ∪ b| over boolean tensors (1.0 when both are empty)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def overlaps(masks: dict[str, dict], omp: dict) -> tuple[float, float | None]:
    """(Jaccard of kept weights with OMP, mean over seeds; Jaccard of the sets two seeds
    flipped relative to OMP, or None with one seed)."""
    import torch

    def flat(m: dict) -> torch.Tensor:
        return torch.cat([m[k].reshape(-1) for k in sorted(m)])

    base = flat(omp)
    kept = [jaccard(flat(m), base) for m in masks.values()]
    flipped = [flat(m) ^ base for m in masks.values()]
    between = jaccard(flipped[0], flipped[1]) if len(flipped) > 1 else None
    return statistics.fmean(kept), between


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--corpus", default=str(SHARED))
    parser.add_argument("--sparsities", default="0.5,0.7,0.9")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--max-length", default="64")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--eval-blocks", default="64")
    parser.add_argument("--head-warmup-steps", default="300")
    parser.add_argument("--head-warmup-lr", default=None)
    parser.add_argument("--mask-lr", default=None, help="mask-training lr [method default]")
    parser.add_argument(
        "--mask-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a mask-training option (-o), e.g. scores=binary; repeatable",
    )
    parser.add_argument("--out", default="fidelity-runs", help="where the runs are kept")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument(
        "--only-done", action="store_true", help="run nothing: report the runs already scored"
    )
    args = parser.parse_args()
    if not Path(args.corpus).exists() and args.corpus != "demo":
        raise SystemExit(f"corpus {args.corpus} not found (pass --corpus demo or a text file)")

    from tamt_cli import artifacts, maskfile

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--corpus", args.corpus, "--max-length", args.max_length]
    head = ["--batch-size", args.batch_size, "--head-warmup-steps", args.head_warmup_steps]
    head += ["--head-warmup-lr", args.head_warmup_lr] if args.head_warmup_lr else []
    seeds = args.seeds.split(",")
    rows = []
    for sparsity in args.sparsities.split(","):
        rounds = round(float(sparsity) * 10) - 1
        budget = str(max(1, rounds) * args.steps_per_round)
        for name in args.methods.split(","):
            method, extra = METHODS[name]
            losses: dict[str, list[float]] = {"kd": [], "mlm": []}
            seconds, masks = [], {}
            for seed in seeds if name != "omp" else seeds[:1]:  # omp has no randomness
                run = out / f"{name}-s{sparsity}-seed{seed}"
                scored = [run / f"eval-{o}.json" for o in ("kd", "mlm")]
                if args.only_done and not all(f.is_file() for f in scored):
                    continue
                where = str(run.resolve())
                cmd = ["search", "-m", method, "-s", sparsity, "--model", args.model,
                       "--seed", seed, "--out", where, *data, *head, *extra]  # fmt: skip
                if method in {"kd", "mlm"}:
                    cmd += ["--max-steps", budget]
                    cmd += ["--lr", args.mask_lr] if args.mask_lr else []
                    for option in args.mask_option:
                        cmd += ["-o", option]
                if method == "imp":
                    cmd += ["-o", f"steps_per_round={args.steps_per_round}"]
                if not (run / artifacts.MASK_FILE).is_file():  # a finished run is reused
                    t0 = time.perf_counter()
                    tamt(*cmd, cwd=out)
                    (run / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
                seconds.append(float((run / "seconds.txt").read_text()))
                masks[seed] = maskfile.load_masks(run / artifacts.MASK_FILE)
                for objective in ("kd", "mlm"):
                    scored = run / f"eval-{objective}.json"  # kept: a rerun only adds rows
                    if not scored.is_file():
                        common = [*data, *head, "--eval-blocks", args.eval_blocks]
                        res = tamt("eval", str(run.resolve()), "--objective", objective,
                                   *common, cwd=out)  # fmt: skip
                        scored.write_text(json.dumps(res))
                    losses[objective].append(json.loads(scored.read_text())["loss"])
            if not masks:
                continue
            rows.append(
                {
                    "sparsity": float(sparsity),
                    "method": name,
                    "steps": (int(budget) if name in TRAINED else 0),
                    "kd": statistics.fmean(losses["kd"]),
                    "kd_values": losses["kd"],
                    "mlm": statistics.fmean(losses["mlm"]),
                    "mlm_values": losses["mlm"],
                    "seconds": statistics.fmean(seconds),
                    "masks": masks,
                }
            )
        omp_rows = [r for r in rows if r["sparsity"] == float(sparsity) and r["method"] == "omp"]
        for r in rows:
            if r["sparsity"] == float(sparsity) and omp_rows:
                omp = next(iter(omp_rows[0]["masks"].values()))
                r["kept_vs_omp"], r["flipped_between_seeds"] = overlaps(r["masks"], omp)
    for r in rows:
        r.pop("masks")

    print(f"model {args.model}  corpus {Path(args.corpus).name}  seeds {args.seeds}  "
          f"length {args.max_length}  batch {args.batch_size}  IMP steps/round "
          f"{args.steps_per_round}  held-out blocks {args.eval_blocks}")  # fmt: skip
    print("| sparsity | method | steps | held-out KD | held-out MLM | kept ∩ OMP (Jaccard) | "
          "flipped, seed vs seed (Jaccard) | search s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        between = r.get("flipped_between_seeds")
        shown = "-" if between is None else f"{between:.3f}"
        print(f"| {r['sparsity']:g} | {r['method']} | {r['steps']} | {r['kd']:.4f} | "
              f"{r['mlm']:.4f} | {r.get('kept_vs_omp', float('nan')):.3f} | {shown} | "
              f"{r['seconds']:.0f} |")  # fmt: skip
    for sparsity in sorted({r["sparsity"] for r in rows}):
        by = {r["method"]: r for r in rows if r["sparsity"] == sparsity}
        for objective in ("kd", "mlm"):
            # the paper's ordering, in the loss a method trains on: that method's mask first
            ranked = sorted(by, key=lambda m: by[m][objective])
            tiers = [[objective], ["imp", "imp-norewind"], ["omp"], ["random"]]
            members = [[m for m in t if m in by] for t in tiers]
            breaks = [
                f"{a} {by[a][objective]:.4f} ≥ {b} {by[b][objective]:.4f}"
                for i in range(4)
                for j in range(i + 1, 4)
                for a in members[i]
                for b in members[j]
                if by[a][objective] >= by[b][objective]
            ]
            shown = " < ".join(f"{m} {by[m][objective]:.4f}" for m in ranked)
            verdict = "holds" if not breaks else "breaks: " + "; ".join(breaks)
            if sum(bool(m) for m in members) < 2:
                verdict = "cannot be judged (fewer than two of its groups were run)"
            print(
                f"sparsity {sparsity:g}, held-out {objective}: {shown}  → {objective} < IMP < "
                f"OMP < random {verdict}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
