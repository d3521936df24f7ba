"""`tamt finetune`: transfer a subnetwork to a downstream task with its mask held fixed.

A fine-tuning run directory (it exists from the start, locked while a process works in it; its
manifest says ``"status": "running"`` until every seed is done)::

    runs/finetune-<task>-<time>/
    ├── spec.yaml        the resolved spec
    ├── manifest.json    kind "finetune": task, seeds, members, subnetwork, hyper-parameters
    ├── summary.json     best and final dev scores per seed, mean ± std over seeds
    └── seed-<N>/        a plain Hugging Face folder (the zeros in the weights, tokenizer),
        ├── metrics.json     best and final scores per split, the step of the best
        ├── metrics.jsonl    the engine's log (loss, lr; scores at every evaluation)
        ├── README.md        the model card (the Hub's format: what made it, scores, commands)
        ├── predictions.jsonl    the final weights' prediction for every main dev example
        ├── masks.safetensors    the mask held fixed (absent for a dense model)
        ├── manifest.json    kind "finetune", this seed, linked to the subnetwork
        └── checkpoints/     while the seed trains: the last --keep-checkpoints, for --resume

A seed is done when the run's manifest lists it (``members``); ``--resume`` skips those and
continues the others from their last checkpoint, ending as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from tamt_cli import artifacts, files, maskfile, models, registry, task_data, task_model, verbosity
from tamt_cli.engine import Hooks
from tamt_cli.errors import Interrupted, UserError, environment_fault
from tamt_cli.specs import FinetuneSpec
from tamt_cli.tasks.metrics import over_seeds

if TYPE_CHECKING:
    from tamt_cli.engine import Loop
    from tamt_cli.hub import Push
    from tamt_cli.subjects import Subject

OPTIMIZER = {"name": "AdamW", "weight_decay": 0.0, "schedule": "linear decay"}


# -- fine-tuning ----------------------------------------------------------------------------


def run(
    spec: FinetuneSpec, console: Console, *, resume: bool = False, push: Push | None = None
) -> dict[str, Any]:
    """Fine-tune ``spec.subnetwork`` on ``spec.task`` once per seed; returns the summary.
    ``resume``: ``spec.out`` is an unfinished run of ``spec``; its finished seeds are kept and
    the others continue from their last checkpoint. ``push``: upload one seed's folder to the
    Hub at the end, checked before any work. The run records the mixed precision it uses
    (``auto`` resolved for this machine)."""
    from tamt_cli import precision

    _check_push(spec, push)
    spec = spec.model_copy(update={"mixed_precision": precision.resolve(spec.mixed_precision)})
    with verbosity.quiet_libraries():
        return _run(spec, console, resume, push)


def _check_push(spec: FinetuneSpec, push: Push | None) -> None:
    from tamt_cli import hub

    if push is not None and push.seed is not None and push.seed not in spec.seeds:
        raise UserError(
            f"--push-seed {push.seed} is not one of the seeds run "
            f"({', '.join(str(s) for s in spec.seeds)})"
        )
    hub.check_push(push)


def resumed_spec(run_dir: Path, spec_file: Path | None, flags: dict[str, Any]) -> FinetuneSpec:
    """The spec saved in ``run_dir``; a spec file or flags given as well must agree with it.
    The run must be unfinished, made by this major version of tamt and not in use."""
    from tamt_cli import specs

    saved_path = artifacts.resumable(run_dir, "finetune")
    return specs.resumed(FinetuneSpec, run_dir, saved_path, spec_file, flags, merged="task_options")


def optimizer_settings(warmup_ratio: float) -> dict[str, Any]:
    """The optimiser and schedule, as manifests record them."""
    if not warmup_ratio:
        return {**OPTIMIZER, "warmup_ratio": 0.0}
    schedule = "linear warm-up, then linear decay"
    return {**OPTIMIZER, "schedule": schedule, "warmup_ratio": warmup_ratio}


def warmup_steps(ratio: float, steps: int) -> int:
    """Steps of linear warm-up: ⌈ratio × steps⌉ (rounded first, so 0.3 × 10 is 3)."""
    return math.ceil(round(ratio * steps, 9))


def settings(spec: FinetuneSpec, task: Any) -> dict[str, Any]:
    """The hyper-parameters of the run: the flags given, else the task's (the paper's)."""
    defaults = task.defaults
    span = task.head == "span"
    batch_size = spec.batch_size or defaults.batch_size
    return {
        "lr": spec.lr or defaults.lr,
        "batch_size": batch_size,
        "grad_accum": spec.grad_accum,
        "epochs": spec.epochs or defaults.epochs,
        "max_length": spec.max_length or defaults.max_length,
        "doc_stride": (spec.doc_stride or defaults.doc_stride) if span else None,
        "train_size": spec.train_size,
        "eval_every": spec.eval_every,  # None: the task's cadence, at most 50 evaluations
        "eval_every_default": getattr(defaults, "eval_every", 50),
        "eval_batch_size": max(1, batch_size // spec.grad_accum),  # a micro-batch
        "clip": 1.0,
        "mixed_precision": spec.mixed_precision,
        "optimizer": optimizer_settings(spec.warmup_ratio),
    }


def planned(spec: FinetuneSpec) -> dict[str, Any]:
    """The hyper-parameters a run of ``spec`` will use (for ``--dry-run``). The evaluation
    interval depends on the run's length: computed when it is known without tokenising (a
    classification task with ``--train-size`` or local data), else given as the rule."""
    from tamt_cli.registry import create_task
    from tamt_cli.tasks.base import MAX_EVALUATIONS, eval_interval

    task = create_task(spec.task, spec.task_options)
    hyperparameters = settings(spec, task)
    if spec.mixed_precision == "auto":
        from tamt_cli import precision

        hyperparameters["mixed_precision"] = precision.described()
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
        hyperparameters["warmup_steps"] = warmup_steps(spec.warmup_ratio, steps)
    else:
        if spec.eval_every is None:
            hyperparameters["eval_every"] = (
                f"{default}, or ⌈steps / {MAX_EVALUATIONS}⌉ when a run has more than "
                f"{default * MAX_EVALUATIONS} steps"
            )
        ratio = spec.warmup_ratio
        hyperparameters["warmup_steps"] = f"⌈{ratio:g} × steps⌉" if ratio else 0
    return hyperparameters


def _run(
    spec: FinetuneSpec, console: Console, resume: bool, push: Push | None = None
) -> dict[str, Any]:
    from tamt_cli import subjects
    from tamt_cli.engine import Engine
    from tamt_cli.registry import create_task

    task = create_task(spec.task, spec.task_options)
    subject = subjects.resolve(spec.subnetwork, model=spec.model, own_weights=True)
    out = Path(spec.out) if spec.out else artifacts.default_run_dir("finetune", task.name)
    if not resume:
        artifacts.check_output(out, flag="--out")
    hyperparameters = settings(spec, task)
    tokenizer = tokenizer_for(subject)
    models.check_positions(subject.ref, hyperparameters["max_length"])
    link = subnetwork_link(spec, subject)
    engine = Engine(spec.mixed_precision, console, spec.report_to)
    folder = RunFolder(Path(engine.broadcast(str(out))), engine, resume)
    try:
        engine.micro_batch(hyperparameters["batch_size"], spec.grad_accum)
        train, sets = _load_data(spec, task, tokenizer, hyperparameters, engine, console)
        job = FinetuneJob(
            spec=spec,
            task=task,
            subject=subject,
            tokenizer=tokenizer,
            train=train,
            sets=sets,
            hyperparameters=hyperparameters,
            engine=engine,
            stage=folder.root if engine.is_main else None,
            link=link,
            run_name=folder.root.name,
            run=folder,
            push=push,
        )
        folder.open(job, data_record(spec, train, sets))
        runs, notes = train_seeds(job, console)
        result = summarise(task, spec, folder.root, subject, link, runs, notes)
        folder.finish(job, result)
    except BaseException as exc:
        folder.stopped(exc)
        raise
    finally:
        folder.close()
        engine.end()
    if push is not None and engine.is_main:  # the run is complete: a failed upload keeps it
        result["hub"] = _push(push, folder.root, spec, console)
    return result


class RunFolder:
    """A fine-tuning run's folder: made (or, resumed, locked) once the data are loaded, its
    manifest rewritten as each seed is done, completed at the end; an interrupted run says how
    to resume it, or leaves nothing when nothing in it can be resumed. Written on the main
    process; every process reads it."""

    def __init__(self, root: Path, engine: Any, resume: bool) -> None:
        self.root = root
        self.engine = engine
        self.resume = resume
        self.enabled = bool(engine.is_main)
        self.lock: Any = None
        self.created = False
        self.manifest: dict[str, Any] = {}
        self.seeds: list[int] = []
        #: the records of the seeds done before (a resumed run), by seed
        self.done: dict[int, dict[str, Any]] = {}
        self.recorded: dict[str, Any] = {}  # what the run began with (a resumed run)
        self.weights_checked = False

    def open(self, job: FinetuneJob, data: dict[str, Any]) -> None:
        """Check that a resumed run reads the data it began with; make or lock the folder;
        write the spec and the manifest of a running run."""
        self.seeds = list(job.spec.seeds)
        previous = artifacts.read_manifest(self.root) if self.resume else None
        if previous is not None:
            _check_same_data(self.root, previous.get("data") or {}, data)
            self.done = {int(r["seed"]): r for r in previous.get("completed") or []}
            self.recorded = dict(previous.get("inputs") or {})
        done = [self.done[seed] for seed in self.seeds if seed in self.done]
        self.manifest = _manifest(
            job,
            status="running",
            seeds=job.spec.seeds,
            members=[artifacts.seed_folder(r["seed"]) for r in done],
            subnetwork=job.link,
            hyperparameters=job.hyperparameters,
            data=data,
            completed=done,
            inputs=dict(self.recorded),
        )
        if previous is not None:
            self.manifest["created"] = previous.get("created", self.manifest["created"])
        if self.enabled:
            if self.resume:
                self.lock = files.lock_run_dir(self.root)
            else:
                self.lock = files.create_run_dir(self.root)
                self.created = True
                files.write_text(self.root / artifacts.SPEC_FILE, job.spec.to_yaml())
            files.write_json(self.root / artifacts.MANIFEST, self.manifest)
        self.engine.barrier()

    def check_weights(self, model: Any) -> None:
        """Record a digest of the encoder a seed starts from (the subnetwork's weights with its
        mask); a resumed run must start from the same."""
        if self.weights_checked:
            return
        sha = models.weights_hash(model.base_model)
        before = self.recorded.get("encoder_sha256")
        if before is not None and before != sha:
            raise UserError(
                f"--resume: the subnetwork's weights or mask have changed since run "
                f"'{self.root}' started; resume it with the same subnetwork, or start a new run"
            )
        self.weights_checked = True
        if before is None:
            self.manifest["inputs"]["encoder_sha256"] = sha
            if self.enabled:
                files.write_json(self.root / artifacts.MANIFEST, self.manifest)

    def seed_done(self, record: dict[str, Any]) -> None:
        """Record a finished seed in the manifest (a resumed run keeps it), then drop its
        checkpoints."""
        self.manifest["completed"].append(record)
        self.manifest["members"].append(artifacts.seed_folder(record["seed"]))
        if self.enabled:
            files.write_json(self.root / artifacts.MANIFEST, self.manifest)
            seed_dir = self.root / artifacts.seed_folder(record["seed"])
            shutil.rmtree(seed_dir / artifacts.CHECKPOINTS, ignore_errors=True)

    def finish(self, job: FinetuneJob, result: dict[str, Any]) -> None:
        """The summary, and the manifest of a complete run."""
        if not self.enabled:
            return
        files.write_json(self.root / artifacts.SUMMARY, result)
        manifest = _manifest(
            job,
            status="complete",
            seeds=job.spec.seeds,
            members=[artifacts.seed_folder(seed) for seed in job.spec.seeds],
            subnetwork={**job.link, "mask_sparsity": result["mask_sparsity"]},
            hyperparameters=job.hyperparameters,
            data=self.manifest["data"],
            inputs=self.manifest["inputs"],
            summary=artifacts.SUMMARY,
        )
        manifest["created"] = self.manifest["created"]
        files.write_json(self.root / artifacts.MANIFEST, manifest)

    def resumable(self) -> bool:
        """Whether the folder holds something ``--resume`` goes on from: a finished seed or a
        checkpoint."""
        if not self.root.is_dir():
            return False
        return bool(self.manifest.get("completed")) or any(
            artifacts.checkpoints(self.root / artifacts.seed_folder(seed)) for seed in self.seeds
        )

    def stopped(self, exc: BaseException) -> None:
        """The run ended early: a new run with nothing to resume from leaves nothing behind;
        one with something says how to resume it. Raises the exception to report, if it
        differs."""
        if not self.enabled:
            return
        resumable = self.resume or (self.created and self.resumable())
        if self.created and not resumable:
            shutil.rmtree(self.root, ignore_errors=True)
        hint = f"resume with: tamt finetune --resume {self.root}" if resumable else None
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            if hint:
                raise Interrupted(f"interrupted; {hint}") from None
            if self.created:
                raise Interrupted("interrupted before the first checkpoint; nothing was kept")
            return
        if isinstance(exc, Exception) and not isinstance(exc, UserError):
            fault = environment_fault(exc, self.root)
            if fault is not None:
                raise UserError(f"{fault}; {hint}" if hint else fault) from None

    def close(self) -> None:
        files.release(self.lock, remove=True)
        self.lock = None


def _check_same_data(root: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    """A resumed run must train and score on the features it began with."""
    old, new = before.get("tokenised") or {}, now.get("tokenised") or {}
    for split, record in new.items():
        was = old.get(split) or {}
        for key in ("key", "features"):
            if was.get(key) is not None and was.get(key) != record.get(key):
                raise UserError(
                    f"--resume: the {split} data have changed since run '{root}' started (its "
                    f"features differ); resume it with the same data, or start a new run"
                )


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
    """Scores the model at every evaluation; keeps the history, the best and the final, and
    the predictions of the last evaluation (``kept``, by split); writes the checkpoints."""

    def __init__(
        self,
        scorer: Callable[[], dict[str, dict[str, float]]],
        split: str,
        metric: str,
        kept: dict[str, Any] | None = None,
    ):
        self.scorer = scorer
        self.split = split
        self.metric = metric
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.kept: dict[str, Any] = {} if kept is None else kept
        self.checkpoint: Callable[[int], None] | None = None

    def evaluate(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        scores = self.scorer()
        self.seconds += time.perf_counter() - t0
        self.history.append({"step": step, "metrics": scores})
        return task_model.flat(scores)

    def save(self, step: int) -> None:
        if self.checkpoint is not None:
            self.checkpoint(step)

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
    stage: Path | None  # the run's folder (None off the main process)
    link: dict[str, Any]  # :func:`subnetwork_link`
    run_name: str = ""
    push: Push | None = None  # --push-to-hub (the cards name its repository)
    run: RunFolder | None = None  # the run's folder, on every process


def train_seeds(job: FinetuneJob, console: Console) -> tuple[list[dict[str, Any]], list[str]]:
    """Every seed's record, in order, and the notes they made (each printed once); a seed a
    resumed run finished before is not trained again."""
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    for seed in job.spec.seeds:
        record = job.run.done.get(seed) if job.run is not None else None
        if record is not None:
            console.print(f"seed {seed}: fine-tuned before; kept")
        else:
            record = train_seed(job, seed)
            if job.run is not None:
                job.run.seed_done(dict(record))
        record = dict(record)
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
    seconds: float = 0.0  # the time fitting took (over every attempt of a resumed run)
    root: Path | None = None  # the seed's folder, on every process
    last: Path | None = None  # the checkpoint it resumes from
    warmup: int = 0  # steps of linear warm-up
    running: tuple[float, int] = (0.0, 0)  # the loss since the last log, where it resumes

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
        _save_predictions(job, seed_run, seed_run.folder)
        _save_seed(job, seed_run, record, seed_run.folder)
    record["mask_sparsity"] = seed_run.built.sparsity
    record["notes"] = seed_run.built.notes
    return record


def _start_seed(job: FinetuneJob, seed: int) -> SeedRun:
    """The seed's features, model, step count, evaluations, loop and folder."""
    from tamt_cli.engine import Loop
    from tamt_cli.tasks import base as tasks_base

    task, hyperparameters = job.task, job.hyperparameters
    examples, features = job.train.for_seed(seed)
    if len(features) == 0:
        raise UserError(f"no training features for task '{task.name}'")
    built = task_model.build(task, job.subject, seed)
    if job.run is not None:
        job.run.check_weights(built.model)
    multiple = 8 if hyperparameters["mixed_precision"] in {"fp16", "bf16"} else None  # tensor cores
    batcher = task_data.Batcher(features, job.tokenizer, pad_to_multiple_of=multiple)
    batch_size = hyperparameters["batch_size"]
    steps = max(1, math.ceil(hyperparameters["epochs"] * len(batcher) / batch_size))
    kept: dict[str, Any] = {}
    tracker = Tracker(
        lambda: task_model.score(
            task,
            built.model,
            job.sets,
            hyperparameters["eval_batch_size"],
            engine=job.engine,
            keep=kept,
        ),
        task.eval_splits[0],
        task.main_metric,
        kept,
    )
    loop = Loop(
        max_steps=steps,
        batch_size=batch_size,
        grad_accum=hyperparameters["grad_accum"],
        clip=hyperparameters["clip"],
        seed=seed,
        eval_every=tasks_base.eval_interval(
            job.spec.eval_every, hyperparameters["eval_every_default"], steps
        ),
        save_every=job.spec.save_every,
        description=f"{task.name} seed {seed}",
    )
    seed_run = SeedRun(seed, examples, built, batcher, steps, tracker, loop, None)
    seed_run.warmup = warmup_steps(job.spec.warmup_ratio, steps)
    _seed_folder(job, seed_run)
    return seed_run


