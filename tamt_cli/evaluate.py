"""`tamt eval`: the task metrics of a fine-tuned checkpoint (``--task``), or the held-out
pre-training loss of a subnetwork (``--objective``: a cheap proxy for how well it will
transfer) for a search run, an exported subnetwork, or a dense model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tamt_cli import (
    artifacts,
    maskfile,
    masking,
    models,
    progress,
    specs,
    subjects,
    task_data,
    task_model,
    verbosity,
)
from tamt_cli.errors import UserError
from tamt_cli.specs import EvalSpec


@dataclass(frozen=True)
class HeldOut:
    """The corpus and batches ``--objective`` scores on (a
    :class:`~tamt_cli.pretraining.CorpusSettings`)."""

    corpus: str
    max_length: int
    held_out: float
    batch_size: int
    eval_blocks: int
    grad_accum: int = 1


def run(spec: EvalSpec, console: Console) -> dict[str, Any]:
    """``tamt eval``: a task's metrics with ``--task``, else the ``--objective`` loss."""
    if spec.task is not None:
        return run_task(spec, console)
    return run_objective(spec, console)


def run_task(spec: EvalSpec, console: Console) -> dict[str, Any]:
    """Score a fine-tuned folder (or any model folder with a matching head) on a task."""
    with verbosity.quiet_libraries():
        return _run_task(spec, console)


def _run_task(spec: EvalSpec, console: Console) -> dict[str, Any]:
    from tamt_cli.registry import create_task

    assert spec.task is not None
    location, manifest = subjects.fine_tuned(spec.checkpoint)
    ref = models.resolve(location)
    same = manifest is not None and manifest.get("task") == spec.task
    record = manifest if same and manifest is not None else {}
    options = spec.task_options or record.get("task_options") or {}
    task = create_task(spec.task, options)
    tuned_with = record.get("hyperparameters", {})
    max_length = spec.max_length or tuned_with.get("max_length") or task.defaults.max_length
    doc_stride = spec.doc_stride or tuned_with.get("doc_stride") or task.defaults.doc_stride
    batch_size = spec.batch_size or tuned_with.get("eval_batch_size") or task.defaults.batch_size
    splits = task.splits(spec.split)
    tokenizer = models.load_tokenizer(ref)
    models.check_positions(ref, max_length)
    from tamt_cli.engine import Engine

    engine = Engine("no", console)  # several processes (torchrun): each scores its share
    try:
        with console.status(f"loading {task.name} data"), engine.main_first():
            sets = task_data.eval_sets(
                task, splits, spec.data_dir, tokenizer, max_length, doc_stride, console
            )
        model = models.load_task_model(ref, task, trained=True).to(engine.device)
        totals = {eval_set.split: len(eval_set.features) for eval_set in sets}
        with progress.scoring(console, totals, engine.is_main) as advance:
            scores = task_model.score(task, model, sets, batch_size, advance, engine)
    finally:
        engine.end()
    if manifest is not None:
        sparsity = (manifest.get("subnetwork") or {}).get("mask_sparsity")
    elif (Path(location) / artifacts.MASK_FILE).is_file():
        sparsity = masking.pruned_fraction(
            maskfile.load_masks(Path(location) / artifacts.MASK_FILE)
        )
    else:
        sparsity = task_model.measured_sparsity(model)
    return {
        "task": task.name,
        "checkpoint": spec.checkpoint,
        "split": ",".join(splits),
        "examples": sum(eval_set.examples for eval_set in sets),
        "metrics": task_model.flat(scores, prefix_always=False),
        "splits": {
            eval_set.split: {"examples": eval_set.examples, "metrics": scores[eval_set.split]}
            for eval_set in sets
        },
        "main_metric": task.main_metric,
        "mask_sparsity": sparsity,
        "model": ref.location,
        "max_length": max_length,
        "tokenised": {eval_set.split: eval_set.tokenised for eval_set in sets},
    }


