from __future__ import annotations

import os
from pathlib import Path

# No test may reach the Hugging Face hub; set before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("TAMT_STRICT_PLUGINS", None)

import pytest

from tests.tiny import make_bert

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a 2-layer BERT (hidden 32) with a trained WordPiece tokenizer."""
    return make_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """About 300 lines of English made from the tiny tokenizer's sentences."""
    import random

    from tests.tiny import SENTENCES

    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, tmp_path_factory, monkeypatch):
    """Tokenised corpora and the files read through ``datasets`` are cached per test, never in
    the user's caches (``datasets``' cache outside the working folder, which tests snapshot)."""
    import sys

    monkeypatch.setenv("TAMT_CACHE_DIR", str(tmp_path / "cache"))
    hf_datasets = tmp_path_factory.mktemp("hf-datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_datasets))
    if "datasets" in sys.modules:  # it reads the variable once, when imported
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", hf_datasets)


@pytest.fixture(scope="module")
def omp_run(tmp_path_factory, tiny_bert) -> Path:
    """A one-shot magnitude search run of the tiny BERT at sparsity 0.5."""
    from tamt_cli.cli import main

    out = tmp_path_factory.mktemp("search") / "omp"
    assert main(["search", "-m", "omp", "-s", "0.5", "--model", str(tiny_bert), "--out",
                 str(out), "--json"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="session")
def other_bert(tmp_path_factory) -> Path:
    """A tiny BERT of a different shape (hidden 48), for masks that must not fit."""
    return make_bert(tmp_path_factory.mktemp("other-bert"), hidden=48)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        import json

        return json.loads(self.out)


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `tamt ARGS...` in-process from a fresh working directory; returns a Result."""
    from tamt_cli.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