def _seed_folder(job: FinetuneJob, seed_run: SeedRun) -> None:
    """The seed's folder in the run, and the checkpoint (if any) of an earlier attempt that it
    goes on from; an attempt with none starts the folder afresh."""
    if job.run is None:
        if job.stage is not None:
            seed_run.folder = seed_run.root = job.stage / artifacts.seed_folder(seed_run.seed)
            seed_run.folder.mkdir()
        return
    root = job.run.root / artifacts.seed_folder(seed_run.seed)
    last = artifacts.checkpoints(root)[-1:] if job.run.resume else []
    job.engine.barrier()  # every process has looked before the folder changes
    seed_run.root, seed_run.last = root, (last[0] if last else None)
    if job.engine.is_main:
        if not last and root.exists():
            shutil.rmtree(root)
        root.mkdir(exist_ok=True)
        seed_run.folder = root
    job.engine.barrier()


def _fit_seed(job: FinetuneJob, seed_run: SeedRun) -> None:
    """Train the seed's model (a tracker run of its own), from its last checkpoint when it has
    one, then bake its mask into the weights."""
    import torch

    from tamt_cli import masking
    from tamt_cli.engine import linear_schedule

    built, batcher = seed_run.built, seed_run.batcher
    module = task_model.TaskLoss(built.model)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=job.hyperparameters["lr"], weight_decay=0.0
    )
    scheduler = linear_schedule(optimizer, seed_run.steps, seed_run.warmup)
    start = _resume_seed(job, seed_run, module, optimizer, scheduler)
    before, t0 = seed_run.seconds, time.perf_counter()
    if seed_run.root is not None:
        seed_run.tracker.checkpoint = lambda step: job.engine.save_checkpoint(
            seed_run.root,
            step,
            trainable_state(module),
            optimizer,
            scheduler,
            keep=job.spec.keep_checkpoints,
            extra={
                "running_loss": list(job.engine.running_loss),
                "evaluations": seed_run.tracker.history,
                "eval_seconds": seed_run.tracker.seconds,
                "seconds": before + time.perf_counter() - t0,
            },
        )
    folder = seed_run.folder
    name = f"{job.run_name or job.task.name}/{artifacts.seed_folder(seed_run.seed)}"
    config = {**job.spec.model_dump(mode="json"), "seed": seed_run.seed}
    job.engine.track(folder or Path("."), name, config)
    job.engine.fit(
        module,
        optimizer,
        scheduler,
        seed_run.features,
        lambda indices, generator: batcher(indices.tolist()),
        seed_run.loop,
        run_dir=folder,
        hooks=seed_run.tracker,
        start_step=start,
        running_loss=seed_run.running,
    )
    seed_run.seconds = before + time.perf_counter() - t0
    job.engine.stop_tracking()  # each seed is a run of its own
    job.engine.free_memory()
    masking.detach_masks(built.weights)
    if built.masks is not None:
        masking.bake_masks(built.weights, built.masks)


