"""Run specs: one pydantic model per command, loaded from a file and overridden by flags.

A spec file (YAML, JSON or TOML) holds the same fields as the command's flags; flags given on the
command line win. Unknown fields are rejected by name, and the resolved spec is saved in every run
so that ``tamt <command> --spec runs/<run>/spec.yaml`` repeats it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tamt_cli.errors import UserError, did_you_mean
from tamt_cli.trackers import Tracker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


#: the largest seed: what every random generator tamt seeds takes (numpy's: 2³² − 1)
MAX_SEED = 2**32 - 1
#: the most steps, blocks, examples or repeats a spec counts: far beyond any run, and small
#: enough for every library's integers
MAX_COUNT = 10**9
#: the most sequences a batch holds (all processes and micro-batches together)
MAX_BATCH = 2**16
#: the most tokens a sequence holds (a model's positions bound it further, checked once it is
#: known)
MAX_TOKENS = 2**20
#: the most epochs a fine-tuning runs
MAX_EPOCHS = 10**4
#: the largest learning rate: far above any that trains (a larger one overflows float32 updates)
MAX_LR = 10.0


class Spec(BaseModel):
    """Base of every run spec: unknown fields are errors, values are re-validated on change,
    numbers are finite (no inf, no nan)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    #: fields a value was filled in for by something other than the user or the default
    #: (``--budget paper``): field → where it came from, for errors about it
    _filled: dict[str, str] = PrivateAttr(default_factory=dict)

    def filled_in(self, names: Iterable[str], origin: str) -> Spec:
        """This spec, noting that the fields ``names`` were filled in by ``origin`` (``from
        --budget paper``): an error about one of them says so (:meth:`origin`)."""
        self._filled.update(dict.fromkeys(names, origin))
        return self

    def origin(self, name: str) -> str | None:
        """Where the value of the field ``name`` comes from when it was not given (``the
        default``, ``from --budget paper``); None when it was given."""
        if name in self._filled:
            return self._filled[name]
        return None if name in self.model_fields_set else "the default"

    def to_yaml(self) -> str:
        """The spec as YAML, every value on one line however long (what ``--spec`` reads)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=float("inf"))


#: the pre-training objectives (:mod:`tamt_cli.objectives` computes them): the mask-training
#: methods of these names, IMP's ``-o objective`` and ``tamt eval --objective``
Objective = Literal["mlm", "kd", "mlm-kd"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


def split_commas(value: Any) -> Any:
    """``"a,b"`` as ``["a", "b"]`` (a list stays a list)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_sparsity(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"must be strictly between 0 and 1 (the fraction pruned), got {value}")
    return value


def check_seeds(value: list[int]) -> list[int]:
    if not value:
        raise ValueError("give at least one seed")
    if any(seed < 0 or seed > MAX_SEED for seed in value):
        raise ValueError(f"seeds must be from 0 to {MAX_SEED}, got {value}")
    if len(set(value)) != len(value):
        raise ValueError(f"seeds repeat, got {value}")
    return value


#: ``--structure``: single weights, or whole units (:mod:`tamt_cli.units`)
Structure = Literal["weights", "neurons", "heads", "neurons+heads"]
Precision = Literal["no", "fp16", "bf16", "auto"]
#: what ``--mixed-precision`` says
PRECISION_HELP = (
    "mixed precision (auto: bf16 on a GPU or CPU with bfloat16 arithmetic, fp16 on another "
    "GPU, else no; the run records the one used)"
)


#: labels and sweep variant names: they name folders and table rows
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
LABEL_MAX = 64


#: MLM-head defaults of mask training and IMP (resolved where a search leaves them open)
DEFAULT_HEAD_WARMUP = 300
DEFAULT_HEAD_WARMUP_LR = 1e-3
#: the MLM head's learning rate in the paper's and the reference code's mask training
PAPER_HEAD_LR = 5e-5
#: a head fitted on the dense model (a checkpoint without one) is frozen by default (see
#: docs/mask-training.md)
DEFAULT_FITTED_HEAD_LR = 0.0


