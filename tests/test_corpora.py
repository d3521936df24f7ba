from __future__ import annotations

import io
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


def split_streams(tokenizer, parts: list[list[str]], fraction: float = 0.05):
    """The reference streams of the training and of the held-out lines of a corpus whose files
    hold ``parts``: each line tokenised directly, in order, split by ``split_lines``."""
    text = corpora._join([corpora._tokenize(part, tokenizer) for part in parts])
    held, _ = corpora.split_lines(text, fraction)
    return text.select(~held).tolist(), text.select(held).tolist()


def holds_streams(blocks: Blocks, train: list[int], held: list[int]) -> bool:
    """Whether the training and held-out blocks hold the starts of those streams."""
    got_train = blocks.train[:, 1:-1].reshape(-1).tolist()
    got_held = blocks.held_out[:, 1:-1].reshape(-1).tolist()
    return got_train == train[: len(got_train)] and got_held == held[: len(got_held)]


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
    """Training and held-out blocks each hold their lines' tokens in corpus order; only each
    part's incomplete last block is dropped."""
    text = lines(70)
    path = write(tmp_path / "t.txt", text)
    blocks = load_blocks(str(path), tok, 20, cache_dir=cache)
    train, held = split_streams(tok, [text])
    assert sorted(train + held) == sorted(stream(tok, text))  # every token in one part
    assert (len(blocks.train), len(blocks.held_out)) == (len(train) // 18, len(held) // 18)
    assert holds_streams(blocks, train, held)


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5])
def test_held_out_lines_are_drawn_by_seed_to_the_fraction(tok, tmp_path, cache, fraction):
    text = lines(80)
    path = write(tmp_path / "t.txt", text)
    blocks = load_blocks(str(path), tok, 12, held_out=fraction, cache_dir=cache)
    split = blocks.split
    assert (split["unit"], split["seed"], split["fraction"]) == ("lines", 0, fraction)
    assert split["units"] == len([line for line in text if line.strip()])
    assert split["tokens"] == len(stream(tok, text))
    train, held = split_streams(tok, [text], fraction)
    assert split["held_out_tokens"] == len(held) >= fraction * split["tokens"]
    assert len(blocks.held_out) == len(held) // 10 and len(blocks.train) == len(train) // 10
    assert holds_streams(blocks, train, held)
    # whole lines, not the last ones of the text, and the same lines at another length
    whole = corpora._join([corpora._tokenize(text, tok)])
    chosen, record = corpora.split_lines(whole, fraction)
    assert record == {k: v for k, v in split.items() if k != "held_out_sha256"}
    assert chosen.any() and not chosen.all() and not chosen[-int(chosen.sum()) :].all()
    largest = int(whole.lengths[chosen].max())  # drawing stops once the fraction is reached
    assert int(whole.lengths[chosen].sum()) - largest < fraction * split["tokens"]
    other = load_blocks(str(path), tok, 24, held_out=fraction, cache_dir=cache)
    assert other.split == split


def test_split_units_are_documents_when_there_are_enough(tok):
    """Blank lines and files end documents; 20 documents or more and whole documents are held
    out, fewer and lines are; the seed decides which."""
    paragraphs = [[*lines(3, shift=i)[:3], ""] for i in range(30)]
    text = corpora._join([corpora._tokenize([x for p in paragraphs for x in p], tok)])
    assert int(text.starts.sum()) == 30
    chosen, record = corpora.split_lines(text, 0.1)
    assert record["unit"] == "documents" and record["units"] == 30
    document = np.cumsum(text.starts) - 1
    for d in range(30):  # a document is held out whole or not at all
        assert len(set(chosen[document == d].tolist())) == 1
    again, _ = corpora.split_lines(text, 0.1)
    other, _ = corpora.split_lines(text, 0.1, seed=1)
    assert np.array_equal(chosen, again) and not np.array_equal(chosen, other)
    few = corpora._join([corpora._tokenize(p, tok) for p in paragraphs[:5]])  # five files
    assert int(few.starts.sum()) == 5
    assert corpora.split_lines(few, 0.1)[1]["unit"] == "lines"
    with pytest.raises(UserError, match="nothing to hold out"):
        corpora.split_lines(corpora._join([corpora._tokenize(["one line"], tok)]), 0.1)


def test_held_out_part_shorter_than_a_block_is_refused(tok, tmp_path, cache):
    text = lines(40)
    n_tokens = len(stream(tok, text))
    length = n_tokens // 2 + 2  # two blocks in all, and 5% of the text is less than one
    message = one_line_error(
        load_blocks, str(write(tmp_path / "t.txt", text)), tok, length, cache_dir=cache
    )
    assert "held-out part" in message and "shorter than one block" in message
    assert "--held-out" in message and f"max_length {length}" in message


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
    assert holds_streams(ref, *split_streams(tok, [f.read_text().splitlines() for f in files]))
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
    assert holds_streams(changed, *split_streams(tok, [path.read_text().splitlines()]))
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
    assert blocks.split["unit"] == "lines"  # one paragraph a line, no blank lines
    assert holds_streams(blocks, *split_streams(tok, [head]))
    assert np.unique(blocks.train.numpy()).size > 20


# -- held out at every length --------------------------------------------------------------


def unique_lines(n: int, words: int = 12, blank_every: int = 0) -> list[str]:
    """``n`` lines of ``words`` words each, no word used twice (so no token twice), with a
    blank line after every ``blank_every`` lines (none: 0)."""
    out = []
    for i in range(n):
        out.append(" ".join(f"w{i * words + j}" for j in range(words)))
        if blank_every and i % blank_every == blank_every - 1:
            out.append("")
    return out


@pytest.mark.parametrize("blank_every", [4, 0], ids=["documents", "lines"])
def test_held_out_text_is_held_out_at_every_length(tmp_path, cache, blank_every):
    """A search at one length and an eval at another never share a token: no token of a held-out
    block is in a training block, whatever lengths cut them (checked by content: every word of
    the corpus is a distinct token)."""
    from tests.tiny import make_word_tokenizer

    tok = make_word_tokenizer(tmp_path / "words")
    path = write(tmp_path / "t.txt", unique_lines(400, blank_every=blank_every))
    lengths = (32, 128, 48)
    loaded = {n: load_blocks(str(path), tok, n, cache_dir=cache) for n in lengths}

    def tokens(blocks: torch.Tensor) -> set[str]:
        found = set(tok.convert_ids_to_tokens(blocks[:, 1:-1].reshape(-1).tolist()))
        assert found and all(t.startswith("w") for t in found)
        return found

    for a in lengths:
        held = tokens(loaded[a].held_out)
        for b in lengths:
            assert held.isdisjoint(tokens(loaded[b].train)), (a, b)
            assert loaded[a].split == loaded[b].split  # the same text held out, same digest
    split = loaded[32].split
    assert split["unit"] == ("documents" if blank_every else "lines")
    assert split["units"] == (100 if blank_every else 400)
    assert split["held_out_tokens"] % (12 * (blank_every or 1)) == 0  # whole units
    assert len(split["held_out_sha256"]) == 64
    # the held-out lines are what the held-out blocks hold, at the longest length too
    held_words = tokens(loaded[32].held_out) | tokens(loaded[128].held_out)
    assert len(held_words) <= split["held_out_tokens"] < 400 * 12 * 0.06
