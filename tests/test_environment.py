"""What a lab's machine meets: the hub check through proxies, `tamt env`, `tamt cache`."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tamt_cli import hub


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every HEAD or GET with 200, recording the request line it was sent."""

    seen: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        type(self).seen.append(self.requestline)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    _Answer.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fresh_hub_session(monkeypatch):
    """Online (the tests run offline), no proxy variables; huggingface_hub's shared HTTP client
    reads proxy variables when it is made."""
    import huggingface_hub
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    huggingface_hub.close_session()
    yield monkeypatch
    huggingface_hub.close_session()


def test_hub_check_follows_the_endpoint(local_server, fresh_hub_session):
    import huggingface_hub.constants as constants

    fresh_hub_session.setattr(constants, "ENDPOINT", local_server)
    assert hub.reachable(timeout=5)
    assert _Answer.seen and _Answer.seen[0].startswith("HEAD / ")
    fresh_hub_session.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard: refused
    assert not hub.reachable(timeout=2)


def test_hub_check_goes_through_a_proxy(local_server, fresh_hub_session):
    """A host that does not resolve here is reachable through the proxy that answers for it."""
    import huggingface_hub.constants as constants

    fresh_hub_session.setattr(constants, "ENDPOINT", "http://hub.invalid")
    assert not hub.reachable(timeout=2)
    import huggingface_hub

    huggingface_hub.close_session()
    fresh_hub_session.setenv("HTTP_PROXY", local_server)
    assert hub.reachable(timeout=5)
    assert any("http://hub.invalid" in line for line in _Answer.seen), _Answer.seen


def test_env_reports_versions_plugins_caches_and_the_hub(cli, tmp_path):
    import torch
    import transformers

    res = cli("env", "--json")
    assert res.code == 0, res.err
    report = res.json()
    from tamt_cli import __version__

    assert report["tamt"] == __version__
    assert report["libraries"]["torch"] == torch.__version__
    assert report["libraries"]["transformers"] == transformers.__version__
    assert {"datasets", "accelerate", "huggingface_hub", "scikit-learn"} <= set(report["libraries"])
    assert report["accelerators"]["cuda"] == torch.cuda.is_available()
    rows = {(p["kind"], p["name"]): p for p in report["plugins"]}
    assert rows[("method", "omp")]["status"] == "ok"
    assert rows[("task", "sst2")]["distribution"] == "tamt-cli"
    assert report["caches"]["tamt_blocks"]["path"] == str(tmp_path / "cache")
    assert report["hub"]["offline_mode"] is True and report["hub"]["reachable"] is None
    res = cli("env")
    assert res.code == 0 and "offline mode" in res.out and "transformers" in res.out


def test_a_manifest_records_the_versions_env_shows(cli):
    from tamt_cli import artifacts

    shown = cli("env", "--json", "--no-hub").json()
    recorded = artifacts.new_manifest("search", {})["environment"]
    assert {"datasets", "accelerate"} <= set(shown["libraries"])
    assert {name: recorded[name] for name in shown["libraries"]} == shown["libraries"]
    assert (recorded["tamt"], recorded["python"]) == (shown["tamt"], shown["python"])


def test_env_and_manifests_give_torch_with_its_local_suffix(cli, monkeypatch):
    """A CUDA wheel from PyPI: its metadata says 2.14.1, ``torch.__version__`` 2.14.1+cu130;
    what a bug report needs is the build, so both show the full version."""
    from importlib import metadata

    import torch

    from tamt_cli import artifacts

    real = metadata.version
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setattr(
        artifacts.metadata, "version", lambda name: "2.14.1" if name == "torch" else real(name)
    )
    assert artifacts.version("torch") == "2.14.1"
    report = cli("env", "--json", "--no-hub").json()
    assert report["libraries"]["torch"] == "2.14.1+cu130"
    assert "2.14.1+cu130" in cli("env", "--no-hub").out
    assert artifacts.new_manifest("search", {})["environment"]["torch"] == "2.14.1+cu130"