def head_settings(spec: Any) -> dict[str, Any]:
    """The MLM-head values a search of ``spec`` uses (for ``--dry-run``); what the head lr is
    depends on whether the checkpoint has a head, which only loading it tells."""
    fitted = f"{DEFAULT_FITTED_HEAD_LR:g} (frozen) for a head fitted on the dense model"
    return {
        "head_lr": spec.head_lr
        if spec.head_lr is not None
        else f"{PAPER_HEAD_LR:g} for a pre-trained head, {fitted}",
        "head_warmup_steps": DEFAULT_HEAD_WARMUP
        if spec.head_warmup_steps is None
        else spec.head_warmup_steps,
        "head_warmup_lr": spec.head_warmup_lr or DEFAULT_HEAD_WARMUP_LR,
    }


class SearchSpec(Spec):
    """`tamt search`: find a mask over a pre-trained model's prunable weights."""

    method: str = Field(description="pruning method, a name from `tamt plugins --kind method`")
    sparsity: float | None = Field(
        None, description="fraction of the masked weights pruned, in (0, 1)"
    )
    model: str = Field("bert-base-uncased", description="hub id, local folder, or `demo`")
    scope: Literal["local", "global"] = Field(
        "local", description="local: every matrix at the target sparsity; global: overall"
    )
    embeddings: bool = Field(True, description="mask the word-embedding matrix")
    pooler: bool = Field(True, description="mask the pooler dense layer")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed")
    out: Path | None = Field(None, description="run directory")
    label: str | None = Field(
        None,
        max_length=LABEL_MAX,
        pattern=LABEL_PATTERN,
        description="the name `tamt report` gives this subnetwork in place of the method's, "
        "e.g. kd-long (letters, digits, . _ + -)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="method options, name=value (`tamt plugins METHOD`)"
    )
    budget: Literal["default", "paper"] = Field(
        "default",
        description="paper: the paper's protocol where a value is not given (lr, steps for the "
        "sparsity, binary scores, resets and their schedule, lr decay, optimizer, teacher "
        "dropout, batch size and length: the reference code's; --dry-run shows them)",
    )
    # training methods (mlm, kd, mlm-kd, imp, plugins that train); one-shot methods ignore these
    corpus: str = Field(
        "wikitext-103",
        description="training text: wikitext-103, wikitext-2, demo, or files/globs (quote "
        "globs; comma-separated)",
    )
    max_length: int = Field(
        128, ge=8, le=MAX_TOKENS, description="tokens per block (the paper: 512)"
    )
    held_out: float = Field(0.05, gt=0, le=0.5, description="held-out fraction of a local corpus")
    max_steps: int | None = Field(None, gt=0, le=MAX_COUNT, description="optimiser steps")
    batch_size: int = Field(16, gt=0, le=MAX_BATCH, description="blocks per step, all processes")
    grad_accum: int = Field(1, gt=0, le=MAX_BATCH, description="micro-batches per step")
    lr: float | None = Field(None, gt=0, le=MAX_LR, description="learning rate")
    head_lr: float | None = Field(
        None,
        ge=0,
        le=MAX_LR,
        description="MLM-head learning rate while the mask trains, 0 freezes it",
    )
    head_warmup_steps: int | None = Field(
        None, ge=0, le=MAX_COUNT, description="steps fitting a missing MLM head on the frozen model"
    )
    head_warmup_lr: float | None = Field(
        None, gt=0, le=MAX_LR, description="learning rate of that fit"
    )
    clip: float | None = Field(1.0, gt=0, description="gradient-norm clip")
    log_every: int = Field(
        10, gt=0, le=MAX_COUNT, description="log (and print a progress line) every N steps"
    )
    eval_every: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="held-out loss every N steps"
    )
    eval_blocks: int = Field(64, gt=0, le=MAX_COUNT, description="held-out blocks per evaluation")
    save_every: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="checkpoint and mask every N steps"
    )
    keep_checkpoints: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="resumable checkpoints kept while the run goes on; given, they also stay "
        "once it completes",
    )
    mixed_precision: Precision = Field("no", description=PRECISION_HELP)
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="experiment trackers for the metrics and the spec, comma-separated "
        "(tensorboard writes into the run directory; all: those installed)",
    )

    pattern: str | None = Field(
        None,
        description="N:M keeps exactly N of every M consecutive weights along each masked "
        "matrix's input dimension; implies --sparsity 1 − N/M",
    )
    structure: Structure = Field(
        "weights",
        description="what is pruned: single weights, or whole FFN neurons and/or attention "
        "heads, --sparsity of them in every layer (the word embeddings and pooler are not "
        "masked)",
    )

    _sparsity = field_validator("sparsity")(lambda v: v if v is None else check_sparsity(v))
    _report_to = field_validator("report_to", mode="before")(split_commas)

    @model_validator(mode="before")
    @classmethod
    def _structured(cls, data: Any) -> Any:
        """Whole units are pruned in the encoder layers only, the same fraction in each: the
        word embeddings and pooler stay unmasked, and neither a pattern nor a global scope
        applies."""
        if not isinstance(data, dict) or data.get("structure") in (None, "weights"):
            return data
        given = f"--structure {data['structure']}"
        if data.get("pattern") is not None:
            raise ValueError(
                f"{given} prunes whole units, --pattern single weights; give one of the two"
            )
        if data.get("scope") == "global":
            raise ValueError(
                f"{given} prunes the same fraction of units in every layer (what a plain "
                "checkpoint can hold), so --scope global does not apply; leave it out"
            )
        for name in ("embeddings", "pooler"):
            if data.get(name) is True:
                raise ValueError(
                    f"{given} masks the encoder layers only; --{name} does not apply (leave it out)"
                )
        return {**data, "embeddings": False, "pooler": False}

    @model_validator(mode="before")
    @classmethod
    def _pattern_sparsity(cls, data: Any) -> Any:
        """An N:M pattern implies sparsity 1 − N/M: filled in, or checked against --sparsity."""
        if not isinstance(data, dict) or data.get("pattern") is None:
            return data
        from tamt_cli.masking import parse_pattern, pattern_sparsity

        try:
            pattern = parse_pattern(str(data["pattern"]))
        except ValueError as exc:
            raise ValueError(f"pattern {exc}") from None
        implied = pattern_sparsity(pattern)
        given = data.get("sparsity")
        if given is not None and abs(float(given) - implied) > 1e-9:
            raise ValueError(
                f"--sparsity {given} contradicts --pattern {data['pattern']}, which prunes "
                f"{implied:g} of every matrix; leave --sparsity out"
            )
        if data.get("scope") == "global":
            raise ValueError(
                "--pattern fixes how many weights every group of M keeps, so --scope global "
                "does not apply; leave it out"
            )
        return {**data, "pattern": f"{pattern[0]}:{pattern[1]}", "sparsity": implied}


