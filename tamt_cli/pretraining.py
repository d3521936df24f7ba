"""Plumbing shared by everything that trains or scores on a pre-training objective: the corpus
as token blocks, the MLM head (and its warm-up when a checkpoint has none), the loss module,
held-out loss, and the trainable state that checkpoints carry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from torch import nn

from tamt_cli import objectives
from tamt_cli.errors import UserError, first_line

HEAD_FILE = "head.safetensors"
HEAD_WARMUP_METRICS = "head_warmup.jsonl"
DEFAULT_HEAD_WARMUP = 300
DEFAULT_HEAD_LR = 1e-3


@dataclass
class PretrainingData:
    """Token blocks of a corpus and what building MLM batches needs to know."""

    train: torch.Tensor
    held_out: torch.Tensor
    source: str
    fingerprint: str
    tokenizer_info: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)

    def batch_maker(
        self, objective: str
    ) -> Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]:
        info = self.tokenizer_info

        def make(indices: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
            return objectives.batch_for(self.train[indices], objective, info, generator)

        return make


def check_inputs(ref: Any, model: Any, spec: Any, engine: Any) -> Any:
    """What can be checked without computing (length, corpus files, tokenizer, batch split);
    returns the tokenizer. Runs before a run directory is made."""
    from transformers import AutoTokenizer

    from tamt_cli import corpora

    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and spec.max_length > positions:
        raise UserError(
            f"--max-length {spec.max_length} is beyond the model's {positions} positions; "
            f"use at most {positions}"
        )
    corpora.describe_corpus(spec.corpus)
    engine.micro_batch(spec.batch_size, getattr(spec, "grad_accum", 1))
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location)
    except (OSError, ValueError, KeyError) as exc:
        why = first_line(exc)
        raise UserError(f"model '{ref.given}' has no usable tokenizer ({why})") from None
    if tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer of '{ref.given}' has no mask token; MLM is impossible")
    return tokenizer


def prepare(ref: Any, model: Any, spec: Any, engine: Any, console: Console) -> PretrainingData:
    """Tokenise (or read from the cache) the corpus of ``spec`` for ``model``'s tokenizer.

    The main process tokenises first; the others then read its cache."""
    from tamt_cli import corpora

    tokenizer = check_inputs(ref, model, spec, engine)
    with engine.accelerator.main_process_first():
        blocks = corpora.load_blocks(
            spec.corpus, tokenizer, spec.max_length, held_out=spec.held_out, console=console
        )
    info = {
        "special_ids": sorted(set(tokenizer.all_special_ids)),
        "mask_id": int(tokenizer.mask_token_id),
        "vocab_size": int(min(len(tokenizer), model.config.vocab_size)),
    }
    notes = {
        "train_blocks": int(blocks.train.shape[0]),
        "held_out_blocks": int(blocks.held_out.shape[0]),
    }
    return PretrainingData(
        blocks.train, blocks.held_out, blocks.source, blocks.fingerprint, info, notes
    )


def attach_head(job: Any, data: PretrainingData, engine: Any, *, warm: bool = True) -> nn.Module:
    """The checkpoint's MLM head tied to the encoder; fitted on the frozen (dense, unless masks
    are attached) model first when the checkpoint has no head weights."""
    from tamt_cli import models

    head, pretrained = models.load_mlm_head(job.ref, job.model)
    if not pretrained and warm:
        warm_up_head(head, job, data, engine)
    for name, p in head.named_parameters():
        p.requires_grad_(not _tied(head, name, job.model))
    return head


def warm_up_head(head: nn.Module, job: Any, data: PretrainingData, engine: Any) -> None:
    spec = job.spec
    steps = DEFAULT_HEAD_WARMUP if spec.head_warmup_steps is None else spec.head_warmup_steps
    if steps == 0:
        raise UserError(
            f"model '{job.ref.given}' has no MLM head weights and --head-warmup-steps is 0; give "
            "it steps to fit a head on the frozen model, or use --method kd"
        )
    from tamt_cli import engine as eng

    lr = spec.head_lr or DEFAULT_HEAD_LR
    job.console.print(
        f"model '{job.ref.given}' has no MLM head: fitting one on the frozen model for "
        f"{steps} steps (lr {lr:g}; --head-warmup-steps, --head-lr)"
    )
    for p in job.model.parameters():
        p.requires_grad_(False)
    trainable = [p for n, p in head.named_parameters() if not _tied(head, n, job.model)]
    for p in trainable:
        p.requires_grad_(True)
    module = objectives.PretrainingLoss(job.model, job.weights, "mlm", head)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    scheduler = eng.linear_schedule(optimizer, steps)
    loop = eng.Loop.from_spec(
        spec, steps, "MLM head warm-up", seed=spec.seed + 1, eval_every=None, save_every=None
    )
    engine.fit(
        module,
        optimizer,
        scheduler,
        data.train.shape[0],
        data.batch_maker("mlm"),
        loop,
        run_dir=job.run.root if job.run is not None else None,
        metrics_name=HEAD_WARMUP_METRICS,
    )
    job.notes["head_warmup"] = {"steps": steps, "lr": lr}


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


def loss_module(job: Any, objective: str, head: nn.Module | None) -> objectives.PretrainingLoss:
    return objectives.PretrainingLoss(job.model, job.weights, objective, head)


@torch.no_grad()
def held_out_loss(
    module: nn.Module, data: PretrainingData, objective: str, spec: Any, device: Any
) -> float:
    """Mean loss over the first ``spec.eval_blocks`` held-out blocks, with MLM corruption drawn
    from a fixed seed so that evaluations are comparable across steps and runs."""
    module = getattr(module, "module", module)
    blocks = data.held_out[: spec.eval_blocks]
    if blocks.shape[0] == 0:
        raise UserError("the corpus has no held-out blocks to evaluate on")
    info = data.tokenizer_info
    generator = torch.Generator().manual_seed(12_345)
    was = module.training
    module.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, blocks.shape[0], spec.batch_size):
            chunk = blocks[start : start + spec.batch_size]
            inputs = objectives.batch_for(chunk, objective, info, generator)
            batch = {k: v.to(device) for k, v in inputs.items()}
            total += float(module(**batch)) * chunk.shape[0]
            count += chunk.shape[0]
    finally:
        module.train(was)
    return total / count


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Everything a checkpoint must carry: trainable parameters and mask thresholds."""
    state: dict[str, torch.Tensor] = {n: p for n, p in module.named_parameters() if p.requires_grad}
    state.update({n: b for n, b in module.named_buffers() if n.endswith(".tau")})
    return state


