"""What the training search methods (mask training, IMP) share: the MLM head of a search,
the optimiser, the state a checkpoint carries, the corpus a run is bound to, the held-out figures
logged at every evaluation and the notes a run records."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tamt_cli import mlm_head, pretraining
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
    params: list[Any],
    lr: float,
    head_params: list[Any],
    head_lr: float | None,
    kind: str = "adamw",
    clip: float | None = None,
) -> torch.optim.Optimizer:
    """The optimiser over ``params`` at ``lr`` and, when there are any, the MLM head's trained
    parameters at ``head_lr``. ``adamw``: torch's AdamW without weight decay (the loop clips the
    global gradient norm). ``bertadam``: :class:`BertAdam` as the reference KD run builds it,
    each tensor's gradient clipped to ``clip`` on its own (the loop must then not clip), weight
    decay on matrices (scores, the head's transform) and none on vectors (biases, LayerNorm),
    as the reference's parameter groups split them by name."""
    groups: list[dict[str, Any]] = [{"params": params, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": head_lr})
    if kind == "bertadam":
        split = []
        for group in groups:
            for decay in (True, False):
                chosen = [p for p in group["params"] if (p.dim() > 1) is decay]
                if chosen:
                    rate = BertAdam.WEIGHT_DECAY if decay else 0.0
                    split.append({**group, "params": chosen, "weight_decay": rate})
        return BertAdam(split, lr=lr, max_grad_norm=clip or 0.0)
    return torch.optim.AdamW(groups, lr=lr, eps=1e-8, weight_decay=0.0)


class BertAdam(torch.optim.Optimizer):
    """Adam as BERT's original code and the reference KD trainer run it: no bias correction,
    ``eps`` added to ``√v``, decoupled weight decay added to the step before the learning rate
    scales it, and each tensor's gradient clipped to norm ``max_grad_norm`` on its own (0: no
    clipping) before it enters the moments. The learning rate is the group's ``lr``, which a
    scheduler (``LambdaLR``) sets each step.

    Once the moments have settled (``m ≈ g``, ``√v ≈ |g|``) a parameter moves by about
    ``lr·|g|/(|g| + eps)`` a step: the full ``lr`` where ``|g| ≫ eps``, the fraction ``|g|/eps``
    of it where ``|g| ≪ eps`` (AdamW, with bias correction and eps 1e-8, moves it by about
    ``lr`` whatever its gradient's size). Without bias correction the first steps differ too:
    after one, ``m = 0.1·g`` and ``√v ≈ 0.032·|g|``."""

    #: the reference's BertAdam defaults (mask_training/transformer/optimization.py:209), which
    #: train_kd.py:901 keeps; the decay is also its parameter groups' (train_kd.py:898)
    EPS = 1e-6
    WEIGHT_DECAY = 0.01
    MAX_GRAD_NORM = 1.0

    def __init__(
        self,
        params: Any,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = EPS,
        weight_decay: float = WEIGHT_DECAY,
        max_grad_norm: float = MAX_GRAD_NORM,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or max_grad_norm < 0:
            raise ValueError("lr, eps, weight_decay and max_grad_norm must not be negative")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1): {betas}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "max_grad_norm": max_grad_norm,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("BertAdam does not take sparse gradients")
                if group["max_grad_norm"] > 0:  # as clip_grad_norm_ over this tensor alone
                    norm = torch.linalg.vector_norm(grad.float())
                    scale = (group["max_grad_norm"] / (norm + 1e-6)).clamp(max=1.0)
                    grad = grad * scale.to(grad.dtype)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = exp_avg / (exp_avg_sq.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Everything a checkpoint must carry: trainable parameters and mask thresholds."""
    state: dict[str, torch.Tensor] = {n: p for n, p in module.named_parameters() if p.requires_grad}
    state.update({n: b for n, b in module.named_buffers() if n.endswith(".tau")})
    return state


def restore_trainable(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy a checkpoint's tensors into ``module``'s trainable state."""
    from tamt_cli.engine import restore_tensors

    restore_tensors(trainable_state(module), tensors, "checkpoint")


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
