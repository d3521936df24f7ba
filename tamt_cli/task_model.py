"""The task model with a subnetwork's mask held fixed, and scores of a model on a task's eval
splits (the features and their batches: :mod:`tamt_cli.task_data`).

Used by `tamt finetune` and `tamt eval --task` (:mod:`tamt_cli.finetune`). The mask is held
fixed by writing its zeros into the weights and attaching it as a fixed parametrization
(``W ⊙ M``): masked weights are exactly zero in every forward pass, receive exactly zero
gradient, and (with no weight decay) stay exactly zero in the optimiser's parameters too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tamt_cli import exports, masking, models, verbosity
from tamt_cli.errors import UserError

# task data lives in task_data; plugins of API 1 reach it here too (``api.transfer``)
from tamt_cli.task_data import INPUTS as INPUTS
from tamt_cli.task_data import Batcher as Batcher
from tamt_cli.task_data import EvalSet as EvalSet
from tamt_cli.task_data import eval_sets as eval_sets
from tamt_cli.task_data import subset as subset
from tamt_cli.task_data import subset_rows as subset_rows

if TYPE_CHECKING:
    from tamt_cli.subjects import Subject

#: a measured fraction of exactly-zero prunable weights below this means "dense"
DENSE_BELOW = 1e-3


#: :func:`tamt_cli.verbosity.quiet_libraries`, under the name plugins of API 1 reach it by
#: (``api.transfer.quiet``); tamt itself and newer plugins use ``quiet_libraries``
quiet = verbosity.quiet_libraries


#: :func:`tamt_cli.models.load_tokenizer`, where plugins of API 1 reach it (``api.transfer``)
load_tokenizer = models.load_tokenizer


# -- the task model -------------------------------------------------------------------------


@dataclass
class TaskModel:
    """A task model ready to train: the mask (if any) written into its weights and attached."""

    model: Any
    weights: list[masking.Prunable]  # the masked weights ([] for a dense model)
    masks: dict[str, torch.Tensor] | None  # the masks applied, by weight name
    notes: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float | None:
        return masking.pruned_fraction(self.masks)


def build(task: Any, subject: Subject, seed: int) -> TaskModel:
    """The task's model (``task.auto_model_class()``) from the subject's weights, a new head
    initialised from ``seed``, its mask held fixed."""
    model = models.load_task_model(subject.ref, task, seed)
    base = model.base_model
    notes: list[str] = []
    if subject.weights_sha256 is not None and models.weights_hash(base) != subject.weights_sha256:
        # the task model may lack part of the encoder (a QA model: the pooler)
        encoder = models.load_encoder(subject.ref)
        models.check_weights(
            encoder, subject.weights_sha256, subject.ref.given, f"the mask '{subject.mask_file}'"
        )
        del encoder
    exports.check_against(subject, model)
    if subject.masks is None:
        return TaskModel(model, [], None, notes)
    weights, masks, dropped = fit_masks(model, subject.masks, f"the mask of '{subject.mask_file}'")
    if dropped:
        notes.append(
            f"{type(model).__name__} has no {', '.join(dropped)}; "
            f"{'its mask is' if len(dropped) == 1 else 'their masks are'} not used"
        )
    masking.bake_masks(weights, masks)
    masking.attach_masks(weights, masks)
    return TaskModel(model, weights, masks, notes)


def fit_masks(
    model: Any, masks: Mapping[str, torch.Tensor], description: str
) -> tuple[list[masking.Prunable], dict[str, torch.Tensor], list[str]]:
    """The model's prunable weights the masks cover, the masks for them, and the names of masked
    weights the model lacks because its head does not use them (the pooler of a QA model).
    Any other mismatch is a one-line error."""
    embeddings = any(name.startswith("embeddings.") for name in masks)
    has_pooler = getattr(masking.base_model(model), "pooler", None) is not None
    dropped = [name for name in masks if name.startswith("pooler.") and not has_pooler]
    pooler = has_pooler and any(name.startswith("pooler.") for name in masks)
    weights = masking.prunable_weights(model, embeddings=embeddings, pooler=pooler)
    kept = {name: mask.to("cpu", dtype=torch.bool) for name, mask in masks.items()}
    for name in dropped:
        del kept[name]
    masking.check_fits(kept, masking.shapes(weights), description)
    return weights, kept, dropped


def measured_sparsity(model: Any) -> float | None:
    """The fraction of exactly-zero prunable weights (word embeddings, encoder matrices,
    pooler), or None when it is below :data:`DENSE_BELOW` (a dense model)."""
    try:
        weights = masking.prunable_weights(model)
    except UserError:
        return None
    total = sum(p.numel for p in weights)
    zeros = sum(int((p.weight == 0).sum()) for p in weights)
    fraction = zeros / total if total else 0.0
    return fraction if fraction >= DENSE_BELOW else None


class TaskLoss(torch.nn.Module):
    """``module(**batch)`` → the task model's loss, as the engine wants."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.model(**batch).loss


# -- prediction and scores ------------------------------------------------------------------