def _resume_seed(
    job: FinetuneJob, seed_run: SeedRun, module: Any, optimizer: Any, scheduler: Any
) -> int:
    """The step the seed starts from: its checkpoint's (weights, optimiser and schedule
    restored, the evaluations so far and the time taken read back), else 0."""
    last = seed_run.last
    if last is None:
        return 0
    from tamt_cli import records

    start, tensors = job.engine.load_checkpoint(last, optimizer, scheduler)
    restore_state(module, tensors, last)
    state = records.load(last / artifacts.CHECKPOINT_STATE, records.CheckpointState)
    extra = state.extra or records.CheckpointExtra()
    seed_run.tracker.history = [records.as_dict(e) for e in extra.evaluations or []]
    seed_run.tracker.seconds = extra.eval_seconds or 0.0
    seed_run.seconds = extra.seconds or 0.0
    seed_run.running = extra.running_loss or (0.0, 0)
    if job.engine.is_main:
        job.engine.console.print(f"seed {seed_run.seed}: resuming from step {start} ({last})")
    return start


def trainable_state(module: Any) -> dict[str, Any]:
    """What a fine-tuning checkpoint holds of the model: every trained parameter."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def restore_state(module: Any, tensors: dict[str, Any], folder: Path) -> None:
    """Copy a checkpoint's tensors into ``module``; one that does not fit is an error."""
    from tamt_cli.engine import restore_tensors

    restore_tensors(trainable_state(module), tensors, f"checkpoint '{folder}'")


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


