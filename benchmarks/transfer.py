"""Transfer of subnetworks to SST-2: dense vs `omp`, `random` and (when given) `kd` masks.

Runs the real command line: `tamt search` for each mask, then `tamt finetune` of the dense model
and of every subnetwork on the same seeded training subset, several fine-tuning seeds each.
Reports dev accuracy (best over the evaluations, as the paper reports, and final) as mean ± std
over the seeds, and the fine-tuning time per seed (training and evaluations). The defaults are
sized for a 2-core CPU: 1,000 training sentences, length 64, 2 epochs, lr 1e-4 (the paper's 2e-5
barely moves a model in 60 steps). By default the encoder's Linear weights are masked
(`--no-embeddings --no-pooler`); `--paper-weights` also masks the pooler and the word embeddings,
as the paper does. `--threads 1` helps on a CPU shared with other jobs.

    python benchmarks/transfer.py                                  # sparsity 0.7, 2 seeds
    python benchmarks/transfer.py --sparsity 0.7,0.8,0.9 --kd-steps 200
    python benchmarks/transfer.py --kd-run runs/kd-s0.7-...        # an existing kd search run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import tamt as run_tamt  # the same subprocess helper

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SST2 = SHARED / "glue" / "SST-2"
CORPUS = SHARED / "corpus" / "enwiki-excerpt.txt"


THREADS: dict[str, str] = {}


def tamt(*args: str, cwd: Path) -> dict:
    return run_tamt(*args, cwd=cwd, env=THREADS)


def stat(summary: dict, which: str) -> str:
    acc = summary[which]["validation"]["accuracy"]
    std = acc["std"]
    return f"{acc['mean']:.1f} ± {std:.1f}" if std is not None else f"{acc['mean']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--data-dir", default=str(SST2))
    parser.add_argument("--sparsity", default="0.7", help="comma-separated, e.g. 0.7,0.8,0.9")
    parser.add_argument("--seeds", default="1,2", help="fine-tuning seeds")
    parser.add_argument("--train-size", default="1000", help="training sentences (seeded)")
    parser.add_argument("--max-length", default="64")
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--lr", default="1e-4", help="fine-tuning lr (the paper: 2e-5)")
    parser.add_argument("--kd-run", default=None, help="an existing kd search run to include")
    parser.add_argument("--kd-steps", type=int, default=0, help="run a kd search of N steps")
    parser.add_argument("--corpus", default=str(CORPUS), help="text for --kd-steps")
    parser.add_argument("--paper-weights", action="store_true", help="mask pooler + embeddings")
    parser.add_argument("--threads", default=None, help="CPU threads per run (OMP_NUM_THREADS)")
    parser.add_argument(
        "--eval-every", default=None, help="dev evaluation every N steps [the task's cadence]"
    )
    args = parser.parse_args()
    if args.threads:
        THREADS["OMP_NUM_THREADS"] = args.threads
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"SST-2 folder {args.data_dir} not found (pass --data-dir)")

    finetune = ["--task", "sst2", "--data-dir", str(Path(args.data_dir).resolve()),
                "--train-size", args.train_size, "--max-length", args.max_length,
                "--epochs", args.epochs, "--batch-size", args.batch_size,
                "--seeds", args.seeds]  # fmt: skip
    finetune += ["--lr", args.lr]
    finetune += ["--eval-every", args.eval_every] if args.eval_every else []
    weights = [] if args.paper_weights else ["--no-embeddings", "--no-pooler"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        subjects: list[tuple[str, str, str]] = [("dense", "-", args.model)]
        for sparsity in args.sparsity.split(","):
            for method in ("omp", "random"):
                out = f"{method}-{sparsity}"
                tamt("search", "-m", method, "-s", sparsity, "--model", args.model, *weights,
                     "--out", out, cwd=cwd)  # fmt: skip
                subjects.append((method, sparsity, out))
            if args.kd_steps:
                out = f"kd-{sparsity}"
                tamt("search", "-m", "kd", "-s", sparsity, "--model", args.model, *weights,
                     "--corpus", args.corpus, "--max-length", args.max_length,
                     "--batch-size", "16", "--max-steps", str(args.kd_steps), "--out", out,
                     cwd=cwd)  # fmt: skip
                subjects.append((f"kd ({args.kd_steps} steps)", sparsity, out))
        if args.kd_run:
            manifest = json.loads((Path(args.kd_run) / "manifest.json").read_text())
            kd_run = str(Path(args.kd_run).resolve())
            subjects.append(("kd (given run)", f"{manifest.get('sparsity')}", kd_run))
        for name, sparsity, target in subjects:
            t0 = time.perf_counter()
            summary = tamt("finetune", target, *finetune, "--out", f"ft-{len(rows)}", cwd=cwd)
            wall = time.perf_counter() - t0
            seconds = [r["seconds"] for r in summary["runs"]]
            rows.append((name, sparsity, summary, sum(seconds) / len(seconds), wall))

    masked = "encoder + pooler + word embeddings" if args.paper_weights else "encoder Linear"
    print(f"model {args.model}  SST-2 {args.data_dir}  train {args.train_size}  "
          f"length {args.max_length}  epochs {args.epochs}  batch {args.batch_size}  "
          f"lr {args.lr}  seeds {args.seeds}  masked: {masked}")  # fmt: skip
    print("| subnetwork | sparsity | dev acc best | dev acc final | fine-tune s/seed |")
    print("| --- | --- | --- | --- | --- |")
    for name, sparsity, summary, seconds, _ in rows:
        print(f"| {name} | {sparsity} | {stat(summary, 'best')} | {stat(summary, 'final')} "
              f"| {seconds:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
