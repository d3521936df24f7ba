"""``mlm``, ``kd``, ``mlm-kd``: task-agnostic mask training (TAMT).

Every masked weight ``W`` gets a real score ``S``; the forward pass uses ``W ⊙ 1[S > τ]`` and the
gradient reaches ``S`` straight through the step. Scores start from the magnitude mask at the
target sparsity or a random one (``--init random``): graded by default (``S = τ·|W|/t``, ``t`` the
matrix's magnitude boundary, so the weights next to the boundary start next to ``τ``), or as in
the paper (``-o scores=binary``: ``S = 2τ`` kept, ``0`` pruned; ``τ = 0.01``).
The pre-trained weights stay frozen; for the MLM objectives the MLM head's transform and output
bias train with the scores (its decoder stays tied to the unmasked word embeddings). Every
``-o reset_every`` steps (``-o reset_schedule=reference``: after step 1, then one step before
each multiple, as the reference KD trainer), and always before a mask is saved, each matrix's
``τ`` is reset to its k-th smallest score (k = ⌊n·s⌋), so saved masks have exactly the target
sparsity. The pooler is read by no pre-training loss, so its mask stays the initial one.
With ``--structure`` the scores are one per unit (a layer's FFN neurons or attention heads,
:mod:`tamt_cli.units`), shared by the matrices the unit spans, with the same estimator,
initialisation (from the units' magnitude or a random ranking), thresholds and resets, per layer.

Defaults differ from the paper's where the paper's cannot work on short budgets: with binary
scores every score is 0.01 from ``τ``, which AdamW at the paper's 5e-5 (MLM) or 2e-5 (KD) needs
hundreds of steps to cross — and then every score whose gradient kept its sign crosses in the
same step, since AdamW (``-o optimizer=adamw``, the default, and the reference MLM trainer's)
moves each score by about the learning rate whatever its gradient's size. That does not hold
for the reference KD trainer's BertAdam (``-o optimizer=bertadam``: eps 1e-6, no bias
correction), which moves a score whose gradient is far below 1e-6 by only a fraction of the
learning rate. The paper trained 11k–22k steps, resetting thresholds every 1000 (MLM) or 100
(KD) steps. The defaults here (graded scores, ``DEFAULTS``, ``DEFAULT_MAX_STEPS``) suit budgets
of tens to a few thousand steps; ``--budget paper`` runs the reference's protocol (``PAPER``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tamt_cli.errors import UserError
from tamt_cli.methods.base import SearchJob
from tamt_cli.specs import MAX_COUNT
from tamt_cli.units import STRUCTURES

if TYPE_CHECKING:
    from tamt_cli.specs import SearchSpec

#: objective → (lr, reset interval); the paper's values in the comment beside them. The lrs
#: suit graded scores (docs/mask-training.md: "Why these defaults", measured on the demo model);
#: with binary ones 1e-3 moved masks on short budgets, at the cost of the mass crossing described
#: above.
DEFAULTS = {
    "mlm": {"lr": 5e-5, "reset_every": 100},  # paper: 5e-5, every 1000 steps
    "kd": {"lr": 2e-4, "reset_every": 100},  # paper: 2e-5, every 100 steps
    "mlm-kd": {"lr": 5e-5, "reset_every": 100},
}
DEFAULT_MAX_STEPS = 1000  # paper: 11k/14k/17k/20k/22k steps for sparsity 0.5/0.6/0.7/0.8/0.9

#: ``--budget paper``: the reference's protocol (docs/mask-training.md: "`--budget paper`
#: against the reference" gives every value with its source). Paths are in the authors'
#: repository (llyx97/TAMT). Steps: the budget IMP needs for the sparsity, (10·s − 1) intervals
#: of 2,792 steps, to the nearest thousand: 11k, 14k, 17k, 20k, 22k at 0.5 … 0.9, the masks the
#: fine-tuning scripts load (imp_and_fine_tune/shell_scripts/run_glue/train_mlm/main_result/
#: bert/mnli/0.7.sh:6 "pretrain_step=17000"); `kd` one step fewer, since the KD trainer saves
#: its masks at step 1000·k − 1 (…/train_kd/main_result/bert/mnli/0.7.sh:7 "16999";
#: mask_training/train_kd.py:1142). The lr decays linearly over two epochs of WikiText-103
#: (~30k steps at 16 × 512 tokens; train_kd.py:828, train_mlm.py:394), so at those steps it is
#: still well above zero.
PAPER: dict[str, dict[str, Any]] = {
    "mlm": {
        "lr": 5e-5,  # mask_training/hg_transformers/training_args.py:68 (the script sets none)
        "reset_every": 1000,  # mask_trainer_mlm.py:595,615 at --logging_steps 1000
        "reset_schedule": "even",  # mask_trainer_mlm.py:595: global_step % 1000 == 0
        "optimizer": "adamw",  # train_mlm.py:393: AdamW, bias correction, eps 1e-8, no decay
    },
    "kd": {
        "lr": 2e-5,  # mask_training/train_kd.py:591 (the script sets none)
        "reset_every": 100,  # train_kd.py:1082,1126 at --eval_step 100 (train_kd/bert/0.7.sh:20)
        "reset_schedule": "reference",  # train_kd.py:1082: step 1, then (step + 1) % 100 == 0
        "optimizer": "bertadam",  # train_kd.py:901, transformer/optimization.py:191
        "teacher_dropout": True,  # train_kd.py:858,943: teacher never put in eval mode
    },
    "mlm-kd": {
        "lr": 5e-5,  # as mlm (train_mlm.py with --use_kd true)
        "reset_every": 1000,
        "reset_schedule": "even",
        "optimizer": "adamw",
        # train_mlm.py:528: from_pretrained sets eval mode (hg_transformers/modeling_utils.py:790)
        "teacher_dropout": False,
    },
}
#: lr × steps past which graded-score `kd` tickets transferred worse than OMP's in the budget
#: study (docs/mask-training.md: "How long to train masks"). AdamW moves a score by about the lr
#: per step whatever its gradient, so lr × steps bounds how far a score can travel from the
#: magnitude mask (measured with AdamW only: BertAdam moves scores with tiny gradients less).
KD_TRAVEL_LIMIT = 0.6
PAPER_SEARCH = {"batch_size": 16, "max_length": 512}
#: what each ``-o optimizer`` implies (the optimisers are in methods/_common.py, which a test
#: holds to these): eps, weight decay on the scores, bias correction, where --clip applies
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adamw": {"eps": 1e-8, "weight_decay": 0.0, "bias_correction": True, "clip": "global norm"},
    # mask_training/transformer/optimization.py:209 (e=1e-6, max_grad_norm=1.0), :308-309 (clip
    # per tensor), :335-338 (no bias correction); train_kd.py:898 (decay 0.01 in the groups)
    "bertadam": {
        "eps": 1e-6,
        "weight_decay": 0.01,
        "bias_correction": False,
        "clip": "each tensor on its own",
    },
}
PAPER_DECAY_STEPS = 30_000
IMP_INTERVAL = 2792


def paper_steps(sparsity: float) -> int:
    """The paper's mask-training steps at ``sparsity`` (IMP's budget for it)."""
    return max(1000, round(IMP_INTERVAL * (10 * sparsity - 1) / 1000) * 1000)


def resets_after(step: int, every: int, schedule: str) -> bool:
    """Whether the thresholds are reset after optimiser step ``step`` (1-based): ``even`` at
    every, 2·every, …; ``reference`` as the reference KD trainer (mask_training/train_kd.py:1082,
    1126: after step 1, then wherever ``(step + 1) % every == 0``: every − 1, 2·every − 1, …)."""
    if schedule == "reference":
        return step == 1 or (step + 1) % every == 0
    return step % every == 0


#: the largest initial threshold: scores of 2τ stay far inside float32
MAX_TAU = 1e6


class MaskTrainingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    init: Literal["magnitude", "random"] = Field(
        "magnitude", description="initial mask: magnitude (OMP) at the target, or random"
    )
    reset_every: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="reset thresholds to the exact sparsity every N steps"
    )
    tau: float = Field(0.01, gt=0, le=MAX_TAU, description="initial threshold τ")
    decay_steps: int | None = Field(
        None,
        gt=0,
        le=MAX_COUNT,
        description="the linear lr schedule reaches zero at this step (at least --max-steps) "
        "[--max-steps]",
    )
    scores: Literal["graded", "binary"] = Field(
        "graded",
        description="initial score values: binary (2τ kept, 0 pruned: the paper's) or graded "
        "(τ·|W|/t: the same mask, scores in the order of the initial ranking, so that the "
        "weights nearest the boundary are the first to flip)",
    )
    optimizer: Literal["adamw", "bertadam"] = Field(
        "adamw",
        description="adamw (torch's: bias correction, eps 1e-8, no weight decay, the gradient "
        "norm clipped to --clip over all scores: the reference MLM trainer's) or bertadam (the "
        "reference KD trainer's: no bias correction, eps 1e-6, weight decay 0.01 on scores, "
        "each tensor's gradient clipped to --clip on its own)",
    )
    reset_schedule: Literal["even", "reference"] = Field(
        "even",
        description="when thresholds are reset: even (every reset_every steps: N, 2N, …) or "
        "reference (the reference KD trainer's: after step 1, then N−1, 2N−1, …)",
    )
    teacher_dropout: bool = Field(
        False,
        description="KD: the dense teacher keeps dropout on while the mask trains (the "
        "reference KD trainer's); false: the teacher runs without dropout",
    )
    kd_data: Literal["blocks", "sections"] = Field(
        "blocks",
        description="kd only: the training text as contiguous blocks, or as the reference's KD "
        "data (sections: a document section a sequence, two segments, padded to --max-length, "
        "the padding counted in the loss)",
    )


class MaskTraining:
    """Learn a mask over the frozen pre-trained weights that keeps a pre-training loss low."""

    objective: ClassVar[str] = "mlm"
    summary: ClassVar[str] = "mask training"
    trains: ClassVar[bool] = True
    patterns: ClassVar[bool] = True
    structures: ClassVar[tuple[str, ...]] = STRUCTURES
    Options = MaskTrainingOptions

    def __init__(self, options: MaskTrainingOptions) -> None:
        self.options = options

    def resolved(self, spec: SearchSpec) -> dict[str, Any]:
        """The values a run of ``spec`` uses where the spec leaves them to the method."""
        return settings(self.objective, spec, self.options)

    @classmethod
    def paper_budget(cls, spec: SearchSpec) -> tuple[dict[str, Any], dict[str, Any]]:
        """``--budget paper``: (search fields, options) of the paper's protocol."""
        from tamt_cli.methods.base import sparsity_of

        paper = PAPER[cls.objective]
        steps = paper_steps(sparsity_of(spec, None))
        fields = {
            **PAPER_SEARCH,
            "lr": paper["lr"],
            "max_steps": steps - 1 if cls.objective == "kd" else steps,
        }
        options = {
            "scores": "binary",  # masking/maskers.py:175-176: 2τ kept, 0 pruned
            "reset_every": paper["reset_every"],
            "decay_steps": PAPER_DECAY_STEPS,
            "optimizer": paper["optimizer"],
            "reset_schedule": paper["reset_schedule"],
        }
        if "teacher_dropout" in paper:  # the objectives with a teacher
            options["teacher_dropout"] = paper["teacher_dropout"]
        if cls.objective == "kd":  # the reference's KD data (train_kd.py, pregenerated)
            options["kd_data"] = "sections"
        return fields, options

    def advice(self, spec: SearchSpec) -> list[str]:
        """Notes on a run that will go on but that the measurements advise against."""
        if self.objective != "kd" or self.options.scores != "graded":
            return []
        if self.options.optimizer != "adamw":  # the study measured AdamW only
            return []
        run = settings(self.objective, spec, self.options)
        travel = run["lr"] * run["max_steps"]
        if travel <= KD_TRAVEL_LIMIT:
            return []
        return [
            f"lr × steps = {run['lr']:g} × {run['max_steps']} = {travel:.2g}, past "
            f"{KD_TRAVEL_LIMIT:g}: in the budget study, kd tickets trained that far transferred "
            "worse than magnitude pruning's (docs/mask-training.md: How long to train masks)"
        ]

    def check(self, spec: SearchSpec) -> None:
        if self.options.teacher_dropout and "kd" not in self.objective:
            raise UserError(
                f"-o teacher_dropout=true is for the objectives with a teacher (kd, mlm-kd); "
                f"{self.objective} has none"
            )
        if self.options.kd_data == "sections" and self.objective != "kd":
            raise UserError(
                f"-o kd_data=sections lays out the data of the kd objective, not of "
                f"{self.objective}; leave it out"
            )
        steps = spec.max_steps or DEFAULT_MAX_STEPS
        if self.options.decay_steps is not None and self.options.decay_steps < steps:
            raise UserError(
                f"-o decay_steps={self.options.decay_steps} is below --max-steps {steps}: the "
                "learning rate would reach zero before the run ends; give at least the steps"
            )

    def preflight(self, job: SearchJob) -> None:
        """Checks that need the model but no computation, before the run directory is made."""
        from tamt_cli import pretraining

        pretraining.check_inputs(job.ref, job.model, job.spec, job.engine)

    def search(self, job: SearchJob) -> dict[str, Any]:
        session = TrainingSession(job, self.objective, self.options)
        return session.run()


