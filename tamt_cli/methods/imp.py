"""``imp``: iterative magnitude pruning (IMP) with rewinding, the baseline of the paper.

Rounds ``r = 1 … R`` with ``R = s / f`` (target sparsity ``s``, ``--prune-fraction f``, default
0.1). Round ``r`` prunes, by the magnitude of the *current* weights among those still unpruned,
enough weights to reach sparsity ``r·f`` of the original weights: exactly ``⌊n·r·f⌋`` of every
matrix (``--scope local``) or ``⌊N·r·f⌋`` of all of them (``global``); a pruned weight stays
pruned. Round 1 prunes the pre-trained weights at step 0. After every pruning the backbone (every
trainable parameter: encoder and, for MLM, the head) is rewound to the pre-trained weights, or
with ``--rewind-step k`` to the weights after ``k`` steps of the first training interval, and
then trains for ``--steps-per-round`` steps on the objective (``mlm`` default, ``kd``,
``mlm-kd``) with a fresh AdamW, through the one training engine. The last round only prunes: a
run is ``(R − 1) · steps-per-round`` steps. Every round's mask is a normal mask artifact
(``masks/step-NNNNNN.safetensors``, listed in the manifest with its sparsity and round); the
final mask (``masks.safetensors``) is the target one, meant for the pre-trained weights like
every other mask.

Two settings exist because the paper and the reference code differ. ``--schedule run`` (the
default, as the reference code ran): every round restarts at ``--lr`` and decays linearly over
the length of the whole run, so the rate stays near ``--lr`` in every round; ``--schedule round``
decays to zero within every round. ``--no-rewind`` prunes the trained weights and keeps training
them without rewinding: the reference code's rewind snapshot aliased the live parameters, so its
"rewind" restored the trained weights, and the paper's IMP numbers may come from this setting.

Masks are ``KeepMask`` parametrizations: pruned weights are exactly zero in the forward pass,
and a gradient hook zeroes their gradient too, so that they get no update even through the MLM
decoder, which stays tied to the unmasked word embeddings (as in mask training). The pooler is
read by no pre-training loss: it is not trained, and its masks follow the pre-trained magnitudes.
For KD the teacher is a frozen copy of the pre-trained encoder (the weights themselves train).

Training steps are numbered across rounds (interval ``r`` is global steps ``(r−1)·T … r·T``), so
data order and random draws differ between rounds and ``metrics.jsonl`` reads as one run, each
row carrying its round. Checkpoints (every ``--save-every`` steps, default a tenth of the run,
and at every round boundary) hold the trainable parameters, the current mask, the round, the
rewind weights where they cannot be reloaded, and the optimiser and schedule; ``--resume``
continues by round and within a round, ending with the same mask as an uninterrupted run.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tamt_cli.errors import UserError
from tamt_cli.methods.base import SearchJob, sparsity_of
from tamt_cli.specs import MAX_COUNT, Objective

if TYPE_CHECKING:
    from tamt_cli.specs import SearchSpec

DEFAULT_STEPS_PER_ROUND = 100
DEFAULT_PRUNE_FRACTION = 0.1  # the paper: 10% of the original weights per round
DEFAULT_LR = 5e-5  # BERT-Tickets' MLM training of the weights (AdamW, linear decay)
ROUND_KEY = "imp.round"
MASK_PREFIX = "imp.mask."
REWIND_PREFIX = "imp.rewind."


class IMPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    objective: Objective = Field(
        "mlm", description="training objective between prunings: mlm (the paper), kd, mlm-kd"
    )
    steps_per_round: int = Field(
        DEFAULT_STEPS_PER_ROUND,
        gt=0,
        le=MAX_COUNT,
        description="training steps between two prunings",
    )
    prune_fraction: float = Field(
        DEFAULT_PRUNE_FRACTION,
        gt=0,
        lt=1,
        description="fraction of the original weights pruned per round",
    )
    rewind_step: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="rewind to the weights after this many steps (0: pre-trained)",
    )
    rewind: bool = Field(
        True,
        description="rewind the unpruned weights after every pruning (false: keep training "
        "the pruned trained weights, as the reference code in effect did)",
    )
    schedule: Literal["run", "round"] = Field(
        "run",
        description="learning-rate decay: run (every round restarts at --lr and decays over "
        "the whole run, so lr stays near --lr, as the reference code) or round (to zero "
        "within every round)",
    )


def _decimal(value: float) -> float:
    """``value`` as the shortest decimal it stands for (3 × 0.1 → 0.3, not 0.30000000000000004)."""
    return float(round(value, 12))


def reachable_levels(fraction: float) -> list[float]:
    """The sparsities IMP passes through with ``fraction`` per round: f, 2f, … below 1."""
    step = Fraction(str(fraction))
    count = int((1 - Fraction(1, 10**12)) / step)
    return [_decimal(float(step * k)) for k in range(1, count + 1)]


def round_levels(target: float, fraction: float) -> list[float]:
    """The sparsity after each round, ending exactly at ``target``; a one-line error when
    ``target`` is not a multiple of ``fraction``."""
    rounds = target / fraction
    if rounds < 0.5 or abs(rounds - round(rounds)) > 1e-9 * max(1.0, rounds):
        reachable = [f"{x:g}" for x in reachable_levels(fraction)]
        shown = reachable if len(reachable) <= 5 else [*reachable[:2], "...", reachable[-1]]
        raise UserError(
            f"--sparsity {target:g} is not reachable with --prune-fraction {fraction:g} (each "
            f"round prunes {fraction:g} of the original weights); reachable: {', '.join(shown)}"
        )
    levels = [_decimal(k * fraction) for k in range(1, round(rounds) + 1)]
    levels[-1] = target
    return levels


class IterativeMagnitudePruning:
    """Prune a fraction of the original weights by magnitude per round, train, rewind, repeat."""

    summary: ClassVar[str] = "iterative magnitude pruning (IMP) with rewinding, trained on MLM/KD"
    trains: ClassVar[bool] = True
    patterns: ClassVar[bool] = True
    Options = IMPOptions

    def __init__(self, options: IMPOptions) -> None:
        self.options = options

    def check(self, spec: SearchSpec) -> None:
        opts = self.options
        if spec.pattern is not None and "prune_fraction" in opts.model_fields_set:
            raise UserError(
                "--prune-fraction does not go with --pattern N:M: each round prunes one weight "
                "of every group of M (a fraction 1/M)"
            )
        levels = round_levels(sparsity_of(spec), fraction_of(spec, opts))
        if opts.rewind_step > 0 and not opts.rewind:
            raise UserError("--rewind-step needs rewinding; leave out --no-rewind or the step")
        if opts.rewind_step >= opts.steps_per_round:
            raise UserError(
                f"--rewind-step {opts.rewind_step} must be below --steps-per-round "
                f"{opts.steps_per_round} (it names a step of the first training interval)"
            )
        total = (len(levels) - 1) * opts.steps_per_round
        if spec.max_steps is not None and spec.max_steps != total:
            raise UserError(
                f"--max-steps does not apply to imp: a run is (rounds − 1) × --steps-per-round "
                f"= {len(levels) - 1} × {opts.steps_per_round} = {total} steps; leave it out"
            )

    def resolved(self, spec: SearchSpec) -> dict[str, Any]:
        """The values a run of ``spec`` uses where the spec leaves them to the method."""
        return settings(spec, self.options)

    def preflight(self, job: SearchJob) -> None:
        """Checks that need the model but no computation, before the run directory is made."""
        from tamt_cli import pretraining

        pretraining.check_inputs(job.ref, job.model, job.spec, job.engine)

    def search(self, job: SearchJob) -> dict[str, Any]:
        return IMPSession(job, self.options).run()


def fraction_of(spec: SearchSpec, opts: IMPOptions) -> float:
    """The fraction of the original weights a round prunes: ``--prune-fraction``, or with
    ``--pattern N:M`` one weight of every group of M."""
    if spec.pattern is None:
        return opts.prune_fraction
    return 1 / int(spec.pattern.split(":")[1])


def round_pattern(pattern: tuple[int, int] | None, r: int) -> tuple[int, int] | None:
    """With ``--pattern N:M``, round ``r`` keeps M − r of every group of M (the last: N)."""
    return None if pattern is None else (pattern[1] - r, pattern[1])


def settings(spec: SearchSpec, opts: IMPOptions) -> dict[str, Any]:
    """Rounds, steps, learning rate and intervals of a run: the spec's, else the defaults."""
    from tamt_cli import specs

    levels = round_levels(sparsity_of(spec), fraction_of(spec, opts))
    total = (len(levels) - 1) * opts.steps_per_round
    out: dict[str, Any] = {
        "rounds": len(levels),
        "round_sparsities": levels,
        "steps_per_round": opts.steps_per_round,
        "max_steps": total,
        "lr": spec.lr or DEFAULT_LR,
        "schedule": opts.schedule,
        "rewind": opts.rewind,
        "eval_every": spec.eval_every or opts.steps_per_round,
        "save_every": spec.save_every or max(1, total // 10),
    }
    if "mlm" in opts.objective:
        out.update(specs.head_settings(spec))
    return out


# -- the pieces of a round (module level, so tests can call and watch them) -----------------------


def prune_round(
    weights: list[Any],
    masks: dict[str, Any],
    level: float,
    scope: str,
    pattern: tuple[int, int] | None = None,
) -> dict:
    """Keep-masks at sparsity ``level`` pruning the smallest-magnitude *current* weights among
    the unpruned ones (pruned weights score −∞, so they stay pruned); computed on the CPU.
    With an N:M ``pattern``, the N largest of every group of M instead."""
    import torch

    from tamt_cli import masking

    scores = {}
    for p in weights:
        magnitude = p.weight.detach().abs().float().cpu()
        keep = masks[p.name].to("cpu", dtype=torch.bool)
        scores[p.name] = torch.where(keep, magnitude, torch.full_like(magnitude, -torch.inf))
    return masking.masks_from_scores(scores, level, scope, pattern)  # type: ignore[arg-type]


def apply_masks(weights: list[Any], masks: dict[str, Any]) -> None:
    """Set the attached ``KeepMask`` parametrizations to ``masks`` (in place)."""
    from tamt_cli import masking

    mods = masking.parametrizations(weights)
    for p in weights:
        mod = mods[p.name]
        mod.mask.copy_(masks[p.name].to(mod.mask.device, dtype=mod.mask.dtype))


def rewind(params: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """Copy the rewind weights back into the trainable parameters, bit for bit."""
    import torch

    with torch.no_grad():
        for name, param in params.items():
            param.copy_(snapshot[name].to(param.device))


class IMPSession:
    """One IMP run: data, model, head warm-up, rounds of prune → rewind → train, checkpoints."""

    def __init__(self, job: SearchJob, options: IMPOptions) -> None:
        self.job = job
        self.spec = job.spec
        self.options = options
        self.objective = options.objective
        assert job.engine is not None and job.run is not None, "a training method's job"
        self.engine = job.engine
        self.run_writer = job.run
        self.settings = settings(job.spec, options)
        self.levels = self.settings["round_sparsities"]
        self.rounds = len(self.levels)
        self.per_round = options.steps_per_round
        self.total_steps = self.settings["max_steps"]
        self.lr = self.settings["lr"]
        self.round = 0
        self.rewound_taken = options.rewind_step == 0  # the snapshot is the start state
        self.masks: dict[str, Any] = {}

    # -- setup ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import copy

        import torch

        from tamt_cli import artifacts, masking, objectives, pretraining
        from tamt_cli.methods import _common

        spec, job, engine = self.spec, self.job, self.engine
        self.data = pretraining.prepare(job.ref, job.model, spec, engine, job.console)
        _common.record_corpus(job, self.data)
        last = artifacts.checkpoints(self.run_writer.root)[-1:] if job.resume else []
        head = None
        self.head_lr: float | None = None
        if "mlm" in self.objective:  # a resumed run then restores a trained head's state
            head, _, self.head_lr = _common.search_head(job, self.data, engine)
        teacher = None
        if "kd" in self.objective:  # the weights train: the teacher is a frozen pre-trained copy
            teacher = copy.deepcopy(job.model).eval()
            teacher.requires_grad_(False)
        job.model.requires_grad_(True)
        pooler = getattr(job.model, "pooler", None)
        if pooler is not None:  # read by no pre-training loss: no gradient, not trained
            pooler.requires_grad_(False)
        ones = {p.name: torch.ones(p.shape, dtype=torch.bool) for p in job.weights}
        masking.attach_masks(job.weights, ones)
        self.masks = ones
        keepers = masking.parametrizations(job.weights)
        for p in job.weights:  # the tied MLM decoder reads the unmasked embeddings: no gradient
            if p.weight.requires_grad:  # may reach a pruned weight through any path
                p.weight.register_hook(lambda g, k=keepers[p.name]: g * k.mask)
        self.loss_module = objectives.PretrainingLoss(
            job.model, job.weights, self.objective, head, teacher=teacher
        )
        self.params = _common.trainable_state(self.loss_module)
        encoder_ids = {id(p) for p in job.model.parameters()}
        self.head_names = {n for n, p in self.params.items() if id(p) not in encoder_ids}
        self.head_params = [self.params[n] for n in sorted(self.head_names)]
        self.encoder_params = [p for n, p in self.params.items() if n not in self.head_names]
        self.snapshot = {n: p.detach().clone() for n, p in self.params.items()}

        start = 0
        if last:
            start = self.resume_from(last[0])
        else:
            self.prune(1, step=0)
        while self.round < self.rounds:
            self.train_interval(start)
            self.prune(self.round + 1, step=self.round * self.per_round)
            start = (self.round - 1) * self.per_round
        self.record_notes(head)
        return self.masks

    def new_optimizer(self) -> tuple[Any, Any]:
        from tamt_cli.engine import linear_schedule
        from tamt_cli.methods import _common

        optimizer = _common.optimizer(self.encoder_params, self.lr, self.head_params, self.head_lr)
        horizon = self.total_steps if self.options.schedule == "run" else self.per_round
        return optimizer, linear_schedule(optimizer, horizon)

    # -- rounds ---------------------------------------------------------------------------------
    def prune(self, r: int, *, step: int) -> None:
        """Round ``r``: prune to its sparsity at global step ``step``, keep the mask, rewind, and
        checkpoint the round boundary (fresh optimiser and schedule)."""
        from tamt_cli import masking

        job, level = self.job, self.levels[r - 1]
        pattern = round_pattern(job.pattern, r)
        masks = prune_round(job.weights, self.masks, level, self.spec.scope, pattern)
        self.masks = masks
        self.round = r
        apply_masks(job.weights, masks)
        if self.options.rewind:
            rewind(self.params, self.snapshot)
        self.run_writer.save_masks(masks, step=step, sparsity=level, round=r)
        report = masking.sparsity_report(job.weights, masks)["overall"]
        self.say(
            f"IMP round {r}/{self.rounds} at step {step}: pruned {report['pruned']:,} of "
            f"{report['numel']:,} weights (sparsity {report['sparsity']:.4f}, target {level:g})"
            + ("" if r < self.rounds else "; target reached")
        )
        self.optimizer, self.scheduler = self.new_optimizer()
        self.checkpoint(step)

    def train_interval(self, start: int) -> None:
        """Train the unpruned weights for the rest of round ``self.round``'s interval."""
        from tamt_cli.engine import Loop

        spec, r = self.spec, self.round
        end = r * self.per_round
        loop = Loop.from_spec(
            spec,
            end,
            f"IMP round {r}/{self.rounds} (sparsity {self.levels[r - 1]:g})",
            eval_every=self.settings["eval_every"],
            save_every=self.settings["save_every"],
        )
        self.engine.fit(
            self.loss_module,
            self.optimizer,
            self.scheduler,
            self.data.train.shape[0],
            self.data.batch_maker(self.objective),
            loop,
            run_dir=self.run_writer.root,
            hooks=_Hooks(self),
            start_step=start,
        )
        self.engine.free_memory()  # drop the round's optimiser from Accelerate

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, step: int) -> None:
        import torch

        tensors = dict(self.params)
        tensors[ROUND_KEY] = torch.tensor(self.round, dtype=torch.int64)
        for name, keep in self.masks.items():
            tensors[MASK_PREFIX + name] = keep.to(torch.uint8)
        for name, value in self.snapshot.items():  # the pre-trained encoder can be reloaded
            if (self.options.rewind_step > 0 and self.rewound_taken) or name in self.head_names:
                tensors[REWIND_PREFIX + name] = value
        self.engine.save_checkpoint(
            self.run_writer.root,
            step,
            tensors,
            self.optimizer,
            self.scheduler,
            keep=self.spec.keep_checkpoints,
        )

    def resume_from(self, folder: Any) -> int:
        import torch

        from tamt_cli.methods import _common

        job = self.job
        self.optimizer, self.scheduler = self.new_optimizer()
        step, tensors = self.engine.load_checkpoint(folder, self.optimizer, self.scheduler)
        if ROUND_KEY not in tensors:
            raise UserError(f"checkpoint '{folder}' is not an IMP checkpoint")
        self.round = int(tensors.pop(ROUND_KEY))
        masks = {
            k.removeprefix(MASK_PREFIX): v.to(torch.bool) for k, v in tensors.items()
            if k.startswith(MASK_PREFIX)
        }  # fmt: skip
        rewound = {
            k.removeprefix(REWIND_PREFIX): v for k, v in tensors.items()
            if k.startswith(REWIND_PREFIX)
        }  # fmt: skip
        own = {k: v for k, v in tensors.items() if not k.startswith("imp.")}
        if set(masks) != {p.name for p in job.weights} or set(rewound) - set(self.snapshot):
            raise UserError(f"checkpoint '{folder}' does not match this run's model")
        _common.restore_trainable(self.loss_module, own)
        self.masks = masks
        apply_masks(job.weights, masks)
        with torch.no_grad():
            for name, value in rewound.items():
                self.snapshot[name].copy_(value)
        if self.options.rewind_step > 0 and set(rewound) - self.head_names:
            self.rewound_taken = True
        if self.round >= self.rounds:  # finished: write the run out again, train nothing
            self.say(
                f"run '{self.run_writer.root}' already reached sparsity {self.levels[-1]:g} (round "
                f"{self.round} of {self.rounds}); nothing left to train"
            )
        else:
            self.say(f"resuming IMP round {self.round}/{self.rounds} from step {step}")
        return step

    def say(self, text: str) -> None:
        if self.engine.is_main:
            self.job.console.print(text)

    def record_notes(self, head: Any) -> None:
        from tamt_cli.methods import _common

        notes = _common.run_notes(
            self.objective,
            self.data,
            self.spec,
            self.engine,
            rounds=self.rounds,
            round_sparsities=self.levels,
            round_steps=[r * self.per_round for r in range(self.rounds)],
            steps_per_round=self.per_round,
            prune_fraction=fraction_of(self.spec, self.options),
            rewind_step=self.options.rewind_step,
            rewind=self.options.rewind,
            schedule=self.options.schedule,
            steps=self.total_steps,
            lr=self.lr,
            head_lr=self.head_lr,
            teacher="frozen pre-trained copy" if "kd" in self.objective else None,
        )
        self.job.notes.update(notes)


class _Hooks:
    """The rewind snapshot, progress figures, held-out loss and checkpoints within a round."""

    def __init__(self, session: IMPSession) -> None:
        self.session = session

    def after_step(self, step: int) -> None:
        session = self.session
        if session.round == 1 and step == session.options.rewind_step and not session.rewound_taken:
            session.snapshot = {n: p.detach().clone() for n, p in session.params.items()}
            session.rewound_taken = True

    def status(self, step: int) -> dict[str, Any]:
        session = self.session
        return {"round": session.round, "sparsity": session.levels[session.round - 1]}

    def evaluate(self, step: int) -> dict[str, float]:
        from tamt_cli.methods import _common

        session = self.session
        return _common.held_out_eval(
            session.loss_module, session.data, session.objective, session.spec, session.engine
        )

    def save(self, step: int) -> None:
        self.session.checkpoint(step)
