"""The MLM head every MLM-scored subnetwork of a model shares: the checkpoint's pre-trained
head, or for a checkpoint without one a head fitted once on the frozen dense model (seeded,
cached, its quality checked against token frequencies), and its settings in a search."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from tamt_cli import artifacts, files, objectives
from tamt_cli.errors import UserError
from tamt_cli.pretraining import PretrainingData, held_out_batches, mean_held_out_loss
from tamt_cli.specs import (
    DEFAULT_FITTED_HEAD_LR,
    DEFAULT_HEAD_WARMUP,
    DEFAULT_HEAD_WARMUP_LR,
    PAPER_HEAD_LR,
)

#: a fitted head does not depend on a search's seed: every search of a model shares it
HEAD_SEED = 0
HEAD_CACHE_VERSION = 1
#: held-out blocks on which a fitted head is compared with the corpus's token frequencies
HEAD_CHECK_BLOCKS = 64
#: the batch size of that comparison (the held-out MLM positions depend on it)
HEAD_CHECK_BATCH = 16
#: a fitted head whose held-out MLM loss is not this many nats below the frequency baseline's
#: reads too little from the encoder for MLM mask training to learn from: a warning says so
HEAD_MARGIN = 0.5


def shared_head(
    ref: Any,
    model: nn.Module,
    weights: list[Any],
    data: PretrainingData,
    engine: Any,
    console: Console,
    *,
    steps: int | None,
    lr: float | None,
    batch_size: int,
    run_dir: Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The MLM head every subnetwork of ``model`` is scored with, and mask training starts from:
    the checkpoint's pre-trained head, or for a checkpoint without one a head fitted once on the
    frozen dense model (seeded; cached by model, corpus and fit settings, so every search and
    evaluation with the same settings gets the identical head). Call before masks are attached.

    Returns the head (frozen, its decoder tied to the encoder's word embeddings) and a record
    of where it came from."""
    from tamt_cli import models

    head, pretrained = models.load_mlm_head(ref, model)
    for p in head.parameters():
        p.requires_grad_(False)
    if pretrained:
        return head, {"kind": "pretrained", "about": "the checkpoint's pre-trained head"}
    steps = DEFAULT_HEAD_WARMUP if steps is None else steps
    if steps == 0:
        raise UserError(
            f"model '{ref.given}' has no MLM head weights and --head-warmup-steps is 0; give "
            "it steps to fit a head on the frozen model, or use --method kd"
        )
    lr = lr or DEFAULT_HEAD_WARMUP_LR
    fit = {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seed": HEAD_SEED,
        "max_length": int(data.train.shape[1]),
        "corpus_fingerprint": data.fingerprint,
        "model_sha256": models.weights_hash(model),
        "version": HEAD_CACHE_VERSION,
    }
    key = hashlib.sha256(json.dumps(fit, sort_keys=True).encode()).hexdigest()[:32]
    path = heads_cache() / f"{key}.safetensors"
    record = {
        "kind": "fitted",
        "about": f"fitted on the dense model for {steps} steps (lr {lr:g})",
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seed": HEAD_SEED,
        "cache": str(path),
    }
    trainable = {n: p for n, p in head.named_parameters() if not _tied(head, n, model)}
    cached = _load_cached_head(trainable, path) if engine.broadcast(path.is_file()) else None
    if cached is not None:
        quality = head_quality(model, weights, head, data, engine, _stored_quality(cached))
        _warn_if_weak(ref, quality, console)
        return head, {**record, **quality, "reused": True}
    console.print(
        f"model '{ref.given}' has no MLM head: fitting one on the frozen model for {steps} "
        f"steps (lr {lr:g}; --head-warmup-steps, --head-warmup-lr); it is cached"
    )
    fit_head(head, trainable, model, weights, data, engine, steps, lr, batch_size, run_dir)
    quality = head_quality(model, weights, head, data, engine, None)
    _warn_if_weak(ref, quality, console)
    if engine.is_main:
        from safetensors.torch import save as st_save

        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().cpu().contiguous() for n, p in trainable.items()}
        meta = {k: str(v) for k, v in {**fit, **quality}.items()}
        files.write_bytes(path, st_save(tensors, metadata=meta))
    engine.barrier()
    return head, {**record, **quality, "reused": False}


def head_quality(
    model: nn.Module,
    weights: list[Any],
    head: nn.Module,
    data: PretrainingData,
    engine: Any,
    cached: dict[str, float] | None,
) -> dict[str, float]:
    """How much a fitted head reads from the encoder: the dense model's held-out MLM loss with
    it (``head_heldout_mlm``, the first :data:`HEAD_CHECK_BLOCKS` held-out blocks) against the
    loss of predicting every masked token from the training blocks' token frequencies
    (``frequency_heldout_mlm``, the same positions). ``cached``: figures stored with the head."""
    if cached is not None:
        return cached
    blocks = min(HEAD_CHECK_BLOCKS, int(data.held_out.shape[0]))
    if blocks == 0:
        return {}
    module = objectives.PretrainingLoss(model, weights, "mlm", head)
    loss = mean_held_out_loss(module, data, "mlm", blocks, HEAD_CHECK_BATCH, engine.device)
    return {
        "head_heldout_mlm": round(loss, 4),
        "frequency_heldout_mlm": round(frequency_loss(data, blocks, HEAD_CHECK_BATCH), 4),
    }


