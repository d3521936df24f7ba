from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tamt_cli import corpora, hub
from tamt_cli.corpora import Blocks, describe_corpus, load_blocks
from tamt_cli.errors import UserError
from tests.tiny import SENTENCES, make_tokenizer

ENWIKI = Path(__file__).resolve().parents[2] / "shared/data/corpus/enwiki-excerpt.txt"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("corpora-tok"))


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def lines(n: int, shift: int = 0) -> list[str]:
    """``n`` distinct lines of the tokenizer's training words, with blank lines between some."""
    out = []
    for i in range(n):
        words = SENTENCES[(i + shift) % len(SENTENCES)].split()
        k = (i + shift) % len(words)
        out.append(" ".join(words[k:] + words[:k]))
        if i % 5 == 4:
            out.append("")
    return out


def write(path: Path, text_lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text_lines) + "\n", encoding="utf-8")
    return path


def stream(tokenizer, text_lines: list[str]) -> list[int]:
    """The reference token stream: every non-empty line tokenised directly, in order."""
    ids: list[int] = []
    for line in text_lines:
        if line.strip():
            ids.extend(tokenizer(line, add_special_tokens=False)["input_ids"])
    return ids


def bodies(blocks: Blocks) -> list[int]:
    return torch.cat([blocks.train, blocks.held_out])[:, 1:-1].reshape(-1).tolist()


def three_files(root: Path) -> list[Path]:
    return [write(root / f"{name}.txt", lines(30, shift=i)) for i, name in enumerate("abc")]


# -- blocks --------------------------------------------------------------------------------


def test_blocks_are_wrapped_and_shaped(tok, tmp_path, cache):
    path = write(tmp_path / "t.txt", lines(60))
    blocks = load_blocks(str(path), tok, 16, cache_dir=cache)
    assert isinstance(blocks, Blocks)
    for part in (blocks.train, blocks.held_out):
        assert part.dtype == torch.int32 and part.dim() == 2 and part.shape[1] == 16
        assert (part[:, 0] == tok.cls_token_id).all()
        assert (part[:, -1] == tok.sep_token_id).all()
        inner = part[:, 1:-1]
        assert not (inner == tok.cls_token_id).any() and not (inner == tok.sep_token_id).any()
    assert len(blocks.train) > 10
    assert len(blocks.fingerprint) == 64 and int(blocks.fingerprint, 16) >= 0
    assert blocks.source == str(path)


def test_blocks_hold_the_token_stream_in_order(tok, tmp_path, cache):
    text = lines(70)
    path = write(tmp_path / "t.txt", text)
    blocks = load_blocks(str(path), tok, 20, cache_dir=cache)
    expected = stream(tok, text)
    n = len(expected) // 18
    assert len(blocks.train) + len(blocks.held_out) == n  # the incomplete last block dropped
    assert bodies(blocks) == expected[: n * 18]


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5])
def test_held_out_blocks_are_the_last_ones(tok, tmp_path, cache, fraction):
    text = lines(80)
    path = write(tmp_path / "t.txt", text)
    blocks = load_blocks(str(path), tok, 12, held_out=fraction, cache_dir=cache)
    total = len(blocks.train) + len(blocks.held_out)
    assert len(blocks.held_out) == max(1, math.ceil(fraction * total))
    assert len(blocks.train) >= 1
    expected = stream(tok, text)
    body = 10
    n_train = len(blocks.train)
    # training blocks are the stream's first tokens, held-out blocks the ones right after them
    assert blocks.train[:, 1:-1].reshape(-1).tolist() == expected[: n_train * body]
    assert blocks.held_out[:, 1:-1].reshape(-1).tolist() == expected[n_train * body : total * body]


def test_two_blocks_split_one_and_one(tok, tmp_path, cache):
    text = lines(40)
    n_tokens = len(stream(tok, text))
    length = n_tokens // 2 + 2  # exactly two blocks
    blocks = load_blocks(str(write(tmp_path / "t.txt", text)), tok, length, cache_dir=cache)
    assert (len(blocks.train), len(blocks.held_out)) == (1, 1)


