"""What the training search methods (mask training, IMP) share: the MLM head of a search,
the optimiser, the state a checkpoint carries, the corpus a run is bound to, the held-out figures
logged at every evaluation and the notes a run records."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tamt_cli import mlm_head, pretraining
from tamt_cli.errors import UserError
from tamt_cli.pretraining import CorpusSettings, PretrainingData

if TYPE_CHECKING:
    from tamt_cli.engine import Engine
    from tamt_cli.methods.base import SearchJob
    from tamt_cli.specs import SearchSpec


def search_head(
    job: SearchJob, data: PretrainingData, engine: Engine
) -> tuple[nn.Module, list[nn.Parameter], float]:
    """The MLM head of a search (mask training, IMP): the shared head, its own parameters
    trainable at the resolved ``--head-lr`` (none when 0); returns (head, its trained
    parameters, that lr) and records the head's origin in the run's notes."""
    spec = job.spec
    head, record = mlm_head.shared_head(
        job.ref,
        job.model,
        job.weights,
        data,
        engine,
        job.console,
        steps=spec.head_warmup_steps,
        lr=spec.head_warmup_lr,
        batch_size=spec.batch_size,
        run_dir=job.run.root if job.run is not None else None,
    )
    lr = mlm_head.head_lr(spec.head_lr, record)
    job.notes["mlm_head"] = record
    return head, mlm_head.train_head(head, job.model, lr), lr


def optimizer(
    params: list[Any], lr: float, head_params: list[Any], head_lr: float | None
) -> torch.optim.Optimizer:
    """AdamW without weight decay over ``params`` at ``lr`` and, when there are any, the MLM
    head's trained parameters at ``head_lr``."""
    groups = [{"params": params, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": head_lr})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Everything a checkpoint must carry: trainable parameters and mask thresholds."""
    state: dict[str, torch.Tensor] = {n: p for n, p in module.named_parameters() if p.requires_grad}
    state.update({n: b for n, b in module.named_buffers() if n.endswith(".tau")})
    return state


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


def record_corpus(job: SearchJob, data: PretrainingData) -> None:
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


def held_out_eval(
    module: nn.Module,
    data: PretrainingData,
    objective: str,
    spec: CorpusSettings,
    engine: Engine,
) -> dict[str, float]:
    """The held-out figures a training search logs at every evaluation."""
    return {"eval_loss": pretraining.held_out_loss(module, data, objective, spec, engine.device)}


def run_notes(
    objective: str, data: PretrainingData, spec: SearchSpec, engine: Engine, **method: Any
) -> dict[str, Any]:
    """What a training search records in its manifest's notes: the objective, the method's own
    facts (``method``), then the corpus, block length, batch and processes."""
    return {
        "objective": objective,
        **method,
        "corpus": data.source,
        "corpus_fingerprint": data.fingerprint,
        "max_length": spec.max_length,
        "batch_size": spec.batch_size,
        "processes": engine.world,
        **data.notes,
    }
