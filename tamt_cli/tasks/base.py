"""The protocol every downstream task implements, built-in or plugin.

A task is a class registered under the ``tamt.tasks`` entry-point group::

    [project.entry-points."tamt.tasks"]
    sst2 = "tamt_cli.tasks.glue:SST2"

``tamt`` constructs it without arguments (``task = registry.tasks().get("sst2")()``) and uses
it in four steps, none of which touches a model:

1. ``task.splits(split)`` turns the split a user asked for into the splits to load: ``None``,
   ``"validation"`` or ``"dev"`` mean every one of ``task.eval_splits`` (MNLI: matched *and*
   mismatched, always reported separately); unknown names are a one-line ``UserError``.
2. ``task.load(split, data_dir)`` returns the raw examples of one split as a
   ``datasets.Dataset`` with the Hugging Face hub's column names (GLUE: the text columns,
   ``label``, ``idx``; SQuAD: ``id``, ``title``, ``context``, ``question``,
   ``answers{text, answer_start}``). ``data_dir=None`` loads from the hub (or its local cache);
   otherwise the task reads local files, and any problem with them (a missing split file, wrong
   columns, a label outside the label set) is a one-line ``UserError`` naming the file, the line
   (or record) and what was expected.
3. ``task.encode(raw, tokenizer, max_length, doc_stride, train)`` returns model features, one
   ``datasets.Dataset`` row per model input. ``None`` for ``max_length``/``doc_stride`` means
   the task's ``defaults``. Columns by ``head``:

   * ``"classification"``: ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the
     tokenizer makes them), ``labels`` (int); one feature per example, same order, **not
     padded** (pad per batch, e.g. ``transformers.DataCollatorWithPadding``).
   * ``"regression"``: the same with float ``labels``.
   * ``"span"`` (SQuAD): features padded to ``max_length``; a long context yields several
     features (windows overlapping by ``doc_stride`` tokens). With ``train=True`` they carry
     ``start_positions``/``end_positions`` (the CLS index when the window has no answer); with
     ``train=False`` they carry ``example_id`` and ``offset_mapping`` (``None`` outside the
     context) for post-processing instead.

   Training features may also carry ``example_index`` (int): the row of ``raw`` each was made
   from. ``tamt finetune --train-size`` tokenises the examples all its seeds draw once and
   picks each seed's features by it (or, without it, by position when there is one feature per
   example; otherwise each seed's examples are tokenised on their own).

   Feed the model only :data:`MODEL_INPUTS` (:func:`model_inputs` drops the rest).

   Features are cached across runs (:mod:`tamt_cli.task_data`), keyed by the examples, the
   tokenizer, the settings, the task's class, options and ``encoding_version``, and the
   version of the distribution that provides it: bump ``encoding_version`` when what
   ``encode`` makes changes.
4. ``task.metrics(raw, encoded, predictions)`` scores one split: ``predictions`` are numpy
   arrays in feature order — logits ``[N, num_labels]`` (classification), ``[N]`` or ``[N, 1]``
   (regression), or a pair ``(start_logits, end_logits)`` each ``[N_features, seq_len]``
   (span). It returns ``{metric name: value}`` with every score **in percent** (×100, as GLUE
   and SQuAD results are reported; correlations too); ``task.main_metric`` names the score used
   to pick the best checkpoint on ``task.eval_splits[0]``. SQuAD v2 also returns example counts
   (``total``, ``has_ans_total``, ``no_ans_total``), which are not percentages.
   Span tasks also give ``task.postprocess(raw, encoded, predictions) -> {id: answer text}``
   (what ``metrics`` scores), for writing predictions out.

The model to fine-tune is ``AutoModelForSequenceClassification`` for ``classification`` and
``regression`` (``num_labels`` outputs; ``task.model_config()`` gives the config keywords) and
``AutoModelForQuestionAnswering`` for ``span``; ``task.auto_model_class()`` returns the class.

A task may take options (the columns of a generic data set, say): it then has an ``Options``
pydantic model and is constructed with the validated options, ``cls(options)``
(:func:`tamt_cli.registry.create_task`); its ``labels``/``num_labels`` may then be set per
instance, at the latest by ``load``, which comes before the model is built.

Task modules are imported by ``tamt plugins`` to report their status, so they import torch,
transformers, datasets, numpy and scikit-learn inside methods, never at module level.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from tamt_cli import hub
from tamt_cli.errors import UserError, did_you_mean, first_line

if TYPE_CHECKING:
    from datasets import Dataset

Head = Literal["classification", "regression", "span"]
HEADS: tuple[str, ...] = ("classification", "regression", "span")

#: Columns of an encoded dataset that go into the model; everything else is bookkeeping.
MODEL_INPUTS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
)

#: Metric values are percentages: ``metrics()`` multiplies every score by this.
METRIC_SCALE = 100.0


@dataclass(frozen=True)
class Defaults:
    """Fine-tuning hyper-parameters a task uses unless the user overrides them."""

    lr: float
    batch_size: int
    epochs: float
    max_length: int
    doc_stride: int | None = None  # span tasks: tokens shared by consecutive context windows
    eval_every: int = 50  # steps between dev evaluations (the reference code's cadence)


GLUE_DEFAULTS = Defaults(lr=2e-5, batch_size=32, epochs=3, max_length=128)
#: MNLI and QQP: the reference code evaluates every 500 steps on these large sets
LARGE_GLUE_DEFAULTS = Defaults(lr=2e-5, batch_size=32, epochs=3, max_length=128, eval_every=500)
SQUAD_DEFAULTS = Defaults(
    lr=3e-5, batch_size=16, epochs=2, max_length=384, doc_stride=128, eval_every=1000
)
#: at most this many dev evaluations per run: a larger run evaluates every ⌈steps / this⌉ steps
MAX_EVALUATIONS = 50


def eval_interval(given: int | None, default: int, steps: int) -> int:
    """Steps between dev evaluations: ``given``, else the task's cadence raised so that a run
    of ``steps`` steps evaluates at most :data:`MAX_EVALUATIONS` times."""
    if given is not None:
        return given
    return max(default, -(-steps // MAX_EVALUATIONS))


@runtime_checkable
class Task(Protocol):
    """A downstream task: raw examples → model features → metrics (see the module docs)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    head: ClassVar[Head]
    num_labels: int  # a task with options may set these two per instance
    labels: tuple[str, ...]
    metric_names: ClassVar[tuple[str, ...]]
    main_metric: ClassVar[str]
    defaults: ClassVar[Defaults]
    train_split: ClassVar[str]
    eval_splits: ClassVar[tuple[str, ...]]

    def splits(self, split: str | None = None) -> tuple[str, ...]: ...

    def load(self, split: str, data_dir: str | Path | None = None) -> Dataset: ...

    def encode(
        self,
        raw: Dataset,
        tokenizer: Any,
        max_length: int | None = None,
        doc_stride: int | None = None,
        train: bool = False,
    ) -> Dataset: ...

    def metrics(self, raw: Dataset, encoded: Dataset, predictions: Any) -> dict[str, float]: ...


