"""Seconds per step of the default `kd` search (and of `mlm` and fine-tuning), in several
settings timed alternately.

Each variant is ``tamt search --method kd --sparsity 0.7 --model demo --corpus demo`` (the
defaults: 1,000 steps of 16 blocks of 128 tokens) cut to ``--steps`` steps (``--command mlm``:
the same with ``--method mlm``, whose MLM head is fitted once into the cache by a first run
that is not timed; ``--command finetune``: ``tamt finetune demo --task sst2`` on ``--data-dir``
at 16 × 128 for 1,000 sentences), run through tamt's
own entry point (``python -m tamt_cli``, so the malloc restart happens as it does for ``tamt``)
in a process of its own. The variants take turns, ``--rounds`` times, so that all see the same
machine state; a run's seconds per step are those between its first logged step and its last
(start-up, the first step and the final held-out loss excluded). The table gives each variant's
median, the 1,000 steps it implies (plus the median start-up and end of a run), each
variant's speed against the first, and the last logged loss (equal losses: the same arithmetic).

    python benchmarks/search_speed.py --steps 24 --rounds 3
    python benchmarks/search_speed.py --command mlm --variants fp32,bf16
    python benchmarks/search_speed.py --command finetune --variants fp32,bf16 \
        --data-dir ../shared/data/glue/SST-2

Variants (``--variants`` picks some, in that order):

- ``fp32-0.2``: fp32 with the malloc settings tamt 0.2 ran with (no ``tcache``, blocks of 4 MiB
  and more mapped on their own);
- ``fp32``: fp32 as ``tamt`` runs it now;
- ``fp32-glibc``: fp32 with glibc's own malloc defaults (``TAMT_MALLOC=system``);
- ``auto``: ``--mixed-precision auto`` (bf16 on a CPU with AMX or AVX-512 BF16);
- ``bf16``: ``--mixed-precision bf16``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD_TUNABLES = "glibc.malloc.tcache_count=0:glibc.malloc.mmap_threshold=4194304"
VARIANTS = {
    "fp32-0.2": ({"GLIBC_TUNABLES": OLD_TUNABLES}, []),
    "fp32": ({}, []),
    "fp32-glibc": ({"TAMT_MALLOC": "system"}, []),
    "auto": ({}, ["--mixed-precision", "auto"]),
    "bf16": ({}, ["--mixed-precision", "bf16"]),
}
DEFAULT_STEPS = 1000


def command_line(args: argparse.Namespace, out: Path) -> list[str]:
    """The ``tamt`` arguments of one run of ``args.command`` writing to ``out``."""
    if args.command == "finetune":
        return ["finetune", "demo", "--task", "sst2", "--data-dir", str(args.data_dir),
                "--train-size", "1000", "--batch-size", "16", "--max-length", "128",
                "--epochs", str(args.steps * 16 / 1000), "--eval-every", str(10 * args.steps),
                "--save-every", str(10 * args.steps), "--out", str(out)]  # fmt: skip
    return ["search", "--method", args.command, "--sparsity", "0.7", "--model", "demo",
            "--corpus", "demo", "--max-steps", str(args.steps), "--log-every",
            str(args.log_every), "--eval-every", str(10 * args.steps),
            "--save-every", str(10 * args.steps), "--out", str(out)]  # fmt: skip


def one_run(name: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Run variant ``name`` for ``args.steps`` steps; its seconds per step, the rest of its wall
    time, its last logged loss."""
    env_extra, flags = VARIANTS[name]
    out = work / f"{name}-{time.monotonic_ns()}"
    env = {**os.environ, "TAMT_NO_PROGRESS": "1", **env_extra}
    cmd = [sys.executable, "-m", "tamt_cli", *command_line(args, out), *flags]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    metrics = out / ("seed-1" if args.command == "finetune" else "") / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r for r in rows if "seconds" in r and "loss" in r]
    first, last = rows[0], rows[-1]
    per_step = (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])
    return {"per_step": per_step, "overhead": wall - per_step * args.steps, "loss": last["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=("kd", "mlm", "finetune"), default="kd")
    parser.add_argument("--data-dir", type=Path, help="--command finetune: SST-2 in GLUE form")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [n for n in names if n not in VARIANTS]:
        raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    if args.steps < 2 * args.log_every:
        raise SystemExit("--steps must be at least twice --log-every")
    if args.command == "finetune" and args.data_dir is None:
        raise SystemExit("--command finetune needs --data-dir")
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        if args.command == "mlm":  # the MLM head is fitted once into the cache, not timed
            one_run(names[0], args, Path(tmp))
        for round_ in range(args.rounds):
            for name in names:
                runs[name].append(one_run(name, args, Path(tmp)))
                found = runs[name][-1]
                print(f"round {round_ + 1} {name}: {found['per_step']:.3f} s/step, "
                      f"loss {found['loss']:.6f}", file=sys.stderr)  # fmt: skip
    base = statistics.median(r["per_step"] for r in runs[names[0]])
    print(
        f"| variant | s/step (median of {args.rounds}) | 1,000 steps | speed vs "
        f"{names[0]} | last loss (step {args.steps}) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        per = statistics.median(r["per_step"] for r in runs[name])
        overhead = statistics.median(r["overhead"] for r in runs[name])
        whole = (per * DEFAULT_STEPS + overhead) / 60  # for a search of the default length
        print(f"| {name} | {per:.3f} | {whole:.1f} min | {base / per:.2f}× | "
              f"{runs[name][-1]['loss']:.6f} |")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