def test_env_checks_the_hub_when_online(cli, local_server, fresh_hub_session):
    import huggingface_hub.constants as constants

    for var in hub.OFFLINE_VARS:
        fresh_hub_session.delenv(var, raising=False)
    fresh_hub_session.setattr(constants, "ENDPOINT", local_server)
    report = cli("env", "--json").json()
    assert report["hub"] == {
        "endpoint": local_server,
        "offline_mode": False,
        "reachable": True,
        "proxy": False,
    }
    assert cli("env", "--json", "--no-hub").json()["hub"]["reachable"] is None


def test_cache_lists_and_clears_token_blocks_by_corpus(cli, corpus, tmp_path, monkeypatch):
    from tamt_cli.corpora import load_blocks
    from tests.tiny import make_tokenizer

    monkeypatch.delenv("TAMT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "tamt"
    blocks = root / "blocks"
    tok = make_tokenizer(tmp_path / "tok")
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[:4000])
    for text, length in ((corpus, 16), (corpus, 24), (other, 16)):
        load_blocks(str(text), tok, length)
    (blocks / "notes.safetensors").write_bytes(b"not a block file")  # never listed or removed

    listed = cli("cache", "list", "--json").json()
    assert listed["path"] == str(root)
    by_corpus = {row["corpus"]: row for row in listed["corpora"]}  # named as the runs name them
    assert by_corpus[str(corpus)]["files"] == 2 and by_corpus["other.txt"]["files"] == 1
    assert listed["bytes"] == sum(f.stat().st_size for f in blocks.iterdir()) - 16
    assert {f["max_length"] for f in listed["files"] if f["corpus"] == str(corpus)} == {16, 24}
    assert cli("cache").out == cli("cache", "list").out

    res = cli("cache", "clear", "--corpus", "nothing.txt")
    assert res.code == 2 and str(corpus) in res.err and "\n" not in res.err.strip()
    res = cli("cache", "clear", "--corpus", str(corpus), "--json")
    assert res.json()["files"] == 2
    assert [row["corpus"] for row in cli("cache", "--json").json()["corpora"]] == ["other.txt"]
    assert cli("cache", "clear").code == 0
    assert sorted(p.name for p in blocks.iterdir()) == ["notes.safetensors"]


def test_cache_lists_and_clears_fitted_heads(cli, corpus, tiny_bert, tmp_path, monkeypatch):
    """A head fitted on a model without one is cached under heads/: listed, cleared with the
    rest or alone with --heads, and refitted (identically) when next needed."""
    from tamt_cli.environment import HEADS

    root = tmp_path / "cache"
    assert os.environ["TAMT_CACHE_DIR"] == str(root)
    common = ("--objective", "mlm", "--corpus", corpus, "--max-length", "16", "--batch-size",
              "4", "--head-warmup-steps", "2", "--json")  # fmt: skip
    first = cli("eval", tiny_bert, *common).json()
    assert first["mlm_head"]["reused"] is False
    listed = cli("cache", "--json").json()
    rows = {row["corpus"]: row for row in listed["corpora"]}
    assert rows[HEADS]["files"] == 1 and rows[str(corpus)]["files"] == 1
    head_file = next(f for f in listed["files"] if f["kind"] == "head")
    assert Path(head_file["file"]).parent == root / "heads"
    assert HEADS in cli("cache", "list").out

    assert cli("cache", "clear", "--heads", "--corpus", str(corpus)).code == 2
    res = cli("cache", "clear", "--heads", "--json").json()
    assert res["files"] == 1 and res["bytes"] == head_file["bytes"]
    assert [row["corpus"] for row in cli("cache", "--json").json()["corpora"]] == [str(corpus)]
    again = cli("eval", tiny_bert, *common).json()
    assert again["mlm_head"]["reused"] is False and again["loss"] == first["loss"]
    assert cli("cache", "clear").code == 0
    assert cli("cache", "--json").json()["files"] == []