class ExtractSpec(Spec):
    """`tamt extract`: an exact-sparsity mask from a search run, optionally as a HF checkpoint."""

    run: Path = Field(description="a search run directory")
    sparsity: float | None = Field(
        None, description="the run's mask at this sparsity (runs with several)"
    )
    step: int | None = Field(
        None, ge=0, le=MAX_COUNT, description="the mask saved at this training step"
    )
    export: Path | None = Field(
        None, description="write a plain Hugging Face folder with the zeros baked in"
    )
    format: Literal["dense", "compressed"] = Field(
        "dense",
        description="--export weights: dense (zeros in float32, plain transformers loads it) or "
        "compressed (compressed-tensors' sparse-bitmask layout: a bitmask and the kept values)",
    )

    _sparsity = field_validator("sparsity")(lambda v: v if v is None else check_sparsity(v))


TASK_OPTIONS = "an option of the task, name=value (repeatable)"


class BenchSpec(Spec):
    """`tamt bench`: file sizes and inference latency of a subnetwork against its dense model."""

    subnetwork: str = Field(
        description="search run, exported subnetwork, or mask file (with --model)"
    )
    model: str | None = Field(None, description="the model of a bare mask file")
    batch_size: int = Field(8, gt=0, le=MAX_BATCH, description="sequences per forward pass")
    max_length: int | None = Field(None, ge=2, le=MAX_TOKENS, description="tokens per sequence")
    repeats: int = Field(10, gt=0, le=MAX_COUNT, description="timed forward passes of each variant")
    warmup: int = Field(2, ge=0, le=MAX_COUNT, description="untimed forward passes first")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random token ids")
    task: str | None = Field(
        None,
        description="time the first --batch-size dev examples of this task, encoded as "
        "fine-tuning encodes them, instead of random token ids",
    )
    data_dir: Path | None = Field(None, description="the task's local data")
    task_options: dict[str, Any] = Field(default_factory=dict, description=TASK_OPTIONS)