def run_objective(spec: EvalSpec, console: Console) -> dict[str, Any]:
    """The held-out pre-training loss of a subnetwork. For MLM every subnetwork of a model is
    scored with the same head (``--head shared``): the checkpoint's pre-trained head, or one
    fitted once on the dense model; ``--head own`` scores a search run with the head it
    trained along with its mask."""
    from tamt_cli import exports, objectives, pretraining
    from tamt_cli.engine import Engine

    assert spec.objective is not None
    subject = subjects.resolve(spec.checkpoint, spec.step)
    if spec.head == "own" and "mlm" in spec.objective and subject.head_file is None:
        raise UserError(
            f"--head own needs a search run that trained an MLM head; '{spec.checkpoint}' has "
            f"no {artifacts.HEAD_FILE} (use --head shared)"
        )
    engine = Engine("no", console)
    try:
        with console.status(f"loading model {subject.ref.given}"):
            model = models.load_encoder(subject.ref)
        recorded = (subject.manifest or {}).get("model", {}).get("weights_sha256")
        models.check_weights(model, recorded, subject.ref.given, f"'{spec.checkpoint}'")
        exports.check_against(subject, model)
        weights = masking.prunable_weights(
            model, embeddings=subject.embeddings, pooler=subject.pooler
        )
        for p in model.parameters():
            p.requires_grad_(False)
        settings = objective_settings(spec, subject.manifest)
        batch = settings["batch_size"]
        data_spec = HeldOut(
            corpus=settings["corpus"],
            max_length=settings["max_length"],
            held_out=settings["held_out"],
            batch_size=batch,
            eval_blocks=spec.eval_blocks,
        )
        data = pretraining.prepare(subject.ref, model, data_spec, engine, console)
        split = data.notes["held_out_split"]
        _check_held_out_text(split, settings["search_run"], data.source, console)
        head, head_record = _scoring_head(spec, subject, (model, weights), data, engine, batch)
        sparsity = None
        if subject.masks is not None:
            masking.check_fits(
                subject.masks, masking.shapes(weights), f"the mask of '{spec.checkpoint}'"
            )
            masking.attach_masks(weights, subject.masks)
            sparsity = masking.pruned_fraction(subject.masks)
        module = objectives.PretrainingLoss(model, weights, spec.objective, head)
        module.to(engine.device)
        loss = pretraining.held_out_loss(module, data, spec.objective, data_spec, engine.device)
    finally:
        engine.end()
    return {
        "checkpoint": spec.checkpoint,
        "subject": subject.description,
        "objective": spec.objective,
        "loss": loss,
        "split": "held-out",
        "examples": int(min(spec.eval_blocks, data.held_out.shape[0])),
        "corpus": data.source,
        "max_length": data_spec.max_length,
        "mask_sparsity": sparsity,
        "mlm_head": head_record,
        "held_out_split": split,
    }


def _check_held_out_text(
    split: dict[str, Any], search_run: dict[str, Any], source: str, console: Console
) -> None:
    """A note when the held-out text differs from what the search run held out."""
    trained = search_run.get("held_out_split") or {}
    same_text = (split["corpus"], split["fraction"]) == (trained.get("corpus"),
                                                         trained.get("fraction"))  # fmt: skip
    if same_text and split["held_out_sha256"] != trained.get("held_out_sha256"):
        verbosity.note(
            console,
            f"the held-out text of {source} differs from what the search run held "
            "out (the files or the tokenizer changed since): some of it may have trained",
        )


def _scoring_head(
    spec: EvalSpec, subject: Any, encoder: tuple[Any, Any], data: Any, engine: Any, batch: int
) -> tuple[Any, dict[str, Any] | None]:
    """The MLM head the loss is scored with (none for kd) and its record: fitted (if at all) on
    the dense model, so before the mask is attached."""
    from tamt_cli import mlm_head

    assert spec.objective is not None
    if "mlm" not in spec.objective:
        return None, None
    model, weights = encoder
    head, head_record = mlm_head.shared_head(
        subject.ref,
        model,
        weights,
        data,
        engine,
        engine.console,
        steps=spec.head_warmup_steps,
        lr=spec.head_warmup_lr,
        batch_size=batch,
    )
    if spec.head == "own":
        assert subject.head_file is not None
        _load_head(head, subject.head_file)
        head_record = {"kind": "own", "about": "trained with the mask by the search"}
    return head, head_record


def objective_settings(spec: EvalSpec, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``--objective`` scores on: the corpus, block length and held-out fraction the spec
    gives, else those of the search run ``spec.checkpoint`` is (or that an exported subnetwork
    came from), else the ``OBJECTIVE_*`` values; ``search_run``: what that run recorded."""
    from tamt_cli import pretraining

    path = Path(spec.checkpoint)
    if manifest is None and (path / artifacts.MANIFEST).is_file():
        try:
            manifest = artifacts.read_manifest(path)
        except UserError:
            manifest = None
    recorded = pretraining.recorded_corpus(manifest, path if path.is_dir() else None)
    return {
        "corpus": spec.corpus or recorded.get("corpus") or specs.OBJECTIVE_CORPUS,
        "max_length": spec.max_length or recorded.get("max_length") or specs.OBJECTIVE_MAX_LENGTH,
        "held_out": spec.held_out or recorded.get("held_out") or specs.OBJECTIVE_HELD_OUT,
        "batch_size": spec.batch_size or specs.OBJECTIVE_BATCH_SIZE,
        "search_run": recorded,
    }


def _load_head(head: Any, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise UserError(f"head file '{path}' is unreadable or corrupt ({exc})") from None
    own = dict(head.named_parameters())
    unknown = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if unknown:
        raise UserError(f"head file '{path}' does not fit the model ('{unknown[0]}')")
    import torch

    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
