"""Mask training at BERT-large's size: seconds per step and peak memory of `kd` and `mlm`.

Builds a BERT-large-shaped ``BertForMaskedLM`` (24 layers, hidden 1024, 16 heads, FFN 4096,
BERT's 30,522-token vocabulary: about 335M parameters) from a config with random weights from a
fixed seed, saves it with the demo model's tokenizer to a temporary folder, and runs
``tamt search -m kd`` and ``-m mlm`` on it (the checkpoint's MLM head, trained at its default
lr) for ``--steps`` steps at every ``--lengths``, each in a process of its own. Seconds per step
are from the run's ``metrics.jsonl`` (the steps after the first; the first if there is one);
peak memory is the process's peak resident memory (``ru_maxrss``) and, on a CUDA device, its
peak of ``torch.cuda.max_memory_allocated``. ``--layers`` (and ``--hidden``, ``--heads``,
``--ffn``) make a smaller model of the same kind, to try the script quickly.

    python benchmarks/scale.py --lengths 64,128,256,512 --steps 3 --batch-size 8
    python benchmarks/scale.py --layers 2 --lengths 64,128 --steps 2     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from memory import CORPUS, child_env

BUDGET = 24 * 2**30  # the memory one 24 GiB GPU has


def build(folder: Path, args: argparse.Namespace) -> int:
    """Save the model and a tokenizer to ``folder``; returns the number of parameters."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from tamt_cli import models

    config = BertConfig(
        vocab_size=30_522,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.ffn,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(models.resolve("demo").location).save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="64,128,256,512")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", default="kd,mlm")
    parser.add_argument("--sparsity", default="0.7")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--ffn", type=int, default=4096)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--model-dir", type=Path, help="keep the built model here (default: temp)")
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"corpus {args.corpus} not found (pass --corpus FILE)")
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = args.model_dir or work / "model"
        params = build(folder, args) if not (folder / "config.json").is_file() else None
        env = {**os.environ, "TAMT_CACHE_DIR": str(work / "cache"), "TAMT_NO_PROGRESS": "1"}
        env = child_env(env)
        for length in lengths:
            for method in methods:
                run = work / f"{method}-{length}"
                argv = [
                    "search", "-m", method, "-s", args.sparsity, "--model", str(folder),
                    "--corpus", str(args.corpus), "--batch-size", str(args.batch_size),
                    "--max-length", str(length), "--max-steps", str(args.steps),
                    "--log-every", "1", "--eval-every", str(args.steps),
                    "--eval-blocks", str(args.batch_size), "--save-every", str(args.steps),
                    "--out", str(run),
                ]  # fmt: skip
                result = work / f"{method}-{length}.json"
                cmd = [sys.executable, str(Path(__file__).with_name("memory.py")), "--child",
                       method, "--result", str(result), "--", *argv]  # fmt: skip
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0 or not result.is_file():
                    raise SystemExit(f"{method} at {length} failed:\n{proc.stderr[-3000:]}")
                out = json.loads(result.read_text())
                if out["code"] != 0:
                    raise SystemExit(f"{method} at {length}: exit {out['code']}\n"
                                     f"{proc.stderr[-3000:]}")  # fmt: skip
                out.update(method=method, length=length, step_seconds=step_seconds(run))
                rows.append(out)
                gib = out["peak_rss"] / 2**30
                line = f"{method} length {length}: {out['step_seconds']:.2f} s/step, {gib:.2f} GiB"
                print(line, file=sys.stderr, flush=True)
    print(table(rows, args, params, env.get("GLIBC_TUNABLES", "glibc's defaults")))


def step_seconds(run: Path) -> float:
    """Seconds per step from the metrics log: the steps after the first (the first alone in a
    one-step run)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = {r["step"]: r["seconds"] for r in rows if "seconds" in r}
    steps = sorted(times)
    if len(steps) == 1:
        return times[steps[0]]
    return (times[steps[-1]] - times[steps[0]]) / (steps[-1] - steps[0])


def table(rows: list[dict], args: argparse.Namespace, params: int | None, malloc: str) -> str:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    size = f"{params / 1e6:.0f}M parameters" if params else "given model"
    lines = [
        f"BERT shape: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, FFN "
        f"{args.ffn} ({size}); batch {args.batch_size}, {args.steps} steps, sparsity "
        f"{args.sparsity}, {device} ({torch.get_num_threads()} threads); malloc: {malloc}",
        "",
        "| method | length | s/step | peak RSS GiB | CUDA peak allocated GiB | within 24 GiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        peak = r["cuda_peak"] if r["cuda_peak"] is not None else r["peak_rss"]
        cuda = f"{r['cuda_peak'] / 2**30:.2f}" if r["cuda_peak"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['length']} | {r['step_seconds']:.2f} | "
            f"{r['peak_rss'] / 2**30:.2f} | {cuda} | {'yes' if peak <= BUDGET else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