class FinetuneSpec(Spec):
    """`tamt finetune`: fine-tune a subnetwork on a downstream task with its mask held fixed."""

    subnetwork: str = Field(
        description="search run, exported subnetwork, mask file (with --model) or model"
    )
    task: str = Field(description="downstream task, e.g. sst2, mnli, squad")
    model: str | None = Field(None, description="model for a bare mask file")
    data_dir: Path | None = Field(None, description="local task data (GLUE TSV, SQuAD JSON)")
    seeds: list[int] = Field(default_factory=lambda: [1], description="fine-tuning seeds")
    lr: float | None = Field(None, gt=0, le=MAX_LR, description="learning rate")
    warmup_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="linear warm-up of the lr over ⌈ratio × steps⌉ steps, then linear decay "
        "(the paper: 0)",
    )
    batch_size: int | None = Field(None, gt=0, le=MAX_BATCH, description="batch size")
    grad_accum: int = Field(
        1,
        gt=0,
        le=MAX_BATCH,
        description="micro-batches per optimiser step (--batch-size is their sum)",
    )
    epochs: float | None = Field(None, gt=0, le=MAX_EPOCHS, description="epochs")
    max_length: int | None = Field(None, gt=0, le=MAX_TOKENS, description="max tokens")
    doc_stride: int | None = Field(
        None, gt=0, le=MAX_TOKENS, description="SQuAD: tokens shared by windows"
    )
    train_size: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="seeded training subset size"
    )
    eval_every: int | None = Field(None, gt=0, le=MAX_COUNT, description="evaluate every N steps")
    save_every: int = Field(
        500, gt=0, le=MAX_COUNT, description="checkpoint every N steps, for --resume"
    )
    keep_checkpoints: int = Field(
        1,
        ge=1,
        le=MAX_COUNT,
        description="checkpoints kept per seed while it trains (a done seed drops them)",
    )
    mixed_precision: Precision = Field("no", description=PRECISION_HELP)
    out: Path | None = Field(None, description="output directory")
    task_options: dict[str, Any] = Field(default_factory=dict, description=TASK_OPTIONS)
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="experiment trackers for the metrics and the spec, comma-separated "
        "(tensorboard writes into the run directory; all: those installed)",
    )

    _report_to = field_validator("report_to", mode="before")(split_commas)

    _seeds = field_validator("seeds")(lambda v: check_seeds(v))


#: `tamt eval --objective`: tokens per block and blocks per batch where the spec gives none
#: (the block length, the corpus and the held-out fraction: where a search run gives none)
OBJECTIVE_MAX_LENGTH = 128
OBJECTIVE_BATCH_SIZE = 16
OBJECTIVE_CORPUS = "wikitext-103"
OBJECTIVE_HELD_OUT = 0.05


