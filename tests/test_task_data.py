"""Task data tokenised once per run and cached across runs (tamt_cli.task_data), on a tiny
tokenizer and tiny task files written here."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from tamt_cli import task_data
from tamt_cli.registry import create_task
from tests.tiny import SENTENCES, make_tokenizer, write_sst2

os.environ["TAMT_NO_PROGRESS"] = "1"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def sst2(tmp_path) -> Path:
    return write_sst2(tmp_path / "SST-2", train=40, dev=12)


def rows(features) -> list[dict]:
    """The features as plain rows, for comparing contents."""
    return features.with_format(None).to_list()


def tokenise(task, raw, tokenizer, console=None, **settings):
    merged = {"split": "train", "max_length": 16, "doc_stride": None, "train": True, **settings}
    return task_data.tokenise(task, raw, tokenizer, console=console, **merged)


def counting(monkeypatch, cls) -> list[int]:
    """Count the calls of ``cls.encode`` (how often task data are tokenised)."""
    calls: list[int] = []
    original = cls.encode

    def encode(self, raw, *args, **kwargs):
        calls.append(len(raw))
        return original(self, raw, *args, **kwargs)

    monkeypatch.setattr(cls, "encode", encode)
    return calls


# -- the cache --------------------------------------------------------------------------------


def test_a_second_tokenising_reads_the_cache_and_gives_the_same_features(sst2, tokenizer):
    task = create_task("sst2")
    raw = task.load("train", sst2)
    first = tokenise(task, raw, tokenizer)
    assert first.cache == task_data.MISS and len(first.features) == 40
    entry = task_data.cache_folder() / first.key
    assert entry.parent == Path(os.environ["TAMT_CACHE_DIR"]) / "features"
    meta = json.loads((entry / task_data.META_FILE).read_text())
    assert meta["task"] == "sst2" and meta["rows"] == 40 and meta["max_length"] == 16
    assert set(meta["files"]) == {p.name for p in entry.iterdir()} - {task_data.META_FILE}
    again = tokenise(task, task.load("train", sst2), tokenizer)
    assert (again.cache, again.key) == (task_data.HIT, first.key)
    direct = task.encode(raw, tokenizer, 16, None, train=True)
    assert rows(again.features) == rows(first.features) == rows(direct)
    assert again.features.features == direct.features  # the same column types


def test_tokenizer_length_content_and_kind_of_features_change_the_key(
    sst2, tokenizer, tmp_path, monkeypatch
):
    task = create_task("sst2")
    calls = counting(monkeypatch, type(task))
    first = tokenise(task, task.load("train", sst2), tokenizer)
    base = first.key
    assert tokenise(task, task.load("train", sst2), tokenizer).cache == task_data.HIT
    assert len(calls) == 1

    other_vocab = make_tokenizer(tmp_path / "tok-other", vocab_size=60)
    assert len(other_vocab) != len(tokenizer)
    left = make_tokenizer(tmp_path / "tok-left")
    left.padding_side = "left"
    raw = task.load("train", sst2)
    keys = {
        "tokenizer": tokenise(task, raw, other_vocab),
        "padding side": tokenise(task, raw, left),
        "max length": tokenise(task, raw, tokenizer, max_length=12),
        "dev features": tokenise(task, raw, tokenizer, train=False),
    }
    lines = (sst2 / "train.tsv").read_text().splitlines()
    lines[1] = "the dog barked at the fox\t0"  # one sentence changed
    (sst2 / "train.tsv").write_text("\n".join(lines) + "\n")
    changed = task.load("train", sst2)
    keys["file content"] = tokenise(task, changed, tokenizer)
    for what, result in keys.items():
        assert result.cache == task_data.MISS, what
        assert result.key != base, what
    assert len({r.key for r in keys.values()}) == len(keys)
    assert len(calls) == 1 + len(keys)
    changed_rows, base_rows = rows(keys["file content"].features), rows(first.features)
    assert changed_rows[0] != base_rows[0] and changed_rows[1:] == base_rows[1:]
    assert max(len(row["input_ids"]) for row in rows(keys["max length"].features)) == 12


def test_a_damaged_entry_is_detected_and_rebuilt(sst2, tokenizer):
    task = create_task("sst2")
    raw = task.load("train", sst2)
    first = tokenise(task, raw, tokenizer)
    good = rows(first.features)
    entry = task_data.cache_folder() / first.key
    arrow = next(entry.glob("*.arrow"))

    def damage(how: str) -> None:
        if how == "a flipped byte":
            data = bytearray(arrow.read_bytes())
            data[len(data) // 2] ^= 0x01  # same size, other content
            arrow.write_bytes(bytes(data))
        elif how == "a truncated file":
            arrow.write_bytes(arrow.read_bytes()[:100])
        elif how == "a missing file":
            arrow.unlink()
        elif how == "no description":
            (entry / task_data.META_FILE).unlink()
        elif how == "another entry's description":
            meta = json.loads((entry / task_data.META_FILE).read_text())
            meta["key"] = "0" * 64
            (entry / task_data.META_FILE).write_text(json.dumps(meta))

    for how in ("a flipped byte", "a truncated file", "a missing file", "no description",
                "another entry's description"):  # fmt: skip
        damage(how)
        out = io.StringIO()
        console = Console(file=out, width=300)
        rebuilt = tokenise(task, raw, tokenizer, console=console)
        assert rebuilt.cache == task_data.MISS, how  # not read: tokenised again
        assert "ignoring damaged cached features" in out.getvalue(), how
        assert rows(rebuilt.features) == good, how
        assert tokenise(task, raw, tokenizer).cache == task_data.HIT, how  # whole again


def test_an_interrupted_or_failed_write_leaves_no_entry(sst2, tokenizer, monkeypatch):
    from datasets import Dataset

    task = create_task("sst2")
    raw = task.load("train", sst2)
    save = Dataset.save_to_disk

    def killed(self, path, *args, **kwargs):
        save(self, path, *args, **kwargs)  # the files are written, the description is not
        raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "save_to_disk", killed)
    with pytest.raises(KeyboardInterrupt):
        tokenise(task, raw, tokenizer)
    root = task_data.cache_folder()
    assert [p.name for p in root.iterdir()] == []  # no entry, no temporary folder

    def full(self, path, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Dataset, "save_to_disk", full)
    out = io.StringIO()
    result = tokenise(task, raw, tokenizer, console=Console(file=out, width=300))
    assert result.cache == task_data.OFF and len(result.features) == 40
    assert "could not cache the tokenised features" in out.getvalue()
    assert [p.name for p in root.iterdir()] == []
    monkeypatch.setattr(Dataset, "save_to_disk", save)
    assert tokenise(task, raw, tokenizer).cache == task_data.MISS
    assert rows(tokenise(task, raw, tokenizer).features) == rows(result.features)


# -- one tokenising for every seed ------------------------------------------------------------


def squad_files(folder: Path, n: int = 12) -> Path:
    """SQuAD v1.1 JSON whose contexts are long enough for several windows each."""
    folder.mkdir(parents=True, exist_ok=True)
    paragraphs = []
    for i in range(n):
        context = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(3))
        answer = SENTENCES[(i + 2) % len(SENTENCES)].split()[1]
        start = context.rindex(f" {answer}") + 1
        paragraphs.append({"context": context, "qas": [{
            "id": f"q{i}", "question": f"which word {i}",
            "answers": [{"text": answer, "answer_start": start}],
        }]})  # fmt: skip
    document = {"version": "1.1", "data": [{"title": "tiny", "paragraphs": paragraphs}]}
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (folder / name).write_text(json.dumps(document))
    return folder


@pytest.mark.parametrize("name", ["sst2", "squad"])
def test_each_seed_gets_the_features_of_its_own_subset(
    name, sst2, tokenizer, tmp_path, monkeypatch
):
    task = create_task(name)
    data = sst2 if name == "sst2" else squad_files(tmp_path / "squad")
    settings = {"max_length": 24, "doc_stride": 8 if name == "squad" else None}
    raw = task.load("train", data)
    calls = counting(monkeypatch, type(task))
    size = 5 if name == "squad" else 15
    train = task_data.train_data(task, raw, tokenizer, seeds=[1, 2, 3], train_size=size, **settings)
    assert len(calls) == 1 and calls[0] == train.record()["examples"] < len(raw)
    own = [task.encode(task_data.subset(raw, size, seed, name), tokenizer, train=True, **settings)
           for seed in (1, 2, 3)]  # fmt: skip
    del calls[:]
    for seed, expected in zip((1, 2, 3), own, strict=True):
        examples, features = train.for_seed(seed)
        assert examples == size
        got = [{k: v for k, v in row.items() if k != "example_index"} for row in rows(features)]
        want = [{k: v for k, v in row.items() if k != "example_index"} for row in rows(expected)]
        assert got == want, seed
    assert calls == []  # no seed tokenised anything of its own
    if name == "squad":
        assert len(own[0]) > size  # several windows per example, mapped back by example_index
    again = task_data.train_data(task, raw, tokenizer, seeds=[1, 2, 3], train_size=size, **settings)
    assert again.tokenised.cache == task_data.HIT and calls == []
    every = task_data.train_data(task, raw, tokenizer, seeds=[1, 2], train_size=None, **settings)
    assert every.for_seed(2) == (len(raw), every.tokenised.features)


def test_a_task_without_example_index_tokenises_each_seed_on_its_own(tokenizer, tmp_path):
    from tamt_cli.tasks.squad import Squad

    class Windows(Squad):  # several features per example and no way back to them
        def encode(self, raw, tokenizer, max_length=None, doc_stride=None, train=False):
            out = super().encode(raw, tokenizer, max_length, doc_stride, train)
            return out.remove_columns([c for c in ("example_index",) if c in out.column_names])

    task = Windows()
    raw = task.load("train", squad_files(tmp_path / "squad"))
    settings = {"max_length": 24, "doc_stride": 8}
    train = task_data.train_data(task, raw, tokenizer, seeds=[1, 2], train_size=4, **settings)
    for seed in (1, 2):
        examples, features = train.for_seed(seed)
        own = task.encode(
            task_data.subset(raw, 4, seed, "squad"), tokenizer, train=True, **settings
        )
        assert examples == 4 and rows(features) == rows(own)
    assert len(train.extra) == 2


# -- `tamt finetune`, `tamt eval` and `tamt cache` --------------------------------------------


def test_a_second_run_tokenises_nothing_and_gives_the_same_results(
    cli, tiny_bert, sst2, monkeypatch
):
    from tamt_cli.tasks.glue import SST2

    calls = counting(monkeypatch, SST2)
    args = ["finetune", tiny_bert, "--task", "sst2", "--data-dir", sst2, "--max-length", "24",
            "--batch-size", "8", "--epochs", "1", "--lr", "1e-3", "--seeds", "1,2",
            "--json"]  # fmt: skip
    first = cli(*args, "--out", "a")
    assert first.code == 0, first.err
    assert sorted(calls) == [12, 40]  # the training examples once for both seeds, the dev set
    tokenised = json.loads(Path("a/manifest.json").read_text())["data"]["tokenised"]
    assert {s: r["cache"] for s, r in tokenised.items()} == {"train": "miss", "validation": "miss"}
    assert tokenised["train"]["features"] == 40
    del calls[:]
    second = cli(*args, "--out", "b")
    assert second.code == 0, second.err
    assert calls == []  # everything read from the cache
    manifest = json.loads(Path("b/seed-2/manifest.json").read_text())
    assert {s: r["cache"] for s, r in manifest["data"]["tokenised"].items()} == {
        "train": "hit",
        "validation": "hit",
    }
    assert manifest["data"]["tokenised"]["train"]["key"] == tokenised["train"]["key"]
    for key in ("best", "final"):
        assert second.json()[key] == first.json()[key]
    assert (
        Path("a/seed-2/model.safetensors").read_bytes()
        == Path("b/seed-2/model.safetensors").read_bytes()
    )
    out = cli("eval", "b/seed-2", "--task", "sst2", "--data-dir", sst2, "--json")
    assert out.code == 0, out.err
    assert out.json()["tokenised"]["validation"]["cache"] == "hit" and calls == []
    # a cache cleared: tokenised again, the same results
    assert cli("cache", "clear", "--features").code == 0
    third = cli(*args, "--out", "c")
    assert third.code == 0 and sorted(calls) == [12, 40]
    assert third.json()["final"] == first.json()["final"]


def test_cache_lists_and_clears_tokenised_task_data(cli, tokenizer, sst2, corpus):
    from tamt_cli.corpora import load_blocks
    from tamt_cli.environment import features_name

    task = create_task("sst2")
    for split in ("train", "validation"):
        tokenise(task, task.load(split, sst2), tokenizer, split=split, train=split == "train")
    load_blocks(str(corpus), tokenizer, 16)
    listed = cli("cache", "--json").json()
    by_name = {row["corpus"]: row for row in listed["corpora"]}
    assert by_name[features_name("sst2")]["files"] == 2 and str(corpus) in by_name
    files = [f for f in listed["files"] if f["kind"] == "features"]
    assert sorted((f["split"], f["features"], f["max_length"]) for f in files) == [
        ("train", 40, 16),
        ("validation", 12, 16),
    ]
    assert all(f["bytes"] > 0 for f in files)
    assert features_name("sst2") in cli("cache", "list").out
    res = cli("cache", "clear", "--features", "--heads")
    assert res.code == 2 and "--features" in res.err and "\n" not in res.err.strip()
    res = cli("cache", "clear", "--features", "--json").json()
    assert res["files"] == 2 and res["bytes"] == sum(f["bytes"] for f in files)
    assert [row["corpus"] for row in cli("cache", "--json").json()["corpora"]] == [str(corpus)]
    assert list(task_data.cache_folder().iterdir()) == []
