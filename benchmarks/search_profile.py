"""Where a step of the default `kd` search spends its time: a torch profile of steady steps.

Runs ``tamt search --method kd --sparsity 0.7 --model demo --corpus demo`` (16 × 128) in this
process for ``--skip`` + ``--steps`` steps and profiles the last ``--steps`` (torch.profiler,
CPU). A step is split into phases by named ranges: the student's forward pass, the teacher's
(the same encoder with the masks off, no gradient), the backward pass, the optimiser step, and
the rest (data, threshold resets, figures, the loop). The ops are grouped into matrix products
(``addmm``, ``mm``, ``bmm``, attention), dropout's random draws (``bernoulli_``), the pointwise
work of the masks (``S > τ`` and ``W ⊙ m``: ``gt``, ``where``, and the masked copies), and the
rest. Times are per step, in milliseconds of the main thread's wall clock inside each op.

    python benchmarks/search_profile.py --steps 6
    python benchmarks/search_profile.py --steps 6 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

PHASES = ("student forward", "teacher forward", "backward", "optimizer step")
GROUPS = {
    "matrix products": ("aten::addmm", "aten::mm", "aten::bmm", "scaled_dot_product"),
    "dropout draws": ("aten::bernoulli_",),
    "masks (S > τ, W ⊙ m)": ("aten::gt", "aten::where"),
    "copies and casts": ("aten::copy_", "aten::fill_", "aten::cat", "aten::index"),
}


def ranged(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` in a profiler range called ``label``."""
    import functools

    import torch

    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(label):
            return inner(*args, **kwargs)

    setattr(owner, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip", type=int, default=4, help="steps run before the profile")
    parser.add_argument("--mixed-precision", default="no")
    args = parser.parse_args()

    import torch
    from accelerate import Accelerator
    from torch.profiler import ProfilerActivity, profile, schedule

    import tamt_cli.cli.app as app
    from tamt_cli import engine, objectives

    prof = profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=args.skip - 1, warmup=1, active=args.steps, repeat=1),
    )
    held = engine.interrupts_held

    @contextlib.contextmanager
    def one_step() -> Any:  # the engine holds Ctrl-C for exactly one training step
        with held():
            yield
        prof.step()

    engine.interrupts_held = one_step
    ranged(objectives.PretrainingLoss, "teacher_states", "teacher forward")
    ranged(objectives.PretrainingLoss, "forward", "loss forward")
    ranged(Accelerator, "backward", "backward")
    with tempfile.TemporaryDirectory() as tmp:
        steps = args.skip + args.steps + 1
        argv = ["search", "--method", "kd", "--sparsity", "0.7", "--model", "demo",
                "--corpus", "demo", "--max-steps", str(steps), "--save-every", str(10 * steps),
                "--eval-every", str(10 * steps), "--log-every", str(10 * steps),
                "--mixed-precision", args.mixed_precision,
                "--out", str(Path(tmp) / "run")]  # fmt: skip
        with prof, contextlib.suppress(SystemExit):
            app.app(argv, standalone_mode=False)
    report(prof, args, torch.get_num_threads())


def report(prof: Any, args: argparse.Namespace, threads: int) -> None:
    events = prof.key_averages()
    totals = {e.key: e.cpu_time_total / 1e3 / args.steps for e in events}
    step_ms = sum(v for k, v in totals.items() if k.startswith("ProfilerStep"))
    optimizer = sum(v for k, v in totals.items() if k.startswith("Optimizer.step#"))
    phases = {
        "student forward": totals.get("loss forward", 0.0) - totals.get("teacher forward", 0.0),
        "teacher forward": totals.get("teacher forward", 0.0),
        "backward": totals.get("backward", 0.0),
        "optimizer step": optimizer,
    }
    phases["the rest"] = step_ms - sum(phases.values())
    print(f"kd search, demo model, 16 × 128, mixed precision {args.mixed_precision}, "
          f"{threads} threads: {step_ms:.0f} ms a step ({args.steps} profiled)\n")  # fmt: skip
    print("| phase | ms a step | share |\n| --- | --- | --- |")
    for name, ms in phases.items():
        print(f"| {name} | {ms:.0f} | {100 * ms / step_ms:.0f}% |")
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key.startswith("aten::") or "scaled_dot_product" in e.key:
            own = e.self_cpu_time_total / 1e3 / args.steps
            name = next((g for g, ops in GROUPS.items() if any(o in e.key for o in ops)), "rest")
            groups[name] += own
    print("\n| ops | ms a step | share |\n| --- | --- | --- |")
    for name in (*GROUPS, "rest"):
        print(f"| {name} | {groups[name]:.0f} | {100 * groups[name] / step_ms:.0f}% |")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    print("\n| op | ms a step | calls a step |\n| --- | --- | --- |")
    for e in top:
        print(f"| `{e.key}` | {e.self_cpu_time_total / 1e3 / args.steps:.1f} | "
              f"{e.count // args.steps} |")  # fmt: skip


if __name__ == "__main__":
    main()
