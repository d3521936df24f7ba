"""Search cost against mask quality: IMP against `kd` and `mlm` mask training at one sparsity.

Runs the real command line: `tamt eval --objective kd` on the dense model first (which also
tokenises the corpus into a private cache, so no search pays for it), then `tamt search` for
`imp` (MLM by default, as in the paper; `imp-kd` / `imp-mlm-kd` name the other objectives) and
for `kd` and `mlm` mask training, timing each command to its target mask; then
`tamt eval --objective kd` and `--objective mlm` on every mask (the MLM head is fitted on each
subnetwork for `--head-warmup-steps`, except for `mlm`, whose head trained with its mask). The
paper's claim to check: mask training reaches a lower held-out loss than IMP at a fraction of
IMP's search time (the project's goal: at most 1/5).

    python benchmarks/search_efficiency.py --steps-per-round 20 --max-length 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import tamt  # the same subprocess helper

CORPUS = Path(__file__).resolve().parents[2] / "shared/data/corpus/enwiki-excerpt.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--sparsity", default="0.7")
    parser.add_argument("--prune-fraction", default="0.1")
    parser.add_argument("--steps-per-round", default="20", help="IMP training steps per round")
    parser.add_argument(
        "--mask-steps", default=None, help="mask-training steps [= IMP's total steps]"
    )
    parser.add_argument("--max-length", default="64")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--head-warmup-steps", default="100")
    parser.add_argument("--search-eval-blocks", default="32", help="held-out blocks in searches")
    parser.add_argument("--eval-blocks", default="128", help="held-out blocks scored at the end")
    parser.add_argument("--imp-lr", default=None, help="IMP weight lr [method default, 5e-5]")
    parser.add_argument("--mask-lr", default=None, help="mask-training lr [method default]")
    parser.add_argument("--methods", default="imp,kd,mlm", help="imp[-kd|-mlm-kd], kd, mlm, ...")
    parser.add_argument(
        "--mask-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a mask-training option (-o), e.g. scores=binary; repeatable",
    )
    parser.add_argument(
        "--imp-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an IMP option (-o), e.g. schedule=round; repeatable",
    )
    args = parser.parse_args()
    if not Path(args.corpus).exists() and args.corpus != "demo":
        raise SystemExit(f"corpus {args.corpus} not found (pass --corpus demo or a text file)")
    rounds = round(float(args.sparsity) / float(args.prune_fraction))
    imp_steps = (rounds - 1) * int(args.steps_per_round)
    mask_steps = args.mask_steps or str(imp_steps)

    data = ["--corpus", args.corpus, "--max-length", args.max_length]
    scoring = [*data, "--eval-blocks", args.eval_blocks, "--batch-size", args.batch_size,
               "--head-warmup-steps", args.head_warmup_steps]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        os.environ["TAMT_CACHE_DIR"] = str(cwd / "cache")
        dense = tamt("eval", args.model, "--objective", "kd", *scoring, cwd=cwd)
        assert dense["loss"] < 1e-6
        searches = []
        for name in args.methods.split(","):
            cmd = ["search", "-s", args.sparsity, "--model", args.model, "--out", name, *data,
                   "--batch-size", args.batch_size, "--head-warmup-steps", args.head_warmup_steps,
                   "--eval-blocks", args.search_eval_blocks]  # fmt: skip
            if name.startswith("imp"):
                objective = name.removeprefix("imp-") if name != "imp" else "mlm"
                cmd += ["-m", "imp", "-o", f"objective={objective}",
                        "-o", f"steps_per_round={args.steps_per_round}",
                        "-o", f"prune_fraction={args.prune_fraction}"]  # fmt: skip
                cmd += ["--lr", args.imp_lr] if args.imp_lr else []
                cmd += [w for option in args.imp_option for w in ("-o", option)]
                steps = imp_steps
            else:
                cmd += ["-m", name, "--max-steps", mask_steps]
                cmd += ["--lr", args.mask_lr] if args.mask_lr else []
                cmd += [w for option in args.mask_option for w in ("-o", option)]
                steps = int(mask_steps)
            t0 = time.perf_counter()
            tamt(*cmd, cwd=cwd)
            searches.append((name, steps, time.perf_counter() - t0))
        for name, steps, seconds in searches:
            kd = tamt("eval", name, "--objective", "kd", *scoring, cwd=cwd)
            mlm = tamt("eval", name, "--objective", "mlm", *scoring, cwd=cwd)
            rows.append((name, steps, seconds, kd["loss"], mlm["loss"], mlm["mlm_head"]))

    base = next((s for n, _, s, *_ in rows if n.startswith("imp")), None)
    print(f"model {args.model}  corpus {Path(args.corpus).name}  sparsity {args.sparsity}  "
          f"IMP {rounds} rounds × {args.steps_per_round} steps (fraction {args.prune_fraction})  "
          f"length {args.max_length}  batch {args.batch_size}  "
          f"head warm-up {args.head_warmup_steps}")  # fmt: skip
    print(f"{'method':<10}{'steps':>7}{'search s':>10}{'× IMP':>8}{'held-out KD':>13}"
          f"{'held-out MLM':>14}  MLM head")  # fmt: skip
    for name, steps, seconds, kd, mlm, head in rows:
        ratio = f"{seconds / base:.2f}" if base else "-"
        print(f"{name:<10}{steps:>7}{seconds:>10.0f}{ratio:>8}{kd:>13.4f}{mlm:>14.4f}  {head}")


if __name__ == "__main__":
    main()
