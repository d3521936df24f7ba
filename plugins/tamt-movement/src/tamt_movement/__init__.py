"""``movement``: movement pruning, built only on ``tamt_cli.api``.

While the model fine-tunes on a task, every prunable weight ``W`` accumulates the movement score
``S ← S − W ⊙ ∂L/∂W`` at each backward pass (the first-order estimate of how much the loss drops
when the weight moves away from zero); the mask keeps the highest scores at the target sparsity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tamt_cli.api import SearchJob, UserError, create_task

__version__ = "0.1.0"


class MovementOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="the task whose fine-tuning drives the scores")
    data_dir: Path | None = Field(None, description="the task's local data (else the hub)")
    task_options: dict[str, Any] = Field(default_factory=dict)
    train_size: int | None = Field(None, gt=0, description="seeded subset of training examples")
    epochs: float = Field(1.0, gt=0, description="fine-tuning length without --max-steps")


class MovementScores:
    """Accumulates ``−W ⊙ ∂L/∂W`` for each weight through gradient hooks."""

    def __init__(self, weights: list[Any]) -> None:
        import torch

        self.scores = {p.name: torch.zeros_like(p.weight, dtype=torch.float32) for p in weights}
        self._handles = []
        for p in weights:
            self._handles.append(p.weight.register_hook(self._hook(p.name, p.weight)))

    def _hook(self, name: str, weight: Any) -> Any:
        def accumulate(grad: Any) -> None:
            self.scores[name].sub_((weight.detach() * grad).float())

        return accumulate

    def close(self) -> dict[str, Any]:
        for handle in self._handles:
            handle.remove()
        return self.scores


class MovementPruning:
    """Movement pruning: scores from weight × gradient while fine-tuning on a task."""

    tamt_api = 1
    summary = "movement pruning (Sanh et al. 2020): top-k of −Σ W·∂L/∂W while fine-tuning on a task"
    trains = True
    Options = MovementOptions

    def __init__(self, options: MovementOptions) -> None:
        self.options = options

    def check(self, spec: Any) -> None:
        create_task(self.options.task, self.options.task_options)  # unknown task → did you mean

    def search(self, job: SearchJob) -> dict[str, Any]:
        import torch

        from tamt_cli.api import (
            Batcher,
            Loop,
            TaskLoss,
            linear_schedule,
            load_task_model,
            load_tokenizer,
            magnitude_scores,
            masks_from_scores,
            prunable_weights,
            quiet_libraries,
            subset,
        )

        spec, opts, engine, run = job.spec, self.options, job.engine, job.run
        assert engine is not None and run is not None  # a training method (trains = True)
        if job.resume:
            raise UserError("movement runs are short and do not resume; start a new run")
        task = create_task(opts.task, opts.task_options)
        with quiet_libraries():
            raw = task.load(task.train_split, opts.data_dir)
            raw = subset(raw, opts.train_size, spec.seed, opts.task)
            tokenizer = load_tokenizer(job.ref)
            features = task.encode(raw, tokenizer, spec.max_length, None, train=True)
        model = load_task_model(job.ref, task, spec.seed)  # the head initialised from the seed
        weights = prunable_weights(model, embeddings=spec.embeddings, pooler=spec.pooler)
        expected = {p.name for p in job.weights}
        weights = [p for p in weights if p.name in expected]
        missing = expected - {p.name for p in weights}
        batcher = Batcher(features, tokenizer)
        steps = spec.max_steps or max(1, math.ceil(opts.epochs * len(batcher) / spec.batch_size))
        lr = spec.lr or task.defaults.lr
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        scheduler = linear_schedule(optimizer, steps)
        tracker = MovementScores(weights)
        loop = Loop.from_spec(
            spec, steps, f"movement ({opts.task})", eval_every=None, save_every=None
        )
        engine.fit(
            TaskLoss(model),
            optimizer,
            scheduler,
            len(batcher),
            lambda indices, generator: batcher(indices.tolist()),
            loop,
            run_dir=run.root,
        )
        scores = {name: engine.reduce(s).cpu() for name, s in tracker.close().items()}
        if missing:  # weights the task model lacks (a QA model has no pooler): magnitude
            scores.update(magnitude_scores(p for p in job.weights if p.name in missing))
        job.notes.update(
            task=opts.task, steps=steps, lr=lr, train_examples=len(batcher),
            scores="movement: −Σ W·∂L/∂W over fine-tuning",
        )  # fmt: skip
        return masks_from_scores(scores, job.sparsity, spec.scope)
