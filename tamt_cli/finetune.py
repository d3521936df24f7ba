"""`tamt finetune`: transfer a subnetwork to a downstream task with its mask held fixed.

A fine-tuning run directory (written under a temporary name, renamed when every seed is done)::

    runs/finetune-<task>-<time>/
    ├── spec.yaml        the resolved spec
    ├── manifest.json    kind "finetune": task, seeds, members, subnetwork, hyper-parameters
    ├── summary.json     best and final dev scores per seed, mean ± std over seeds
    └── seed-<N>/        a plain Hugging Face folder (the zeros in the weights, tokenizer),
        ├── metrics.json     best and final scores per split, the step of the best
        ├── metrics.jsonl    the engine's log (loss, lr; scores at every evaluation)
        ├── masks.safetensors    the mask held fixed (absent for a dense model)
        └── manifest.json    kind "finetune", this seed, linked to the subnetwork
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from tamt_cli import artifacts, files, maskfile, models, registry, task_data, task_model, verbosity
from tamt_cli.engine import Hooks
from tamt_cli.errors import UserError
from tamt_cli.specs import FinetuneSpec
from tamt_cli.tasks.metrics import over_seeds

if TYPE_CHECKING:
    from tamt_cli.engine import Loop
    from tamt_cli.subjects import Subject

OPTIMIZER = {"name": "AdamW", "weight_decay": 0.0, "schedule": "linear decay", "warmup": 0}


# -- fine-tuning ----------------------------------------------------------------------------


def run(spec: FinetuneSpec, console: Console) -> dict[str, Any]:
    """Fine-tune ``spec.subnetwork`` on ``spec.task`` once per seed; returns the summary."""
    with verbosity.quiet_libraries():
        return _run(spec, console)


def settings(spec: FinetuneSpec, task: Any) -> dict[str, Any]:
    """The hyper-parameters of the run: the flags given, else the task's (the paper's)."""
    defaults = task.defaults
    span = task.head == "span"
    batch_size = spec.batch_size or defaults.batch_size
    return {
        "lr": spec.lr or defaults.lr,
        "batch_size": batch_size,
        "epochs": spec.epochs or defaults.epochs,
        "max_length": spec.max_length or defaults.max_length,
        "doc_stride": (spec.doc_stride or defaults.doc_stride) if span else None,
        "train_size": spec.train_size,
        "eval_every": spec.eval_every,  # None: the task's cadence, at most 50 evaluations
        "eval_every_default": getattr(defaults, "eval_every", 50),
        "eval_batch_size": batch_size,
        "clip": 1.0,
        "mixed_precision": spec.mixed_precision,
        "optimizer": OPTIMIZER,
    }


def planned(spec: FinetuneSpec) -> dict[str, Any]:
    """The hyper-parameters a run of ``spec`` will use (for ``--dry-run``). The evaluation
    interval depends on the run's length: computed when it is known without tokenising (a
    classification task with ``--train-size`` or local data), else given as the rule."""
    from tamt_cli.registry import create_task
    from tamt_cli.tasks.base import MAX_EVALUATIONS, eval_interval

    task = create_task(spec.task, spec.task_options)
    hyperparameters = settings(spec, task)
    default = hyperparameters.pop("eval_every_default")
    examples = None
    if task.head != "span" and spec.eval_every is None:
        examples = spec.train_size
        if examples is None and spec.data_dir is not None:
            with verbosity.quiet_libraries():
                examples = len(task.load(task.train_split, spec.data_dir))
    if examples is not None:
        steps = max(
            1, math.ceil(hyperparameters["epochs"] * examples / hyperparameters["batch_size"])
        )
        hyperparameters["steps"] = steps
        hyperparameters["eval_every"] = eval_interval(spec.eval_every, default, steps)
    elif spec.eval_every is None:
        hyperparameters["eval_every"] = (
            f"{default}, or ⌈steps / {MAX_EVALUATIONS}⌉ when a run has more than "
            f"{default * MAX_EVALUATIONS} steps"
        )
    return hyperparameters


def _run(spec: FinetuneSpec, console: Console) -> dict[str, Any]:
    from tamt_cli import subjects
    from tamt_cli.engine import Engine
    from tamt_cli.registry import create_task

    task = create_task(spec.task, spec.task_options)
    subject = subjects.resolve(spec.subnetwork, model=spec.model, own_weights=True)
    out = Path(spec.out) if spec.out else artifacts.default_run_dir("finetune", task.name)
    artifacts.check_output(out, flag="--out")
    hyperparameters = settings(spec, task)
    tokenizer = tokenizer_for(subject)
    models.check_positions(subject.ref, hyperparameters["max_length"])
    link = subnetwork_link(spec, subject)
    engine = Engine(spec.mixed_precision, console, spec.report_to)
    try:
        train, sets = _load_data(spec, task, tokenizer, hyperparameters, engine, console)
        staged = files.staged_dir(out) if engine.is_main else contextlib.nullcontext(None)
        with staged as stage:
            if stage is not None:
                files.write_text(stage / artifacts.SPEC_FILE, spec.to_yaml())
            job = FinetuneJob(
                spec=spec,
                task=task,
                subject=subject,
                tokenizer=tokenizer,
                train=train,
                sets=sets,
                hyperparameters=hyperparameters,
                engine=engine,
                stage=stage,
                link=link,
                run_name=out.name,
            )
            runs, notes = train_seeds(job, console)
            result = summarise(task, spec, out, subject, link, runs, notes)
            if stage is not None:
                files.write_json(stage / artifacts.SUMMARY, result)
                files.write_json(
                    stage / artifacts.MANIFEST,
                    _manifest(
                        job,
                        seeds=spec.seeds,
                        members=[artifacts.seed_folder(seed) for seed in spec.seeds],
                        subnetwork={**link, "mask_sparsity": result["mask_sparsity"]},
                        hyperparameters=hyperparameters,
                        data=data_record(spec, train, sets),
                        summary=artifacts.SUMMARY,
                    ),
                )
    finally:
        engine.end()
    return result


def _load_data(
    spec: FinetuneSpec,
    task: Any,
    tokenizer: Any,
    hyperparameters: dict[str, Any],
    engine: Any,
    console: Console,
) -> tuple[task_data.TrainData, list[task_data.EvalSet]]:
    """The training data and the eval sets, tokenised once for every seed (the main process
    first, the others read its cache)."""
    with console.status(f"loading {task.name} data"), engine.main_first():
        train_raw = task.load(task.train_split, spec.data_dir)
        train = task_data.train_data(
            task,
            train_raw,
            tokenizer,
            seeds=spec.seeds,
            train_size=spec.train_size,
            max_length=hyperparameters["max_length"],
            doc_stride=hyperparameters["doc_stride"],
            console=console,
        )
        sets = task_data.eval_sets(
            task,
            task.eval_splits,
            spec.data_dir,
            tokenizer,
            hyperparameters["max_length"],
            hyperparameters["doc_stride"],
            console,
        )
    return train, sets


def tokenizer_for(subject: Any) -> Any:
    """The subject's tokenizer; an exported subnetwork saved without one uses its model's."""
    try:
        return models.load_tokenizer(subject.ref)
    except UserError:
        record = (subject.manifest or {}).get("model")
        if subject.kind != "subnetwork" or not record:
            raise
        return models.load_tokenizer(models.resolve(record["id"]))


class Tracker(Hooks):
    """Scores the model at every evaluation; keeps the history, the best and the final."""

    def __init__(self, scorer: Callable[[], dict[str, dict[str, float]]], split: str, metric: str):
        self.scorer = scorer
        self.split = split
        self.metric = metric
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0

    def evaluate(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        scores = self.scorer()
        self.seconds += time.perf_counter() - t0
        self.history.append({"step": step, "metrics": scores})
        return task_model.flat(scores)

    @property
    def best(self) -> dict[str, Any]:
        """The evaluation with the highest main metric on the main split (the earliest of
        equals)."""
        return max(self.history, key=lambda e: (e["metrics"][self.split][self.metric], -e["step"]))

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]


@dataclass(frozen=True)
class FinetuneJob:
    """What every seed of a fine-tuning run shares: what :func:`train_seed` receives."""

    spec: FinetuneSpec
    task: Any
    subject: Subject  # the subnetwork (or dense model) fine-tuned
    tokenizer: Any
    train: task_data.TrainData  # the training examples and their features, for every seed
    sets: list[task_data.EvalSet]
    hyperparameters: dict[str, Any]  # :func:`settings`
    engine: Any
    stage: Path | None  # the run's folder while it is written (None off the main process)
    link: dict[str, Any]  # :func:`subnetwork_link`
    run_name: str = ""


def train_seeds(job: FinetuneJob, console: Console) -> tuple[list[dict[str, Any]], list[str]]:
    """Every seed's record, in order, and the notes they made (each printed once)."""
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    for seed in job.spec.seeds:
        record = train_seed(job, seed)
        for note in record.pop("notes"):
            if note not in notes:
                notes.append(note)
                console.print(f"[yellow]note:[/yellow] {note}")
        job.hyperparameters["eval_every"] = record["eval_every"]  # the same for every seed
        runs.append(record)
    return runs, notes


