"""Peak memory of dense fine-tuning and of the `kd`, `mlm` and `imp` searches of one model.

Every row runs tamt's own command line (``tamt_cli.cli.main``) in a process of its own, so that
peaks do not mix, and reports that process's peak resident memory (``ru_maxrss``; on a CUDA
device also the peak of ``torch.cuda.max_memory_allocated``). All rows train at the same batch
size and length for the same number of steps:

- ``loaded``: the model loaded by tamt, its weights read once, and nothing run (the floor of
  every other row);
- ``finetune``: ``tamt finetune MODEL --task sst2``, the dense model fine-tuned (every weight
  trains) on sentences long enough to fill ``--max-length`` (written from the corpus);
- ``kd``, ``mlm``: ``tamt search -m kd|mlm``, mask training (``mlm`` on a model without an MLM
  head first fits one for ``--head-warmup-steps``);
- ``imp``: ``tamt search -m imp -s 0.2 --objective kd``: two prunings with ``--steps`` steps of
  training between them (the weights train, with a frozen copy of the model as the teacher).

The corpus is tokenised once before the rows run (into a temporary tamt cache), so no row's
peak is the tokeniser's.

    python benchmarks/memory.py --model demo --batch-size 16 --max-length 128 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared/data/corpus/enwiki-excerpt.txt"
ROWS = ("loaded", "finetune", "kd", "mlm", "imp")


def tamt_args(row: str, args: argparse.Namespace, work: Path) -> list[str]:
    """The command line of ``row`` (None for ``loaded``)."""
    size = ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    search = [
        "search", "--model", args.model, "--corpus", str(args.corpus), *size,
        "--max-steps", str(args.steps), "--eval-every", str(args.steps),
        "--save-every", str(args.steps), "--eval-blocks", str(args.batch_size),
        "--out", str(work / row),
    ]  # fmt: skip
    if row == "finetune":
        return [
            "finetune", args.model, "--task", "sst2", "--data-dir", str(work / "sst2"), *size,
            "--train-size", str(args.batch_size * args.steps), "--epochs", "1",
            "--eval-every", str(args.steps), "--out", str(work / row),
        ]  # fmt: skip
    if row in ("kd", "mlm"):
        extra = ["--head-warmup-steps", str(args.head_warmup_steps)] if row == "mlm" else []
        return [*search, "-m", row, "-s", str(args.sparsity), *extra]
    if row == "imp":
        search[search.index("--max-steps") : search.index("--max-steps") + 2] = []
        return [*search, "-m", "imp", "-s", "0.2", "-o", "prune_fraction=0.1",
                "-o", f"steps_per_round={args.steps}", "-o", "objective=kd"]  # fmt: skip
    raise ValueError(row)


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment the ``tamt`` command would run a row with (its malloc settings on glibc,
    :mod:`tamt_cli.allocator`; ``TAMT_MALLOC=system`` measures glibc's defaults)."""
    from tamt_cli import allocator

    return allocator.allocator_env(env, allocator.glibc()) or env


def child(row: str, argv: list[str], model: str, result: Path) -> None:
    """Run one row in this process and write its peak memory to ``result``."""
    import torch

    t0 = time.perf_counter()
    if row == "loaded":
        from tamt_cli import models

        encoder = models.load_encoder(models.resolve(model))
        with torch.no_grad():  # read every weight once (a checkpoint may be memory-mapped)
            sum(float(p.sum()) for p in encoder.parameters())
        code = 0
    else:
        from tamt_cli.cli import main

        code = main(["-q", *argv])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    out = {
        "row": row,
        "code": code,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "cuda_peak": torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None,
    }
    result.write_text(json.dumps(out))


def sst2_from_corpus(corpus: Path, folder: Path, rows: int, words: int) -> None:
    """SST-2's layout (``sentence<TAB>label``) with sentences of at least ``words`` words of the
    corpus, so that every one fills ``--max-length`` tokens and batches are not padded shorter."""
    text = corpus.read_text(encoding="utf-8").split()
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", rows), ("dev.tsv", max(rows // 4, 8))):
        lines = ["sentence\tlabel"]
        for i in range(n):
            start = (i * words) % max(len(text) - words, 1)
            lines.append(" ".join(text[start : start + words]).replace("\t", " ") + f"\t{i % 2}")
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="training steps of every row")
    parser.add_argument("--sparsity", default="0.7")
    parser.add_argument("--head-warmup-steps", type=int, default=3, help="mlm on a headless model")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"any of {','.join(ROWS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(args.child, rest[1:] if rest[:1] == ["--"] else rest, args.model, args.result)
        return
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := [r for r in rows if r not in ROWS]:
        raise SystemExit(f"unknown rows {unknown}; valid: {', '.join(ROWS)}")
    if not args.corpus.is_file():
        raise SystemExit(f"corpus {args.corpus} not found (pass --corpus FILE)")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "TAMT_CACHE_DIR": str(work / "cache"),
            "HF_DATASETS_CACHE": str(work / "hf-datasets"),
            "TAMT_NO_PROGRESS": "1",
        }
        env = child_env(env)
        sst2_from_corpus(args.corpus, work / "sst2", args.batch_size * args.steps,
                         2 * args.max_length)  # fmt: skip
        # tokenise the corpus into the cache once, outside every measured process
        warm = [sys.executable, "-c", _WARM, args.model, str(args.corpus), str(args.max_length)]
        subprocess.run(warm, env=env, check=True)
        for row in rows:
            result = work / f"{row}.json"
            argv = [] if row == "loaded" else tamt_args(row, args, work)
            cmd = [sys.executable, __file__, "--model", args.model, "--child", row,
                   "--result", str(result), "--", *argv]  # fmt: skip
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0 or not result.is_file():
                raise SystemExit(f"{row} failed:\n{proc.stderr[-3000:]}")
            out = json.loads(result.read_text())
            if out["code"] != 0:
                raise SystemExit(f"{row}: tamt exited with {out['code']}:\n{proc.stderr[-3000:]}")
            results.append(out)
            print(f"{row}: {out['peak_rss'] / 2**20:.0f} MiB, {out['seconds']} s", file=sys.stderr)
    print(table(results, args, env.get("GLIBC_TUNABLES", "glibc's defaults")))


_WARM = """
import sys
from transformers import AutoTokenizer
from tamt_cli import corpora, models
ref = models.resolve(sys.argv[1])
corpora.load_blocks(sys.argv[2], AutoTokenizer.from_pretrained(ref.location), int(sys.argv[3]))
"""


def table(results: list[dict], args: argparse.Namespace, malloc: str) -> str:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    base = next((r for r in results if r["row"] == "finetune"), None)
    lines = [
        f"model {args.model}, batch {args.batch_size}, length {args.max_length}, "
        f"{args.steps} steps, {device}; malloc: {malloc}",
        "",
        "| run | peak RSS MiB | × finetune | CUDA peak allocated MiB | × finetune | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        rss = r["peak_rss"] / 2**20
        ratio = f"{r['peak_rss'] / base['peak_rss']:.2f}" if base else "-"
        cuda = cuda_ratio = "-"
        if r["cuda_peak"] is not None:
            cuda = f"{r['cuda_peak'] / 2**20:.0f}"
            if base and base["cuda_peak"]:
                cuda_ratio = f"{r['cuda_peak'] / base['cuda_peak']:.2f}"
        lines.append(f"| {r['row']} | {rss:.0f} | {ratio} | {cuda} | {cuda_ratio} | "
                     f"{r['seconds']} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