class TaskBase:
    """Shared behaviour of the built-in tasks: split names, data folders, hub loading."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    head: ClassVar[Head] = "classification"
    num_labels: int = 2  # a task with options may set these two per instance
    labels: tuple[str, ...] = ()
    metric_names: ClassVar[tuple[str, ...]] = ()
    main_metric: ClassVar[str] = ""
    defaults: ClassVar[Defaults] = GLUE_DEFAULTS
    train_split: ClassVar[str] = "train"
    eval_splits: ClassVar[tuple[str, ...]] = ("validation",)
    #: sub-folder names under which a data dir may hold this task's files (e.g. GLUE's "SST-2")
    folders: ClassVar[tuple[str, ...]] = ()
    #: part of the key of cached features: bump it when what ``encode`` makes changes
    encoding_version: ClassVar[int] = 1

    # -- splits -------------------------------------------------------------------------------

    _ALIASES: ClassVar[dict[str, str]] = {
        "dev": "validation",
        "dev_matched": "validation_matched",
        "matched": "validation_matched",
        "dev_mismatched": "validation_mismatched",
        "mismatched": "validation_mismatched",
    }

    def all_splits(self) -> tuple[str, ...]:
        return (self.train_split, *self.eval_splits)

    def splits(self, split: str | None = None) -> tuple[str, ...]:
        """The splits to load for ``split`` as the user gave it (``None``: every eval split)."""
        if split is None:
            return self.eval_splits
        word = split.strip().lower()
        word = self._ALIASES.get(word, word)
        if word in self.all_splits():
            return (word,)
        if word == "validation":  # MNLI: both dev sets
            return self.eval_splits
        choices = self.all_splits()
        raise UserError(
            f"task '{self.name}' has no split '{split}'{did_you_mean(word, choices) or ';'} "
            f"splits: {', '.join(choices)}"
        )

    def split(self, split: str) -> str:
        """The one canonical split name for ``split``; ambiguous names are an error."""
        found = self.splits(split)
        if len(found) != 1:
            raise UserError(
                f"task '{self.name}' has several '{split}' splits: {', '.join(found)}; "
                "name one of them"
            )
        return found[0]

    # -- local data ---------------------------------------------------------------------------

    def data_folder(self, data_dir: str | Path, wanted: tuple[str, ...]) -> Path:
        """The folder holding the task's files: ``data_dir`` itself, or a known sub-folder
        (``glue_data/SST-2`` when given ``glue_data``), whichever has any of ``wanted``."""
        root = Path(data_dir).expanduser()
        if not root.exists():
            raise UserError(f"data dir '{data_dir}' does not exist")
        if not root.is_dir():
            raise UserError(f"data dir '{data_dir}' is not a folder")
        for folder in (root, *(root / sub for sub in self.folders)):
            if folder.is_dir() and any((folder / name).is_file() for name in wanted):
                return folder
        return root

    def find_file(self, data_dir: str | Path, split: str, candidates: tuple[str, ...]) -> Path:
        """The first of ``candidates`` present for ``split``, or a one-line error listing them."""
        folder = self.data_folder(data_dir, candidates)
        for name in candidates:
            if (folder / name).is_file():
                return folder / name
        expected = ", ".join(candidates)
        raise UserError(
            f"data dir '{data_dir}' has no {split} data for task '{self.name}': "
            f"expected one of {expected}"
        )

    # -- encoding -----------------------------------------------------------------------------

    def check_columns(self, raw: Dataset, columns: Sequence[str]) -> None:
        """A one-line error naming those of ``columns`` that the examples ``raw`` lack."""
        missing = [c for c in columns if c not in raw.column_names]
        if missing:
            raise UserError(
                f"task '{self.name}' needs column(s) {', '.join(missing)} in its examples; "
                f"found {', '.join(raw.column_names)}"
            )

    # -- models -------------------------------------------------------------------------------

    def model_config(self) -> dict[str, Any]:
        """Keyword arguments for the model config (``num_labels``, label names, problem type)."""
        if self.head == "span":
            return {}
        if self.head == "regression":
            return {"num_labels": 1, "problem_type": "regression"}
        return {
            "num_labels": self.num_labels,
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
            "problem_type": "single_label_classification",
        }

    def auto_model_class(self) -> Any:
        """``AutoModelForSequenceClassification`` or ``AutoModelForQuestionAnswering``."""
        import transformers

        if self.head == "span":
            return transformers.AutoModelForQuestionAnswering
        return transformers.AutoModelForSequenceClassification


def model_inputs(encoded: Dataset) -> Dataset:
    """``encoded`` with only the columns a model takes (drops ``example_id``,
    ``offset_mapping``, ...)."""
    keep = [c for c in MODEL_INPUTS if c in encoded.column_names]
    return encoded.select_columns(keep)


def check_task(obj: Any) -> str:
    """Validate a loaded ``tamt.tasks`` entry point against the protocol; return its summary."""
    if not isinstance(obj, type):
        raise TypeError(f"{obj!r} is not a class")
    for method in ("load", "encode", "metrics", "splits"):
        if not callable(getattr(obj, method, None)):
            raise TypeError(f"{obj.__name__} has no {method}() method")
    head = getattr(obj, "head", None)
    if head not in HEADS:
        raise TypeError(f"{obj.__name__}.head is {head!r}, not one of {', '.join(HEADS)}")
    if not isinstance(getattr(obj, "defaults", None), Defaults):
        raise TypeError(f"{obj.__name__}.defaults is not a tamt_cli.tasks.base.Defaults")
    metric_names = tuple(getattr(obj, "metric_names", ()) or ())
    if getattr(obj, "main_metric", None) not in metric_names:
        raise TypeError(f"{obj.__name__}.main_metric is not one of its metric_names")
    num_labels = getattr(obj, "num_labels", None)
    configurable = getattr(obj, "Options", None) is not None  # labels may come with options
    if (
        head == "classification"
        and not configurable
        and len(getattr(obj, "labels", ())) != num_labels
    ):
        raise TypeError(f"{obj.__name__}.labels does not name its {num_labels} labels")
    if not tuple(getattr(obj, "eval_splits", ()) or ()):
        raise TypeError(f"{obj.__name__}.eval_splits is empty")
    return str(getattr(obj, "summary", "") or "")


# -- the hub --------------------------------------------------------------------------------


def load_hub(path: str, name: str | None, split: str, task: str) -> Dataset:
    """``datasets.load_dataset(path, name, split=split)``; when the hub is unreachable only its
    local cache is tried, so an offline machine fails at once with a one-line error."""
    import datasets

    offline = not hub.usable()
    source = f"{path}" + (f" ({name})" if name else "")
    context = hub.cache_only() if offline else contextlib.nullcontext()
    try:
        with context:
            data = datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # the hub raises many kinds of errors; all mean the same here
        reason = (
            "not in the local cache and the Hugging Face hub is unreachable"
            if offline
            else first_line(exc)
        )
        raise UserError(
            f"cannot load {split} data of task '{task}' from {source}: {reason}; "
            "pass --data-dir with local files"
        ) from None
    return data