@dataclass
class SeedRun:
    """One seed of a fine-tuning run, as :func:`train_seed`'s steps pass it on."""

    seed: int
    examples: int  # training examples drawn for this seed
    built: task_model.TaskModel  # the model, its mask and the notes on building it
    batcher: task_data.Batcher  # the training features
    steps: int
    tracker: Tracker
    loop: Loop
    folder: Path | None  # the seed's folder in the run (None off the main process)
    seconds: float = 0.0  # the time fitting took

    @property
    def features(self) -> int:
        return len(self.batcher)


def train_seed(job: FinetuneJob, seed: int) -> dict[str, Any]:
    """Fine-tune one seed through the engine; save its folder under ``job.stage`` (a run of the
    ``--report-to`` trackers named ``<run_name>/seed-<N>``)."""
    seed_run = _start_seed(job, seed)
    _fit_seed(job, seed_run)
    record = _seed_record(job, seed_run)
    if seed_run.folder is not None:
        _save_seed(job, seed_run, record, seed_run.folder)
    record["mask_sparsity"] = seed_run.built.sparsity
    record["notes"] = seed_run.built.notes
    return record


def _start_seed(job: FinetuneJob, seed: int) -> SeedRun:
    """The seed's features, model, step count, evaluations and loop."""
    from tamt_cli.engine import Loop
    from tamt_cli.tasks import base as tasks_base

    task, hyperparameters = job.task, job.hyperparameters
    examples, features = job.train.for_seed(seed)
    if len(features) == 0:
        raise UserError(f"no training features for task '{task.name}'")
    built = task_model.build(task, job.subject, seed)
    multiple = 8 if hyperparameters["mixed_precision"] in {"fp16", "bf16"} else None  # tensor cores
    batcher = task_data.Batcher(features, job.tokenizer, pad_to_multiple_of=multiple)
    batch_size = hyperparameters["batch_size"]
    steps = max(1, math.ceil(hyperparameters["epochs"] * len(batcher) / batch_size))
    tracker = Tracker(
        lambda: task_model.score(
            task, built.model, job.sets, hyperparameters["eval_batch_size"], engine=job.engine
        ),
        task.eval_splits[0],
        task.main_metric,
    )
    loop = Loop(
        max_steps=steps,
        batch_size=batch_size,
        clip=hyperparameters["clip"],
        seed=seed,
        eval_every=tasks_base.eval_interval(
            job.spec.eval_every, hyperparameters["eval_every_default"], steps
        ),
        description=f"{task.name} seed {seed}",
    )
    folder = job.stage / artifacts.seed_folder(seed) if job.stage is not None else None
    return SeedRun(seed, examples, built, batcher, steps, tracker, loop, folder)