def frequency_loss(data: PretrainingData, blocks: int, batch_size: int) -> float:
    """Cross-entropy of the masked tokens of the first ``blocks`` held-out blocks (the positions
    :func:`held_out_loss` scores at ``batch_size``) under the training blocks' token frequencies
    (add-one smoothed): what a head that ignores the encoder can reach."""
    vocab = int(data.tokenizer_info["vocab_size"])
    counts = torch.zeros(vocab, dtype=torch.float64)
    for start in range(0, data.train.shape[0], 65_536):
        ids = data.train[start : start + 65_536].reshape(-1).long()
        counts += torch.bincount(ids[ids < vocab], minlength=vocab).double()
    log_p = torch.log((counts + 1) / (counts.sum() + vocab))
    total, count = 0.0, 0
    for _, inputs in held_out_batches(data, "mlm", blocks, batch_size):
        labels = inputs["labels"]
        chosen = labels[labels != objectives.IGNORE]
        total += float(-log_p[chosen].sum())
        count += int(chosen.numel())
    return total / max(count, 1)


def _stored_quality(meta: dict[str, str]) -> dict[str, float] | None:
    """The head-quality figures stored in a cached head's metadata (None: an older cache)."""
    keys = ("head_heldout_mlm", "frequency_heldout_mlm")
    try:
        return {k: float(meta[k]) for k in keys}
    except (KeyError, ValueError):
        return None


def _warn_if_weak(ref: Any, quality: dict[str, float], console: Console) -> None:
    if not quality:
        return
    head, frequency = quality["head_heldout_mlm"], quality["frequency_heldout_mlm"]
    if head > frequency - HEAD_MARGIN:
        console.print(
            f"warning: the MLM head fitted on '{ref.given}' predicts masked tokens hardly better "
            f"than token frequencies do (held-out loss {head:.2f} against {frequency:.2f} "
            "nats), so the MLM loss says little about a subnetwork of it; prefer --method kd "
            "(see docs/mask-training.md: TAMT-MLM on a model without an MLM head)",
            highlight=False,
        )


def heads_cache() -> Path:
    from tamt_cli import cache

    return cache.folder(cache.HEADS)


def _load_cached_head(params: dict[str, nn.Parameter], path: Path) -> dict[str, str] | None:
    """Copy a cached head into ``params`` and return its metadata; None (refit) when the file
    is unreadable or stale."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (not iterable)
            meta = fh.metadata() or {}
    except Exception:
        return None
    if set(state) != set(params) or any(state[n].shape != p.shape for n, p in params.items()):
        return None
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])
    return meta


def fit_head(
    head: nn.Module,
    trainable: dict[str, nn.Parameter],
    model: nn.Module,
    weights: list[Any],
    data: PretrainingData,
    engine: Any,
    steps: int,
    lr: float,
    batch_size: int,
    run_dir: Path | None,
) -> None:
    """Train the head's own parameters on the MLM loss of the frozen dense ``model``."""
    from tamt_cli.engine import Loop, linear_schedule

    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable.values():
        p.requires_grad_(True)
    module = objectives.PretrainingLoss(model, weights, "mlm", head)
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=lr, weight_decay=0.0)
    scheduler = linear_schedule(optimizer, steps)
    loop = Loop(max_steps=steps, batch_size=batch_size, seed=HEAD_SEED, description="MLM head fit")
    try:
        engine.fit(
            module,
            optimizer,
            scheduler,
            data.train.shape[0],
            data.batch_maker("mlm"),
            loop,
            run_dir=run_dir,
            metrics_name=artifacts.HEAD_WARMUP_LOG,
        )
    finally:
        engine.free_memory()
        for p in trainable.values():
            p.requires_grad_(False)
        for p, was in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(was)


def head_lr(given: float | None, record: dict[str, Any]) -> float:
    """The learning rate of the MLM head while a mask (or IMP's weights) trains: ``given``, or
    the paper's 5e-5 for a pre-trained head and :data:`DEFAULT_FITTED_HEAD_LR` for a fitted one
    (0 freezes the head)."""
    if given is not None:
        return given
    return PAPER_HEAD_LR if record["kind"] == "pretrained" else DEFAULT_FITTED_HEAD_LR


def train_head(head: nn.Module, model: nn.Module, lr: float) -> list[nn.Parameter]:
    """Let the head's own parameters (not the tied decoder) train when ``lr`` > 0; returns them."""
    params = [p for n, p in head.named_parameters() if not _tied(head, n, model)]
    for p in params:
        p.requires_grad_(lr > 0)
    return params if lr > 0 else []


def head_state(head: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """The head's own parameters (not the decoder weight tied to ``model``'s embeddings)."""
    return {n: p for n, p in head.named_parameters() if not _tied(head, n, model)}


def _tied(head: nn.Module, name: str, encoder: nn.Module) -> bool:
    """Whether head parameter ``name`` is the encoder's word-embedding matrix (the decoder)."""
    param = dict(head.named_parameters())[name]
    embeddings: Any = encoder.get_input_embeddings()  # type: ignore[operator]
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(embeddings, "weight"):
        original = embeddings.parametrizations.weight.original
    else:
        original = embeddings.weight
    return param is original
