"""CPU latency of a structured export against its dense model, timed alternately.

`tamt bench` times its ways alternately, round by round; this script times just the dense
model and the export, alternating in both orders (dense first in one round, the export first in
the next), so that both see the same load and neither always runs second, and gives the
medians, the minima and the median of the paired ratios:

    tamt search --method omp --structure neurons --sparsity 0.5 --model demo --out runs/omp-n
    tamt extract runs/omp-n --export subnetworks/omp-n
    python benchmarks/structured_latency.py subnetworks/omp-n --threads 1

The dense model is the one named in the export's manifest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="a folder `tamt extract --export` wrote")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", default="40,8", help="timed rounds of each batch size")
    args = parser.parse_args()

    import torch
    from transformers import AutoModel

    from tamt_cli import models

    torch.set_num_threads(args.threads)
    manifest = json.loads((args.export / "manifest.json").read_text())
    dense = models.load_encoder(models.resolve(manifest["model"]["id"])).eval()
    sliced = AutoModel.from_pretrained(str(args.export)).eval()
    counts = [sum(p.numel() for p in m.parameters()) for m in (dense, sliced)]
    print(f"parameters: dense {counts[0]:,}, export {counts[1]:,} ({counts[1] / counts[0]:.3f})")
    gen = torch.Generator().manual_seed(0)
    batches = [int(b) for b in args.batches.split(",")]
    rounds = [int(r) for r in args.rounds.split(",")]
    for batch, count in zip(batches, rounds, strict=True):
        ids = torch.randint(0, dense.config.vocab_size, (batch, args.length), generator=gen)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        times: dict[str, list[float]] = {"dense": [], "export": []}
        with torch.inference_mode():
            for model in (dense, sliced, dense, sliced):  # warm-up
                model(**inputs)
            for i in range(count):
                pair = [("dense", dense), ("export", sliced)]
                for name, model in pair if i % 2 == 0 else pair[::-1]:
                    start = time.perf_counter()
                    model(**inputs)
                    times[name].append((time.perf_counter() - start) * 1000)
        d, e = (statistics.median(times[k]) for k in ("dense", "export"))
        pairs = zip(times["dense"], times["export"], strict=True)
        paired = statistics.median(a / b for a, b in pairs)
        print(
            f"batch {batch} × {args.length}: dense {d:.1f} ms (min {min(times['dense']):.1f}), "
            f"export {e:.1f} ms (min {min(times['export']):.1f}); speed-up {d / e:.2f}× "
            f"(minima {min(times['dense']) / min(times['export']):.2f}×, paired {paired:.2f}×)"
        )


if __name__ == "__main__":
    main()