def _fit_seed(job: FinetuneJob, seed_run: SeedRun) -> None:
    """Train the seed's model (a tracker run of its own), then bake its mask into the weights."""
    import torch

    from tamt_cli import masking
    from tamt_cli.engine import linear_schedule

    built, batcher = seed_run.built, seed_run.batcher
    module = task_model.TaskLoss(built.model)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=job.hyperparameters["lr"], weight_decay=0.0
    )
    scheduler = linear_schedule(optimizer, seed_run.steps)
    folder = seed_run.folder
    if folder is not None:
        folder.mkdir()
    name = f"{job.run_name or job.task.name}/{artifacts.seed_folder(seed_run.seed)}"
    config = {**job.spec.model_dump(mode="json"), "seed": seed_run.seed}
    job.engine.track(folder or Path("."), name, config)
    t0 = time.perf_counter()
    job.engine.fit(
        module,
        optimizer,
        scheduler,
        seed_run.features,
        lambda indices, generator: batcher(indices.tolist()),
        seed_run.loop,
        run_dir=folder,
        hooks=seed_run.tracker,
    )
    seed_run.seconds = time.perf_counter() - t0
    job.engine.stop_tracking()  # each seed is a run of its own
    job.engine.free_memory()
    masking.detach_masks(built.weights)
    if built.masks is not None:
        masking.bake_masks(built.weights, built.masks)


