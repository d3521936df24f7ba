"""tamt's cache: its folder, its sub-folders, and what the earlier one-folder layout left."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tamt_cli import cache

BLOCK_NAME = "ab" * 32 + ".safetensors"  # named by a fingerprint, as corpora names them


def block_file(path: Path) -> None:
    blocks = np.zeros((2, 16), dtype=np.int32)
    meta = {"format": "tamt.blocks", "source": "text.txt", "max_length": "16"}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"train": blocks, "held_out": blocks[:1].copy()}, str(path), metadata=meta)


def head_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"bias": np.zeros(4, dtype=np.float32)}, str(path), metadata={"model_sha256": "0"})


def features_entry(folder: Path) -> None:
    folder.mkdir(parents=True)
    meta = {"format": "tamt.features", "task": "sst2", "split": "train", "rows": 3}
    (folder / "tamt-features.json").write_text(json.dumps(meta))


def test_the_cache_and_its_folders(tmp_path, monkeypatch):
    assert cache.root() == tmp_path / "cache"  # TAMT_CACHE_DIR (set for every test)
    assert cache.folder(cache.HEADS) == tmp_path / "cache" / "heads"
    monkeypatch.delenv(cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == tmp_path / "xdg" / "tamt"
    assert cache.folder(cache.BLOCKS) == tmp_path / "xdg" / "tamt" / "blocks"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.root() == tmp_path / "home" / ".cache" / "tamt"
    assert cache.folder(cache.FEATURES, tmp_path / "given") == tmp_path / "given" / "features"


def test_the_earlier_default_cache_is_taken_over(cli, tmp_path, monkeypatch):
    """``<XDG cache>/tamt/blocks`` held everything: its blocks stay where they are (they are
    ``blocks/`` now), its heads and features move up beside them."""
    monkeypatch.delenv(cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "tamt"
    earlier = root / "blocks"
    block_file(earlier / BLOCK_NAME)
    head_file(earlier / "heads" / "h.safetensors")
    features_entry(earlier / "features" / "k")

    listed = cli("cache", "list", "--json").json()
    assert listed["path"] == str(root)
    found = {f["kind"]: f["file"] for f in listed["files"]}
    assert found == {
        "blocks": str(root / "blocks" / BLOCK_NAME),
        "head": str(root / "heads" / "h.safetensors"),
        "features": str(root / "features" / "k"),
    }
    assert sorted(p.name for p in earlier.iterdir()) == [BLOCK_NAME]


def test_blocks_at_the_top_of_a_named_cache_move_into_blocks(cli, tmp_path):
    """``$TAMT_CACHE_DIR`` held the blocks at its top: they move into ``blocks/``; what is not
    tamt's, and the heads and features already in place, stay."""
    root = tmp_path / "cache"
    block_file(root / BLOCK_NAME)
    (root / "notes.safetensors").write_bytes(b"not a block file")
    head_file(root / "heads" / "h.safetensors")
    features_entry(root / "features" / "k")

    found = {f["kind"]: f["file"] for f in cli("cache", "list", "--json").json()["files"]}
    assert found == {
        "blocks": str(root / "blocks" / BLOCK_NAME),
        "head": str(root / "heads" / "h.safetensors"),
        "features": str(root / "features" / "k"),
    }
    assert sorted(p.name for p in root.iterdir()) == [
        "blocks",
        "features",
        "heads",
        "notes.safetensors",
    ]


def test_nothing_is_moved_over_what_is_there(tmp_path):
    root = tmp_path / "mine"
    head_file(root / "blocks" / "heads" / "old.safetensors")
    head_file(root / "heads" / "new.safetensors")
    assert cache.folder(cache.HEADS, root) == root / "heads"
    assert [p.name for p in (root / "heads").iterdir()] == ["new.safetensors"]
    assert (root / "blocks" / "heads" / "old.safetensors").is_file()
