"""`tamt env` (what a bug report needs to know about this machine) and `tamt cache` (tamt's
cache of token blocks, fitted MLM heads and tokenised task data)."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

from tamt_cli import allocator, cache, corpora, hub, precision
from tamt_cli.artifacts import version, versions

TRACKER_PACKAGES = ("tensorboard", "wandb", "mlflow", "trackio")


def report(check_hub: bool = True) -> dict[str, Any]:
    """tamt, Python, the libraries (what a run's manifest records too), the accelerators,
    plugins, caches and the hub."""
    from tamt_cli import registry

    libraries = versions()
    return {
        "tamt": libraries.pop("tamt"),
        "python": libraries.pop("python"),
        "executable": sys.executable,
        "platform": platform.platform(),
        "libraries": libraries,
        "trackers": {name: version(name) for name in TRACKER_PACKAGES},
        "accelerators": accelerators(),
        "allocator": allocator.state(),
        "plugins": [
            {k: row[k] for k in ("kind", "name", "distribution", "version", "status", "error")}
            for kind in ("method", "task")
            for row in (p.as_dict() for p in registry.registry(kind).all())
        ],
        "caches": caches(),
        "hub": hub_state(check_hub),
    }


def accelerators() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    return {
        "cuda": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "mps": bool(mps is not None and mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
        "mixed_precision_auto": precision.described(),
    }


def caches() -> dict[str, Any]:
    """tamt's cache and the Hugging Face caches, with their sizes on disk."""
    import datasets.config
    from huggingface_hub import constants

    places = {
        "tamt_blocks": cache.root(),
        "hf_hub": Path(constants.HF_HUB_CACHE),
        "hf_datasets": Path(datasets.config.HF_DATASETS_CACHE),
    }
    return {name: {"path": str(path), "bytes": _size(path)} for name, path in places.items()}


def hub_state(check: bool = True) -> dict[str, Any]:
    offline = hub.offline()
    return {
        "endpoint": hub.endpoint(),
        "offline_mode": offline,
        "reachable": None if offline or not check else hub.reachable(),
        "proxy": any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")),
    }


def _size(path: Path) -> int | None:
    """Bytes of the files under ``path`` (None when it does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


# -- tamt's cache ---------------------------------------------------------------------------


#: how ``tamt cache`` names the MLM heads fitted on checkpoints without one (``heads/``)
HEADS = "(fitted MLM heads)"


def features_name(task: str) -> str:
    """How ``tamt cache`` names the cached features of a task (``features/``)."""
    return f"(tokenised {task} data)"


def cache_entries(root: Path | None = None) -> list[dict[str, Any]]:
    """Every file of the cache: token blocks (their corpus, block length, blocks), the MLM
    heads fitted on models without one (under ``heads/``, listed as :data:`HEADS`) and the
    tokenised task data (a folder each under ``features/``, listed by task, see
    :func:`features_name`), with their bytes, newest first. Files that are not tamt's are not
    listed (and never removed)."""
    from safetensors import safe_open

    from tamt_cli import task_data

    blocks_dir, heads_dir = cache.folder(cache.BLOCKS, root), cache.folder(cache.HEADS, root)
    entries = []
    files = [*sorted(blocks_dir.glob("*.safetensors")), *sorted(heads_dir.glob("*.safetensors"))]
    for path in files:
        head = path.parent == heads_dir
        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                if head and "model_sha256" not in meta:
                    continue
                if not head and meta.get("format") != corpora.FORMAT:
                    continue
                blocks = None
                if not head:
                    blocks = fh.get_slice("train").get_shape()[0]
                    blocks += fh.get_slice("held_out").get_shape()[0]
        except Exception:  # unreadable: not ours to describe
            continue
        stat = path.stat()
        entries.append(
            {
                "file": str(path),
                "kind": "head" if head else "blocks",
                "corpus": HEADS if head else meta.get("source", "?"),
                "max_length": int(meta.get("max_length", 0)),
                "blocks": blocks,
                "bytes": stat.st_size,
                "modified": stat.st_mtime,
            }
        )
    for entry in task_data.entries(root):
        meta = entry["meta"]
        entries.append(
            {
                "file": str(entry["folder"]),
                "kind": "features",
                "corpus": features_name(str(meta.get("task", "?"))),
                "task": meta.get("task"),
                "split": meta.get("split"),
                "max_length": int(meta.get("max_length") or 0),
                "blocks": None,
                "features": meta.get("rows"),
                "bytes": entry["bytes"],
                "modified": entry["modified"],
            }
        )
    return sorted(entries, key=lambda e: -e["modified"])


def cache_summary(root: Path | None = None) -> dict[str, Any]:
    """The cache's folder and its files grouped by corpus."""
    entries = cache_entries(root)
    corpora_: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = corpora_.setdefault(e["corpus"], {"corpus": e["corpus"], "files": 0, "bytes": 0})
        row["files"] += 1
        row["bytes"] += e["bytes"]
    return {
        "path": str(cache.root(root)),
        "bytes": sum(e["bytes"] for e in entries),
        "corpora": sorted(corpora_.values(), key=lambda r: r["corpus"]),
        "files": entries,
    }


def clear_cache(
    corpus: str | None = None,
    root: Path | None = None,
    *,
    heads: bool = False,
    features: bool = False,
) -> dict[str, Any]:
    """Remove the cache's files: all of them, the blocks of one corpus (as ``tamt cache list``
    names it), with ``heads`` the fitted MLM heads only, or with ``features`` the tokenised
    task data only; returns what was removed."""
    import shutil

    from tamt_cli.errors import UserError

    entries = cache_entries(root)
    if sum([corpus is not None, heads, features]) > 1:
        raise UserError("give one of --corpus, --heads and --features")
    if heads:
        entries = [e for e in entries if e["kind"] == "head"]
    elif features:
        entries = [e for e in entries if e["kind"] == "features"]
    elif corpus is not None:
        known = sorted({e["corpus"] for e in entries})
        entries = [e for e in entries if e["corpus"] == corpus]
        if not entries:
            listed = ", ".join(known) if known else "none"
            raise UserError(f"no cached blocks of corpus '{corpus}'; cached corpora: {listed}")
    removed = 0
    for e in entries:
        try:
            if e["kind"] == "features":
                shutil.rmtree(e["file"])
            else:
                Path(e["file"]).unlink()
            removed += e["bytes"]
        except FileNotFoundError:
            pass
    return {"path": str(cache.root(root)), "files": len(entries), "bytes": removed}