class EvalSpec(Spec):
    """`tamt eval`: task metrics of a fine-tuned checkpoint, or the pre-training loss proxy."""

    checkpoint: str = Field(description="fine-tuned run, subnetwork folder, or model")
    task: str | None = Field(None, description="downstream task to score")
    objective: Objective | None = Field(
        None, description="pre-training loss proxy instead of a task"
    )
    data_dir: Path | None = Field(None, description="local task data")
    split: str = Field("validation", description="split to score")
    # --task: the fine-tuning run's, else the task's; --objective: the search run's (for
    # max_length, corpus and held_out), else the OBJECTIVE_* values
    max_length: int | None = Field(None, gt=0, le=MAX_TOKENS, description="max tokens")
    batch_size: int | None = Field(None, gt=0, le=MAX_BATCH, description="batch size")
    doc_stride: int | None = Field(
        None, gt=0, le=MAX_TOKENS, description="SQuAD: tokens shared by windows"
    )
    task_options: dict[str, Any] = Field(default_factory=dict, description=TASK_OPTIONS)
    # --objective: the held-out pre-training loss of a subnetwork
    corpus: str | None = Field(None, description="--objective: text whose held-out part is scored")
    held_out: float | None = Field(
        None, gt=0, le=0.5, description="--objective: held-out fraction of a local corpus"
    )
    eval_blocks: int = Field(
        256, gt=0, le=MAX_COUNT, description="--objective: held-out blocks scored"
    )
    step: int | None = Field(
        None, ge=0, le=MAX_COUNT, description="a search run's mask at this step"
    )
    head: Literal["shared", "own"] = Field(
        "shared",
        description="--objective mlm: shared (the checkpoint's head, or one fitted once on the "
        "dense model: the same for every subnetwork) or own (a search run's trained head)",
    )
    head_warmup_steps: int | None = Field(
        None, ge=0, le=MAX_COUNT, description="--objective mlm: steps fitting a missing head"
    )
    head_warmup_lr: float | None = Field(
        None, gt=0, le=MAX_LR, description="learning rate of that fit"
    )