def _seed_record(job: FinetuneJob, seed_run: SeedRun) -> dict[str, Any]:
    """What the seed did: its length, time, and best and final evaluations (with their
    epoch)."""
    n, batch_size = seed_run.features, job.hyperparameters["batch_size"]
    best, final = seed_run.tracker.best, seed_run.tracker.final
    return {
        "seed": seed_run.seed,
        "folder": artifacts.seed_folder(seed_run.seed),
        "steps": seed_run.steps,
        "eval_every": seed_run.loop.eval_every,
        "epochs": job.hyperparameters["epochs"],
        "train_examples": seed_run.examples,
        "train_features": n,
        "seconds": round(seed_run.seconds, 2),
        "eval_seconds": round(seed_run.tracker.seconds, 2),
        "best": {**best, "epoch": round(best["step"] * batch_size / n, 3)},
        "final": {**final, "epoch": round(final["step"] * batch_size / n, 3)},
    }


def _save_seed(job: FinetuneJob, seed_run: SeedRun, record: dict[str, Any], folder: Path) -> None:
    """The seed's folder: the model with the zeros in its weights, the tokenizer, the mask,
    the scores of every evaluation and the manifest."""
    task, built, model = job.task, seed_run.built, seed_run.built.model
    selected_by = f"{task.eval_splits[0]}/{task.main_metric}"
    model.save_pretrained(str(folder))
    job.tokenizer.save_pretrained(str(folder))
    if built.masks is not None:
        maskfile.save_masks(folder / artifacts.MASK_FILE, built.masks)
    files.write_json(
        folder / artifacts.SEED_METRICS,
        {
            "task": task.name,
            "seed": seed_run.seed,
            "selected_by": selected_by,
            "best": record["best"],
            "final": record["final"],
            "about": f"best: the evaluation with the highest {selected_by} (the paper reports "
            "it); final: after the last step, the weights saved here",
            "evaluations": seed_run.tracker.history,
        },
    )
    files.write_json(
        folder / artifacts.MANIFEST,
        _manifest(
            job,
            seed=seed_run.seed,
            subnetwork={**job.link, "mask_sparsity": built.sparsity},
            model={
                "class": type(model).__name__,
                "model_type": model.config.model_type,
                "num_labels": model.config.num_labels,
            },
            hyperparameters={
                **job.hyperparameters,
                "steps": seed_run.steps,
                "eval_every": seed_run.loop.eval_every,
            },
            data={
                **data_record(job.spec, job.train, job.sets),
                "train_examples": seed_run.examples,
            },
            best=record["best"],
            final=record["final"],
            seconds=record["seconds"],
            notes=built.notes,
        ),
    )


