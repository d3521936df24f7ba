"""Reading local GLUE files: the standard library's csv module against ``datasets``' csv builder.

It writes an MNLI-shaped ``train.tsv`` (``--lines`` examples, GLUE's twelve columns with parse
trees, about 0.8 KB a line like the real file, stray quote characters in the text) to a
temporary folder, and uses ``../shared/data/glue/SST-2`` when it is there. For each file it
times, each in a fresh process and with the peak resident memory of that process:

* ``csv module``: the reading tamt did by hand before (``csv.reader`` with tabs and no quoting,
  each label checked in Python, ``Dataset.from_list``); no cache;
* ``datasets, first``: ``load_dataset("csv", delimiter="\\t", quoting=QUOTE_NONE)`` with an
  empty ``HF_DATASETS_CACHE`` (parse, write Arrow files to the cache);
* ``datasets, cached``: the same call again (the Arrow files are memory-mapped);
* ``tamt load, first`` / ``tamt load, cached``: ``task.load("train", folder)`` as the commands
  call it, with an empty and then a warm cache (reading plus the checks of every row).

    python benchmarks/task_files.py                  # 400k MNLI lines, SST-2 if present
    python benchmarks/task_files.py --lines 100000 --keep /tmp/mnli-bench
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_SHARED = ROOT.parent / "shared" / "data" / "glue" / "SST-2"

MNLI_COLUMNS = (
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
)
MNLI_LABELS = ("entailment", "neutral", "contradiction")
TEXT = (
    "the a cat dog man woman child city river film book game house car road tree light "
    "sat ran saw looked said walked played read wrote gave took made found kept left "
    "old new red big small quiet loud happy sad long short early late near far good bad "
    "in on at with from to over under by for of and but or \"quoted 's n't , ."
)
WORDS = TEXT.split(" ")


def mnli_file(path: Path, lines: int, seed: int = 0) -> Path:
    """An MNLI-shaped train.tsv of ``lines`` examples (plus the header)."""
    rng = random.Random(seed)
    genres = ("fiction", "government", "slate", "telephone", "travel")
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("\t".join(MNLI_COLUMNS) + "\n")
        for i in range(lines):
            s1 = [rng.choice(WORDS) for _ in range(rng.randint(12, 30))]
            s2 = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
            label = rng.choice(MNLI_LABELS)
            fields = (
                str(i),
                str(rng.randint(0, 99999)),
                f"{rng.randint(0, 99999)}e",
                rng.choice(genres),
                binary_parse(s1),
                binary_parse(s2),
                parse(s1),
                parse(s2),
                " ".join(s1),
                " ".join(s2),
                label,
                label,
            )
            out.write("\t".join(fields) + "\n")
    return path


def binary_parse(words: list[str]) -> str:
    return "( " + " ( ".join(words) + " )" * len(words)


def parse(words: list[str]) -> str:
    return "(ROOT (S " + " ".join(f"(NN {w})" for w in words) + "))"


# -- the readers, each run in a child process -------------------------------------------------


def read_csv_module(path: Path, task_name: str) -> int:
    """The hand-written reader: csv module, every label checked in Python, Dataset.from_list."""
    import csv

    from datasets import Dataset

    from tamt_cli.registry import tasks

    task = tasks().get(task_name)()
    layout = task.tsv
    csv.field_size_limit(16 * 1024 * 1024)
    rows: list[dict] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        index = {name: header.index(name) for name in header}
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise SystemExit(f"{path}:{reader.line_num}: wrong number of fields")
            row = {name: cells[index[column]] for name, column in layout.fields.items()}
            label = cells[index[layout.label]].strip()
            row["label"] = task.labels.index(label) if label in task.labels else int(label)
            row["idx"] = len(rows)
            rows.append(row)
    return len(Dataset.from_list(rows, features=task.features()))


def read_datasets(path: Path, task_name: str) -> int:
    """``datasets``' csv builder on the same file, every column read as text."""
    import csv

    from datasets import Features, Value, load_dataset

    with path.open(encoding="utf-8-sig") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
    dataset = load_dataset(
        "csv",
        data_files=str(path),
        split="train",
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        features=Features({name: Value("string") for name in header}),
    )
    return len(dataset)


def read_tamt(path: Path, task_name: str) -> int:
    """``task.load`` as the commands call it."""
    from tamt_cli.registry import tasks

    return len(tasks().get(task_name)().load("train", path.parent))


READERS = {"csv": read_csv_module, "datasets": read_datasets, "tamt": read_tamt}


def child(reader: str, path: Path, task_name: str) -> None:
    import datasets  # imported before the clock starts, as in a running command
    import pandas  # noqa: F401

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    rows = READERS[reader](path, task_name)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"rows": rows, "seconds": seconds, "rss_mb": peak / 1024, "base_mb": before / 1024}
        )
    )


def measure(reader: str, path: Path, task_name: str, cache: Path) -> dict:
    env = {**__import__("os").environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, __file__, "--child", reader, str(path), task_name],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def bench(label: str, path: Path, task_name: str, work: Path) -> None:
    print(f"\n{label}: {path} ({path.stat().st_size / 2**20:.0f} MB)")
    print(f"  {'reader':<20} {'rows':>8} {'seconds':>8} {'peak MB':>8} {'+ MB':>6}")
    runs = [("csv module", "csv", None)]
    for name, reader in (("datasets", "datasets"), ("tamt load", "tamt")):
        cache = work / f"cache-{reader}-{task_name}"
        shutil.rmtree(cache, ignore_errors=True)
        runs += [(f"{name}, first", reader, cache), (f"{name}, cached", reader, cache)]
    for name, reader, cache in runs:
        result = measure(reader, path, task_name, cache or work / "cache-none")
        if "error" in result:
            print(f"  {name:<20} failed: {result['error']}")
            continue
        grew = result["rss_mb"] - result["base_mb"]
        print(
            f"  {name:<20} {result['rows']:>8} {result['seconds']:>8.2f} "
            f"{result['rss_mb']:>8.0f} {grew:>6.0f}"
        )
    for reader in ("datasets", "tamt"):
        cache = work / f"cache-{reader}-{task_name}"
        if cache.is_dir():
            print(f"  cache of {reader}: {size_mb(cache):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000, help="MNLI-shaped examples")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        reader, path, task_name = args.child
        child(reader, Path(path), task_name)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="tamt-task-files-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        mnli = work / "MNLI" / "train.tsv"
        mnli.parent.mkdir(exist_ok=True)
        if not mnli.is_file() or sum(1 for _ in mnli.open()) != args.lines + 1:
            start = time.perf_counter()
            mnli_file(mnli, args.lines)
            print(f"wrote {mnli} in {time.perf_counter() - start:.1f} s")
        bench(f"MNLI-shaped, {args.lines} lines", mnli, "mnli", work)
        if (SST2_SHARED / "train.tsv").is_file():
            bench("SST-2 (../shared/data/glue)", SST2_SHARED / "train.tsv", "sst2", work)
        else:
            print(f"\n{SST2_SHARED} is absent: SST-2 skipped")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