def _save_predictions(job: FinetuneJob, seed_run: SeedRun, folder: Path) -> None:
    """``predictions.jsonl``: what the final weights (those saved) predict for every example of
    the main eval split, from the last evaluation (after the last step)."""
    split = job.task.eval_splits[0]
    data = next(eval_set for eval_set in job.sets if eval_set.split == split)
    predictions = seed_run.tracker.kept.get(split)
    if predictions is None:
        return
    rows = task_model.prediction_rows(job.task, data, predictions)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    files.write_text(folder / artifacts.PREDICTIONS, text)


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
                "warmup_steps": seed_run.warmup,
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
    from tamt_cli import modelcard

    files.write_text(folder / artifacts.CARD, modelcard.finetune_card(job, seed_run.seed, record))


def _push(push: Push, out: Path, spec: FinetuneSpec, console: Console) -> dict[str, Any]:
    """Upload the folder of ``push.seed`` (the first seed when None) of the finished run."""
    from tamt_cli import hub

    seed = push.seed if push.seed is not None else spec.seeds[0]
    folder = out / artifacts.seed_folder(seed)
    with console.status(f"pushing {folder} to {push.repo_id}"):
        return hub.push_folder(push, folder, f"seed {seed} of a fine-tuned subnetwork")


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
        "structure": manifest.get("structure"),
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