def test_file_forms_give_the_same_blocks(tok, tmp_path):
    root = tmp_path / "texts"
    files = three_files(root)
    (root / "notes.md").write_text("not text to train on\n")
    nested = write(root / "sub" / "d.txt", lines(10, shift=3))
    forms = {
        "list": ",".join(str(f) for f in files),
        "list-spaces": " , ".join(str(f) for f in files),
        "glob": str(root / "*.txt"),
        "dir": str(root),
        "dir-slash": str(root) + "/",
        "dup": f"{files[0]},{root / '*.txt'}",
    }
    results = {
        name: load_blocks(corpus, tok, 16, cache_dir=tmp_path / f"cache-{name}")
        for name, corpus in forms.items()
    }
    ref = results["list"]
    expected = stream(tok, [line for f in files for line in f.read_text().splitlines()])
    assert bodies(ref) == expected[: len(bodies(ref))]
    for name, blocks in results.items():
        assert torch.equal(blocks.train, ref.train), name
        assert torch.equal(blocks.held_out, ref.held_out), name
        assert blocks.fingerprint == ref.fingerprint, name
        assert blocks.source == "3 files", name

    # ** recurses, so the nested file comes last (sorted); order of a comma list is kept
    deep = load_blocks(str(root / "**" / "*.txt"), tok, 16, cache_dir=tmp_path / "c-deep")
    listed = ",".join(str(f) for f in [*files, nested])
    assert torch.equal(deep.train, load_blocks(listed, tok, 16, cache_dir=tmp_path / "c-l").train)
    reversed_list = ",".join(str(f) for f in reversed(files))
    other = load_blocks(reversed_list, tok, 16, cache_dir=tmp_path / "c-rev")
    assert other.fingerprint != ref.fingerprint
    assert not torch.equal(other.train, ref.train)


def test_relative_glob(tok, tmp_path, cache, monkeypatch):
    three_files(tmp_path / "texts")
    monkeypatch.chdir(tmp_path / "texts")
    a = load_blocks("*.txt", tok, 16, cache_dir=cache)
    b = load_blocks(str(tmp_path / "texts"), tok, 16, cache_dir=cache)
    assert a.fingerprint == b.fingerprint
    assert describe_corpus("a.txt") == "a.txt"


def test_demo_corpus(tok, cache):
    start = time.perf_counter()
    blocks = load_blocks("demo", tok, 64, cache_dir=cache)
    assert time.perf_counter() - start < 15
    assert len(blocks.train) > 50 and len(blocks.held_out) >= 1
    assert blocks.train.shape[1] == 64
    assert "demo" in blocks.source
    assert describe_corpus("demo") == blocks.source
    again = load_blocks("demo", tok, 64, cache_dir=cache)
    assert again.fingerprint == blocks.fingerprint
    assert torch.equal(again.train, blocks.train)


def test_roberta_style_tokenizer_uses_bos_and_eos(tok, tmp_path, cache):
    class NoCls:
        """A tokenizer with <s>/</s> but no [CLS]/[SEP] and no fast backend."""

        cls_token_id = sep_token_id = None
        bos_token_id, eos_token_id = 7, 9

        def __call__(self, texts, **kw):
            return tok(texts, **kw)

        def get_vocab(self):
            return tok.get_vocab()

    blocks = load_blocks(str(write(tmp_path / "t.txt", lines(40))), NoCls(), 16, cache_dir=cache)
    assert (blocks.train[:, 0] == 7).all() and (blocks.train[:, -1] == 9).all()


def test_console_status_and_descriptions(tok, tmp_path, cache):
    from rich.console import Console

    out = io.StringIO()
    path = write(tmp_path / "t.txt", lines(40))
    load_blocks(str(path), tok, 16, cache_dir=cache, console=Console(file=out))
    assert "Traceback" not in out.getvalue()
    assert (
        describe_corpus("wikitext-103") == "wikitext-103 (Salesforce/wikitext/wikitext-103-raw-v1)"
    )
    assert "wikitext-2-raw-v1" in describe_corpus("wikitext-2")


# -- the cache -----------------------------------------------------------------------------