def _manifest(job: FinetuneJob, **fields: Any) -> dict[str, Any]:
    """A ``finetune`` manifest of ``job``'s task, with ``fields``."""
    return artifacts.new_manifest(
        "finetune",
        registry.installed_distributions(),
        task=job.task.name,
        task_options=job.spec.task_options,
        **fields,
    )


def subnetwork_link(spec: FinetuneSpec, subject: Any) -> dict[str, Any]:
    """What the fine-tuned model came from, for its manifest."""
    manifest = subject.manifest or {}
    path = Path(spec.subnetwork)
    return {
        "given": artifacts.recorded_path(spec.subnetwork),
        "path": artifacts.recorded_path(path) if path.exists() else None,
        "kind": subject.kind,
        "method": manifest.get("method"),
        "label": manifest.get("label"),
        "sparsity": manifest.get("sparsity"),
        "scope": manifest.get("scope"),
        "mask_file": artifacts.recorded_path(subject.mask_file) if subject.mask_file else None,
        "source_run": manifest.get("source_run"),
        "model": manifest.get("model")
        or {
            "id": artifacts.recorded_path(subject.ref.given),
            "location": artifacts.model_location(subject.ref),
        },
        "loaded_from": artifacts.model_location(subject.ref),
    }


def data_record(
    spec: FinetuneSpec, train: task_data.TrainData, sets: list[task_data.EvalSet]
) -> dict[str, Any]:
    """Where the data came from, how much of it, and how it was tokenised (``tokenised``: the
    feature cache's ``hit``, ``miss`` or ``off`` and its key, per split)."""
    return {
        "data_dir": artifacts.recorded_path(spec.data_dir) if spec.data_dir else None,
        "source": "local files" if spec.data_dir else "Hugging Face hub",
        "train_available": len(train.raw),
        "train_size": spec.train_size,
        "eval": {eval_set.split: eval_set.examples for eval_set in sets},
        "tokenised": {
            train.task.train_split: train.record(),
            **{eval_set.split: eval_set.tokenised for eval_set in sets},
        },
    }


def aggregate(runs: list[dict[str, Any]], which: str) -> dict[str, dict[str, Any]]:
    """Per split and metric: the values over seeds, their mean and sample standard deviation
    (None for one seed) (:func:`tamt_cli.tasks.metrics.over_seeds`)."""
    out: dict[str, dict[str, Any]] = {}
    for split, metrics in runs[0][which]["metrics"].items():
        for name in metrics:
            values = [r[which]["metrics"][split][name] for r in runs]
            out.setdefault(split, {})[name] = over_seeds(values)
    return out


def summarise(
    task: Any,
    spec: FinetuneSpec,
    out: Path,
    subject: Any,
    link: dict[str, Any],
    runs: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    for r in runs:
        r["folder"] = str(out / artifacts.seed_folder(r["seed"]))
    return {
        "out": str(out),
        "task": task.name,
        "subnetwork": spec.subnetwork,
        "kind": subject.kind,
        "method": link["method"],
        "label": link.get("label"),
        "mask_sparsity": runs[0].get("mask_sparsity"),
        "selected_by": f"{task.eval_splits[0]}/{task.main_metric}",
        "seeds": spec.seeds,
        "best": aggregate(runs, "best"),
        "final": aggregate(runs, "final"),
        "runs": runs,
        "notes": notes,
    }