@torch.no_grad()
def predict(
    model: Any,
    data: EvalSet,
    batch_size: int,
    span: bool,
    advance: Callable[[int], None] | None = None,
    engine: Any = None,
) -> Any:
    """Logits of every feature, in feature order (span tasks: ``(start, end)`` logits).

    Features are scored in batches of similar length (:attr:`EvalSet.by_length`), which pads
    less than batches in file order; the logits are put back in feature order. With an
    ``engine`` (:class:`tamt_cli.engine.Engine`) the batches are split over its processes
    whole: each process scores its own, and every process receives the logits of all of them
    (``gather_for_metrics``, which drops the repeats that fill the last round of batches)."""
    import numpy as np

    was_training = model.training
    model.eval()
    starts: list[Any] = []
    ends: list[Any] = []
    logits: list[Any] = []
    if engine is None:
        device = next(model.parameters()).device
        batches: Any = (
            data.sorted_batch(range(first, min(first + batch_size, len(data.batcher))))
            for first in range(0, len(data.batcher), batch_size)
        )
    else:
        device = engine.device
        batches = data.loaders.get((id(engine), batch_size))
        if batches is None:
            batches = engine.shard_loader(len(data.batcher), batch_size, data.sorted_batch)
            data.loaders[id(engine), batch_size] = batches
    scored = rounds = 0
    try:
        for batch in batches:
            output = model(**{k: v.to(device) for k, v in batch.items()})
            scored += len(batch["input_ids"])
            rounds += 1
            if span:
                pair = (output.start_logits.float(), output.end_logits.float())
                if engine is not None:
                    pair = engine.accelerator.gather_for_metrics(pair)
                starts.append(pair[0].cpu().numpy())
                ends.append(pair[1].cpu().numpy())
                done = len(pair[0])
            else:
                out = output.logits.float()
                if engine is not None:
                    out = engine.accelerator.gather_for_metrics(out)
                logits.append(out.cpu().numpy())
                done = len(out)
            if advance is not None:
                advance(done)
    finally:
        model.train(was_training)
    if engine is not None and engine.world > 1:
        verbosity.debug(
            verbosity.console(),
            f"{data.split}: process {engine.rank} of {engine.world} scored {scored} features "
            f"({rounds} × {batch_size}, with the repeats that fill the last round) of "
            f"{len(data.batcher)}",
        )
    inverse = np.argsort(np.asarray(data.by_length, dtype=np.int64), kind="stable")
    if span:
        return np.concatenate(starts)[inverse], np.concatenate(ends)[inverse]
    return np.concatenate(logits)[inverse]


def score(
    task: Any,
    model: Any,
    sets: Sequence[EvalSet],
    batch_size: int,
    advance: Callable[[str, int], None] | None = None,
    engine: Any = None,
    keep: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """``{split: {metric: value}}`` (percent) of ``model`` on every eval set; with an
    ``engine``, each of its processes scores a share of the features and the metrics are
    computed, on every process, from the predictions of all of them (:func:`predict`). The
    predictions scored go into ``keep`` by split, when given."""
    out: dict[str, dict[str, float]] = {}
    for data in sets:
        step = None if advance is None else (lambda n, split=data.split: advance(split, n))
        predictions = predict(model, data, batch_size, task.head == "span", step, engine)
        if keep is not None:
            keep[data.split] = predictions
        scores = task.metrics(data.raw, data.features, predictions)
        out[data.split] = {k: _finite(v) for k, v in scores.items()}
    return out


def prediction_rows(task: Any, data: EvalSet, predictions: Any) -> list[dict[str, Any]]:
    """One row per example of ``data`` (:func:`predict`'s ``predictions`` of its features), in
    the split's order: ``id``, ``label`` and ``prediction`` (a class id; a float for a
    regression task); span tasks: ``id``, the gold ``answers`` and the predicted text."""
    from tamt_cli.tasks.metrics import class_predictions, regression_predictions

    raw = data.raw
    if task.head == "span":
        found = task.postprocess(raw, data.features, predictions)
        return [
            {"id": qid, "answers": list(gold["text"]), "prediction": found.get(qid, "")}
            for qid, gold in zip(raw["id"], raw["answers"], strict=True)
        ]
    columns = raw.column_names
    ids = next((raw[c] for c in ("idx", "id") if c in columns), range(len(raw)))
    if "label" in columns:
        labels = list(raw["label"])
    elif "labels" in data.features.column_names:
        labels = list(data.features["labels"])
    else:
        labels = [None] * len(raw)
    if task.head == "regression":
        predicted = [float(p) for p in regression_predictions(predictions)]
    else:
        predicted = [int(p) for p in class_predictions(predictions, task.num_labels)]
    return [
        {"id": i, "label": label, "prediction": p}
        for i, label, p in zip(ids, labels, predicted, strict=True)
    ]


def _finite(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def flat(scores: Mapping[str, Mapping[str, float]], prefix_always: bool = True) -> dict[str, float]:
    """``{"split/metric": value}``; with ``prefix_always=False`` a single split's metrics keep
    their bare names."""
    if not prefix_always and len(scores) == 1:
        return dict(next(iter(scores.values())))
    return {f"{split}/{name}": v for split, values in scores.items() for name, v in values.items()}
