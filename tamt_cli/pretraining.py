"""Plumbing shared by everything that trains or scores on a pre-training objective: the corpus
as token blocks, checked before any compute, in the batches an objective reads, and the loss on
held-out blocks. The MLM head lives in :mod:`tamt_cli.mlm_head`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from rich.console import Console
from torch import nn

from tamt_cli import objectives
from tamt_cli.errors import UserError

#: the seed of the MLM corruption of held-out blocks: every evaluation masks the same tokens
HELD_OUT_SEED = 12_345


class CorpusSettings(Protocol):
    """What reading a corpus as token blocks and scoring held-out blocks need: a
    :class:`~tamt_cli.specs.SearchSpec` has it, and so has ``tamt eval --objective``'s
    :class:`~tamt_cli.evaluate.HeldOut`."""

    @property
    def corpus(self) -> str: ...
    @property
    def max_length(self) -> int: ...
    @property
    def held_out(self) -> float: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def grad_accum(self) -> int: ...
    @property
    def eval_blocks(self) -> int: ...


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


def check_inputs(ref: Any, model: Any, spec: CorpusSettings, engine: Any) -> Any:
    """What can be checked without computing (length, corpus files, tokenizer, batch split);
    returns the tokenizer. Runs before a run directory is made."""
    from tamt_cli import corpora, models

    models.check_positions(ref, spec.max_length, model.config)
    corpora.describe_corpus(spec.corpus)
    engine.micro_batch(spec.batch_size, spec.grad_accum)
    return models.load_tokenizer(ref, padding=False, mask=True)


def prepare(
    ref: Any, model: Any, spec: CorpusSettings, engine: Any, console: Console
) -> PretrainingData:
    """Tokenise (or read from the cache) the corpus of ``spec`` for ``model``'s tokenizer.

    The main process tokenises first; the others then read its cache."""
    from tamt_cli import corpora

    tokenizer = check_inputs(ref, model, spec, engine)
    with engine.main_first():
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


@torch.no_grad()
def held_out_loss(
    module: nn.Module, data: PretrainingData, objective: str, spec: CorpusSettings, device: Any
) -> float:
    """Mean loss over the first ``spec.eval_blocks`` held-out blocks, with MLM corruption drawn
    from a fixed seed so that evaluations are comparable across steps and runs."""
    return mean_held_out_loss(module, data, objective, spec.eval_blocks, spec.batch_size, device)


def held_out_batches(
    data: PretrainingData, objective: str, blocks: int, batch_size: int
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(rows, inputs)`` of the first ``blocks`` held-out blocks in batches, with the MLM
    corruption drawn from :data:`HELD_OUT_SEED`: the same positions at every evaluation."""
    held_out = data.held_out[:blocks]
    generator = torch.Generator().manual_seed(HELD_OUT_SEED)
    for start in range(0, held_out.shape[0], batch_size):
        chunk = held_out[start : start + batch_size]
        yield chunk.shape[0], objectives.batch_for(chunk, objective, data.tokenizer_info, generator)


@torch.no_grad()
def mean_held_out_loss(
    module: nn.Module,
    data: PretrainingData,
    objective: str,
    blocks: int,
    batch_size: int,
    device: Any,
) -> float:
    """Mean loss of ``module`` over the first ``blocks`` held-out blocks (see
    :func:`held_out_batches`), in eval mode."""
    module = getattr(module, "module", module)
    if min(blocks, data.held_out.shape[0]) == 0:
        raise UserError("the corpus has no held-out blocks to evaluate on")
    was = module.training
    module.eval()
    total, count = 0.0, 0
    try:
        for rows, inputs in held_out_batches(data, objective, blocks, batch_size):
            batch = {k: v.to(device) for k, v in inputs.items()}
            total += float(module(**batch)) * rows
            count += rows
    finally:
        module.train(was)
    return total / count