def record_corpus(job: Any, data: PretrainingData) -> None:
    """Record a digest of the token blocks a run trains on; resuming it refuses other blocks
    (changed text, tokenizer, --max-length or --held-out)."""
    if job.run is None:
        return
    digest = hashlib.sha256()
    for blocks in (data.train, data.held_out):
        digest.update(f"{tuple(blocks.shape)}|{blocks.dtype}".encode())
        for start in range(0, blocks.shape[0], 65_536):  # in slices: no second copy in memory
            digest.update(blocks[start : start + 65_536].contiguous().numpy().tobytes())
    job.run.record_input("corpus_blocks_sha256", digest.hexdigest(), "the corpus")


@torch.no_grad()
def restore_trainable(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = trainable_state(module)
    if set(own) != set(tensors):
        missing = sorted(set(own) - set(tensors))[:1] or sorted(set(tensors) - set(own))[:1]
        raise UserError(f"checkpoint does not match this run's model ('{missing[0]}')")
    for name, value in tensors.items():
        if own[name].shape != value.shape:
            raise UserError(
                f"checkpoint tensor '{name}' has shape {list(value.shape)}; this run's model "
                f"needs {list(own[name].shape)}"
            )
        own[name].copy_(value)


def head_state(head: nn.Module) -> dict[str, torch.Tensor]:
    """The trained head's own parameters (not the tied decoder weight)."""
    return {n: p for n, p in head.named_parameters() if p.requires_grad}
