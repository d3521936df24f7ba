"""Plumbing shared by everything that trains or scores on a pre-training objective: the corpus
as token blocks (or, for ``-o kd_data=sections``, as the reference's KD sequences), checked before
any compute, in the batches an objective reads, and the loss on held-out blocks. The MLM head
lives in :mod:`tamt_cli.mlm_head`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from rich.console import Console
from torch import nn

from tamt_cli import objectives
from tamt_cli.errors import UserError

if TYPE_CHECKING:
    from tamt_cli.corpora import Sections

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
    #: the training text in the reference's KD layout (``-o kd_data=sections``), or None
    sections: Sections | None = None
    #: whether the model reads token type ids (a segment B is then type 1)
    token_types: bool = False

    @property
    def examples(self) -> int:
        """How many training examples a step draws from: sections, else blocks."""
        return len(self.sections) if self.sections is not None else int(self.train.shape[0])

    def batch_maker(
        self, objective: str
    ) -> Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]:
        info = self.tokenizer_info
        sections = self.sections

        def make(indices: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
            if sections is not None:
                return sections_batch(sections, indices, self.token_types)
            return objectives.batch_for(self.train[indices], objective, info, generator)

        return make


def sections_batch(
    sections: Sections, indices: torch.Tensor, token_types: bool
) -> dict[str, torch.Tensor]:
    """The KD inputs of sections ``indices``, as the reference's ``train_kd.py`` feeds them:
    every sequence padded to the length with the padding token (:357-361), attention on its
    tokens only (:363-364), token type 1 from segment B on (:366-367; not given to a model
    without token types, as RoBERTa's, :949-950), and ``kd_positions`` on every position, the
    padding's included: its cosine loss is a plain mean over the batch, the sequence and the
    hidden size's cosines (``CosineLoss``, :70-72)."""
    rows, length = int(indices.shape[0]), sections.max_length
    input_ids = torch.full((rows, length), sections.pad_id, dtype=torch.long)
    attention = torch.zeros((rows, length), dtype=torch.long)
    types = torch.zeros((rows, length), dtype=torch.long)
    for row, index in enumerate(indices.tolist()):
        start, end = int(sections.offsets[index]), int(sections.offsets[index + 1])
        input_ids[row, : end - start] = sections.ids[start:end]
        attention[row, : end - start] = 1
        types[row, int(sections.second[index]) : end - start] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "kd_positions": torch.ones_like(input_ids),
    }
    if token_types:
        batch["token_type_ids"] = types
    return batch


def check_inputs(ref: Any, model: Any, spec: CorpusSettings, engine: Any) -> Any:
    """What can be checked without computing (length, corpus files, tokenizer, batch split);
    returns the tokenizer. Runs before a run directory is made."""
    from tamt_cli import corpora, models

    origin = getattr(spec, "origin", None)  # a search's spec says where a default came from
    models.check_positions(
        ref, spec.max_length, model.config, origin=origin and origin("max_length")
    )
    corpora.describe_corpus(spec.corpus)
    engine.micro_batch(spec.batch_size, spec.grad_accum)
    return models.load_tokenizer(ref, padding=False, mask=True)


def prepare(
    ref: Any,
    model: Any,
    spec: CorpusSettings,
    engine: Any,
    console: Console,
    *,
    sections: bool = False,
) -> PretrainingData:
    """Tokenise (or read from the cache) the corpus of ``spec`` for ``model``'s tokenizer; with
    ``sections``, lay its training text out as the reference's KD data too.

    The main process tokenises first; the others then read its cache."""
    from tamt_cli import corpora

    tokenizer = check_inputs(ref, model, spec, engine)
    with engine.main_first():
        blocks = corpora.load_blocks(
            spec.corpus,
            tokenizer,
            spec.max_length,
            held_out=spec.held_out,
            console=console,
            sections=sections,
        )
    info = {
        "special_ids": sorted(set(tokenizer.all_special_ids)),
        "mask_id": int(tokenizer.mask_token_id),
        "vocab_size": int(min(len(tokenizer), model.config.vocab_size)),
    }
    notes: dict[str, Any] = {
        "train_blocks": int(blocks.train.shape[0]),
        "held_out_blocks": int(blocks.held_out.shape[0]),
        "held_out_split": {"corpus": corpora.absolute_corpus(spec.corpus), **blocks.split},
    }
    token_types = False
    if blocks.sections is not None:
        laid_out = blocks.sections
        token_types = laid_out.token_types and getattr(model.config, "type_vocab_size", 1) > 1
        real = laid_out.offsets[1:] - laid_out.offsets[:-1]
        notes["kd_sections"] = {
            "sequences": len(laid_out),
            "seed": corpora.SECTIONS_SEED,
            "two_segments": int((laid_out.second < real).sum()),
            "mean_tokens": round(float(real.double().mean()), 1),
            "padded_to": laid_out.max_length,
        }
    return PretrainingData(
        blocks.train,
        blocks.held_out,
        blocks.source,
        blocks.fingerprint,
        info,
        notes,
        sections=blocks.sections,
        token_types=token_types,
    )


def recorded_corpus(manifest: dict[str, Any] | None, run_dir: Path | None) -> dict[str, Any]:
    """The corpus, block length and held-out fraction a search run (or the run an exported
    subnetwork came from) trained on: ``corpus``, ``max_length``, ``held_out`` and, where it
    was recorded, the split (``held_out_split``); empty when it read no corpus (a one-shot
    method) or is no search."""
    from tamt_cli import artifacts, specs

    if not manifest:
        return {}
    if manifest.get("kind") == "subnetwork":
        return dict(manifest.get("search_corpus") or {})
    if manifest.get("kind") != "search":
        return {}
    notes = manifest.get("notes") or {}
    split = notes.get("held_out_split")
    if isinstance(split, dict) and notes.get("max_length"):
        return {
            "corpus": split["corpus"],
            "max_length": int(notes["max_length"]),
            "held_out": split.get("fraction"),
            "held_out_split": split,
        }
    # an older run, or one that has not finished: what its spec gave, if it read a corpus
    spec_file = None if run_dir is None else Path(run_dir) / artifacts.SPEC_FILE
    read_corpus = "corpus_blocks_sha256" in (manifest.get("inputs") or {})
    if spec_file is None or not read_corpus or not spec_file.is_file():
        return {}
    try:
        given = specs.read_spec_file(spec_file)
    except UserError:
        return {}
    return {k: given[k] for k in ("corpus", "max_length", "held_out") if given.get(k) is not None}


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
