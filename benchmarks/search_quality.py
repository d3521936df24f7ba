"""Held-out pre-training loss of masks found by each method, at one sparsity and step budget.

Runs the real command line: `tamt search` for `kd`, `mlm`, `omp` and `random`, then
`tamt eval --objective kd` and `--objective mlm` on every mask and on the dense model. Every
subnetwork is scored with the same MLM head (the checkpoint's, or for a model without one the
head fitted once on the dense model with the same settings as the searches, from tamt's cache).
Expected: dense < kd, mlm < omp < random.

    python benchmarks/search_quality.py --steps 150 --max-length 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "enwiki-excerpt.txt"


def tamt(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict:
    """`python -m tamt_cli ARGS --json` in ``cwd``; its JSON output, or exit with its error."""
    env = {**os.environ, "TAMT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "tamt_cli", *args, "--json"],
        capture_output=True, text=True, cwd=cwd, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"tamt {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--corpus", default=str(SHARED))
    parser.add_argument("--sparsity", default="0.7")
    parser.add_argument("--steps", default="150")
    parser.add_argument("--max-length", default="64")
    parser.add_argument("--batch-size", default="16")
    parser.add_argument("--head-warmup-steps", default="200")
    parser.add_argument("--eval-blocks", default="128")
    parser.add_argument("--lr", default=None, help="mask-training lr [method default]")
    parser.add_argument("--head-lr", default=None, help="MLM head lr while masks train")
    parser.add_argument("--head-warmup-lr", default=None, help="lr of fitting a missing head")
    parser.add_argument("--methods", default="kd,mlm,omp,random")
    parser.add_argument(
        "--mask-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a mask-training option (-o), e.g. scores=binary; repeatable",
    )
    args = parser.parse_args()
    if not Path(args.corpus).exists() and args.corpus != "demo":
        raise SystemExit(f"corpus {args.corpus} not found (pass --corpus demo or a text file)")

    data = ["--corpus", args.corpus, "--max-length", args.max_length]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        subjects = [("dense", args.model, None)]
        for method in args.methods.split(","):
            cmd = ["search", "-m", method, "-s", args.sparsity, "--model", args.model,
                   "--out", method, *data, "--batch-size", args.batch_size,
                   "--max-steps", args.steps,
                   "--head-warmup-steps", args.head_warmup_steps]  # fmt: skip
            if args.lr and method in {"kd", "mlm", "mlm-kd"}:
                cmd += ["--lr", args.lr]
            if method in {"kd", "mlm", "mlm-kd"}:
                cmd += [w for option in args.mask_option for w in ("-o", option)]
            if args.head_lr and method in {"mlm", "mlm-kd"}:
                cmd += ["--head-lr", args.head_lr]
            cmd += ["--head-warmup-lr", args.head_warmup_lr] if args.head_warmup_lr else []
            t0 = time.perf_counter()
            tamt(*cmd, cwd=cwd)
            subjects.append((method, method, time.perf_counter() - t0))
        for name, target, seconds in subjects:
            common = [*data, "--eval-blocks", args.eval_blocks, "--batch-size", args.batch_size,
                      "--head-warmup-steps", args.head_warmup_steps]  # fmt: skip
            common += ["--head-warmup-lr", args.head_warmup_lr] if args.head_warmup_lr else []
            kd = tamt("eval", target, "--objective", "kd", *common, cwd=cwd)
            mlm = tamt("eval", target, "--objective", "mlm", *common, cwd=cwd)
            rows.append((name, kd["loss"], mlm["loss"], seconds, mlm["mlm_head"]["about"]))

    print(f"model {args.model}  corpus {Path(args.corpus).name}  sparsity {args.sparsity}  "
          f"steps {args.steps}  length {args.max_length}  batch {args.batch_size}  "
          f"lr {args.lr or 'default'}  head lr {args.head_lr or 'default'}  "
          f"head warm-up {args.head_warmup_steps}")  # fmt: skip
    print(f"{'subnetwork':<10}{'held-out KD':>13}{'held-out MLM':>14}{'search s':>10}  MLM head")
    for name, kd, mlm, seconds, head in rows:
        shown = f"{seconds:.0f}" if seconds is not None else "-"
        print(f"{name:<10}{kd:>13.4f}{mlm:>14.4f}{shown:>10}  {head}")


if __name__ == "__main__":
    main()