def test_second_call_reads_the_cache(tok, tmp_path, cache, monkeypatch):
    path = write(tmp_path / "t.txt", lines(60))
    first = load_blocks(str(path), tok, 16, cache_dir=cache)
    cached = cache / "blocks" / f"{first.fingerprint}.safetensors"
    assert cached.is_file()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no datasets leftovers

    def boom(*args, **kwargs):
        raise AssertionError("tokenised again")

    import datasets

    monkeypatch.setattr(corpora, "_tokenize", boom)
    monkeypatch.setattr(datasets, "load_dataset", boom)
    second = load_blocks(str(path), tok, 16, cache_dir=cache)
    assert second.fingerprint == first.fingerprint
    assert torch.equal(second.train, first.train)
    assert torch.equal(second.held_out, first.held_out)
    assert second.source == first.source


def test_cache_dir_from_environment(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("TAMT_CACHE_DIR", str(tmp_path / "env-cache"))
    blocks = load_blocks(str(write(tmp_path / "t.txt", lines(40))), tok, 16)
    assert (tmp_path / "env-cache" / "blocks" / f"{blocks.fingerprint}.safetensors").is_file()


def test_fingerprint_follows_inputs(tok, tmp_path, cache):
    path = write(tmp_path / "t.txt", lines(60))
    base = load_blocks(str(path), tok, 16, cache_dir=cache)
    assert load_blocks(str(path), tok, 24, cache_dir=cache).fingerprint != base.fingerprint
    other_split = load_blocks(str(path), tok, 16, held_out=0.3, cache_dir=cache)
    assert other_split.fingerprint != base.fingerprint
    other_tok = make_tokenizer(tmp_path / "tok2", vocab_size=100)
    assert load_blocks(str(path), other_tok, 16, cache_dir=cache).fingerprint != base.fingerprint

    # modify the file: same size, new content, and the cache must not serve the old blocks
    text = path.read_text()
    path.write_text(text.replace("cat", "dog"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = load_blocks(str(path), tok, 16, cache_dir=cache)
    assert changed.fingerprint != base.fingerprint
    assert bodies(changed) == stream(tok, path.read_text().splitlines())[: len(bodies(changed))]
    assert bodies(changed) != bodies(base)
    assert len(list(cache.glob("blocks/*.safetensors"))) == 5


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a safetensors file"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(b""),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupt_cache_is_rebuilt(tok, tmp_path, cache, damage):
    path = write(tmp_path / "t.txt", lines(60))
    first = load_blocks(str(path), tok, 16, cache_dir=cache)
    cached = cache / "blocks" / f"{first.fingerprint}.safetensors"
    damage(cached)
    again = load_blocks(str(path), tok, 16, cache_dir=cache)
    assert torch.equal(again.train, first.train) and torch.equal(again.held_out, first.held_out)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(cached))["train"], first.train)  # repaired on disk


def test_cache_of_another_shape_is_rebuilt(tok, tmp_path, cache):
    from safetensors.torch import save_file

    path = write(tmp_path / "t.txt", lines(60))
    first = load_blocks(str(path), tok, 16, cache_dir=cache)
    cached = cache / "blocks" / f"{first.fingerprint}.safetensors"
    bogus = torch.zeros(3, 5, dtype=torch.int32)
    save_file({"train": bogus, "held_out": bogus.clone()}, str(cached), metadata={"format": "x"})
    assert torch.equal(load_blocks(str(path), tok, 16, cache_dir=cache).train, first.train)


def test_unwritable_cache_still_loads(tok, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    blocks = load_blocks(str(write(tmp_path / "t.txt", lines(40))), tok, 16, cache_dir=not_a_dir)
    assert len(blocks.train) > 0


# -- errors --------------------------------------------------------------------------------


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_glob_matching_nothing(tok, tmp_path, cache):
    pattern = str(tmp_path / "nothing" / "*.txt")
    for fn, args in ((load_blocks, (pattern, tok, 16)), (describe_corpus, (pattern,))):
        kwargs = {"cache_dir": cache} if fn is load_blocks else {}
        message = one_line_error(fn, *args, **kwargs)
        assert pattern in message and "matches no file" in message and "demo" in message


def test_missing_file_in_a_list(tok, tmp_path):
    good = write(tmp_path / "a.txt", lines(10))
    missing = tmp_path / "b.txt"
    message = one_line_error(describe_corpus, f"{good},{missing}")
    assert str(missing) in message and "does not exist" in message


def test_unknown_corpus_name_suggests_one():
    message = one_line_error(describe_corpus, "wikitext-13")
    assert "unknown corpus 'wikitext-13'" in message
    assert "did you mean 'wikitext-103'" in message and "demo" in message


def test_directory_without_text_files(tmp_path):
    (tmp_path / "d").mkdir()
    message = one_line_error(describe_corpus, str(tmp_path / "d"))
    assert "no *.txt files" in message


def test_empty_corpus(tok, tmp_path, cache):
    path = write(tmp_path / "empty.txt", ["", "   ", ""])
    message = one_line_error(load_blocks, str(path), tok, 16, cache_dir=cache)
    assert str(path) in message and "empty" in message


def test_too_small_corpus(tok, tmp_path, cache):
    text = ["the cat sat on the mat"]
    n_tokens = len(stream(tok, text))
    path = write(tmp_path / "small.txt", text)
    message = one_line_error(load_blocks, str(path), tok, 64, cache_dir=cache)
    assert "too small" in message and f"{n_tokens} tokens" in message
    assert "max_length 64" in message


@pytest.mark.parametrize("fraction", [0, -0.1, 0.6, 1.0, float("nan")])
def test_bad_held_out(tok, tmp_path, cache, fraction):
    path = write(tmp_path / "t.txt", lines(40))
    message = one_line_error(load_blocks, str(path), tok, 16, held_out=fraction, cache_dir=cache)
    assert "(0, 0.5]" in message and str(fraction) in message


@pytest.mark.parametrize("length", [0, 4, 7])
def test_bad_max_length(tok, tmp_path, cache, length):
    path = write(tmp_path / "t.txt", lines(40))
    message = one_line_error(load_blocks, str(path), tok, length, cache_dir=cache)
    assert f"max_length {length}" in message and "at least 8" in message


def test_undecodable_file(tok, tmp_path, cache):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe not utf-8 \xc3\x28" * 10)
    message = one_line_error(load_blocks, str(path), tok, 16, cache_dir=cache)
    assert str(path) in message and "not UTF-8 text: byte 0xff at offset 0" in message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\n  \n\t\n", "is empty"),
        (b"some text\x00\x01\x02 more", "NUL byte at offset 9"),
        ("café au lait\n".encode("latin-1"), "byte 0xe9 at offset 3"),
        ("ok ünïcode\n".encode() * 20_000 + b"\xff", "byte 0xff at offset 260000"),
    ],
)
def test_bad_corpus_files_are_named_with_the_cause(tok, tmp_path, cache, data, message):
    """Empty, binary and non-UTF-8 files: what is wrong and where, before and while reading."""
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    found = one_line_error(load_blocks, str(path), tok, 16, cache_dir=cache)
    assert message in found and "corpus" in found
    if len(data) < 1000:  # the start of every file is looked at before anything is tokenised
        assert message in one_line_error(describe_corpus, str(path))