def settings(objective: str, spec: SearchSpec, options: MaskTrainingOptions) -> dict[str, Any]:
    """Everything a run uses that the spec may leave to the method: steps, learning rates,
    intervals, then every option with its effective value and what the optimiser implies."""
    from tamt_cli import specs

    steps = spec.max_steps or DEFAULT_MAX_STEPS
    tenth = max(1, steps // 10)
    every = int(options.reset_every or DEFAULTS[objective]["reset_every"])
    out: dict[str, Any] = {
        "max_steps": steps,
        "lr": spec.lr or DEFAULTS[objective]["lr"],
        "reset_every": every,
        "decay_steps": options.decay_steps or steps,
        "eval_every": spec.eval_every or tenth,
        "save_every": spec.save_every or tenth,
    }
    out.update({k: v for k, v in options.model_dump().items() if k not in out})
    near = {1, *(k * every + d for k in (1, 2, 3) for d in (-1, 0))}  # where resets can fall
    firsts = [s for s in sorted(near) if s > 0 and resets_after(s, every, options.reset_schedule)]
    out["reset_steps"] = ", ".join(str(s) for s in firsts[:3]) + ", ..."
    implied = OPTIMIZERS[options.optimizer]
    out.update({k: v for k, v in implied.items() if k != "clip"})
    out["clip"] = "none" if spec.clip is None else f"{spec.clip:g} ({implied['clip']})"
    if "mlm" in objective:
        out.update(specs.head_settings(spec))
    return out


class MLMMaskTraining(MaskTraining):
    objective = "mlm"
    summary = "TAMT-MLM: mask training on the masked-language-modelling loss"


class KDMaskTraining(MaskTraining):
    objective = "kd"
    summary = "TAMT-KD: mask training on hidden-state distillation from the dense model"


class MLMKDMaskTraining(MaskTraining):
    objective = "mlm-kd"
    summary = "TAMT-MLM+KD: mask training on the sum of the MLM and KD losses"


class TrainingSession:
    """One mask-training run: data, model, head warm-up, the loop, checkpoints, resume."""

    def __init__(self, job: SearchJob, objective: str, options: MaskTrainingOptions) -> None:
        assert job.engine is not None and job.run is not None, "a training method's job"
        self.job = job
        self.spec = job.spec
        self.objective = objective
        self.options = options
        self.engine = job.engine
        self.run_writer = job.run
        self.sparsity = job.sparsity
        self.settings = settings(objective, self.spec, options)
        self.max_steps = self.settings["max_steps"]
        self.lr = self.settings["lr"]
        self.reset_every = self.settings["reset_every"]
        self.pattern = job.pattern  # N:M: the top N of every M scores at every forward pass
        self.head_lr: float | None = None  # resolved once the head's origin is known

    def run(self) -> dict[str, Any]:
        from tamt_cli import artifacts, masking, mlm_head, objectives, pretraining
        from tamt_cli.engine import Loop, linear_schedule
        from tamt_cli.methods import _common

        spec, job, engine, run = self.spec, self.job, self.engine, self.run_writer
        options = self.options
        sections = self.options.kd_data == "sections"
        data = pretraining.prepare(job.ref, job.model, spec, engine, job.console, sections=sections)
        _common.record_corpus(job, data)
        for p in job.model.parameters():
            p.requires_grad_(False)
        head: Any = None
        head_params: list[Any] = []
        if "mlm" in self.objective:  # a resumed run then restores a trained head's state
            head, head_params, self.head_lr = _common.search_head(job, data, engine)
        scores = self.attach_scores()
        loss_module = objectives.PretrainingLoss(
            job.model, job.weights, self.objective, head, teacher_dropout=options.teacher_dropout
        )
        trained = [m.score for m in scores.values() if m.score.requires_grad]
        bertadam = options.optimizer == "bertadam"  # then it clips each tensor, the loop none
        optimizer = _common.optimizer(
            trained, self.lr, head_params, self.head_lr, kind=options.optimizer, clip=spec.clip
        )
        scheduler = linear_schedule(optimizer, self.settings["decay_steps"])

        start = 0
        last = artifacts.checkpoints(run.root)[-1:] if job.resume else []
        if last:
            start, tensors = engine.load_checkpoint(last[0], optimizer, scheduler)
            _common.restore_trainable(loss_module, tensors)
            job.console.print(f"resuming from step {start} ({last[0]})")
        if start >= self.max_steps:
            raise UserError(f"run '{run.root}' already reached step {start}; nothing to do")

        hooks = _Hooks(self, scores, loss_module, data, optimizer, scheduler)
        loop = Loop.from_spec(
            spec,
            self.max_steps,
            f"{self.objective} mask training",
            eval_every=self.settings["eval_every"],
            save_every=self.settings["save_every"],
            **({"clip": None} if bertadam else {}),
        )
        engine.fit(
            loss_module,
            optimizer,
            scheduler,
            data.examples,
            data.batch_maker(self.objective),
            loop,
            run_dir=run.root,
            hooks=hooks,
            start_step=start,
        )
        if self.pattern is None:
            masking.reset_thresholds(scores, self.sparsity, spec.scope)
        final = masking.exact_masks_from(scores, self.sparsity, spec.scope, self.pattern)
        if head is not None:
            run.save_tensors(artifacts.HEAD_FILE, mlm_head.head_state(head, job.model))
        job.notes.update(self.notes(data))
        return final

    def notes(self, data: Any) -> dict[str, Any]:
        """What the run manifest records of this run's settings."""
        from tamt_cli.methods import _common

        spec, engine, options = self.spec, self.engine, self.options
        return _common.run_notes(
            self.objective,
            data,
            spec,
            engine,
            steps=self.max_steps,
            lr=self.lr,
            head_lr=self.head_lr,
            reset_every=self.reset_every,
            reset_schedule=options.reset_schedule,
            init=options.init,
            tau=options.tau,
            scores=options.scores,
            optimizer=options.optimizer,
            eps=self.settings["eps"],
            weight_decay=self.settings["weight_decay"],
            clip=self.settings["clip"],
            **({"teacher_dropout": options.teacher_dropout} if "kd" in self.objective else {}),
        )

    def attach_scores(self) -> dict[str, Any]:
        """The score parametrizations, attached to the model, by weight name (a score per
        weight) or by unit group (a score per unit, ``--structure``)."""
        from tamt_cli import masking

        job, tau = self.job, self.options.tau
        # the initial scores are copied into the parameters and not kept: a float per weight
        if job.units:
            return masking.attach_unit_scores(job.weights, job.units, self.initial_scores(), tau)
        scores = masking.attach_scores(job.weights, self.initial_scores(), tau, self.pattern)
        kinds = {p.name: p.kind for p in job.weights}
        for name, mod in scores.items():  # no pre-training loss reads the pooler: its mask
            mod.score.requires_grad_(kinds[name] != "pooler")  # stays the initial one
        return scores

    def initial_scores(self) -> dict[str, Any]:
        """The initial mask (magnitude or random ranking at the target sparsity, of weights or
        of units), as a keep-mask (binary scores) or as graded scores in the ranking's order."""
        from tamt_cli import masking, units

        weights, groups, scope = self.job.weights, self.job.units, self.spec.scope
        if groups:
            if self.options.init == "random":
                ranking = units.random_scores(groups, self.spec.seed)
            else:
                ranking = units.magnitude_scores(groups, weights)
            keep = units.keep_units(groups, ranking, self.sparsity)
        else:
            if self.options.init == "random":
                ranking = masking.random_scores(weights, self.spec.seed)
            else:
                ranking = masking.magnitude_scores(weights)
            keep = masking.masks_from_scores(ranking, self.sparsity, scope, self.pattern)
        if self.options.scores == "binary":
            return keep
        return masking.graded_scores(ranking, keep, self.options.tau)

    def save_masks(self, masks: dict[str, Any], step: int) -> None:
        """Keep the mask at ``step``: of weights, or of units (expanded into weight masks, the
        unit masks kept beside them)."""
        from tamt_cli import masking, units

        job = self.job
        found = None
        if job.units:
            found = units.UnitMasks(job.structure, job.units, masks)
            masks = units.expand(job.units, masks, masking.shapes(job.weights))
        self.run_writer.save_masks(masks, step=step, units=found)


class _Hooks:
    """Threshold resets, progress figures, held-out loss and checkpoints for mask training."""

    def __init__(self, session, scores, loss_module, data, optimizer, scheduler) -> None:
        self.session = session
        self.scores = scores
        self.loss_module = loss_module
        self.data = data
        self.optimizer = optimizer
        self.scheduler = scheduler
        self._sparsity: float | None = None

    def after_step(self, step: int) -> None:
        from tamt_cli import masking

        session = self.session
        schedule = session.options.reset_schedule
        if session.pattern is None and resets_after(step, session.reset_every, schedule):
            masking.reset_thresholds(self.scores, session.sparsity, session.spec.scope)
            self._sparsity = None

    def status(self, step: int) -> dict[str, Any]:
        from tamt_cli import masking

        if self._sparsity is None or step % self.session.spec.log_every == 0:
            keep = {name: m.keep() for name, m in self.scores.items()}
            self._sparsity = masking.pruned_fraction(keep) or 0.0
        return {"sparsity": round(self._sparsity, 6)}

    def evaluate(self, step: int) -> dict[str, float]:
        from tamt_cli.methods import _common

        session = self.session
        return _common.held_out_eval(
            self.loss_module, self.data, session.objective, session.spec, session.engine
        )

    def save(self, step: int) -> None:
        from tamt_cli import masking
        from tamt_cli.methods import _common

        session = self.session
        # The exact top-k of the scores is the mask a threshold reset would give; τ itself is
        # left alone, so where checkpoints fall does not change the training.
        masks = masking.exact_masks_from(
            self.scores, session.sparsity, session.spec.scope, session.pattern
        )
        session.save_masks(masks, step)
        session.engine.save_checkpoint(
            session.run_writer.root,
            step,
            _common.trainable_state(self.loss_module),
            self.optimizer,
            self.scheduler,
            keep=session.spec.keep_checkpoints,
        )