def describe_options(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Every field of an options model: name, type (with its bounds), default or required, and
    its description, in the model's order (for ``tamt plugins NAME``)."""
    out = []
    for name, info in model.model_fields.items():
        bounds = [_bound(m) for m in info.metadata]
        kind = _type_name(info.annotation)
        if info.is_required():
            default: Any = None
        elif info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        else:
            default = info.default
        out.append(
            {
                "name": name,
                "type": ", ".join([kind, *(b for b in bounds if b)]),
                "required": info.is_required(),
                "default": default.as_posix() if isinstance(default, Path) else default,
                "description": info.description or "",
            }
        )
    return out


def _type_name(annotation: Any) -> str:
    """``int``, ``mlm|kd``, ``path | none``, ``list of str``, ``mapping``: a type as a user reads
    it."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _bound(meta: Any) -> str:
    for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
        value = getattr(meta, attr, None)
        if value is not None:
            return f"{sign} {value:,}" if isinstance(value, int) else f"{sign} {value:g}"
    return ""


S = TypeVar("S", bound=BaseModel)

#: fields a spec file may not carry: destructive or one-off choices made on the command line
COMMAND_LINE_ONLY = {
    "overwrite": "--overwrite",
    "resume": "--resume",
    "push_to_hub": "--push-to-hub",
    "private": "--private",
    "revision": "--revision",
    "push_seed": "--push-seed",
}
#: what ``--dry-run --json`` puts beside a spec's fields: not a field, refused with this hint
DRY_RUN_ONLY = {
    "resolved": "not a spec field but the values `--dry-run --json` shows beside the spec; "
    "a spec file is what `--dry-run` prints without --json (those values as comments there), "
    "or remove the key"
}


#: what Python's error says of an integer too long to read from text
INT_DIGITS = "integer string conversion"


def read_spec_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML, JSON or TOML spec file; one-line errors for anything else."""
    if path.is_dir():
        raise UserError(f"spec file '{path}' is a directory; give a .yaml, .json or .toml file")
    if not path.is_file():
        raise UserError(f"spec file '{path}' does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise UserError(f"spec file '{path}' must end in .yaml, .yml, .json or .toml")
    except (yaml.YAMLError, ValueError) as exc:  # JSON's and TOML's errors are ValueErrors
        if INT_DIGITS in str(exc):  # a number longer than Python reads from text
            raise UserError(
                f"spec file '{path}' holds an integer of more than "
                f"{sys.get_int_max_str_digits():,} digits"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"spec file '{path}' is not valid {suffix[1:].upper()}: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"spec file '{path}' must hold a mapping of field names to values")
    return data


def build(cls: type[S], spec_file: Path | None, flags: Mapping[str, Any]) -> S:
    """A validated spec from an optional file and command-line flags (flags given win)."""
    data: dict[str, Any] = read_spec_file(spec_file) if spec_file else {}
    for key, value in flags.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate(cls, data, source=f"spec {spec_file}" if spec_file else None)


def resumed(
    cls: type[S],
    run_dir: Path,
    saved_path: Path,
    spec_file: Path | None,
    flags: Mapping[str, Any],
    *,
    merged: str | None = None,
) -> S:
    """The spec saved at ``saved_path`` for ``--resume run_dir``; a spec file or flags given as
    well must agree with it (the mapping field ``merged`` is compared with what is given laid
    over it). Where the run is (``out``) and what watches it (``report_to``) may change."""
    saved = validate(cls, read_spec_file(saved_path), str(saved_path))
    asked = {k: v for k, v in flags.items() if v is not None}
    if spec_file is not None:
        given = build(cls, spec_file, flags)
        asked = {**given.model_dump(exclude_unset=True), **asked}
    if asked.get("mixed_precision") is not None:  # the run recorded what auto resolved to
        from tamt_cli import precision

        asked["mixed_precision"] = precision.resolve(asked["mixed_precision"])
    current = saved.model_dump()
    for key, value in asked.items():
        if key in {"out", "report_to"}:
            continue
        old = current.get(key)
        new = {**(old or {}), **value} if key == merged else value
        if _normalise(old) != _normalise(new):
            raise UserError(
                f"--resume: the run was started with {key}={old!r}, not {new!r}; resume it "
                "with the same settings (or start a new run)"
            )
    report_to = asked.get("report_to", getattr(saved, "report_to", None))
    return saved.model_copy(update={"out": Path(run_dir), "report_to": report_to})


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def validate(cls: type[S], data: Mapping[str, Any], source: str | None = None) -> S:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe(exc, cls, source)) from None


def describe(exc: ValidationError, cls: type[BaseModel], source: str | None = None) -> str:
    """A pydantic error as one line: every problem, named by field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = list(cls.model_fields)
            field = str(err["loc"][-1])
            if field in COMMAND_LINE_ONLY:
                parts.append(
                    f"'{loc}' is taken only from the command line ({COMMAND_LINE_ONLY[field]}), "
                    "never from a spec file"
                )
            elif field in DRY_RUN_ONLY:
                parts.append(f"'{loc}' is {DRY_RUN_ONLY[field]}")
            elif not valid:
                parts.append(f"unknown field '{loc}'; there are none to give")
            else:
                hint = did_you_mean(field, valid) or ";"
                parts.append(f"unknown field '{loc}'{hint} valid fields: {', '.join(valid)}")
        elif err["type"] == "missing":
            parts.append(f"'{loc}' is required (on the command line or in a --spec file)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if "got " in msg or isinstance(given, dict) else f" (got {given!r})"
            parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    where = f"{source}: " if source else ""
    return where + "; ".join(parts)