# -- the hub -------------------------------------------------------------------------------


def test_hub_alias_offline_fails_fast(tok, cache):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest
    start = time.perf_counter()
    message = one_line_error(load_blocks, "wikitext-103", tok, 128, cache_dir=cache)
    assert time.perf_counter() - start < 10
    assert "--corpus demo" in message and "unreachable" in message and "wikitext-103" in message


def test_hub_unreachable_is_checked_before_loading(tok, cache, monkeypatch):
    import datasets

    def must_not_load(*args, **kwargs):
        raise AssertionError("load_dataset called although the hub is unreachable")

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", must_not_load)
    message = one_line_error(load_blocks, "wikitext-2", tok, 128, cache_dir=cache)
    assert "unreachable" in message and "--corpus demo" in message


# -- a real English excerpt ----------------------------------------------------------------


@pytest.mark.skipif(not ENWIKI.is_file(), reason=f"{ENWIKI} is not available")
def test_enwiki_excerpt(tok, tmp_path, cache):
    with ENWIKI.open(encoding="utf-8") as fh:
        head = [line.rstrip("\n") for _, line in zip(range(200), fh, strict=False)]
    path = write(tmp_path / "enwiki-head.txt", head)
    blocks = load_blocks(str(path), tok, 64, cache_dir=cache)
    assert len(blocks.train) > 50
    assert bodies(blocks) == stream(tok, head)[: len(bodies(blocks))]
    assert np.unique(blocks.train.numpy()).size > 20
