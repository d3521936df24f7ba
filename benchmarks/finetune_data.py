"""The data phase of a fine-tuning run with several seeds: tokenising per seed, as `tamt
finetune` did before, against tokenising once per run with the feature cache.

For a task and its data it times, in this process, everything a run does before its first
training step but building the model (loading the examples, tokenising the training examples
of every seed and every dev split):

* ``per seed``: ``task.encode`` of each seed's training examples (``--train-size`` of them
  drawn by the seed, or all) and of every dev split, the earlier code path (it still gets what
  ``datasets``' own cache gives a file-backed data set);
* ``once, empty cache``: :func:`tamt_cli.task_data.train_data` and
  :func:`tamt_cli.task_data.eval_sets` with an empty tamt cache (tokenise, then store);
* ``once, cached``: the same again (every split read from the cache).

Without ``--data-dir`` it writes a SQuAD-shaped data set made of the paragraphs of
``../shared/data/corpus/enwiki-excerpt.txt`` (official nested JSON, read into memory, so
``datasets`` caches none of its tokenising).

    python benchmarks/finetune_data.py                                   # SQuAD-shaped
    python benchmarks/finetune_data.py --task sst2 --data-dir ../shared/data/glue/SST-2
    python benchmarks/finetune_data.py --task sst2 --data-dir ../shared/data/glue/SST-2 \\
        --train-size 1000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "enwiki-excerpt.txt"


def squad_files(folder: Path, train: int, dev: int, seed: int = 0) -> Path:
    """SQuAD v1.1 JSON: one question per paragraph of the corpus, its answer a word of it."""
    rng = random.Random(seed)
    with CORPUS.open(encoding="utf-8") as fh:
        paragraphs = [line.strip() for line in fh if len(line.split()) > 60]
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train-v1.1.json", train, 0), ("dev-v1.1.json", dev, 3)):
        rows = []
        for i in range(n):
            context = paragraphs[(i * 7 + offset) % len(paragraphs)]
            words = context.split()
            answer = words[rng.randrange(len(words))]
            question = " ".join(rng.sample(words, 8)) + "?"
            qa = {"id": f"{name[:3]}{i}", "question": question,
                  "answers": [{"text": answer, "answer_start": context.index(answer)}]}  # fmt: skip
            rows.append({"context": context, "qas": [qa]})
        document = {"version": "1.1", "data": [{"title": "enwiki", "paragraphs": rows}]}
        (folder / name).write_text(json.dumps(document), encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="squad")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--doc-stride", type=int, default=None)
    parser.add_argument("--train", type=int, default=6000, help="SQuAD-shaped training questions")
    parser.add_argument("--dev", type=int, default=1000, help="SQuAD-shaped dev questions")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tamt-finetune-data-") as tmp:
        os.environ["TAMT_CACHE_DIR"] = str(Path(tmp) / "cache")  # an empty tamt cache
        from tamt_cli import models, task_data, task_model, verbosity
        from tamt_cli.registry import create_task

        data = args.data_dir or squad_files(Path(tmp) / "squad", args.train, args.dev)
        task = create_task(args.task)
        seeds = [int(s) for s in args.seeds.split(",")]
        length = args.max_length or task.defaults.max_length
        stride = (args.doc_stride or task.defaults.doc_stride) if task.head == "span" else None
        with verbosity.quiet_libraries():
            tokenizer = task_model.load_tokenizer(models.resolve(args.model))
            for split in (task.train_split, *task.eval_splits):  # datasets' own cache: warm
                task.load(split, data)

            def per_seed() -> str:
                raw = task.load(task.train_split, data)
                for seed in seeds:
                    part = task_data.subset(raw, args.train_size, seed, task.name)
                    task.encode(part, tokenizer, length, stride, train=True)
                for split in task.eval_splits:
                    task.encode(task.load(split, data), tokenizer, length, stride, train=False)
                return "-"

            def once() -> str:
                raw = task.load(task.train_split, data)
                train = task_data.train_data(
                    task, raw, tokenizer, seeds=seeds, train_size=args.train_size,
                    max_length=length, doc_stride=stride,
                )  # fmt: skip
                for seed in seeds:
                    train.for_seed(seed)
                sets = task_data.eval_sets(task, task.eval_splits, data, tokenizer, length, stride)
                return ", ".join([train.tokenised.cache, *(s.tokenised["cache"] for s in sets)])

            print(f"{task.name}, {data}, seeds {args.seeds}, train size {args.train_size or 'all'}")
            for name, run in (("per seed", per_seed), ("once, empty cache", once),
                              ("once, cached", once)):  # fmt: skip
                t0 = time.perf_counter()
                cache = run()
                print(f"{name:20s} {time.perf_counter() - t0:7.2f} s   cache: {cache}")


if __name__ == "__main__":
    main()
