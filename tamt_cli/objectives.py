"""Pre-training objectives shared by every method that needs them: MLM, hidden-state KD, both.

MLM: 15% of the non-special tokens are chosen; of those 80% become the mask token, 10% a random
token, 10% stay. Only the chosen positions go through the vocabulary projection (the projection
of every token is most of a step's cost on a small encoder and a large vocabulary).

KD: the dense model is the teacher: the same module with every mask switched off (no second
copy); loss = mean over the L transformer layers (embedding output excluded) of the mean over
tokens of ``1 - cos(h_student, h_teacher)``. A method that trains the weights themselves (IMP)
passes ``teacher=``, a frozen copy of the pre-trained encoder, which is then used instead. The
teacher runs without dropout unless ``teacher_dropout`` (the reference KD trainer's teacher keeps
it on while training).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tamt_cli import masking
from tamt_cli.specs import OBJECTIVES

IGNORE = -100


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    probability: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: returns (corrupted inputs, labels with -100 where not chosen).

    ``special`` is a boolean tensor like ``input_ids``, True where a token may never be chosen
    ([CLS], [SEP], padding). Drawn on the CPU from ``generator``, so a seed fixes it."""
    ids = input_ids.cpu()
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special.cpu()
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=ids.dtype)
    corrupted = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted.to(input_ids.device), labels.to(input_ids.device)


def mlm_loss(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Cross-entropy over the chosen positions only; ``head`` maps ``[M, H]`` to ``[M, V]``."""
    chosen = labels != IGNORE
    if not bool(chosen.any()):
        return hidden.sum() * 0.0
    logits = head(hidden[chosen])
    return F.cross_entropy(logits.float(), labels[chosen])


def kd_loss(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over layers of the token-mean cosine distance; both sequences exclude embeddings."""
    losses = []
    for hs, ht in zip(student, teacher, strict=True):
        distance = 1.0 - F.cosine_similarity(hs.float(), ht.float(), dim=-1)
        if attention_mask is None:
            losses.append(distance.mean())
        else:
            weight = attention_mask.to(distance.dtype)
            losses.append((distance * weight).sum() / weight.sum().clamp_min(1.0))
    return torch.stack(losses).mean()


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    with train_mode(module, False):
        yield


@contextlib.contextmanager
def train_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """``module`` (and its submodules) in training mode or not for the block, then as before."""
    was = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was)


class PretrainingLoss(nn.Module):
    """The encoder (with masks attached) and, for MLM, its head, computing one objective.

    ``forward`` takes a batch of token blocks and returns the loss; it is the module the training
    engine wraps (so distributed training synchronises whatever in it requires grad)."""

    def __init__(
        self,
        encoder: nn.Module,
        weights: list[masking.Prunable],
        objective: str,
        head: nn.Module | None = None,
        teacher: nn.Module | None = None,
        recompute: bool = True,
        teacher_dropout: bool = False,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}")
        if "mlm" in objective and head is None:
            raise ValueError("the mlm objective needs an MLM head")
        self.encoder = encoder
        self.head = head
        self.objective = objective
        self._weights = weights  # a plain list: not registered twice as submodules
        # When the weights themselves train (IMP), the teacher cannot be the same tensors with
        # the masks off: ``teacher`` is then a frozen copy of the pre-trained encoder (a
        # submodule, so it moves with the loss module; it has no trainable parameters).
        self.teacher = teacher
        #: the backward pass remakes the masked matrices of score masks instead of keeping them
        #: from the forward pass (:func:`masking.masked_weights_recomputed`): the same result
        self.recompute = recompute
        #: the teacher keeps dropout on while this module trains (off in eval mode, as ever)
        self.teacher_dropout = teacher_dropout

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        kd_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of one batch: ``labels`` are the MLM labels of the (corrupted) inputs. With
        ``mlm-kd`` one student pass serves both terms, the teacher seeing the same inputs. The
        KD loss averages over ``kd_positions`` (the sections layout counts padding, as the
        reference does), else over the attended tokens."""
        kd = "kd" in self.objective
        types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        saved = masking.masked_weights_recomputed if self.recompute else contextlib.nullcontext
        with saved():
            out = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=kd, **types
            )
        loss = torch.zeros((), device=input_ids.device)
        if "mlm" in self.objective:
            assert labels is not None and self.head is not None
            loss = loss + mlm_loss(out.last_hidden_state, labels, self.head)
        if kd:
            teacher = self.teacher_states(input_ids, attention_mask, **types)
            positions = attention_mask if kd_positions is None else kd_positions
            loss = loss + kd_loss(out.hidden_states[1:], teacher, positions)
        return loss

    @torch.no_grad()
    def teacher_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **types: Any
    ) -> tuple[torch.Tensor, ...]:
        """Hidden states of the dense model: the same tensors with the masks off (or the frozen
        ``teacher`` copy when one was given), without dropout unless ``teacher_dropout`` and
        this module is training; ``types``: token type ids."""
        dropout = self.teacher_dropout and self.training
        if self.teacher is not None:
            with train_mode(self.teacher, dropout):
                out = self.teacher(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    output_hidden_states=True,
                    **types,
                )
            return tuple(h.detach() for h in out.hidden_states[1:])
        with masking.masks_disabled(self._weights), train_mode(self.encoder, dropout):
            out = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,
                **types,
            )
        return tuple(h.detach() for h in out.hidden_states[1:])


def special_tokens_mask(input_ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token in special_ids:
        special |= input_ids == token
    return special


def batch_for(
    blocks: torch.Tensor,
    objective: str,
    tokenizer_info: dict[str, Any],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Model inputs for a batch of token blocks (int32 rows, no padding) under ``objective``."""
    ids = blocks.long()
    batch: dict[str, torch.Tensor] = {"attention_mask": torch.ones_like(ids)}
    if "mlm" in objective:
        special = special_tokens_mask(ids, tokenizer_info["special_ids"])
        corrupted, labels = mask_tokens(
            ids,
            special,
            mask_id=tokenizer_info["mask_id"],
            vocab_size=tokenizer_info["vocab_size"],
            generator=generator,
        )
        batch.update(input_ids=corrupted, labels=labels)
    else:
        batch["input_ids"] = ids
    return batch
