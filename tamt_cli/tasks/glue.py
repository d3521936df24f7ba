"""The GLUE tasks: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE and WNLI.

Without a data dir the examples come from the hub (``nyu-mll/glue``). With one, the task reads
GLUE's original files — ``train.tsv`` and ``dev.tsv`` (MNLI: ``dev_matched.tsv`` and
``dev_mismatched.tsv``) in the layouts of the GLUE distribution — or generic
``{train,validation}.{jsonl,json,csv}`` files with the hub's column names (MNLI:
``validation_matched.*``, ``validation_mismatched.*``). The data dir may be the task's folder
(``glue_data/SST-2``) or the folder above it (``glue_data``).

Raw examples have the hub's columns: the task's text columns, ``label`` (a ``ClassLabel`` with
the hub's label order; STS-B: a float similarity score in [0, 5]) and ``idx``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tamt_cli.errors import UserError
from tamt_cli.tasks.base import GLUE_DEFAULTS, LARGE_GLUE_DEFAULTS, Head, TaskBase, load_hub
from tamt_cli.tasks.files import (
    RECORD_SUFFIXES,
    Unreadable,
    convert,
    load_records,
    load_tsv,
    read_records,
    read_tsv,
    unreadable,
    where,
)
from tamt_cli.tasks.metrics import class_predictions, glue_scores, regression_predictions

if TYPE_CHECKING:
    from datasets import Dataset, Features

HUB_PATH = "nyu-mll/glue"


@dataclass(frozen=True)
class TsvLayout:
    """Where a GLUE TSV keeps the text and label of each example.

    ``columns`` is the header row of GLUE's file (informational; only ``fields`` and ``label``
    are required to be in it), or ``None`` for header-less files (CoLA), whose ``fields`` and
    ``label`` are column indices and whose lines all have ``width`` fields."""

    fields: dict[str, str | int]  # hub column -> TSV column name (index when header-less)
    label: str | int
    columns: tuple[str, ...] | None = None
    width: int | None = None
    names: tuple[str, ...] = field(default=())  # header-less: what each column holds


class GlueTask(TaskBase):
    """A GLUE sentence or sentence-pair task; subclasses set the class attributes."""

    hub_name: ClassVar[str]
    hub_path: ClassVar[str] = HUB_PATH
    text_columns: ClassVar[tuple[str, ...]]
    tsv: ClassVar[TsvLayout]
    tsv_files: ClassVar[dict[str, str]] = {"train": "train.tsv", "validation": "dev.tsv"}
    defaults = GLUE_DEFAULTS
    score_range: ClassVar[tuple[float, float]] = (0.0, 5.0)  # regression labels

    # -- loading ------------------------------------------------------------------------------

    def load(self, split: str, data_dir: str | Path | None = None) -> Dataset:
        """Raw examples of ``split`` from the hub (``data_dir=None``) or from local files."""
        split = self.split(split)
        if data_dir is None:
            return load_hub(HUB_PATH, self.hub_name, split, self.name)
        candidates = (self.tsv_files[split], *(f"{split}{suffix}" for suffix in RECORD_SUFFIXES))
        path = self.find_file(data_dir, split, candidates)
        tsv = path.suffix.lower() == ".tsv"
        try:
            return self._read_tsv(path) if tsv else self._read_records(path)
        except Unreadable as exc:
            unreadable(path, exc)
        # read again line by line: the first problem is a one-line error naming its line
        rows = self._from_tsv(path) if tsv else self._from_records(path)
        if not rows:
            raise UserError(f"{path}: no examples")
        from datasets import Dataset

        return Dataset.from_list(rows, features=self.features())

    def features(self) -> Features:
        """The ``datasets.Features`` of raw examples (as on the hub)."""
        from datasets import ClassLabel, Features, Value

        columns: dict[str, Any] = {name: Value("string") for name in self.text_columns}
        columns["label"] = (
            Value("float32") if self.head == "regression" else ClassLabel(names=list(self.labels))
        )
        columns["idx"] = Value("int32")
        return Features(columns)

    def _read_tsv(self, path: Path) -> Dataset:
        """A GLUE TSV through ``datasets``; :class:`Unreadable` at the first problem."""
        layout = self.tsv
        table = load_tsv(path, layout.width if layout.columns is None else None)
        if layout.columns is None:
            column: dict[str | int, str] = {i: str(i) for i in range(layout.width or 0)}
        else:
            column = {name.strip(): name for name in table.names}
            if any(c not in column for c in (*layout.fields.values(), layout.label)):
                raise Unreadable("the header lacks a column")
        fields = {name: column[c] for name, c in layout.fields.items()}
        label = column[layout.label]
        return self._convert(table, fields, label, path, ("tsv", repr(layout)))

    def _read_records(self, path: Path) -> Dataset:
        """A record file through ``datasets``; :class:`Unreadable` at the first problem."""
        table = load_records(path)
        if any(c not in table.names for c in (*self.text_columns, "label")):
            raise Unreadable("a column is missing")
        fields = {name: name for name in self.text_columns}
        return self._convert(table, fields, "label", path, ("records",))

    def _convert(
        self, table: Any, fields: dict[str, str], label: str, path: Path, key: tuple[Any, ...]
    ) -> Dataset:
        """Raw examples from the rows of ``table``: text from the columns ``fields`` (hub
        column -> file column), the label from ``label``. A blank line (its label is empty)
        raises :class:`Unreadable` like any other problem: the line by line reading skips it."""
        seen = 0
        labels: dict[tuple[type, Any], int | float] = {}

        def label_of(value: Any) -> int | float:
            try:
                return labels[type(value), value]
            except (KeyError, TypeError):  # not seen yet, or a JSON list or object
                result = self._label(value, path, 0)
                with contextlib.suppress(TypeError):
                    labels[type(value), value] = result
                return result

        def examples(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            nonlocal seen
            out = {name: batch[column] for name, column in fields.items()}
            for column in fields.values():
                if not all(isinstance(value, str) for value in batch[column]):
                    raise Unreadable(f"column '{column}' holds a value that is not text")
            out["label"] = [label_of(value) for value in batch[label]]
            out["idx"] = list(range(seen, seen + len(out["label"])))
            seen += len(out["label"])
            return out

        task_key = (type(self).__module__, type(self).__qualname__, self.labels, self.score_range)
        columns = [*fields.values(), label]
        return convert(table, examples, self.features(), (*task_key, *key, fields, label), columns)

    def _from_tsv(self, path: Path) -> list[dict[str, Any]]:
        layout = self.tsv
        lines = read_tsv(path)
        if layout.columns is None:
            index: dict[str | int, int] = {i: i for i in range(layout.width or 0)}
            width = layout.width or 0
            expected = ", ".join(layout.names)
        else:
            first = next(lines, None)
            if first is None:
                raise UserError(f"{path}: empty file (expected a header row)")
            _, header = first
            header = [h.strip() for h in header]
            wanted = [*layout.fields.values(), layout.label]
            missing = [str(c) for c in wanted if c not in header]
            if missing:
                raise UserError(
                    f"{where(path, first[0])}: header lacks column(s) {', '.join(missing)}; "
                    f"expected GLUE's {self.name} layout: {self._layout()}"
                )
            index = {name: header.index(name) for name in header}
            width = len(header)
            expected = "as in the header"
        rows: list[dict[str, Any]] = []
        for line, cells in lines:
            if len(cells) != width:
                raise UserError(
                    f"{where(path, line)}: expected {width} tab-separated fields ({expected}), "
                    f"found {len(cells)}; GLUE's {self.name} layout: {self._layout()}"
                )
            row: dict[str, Any] = {
                name: cells[index[column]] for name, column in layout.fields.items()
            }
            row["label"] = self._label(cells[index[layout.label]], path, line)
            row["idx"] = len(rows)
            rows.append(row)
        return rows

    def _layout(self) -> str:
        layout = self.tsv
        if layout.columns is None:
            return f"no header, {layout.width} columns ({', '.join(layout.names)})"
        return "header " + "<TAB>".join(layout.columns)

    def _from_records(self, path: Path) -> list[dict[str, Any]]:
        wanted = (*self.text_columns, "label")
        rows: list[dict[str, Any]] = []
        for loc, record in read_records(path):
            missing = [c for c in wanted if c not in record]
            if missing:
                raise UserError(
                    f"{where(path, loc)}: missing column(s) {', '.join(missing)}; "
                    f"expected {', '.join(wanted)} (the hub's {self.name} columns)"
                )
            row: dict[str, Any] = {}
            for name in self.text_columns:
                value = record[name]
                if not isinstance(value, str):
                    raise UserError(
                        f"{where(path, loc)}: column '{name}' must be text, "
                        f"found {type(value).__name__}"
                    )
                row[name] = value
            row["label"] = self._label(record["label"], path, loc)
            row["idx"] = len(rows)
            rows.append(row)
        return rows

    def _label(self, value: Any, path: Path, loc: int | str) -> int | float:
        """A label as the hub stores it: class index, or STS-B's float score."""
        if self.head == "regression":
            low, high = self.score_range
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = float("nan")
            if isinstance(value, bool) or not low <= score <= high:
                raise UserError(
                    f"{where(path, loc)}: label {value!r} is not a similarity score "
                    f"from {low:g} to {high:g}"
                )
            return score
        names = self.labels
        index: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            index = value
        elif isinstance(value, float) and value.is_integer():
            index = int(value)
        elif isinstance(value, str):
            text = value.strip()
            if text in names:
                index = names.index(text)
            elif text.isdigit():
                index = int(text)
        if index is None or not 0 <= index < len(names):
            choices = ", ".join(f"{i}={n}" for i, n in enumerate(names))
            raise UserError(
                f"{where(path, loc)}: label {value!r} is not in {self.name}'s label set ({choices})"
            )
        return index

    # -- encoding -----------------------------------------------------------------------------

    def encode(
        self,
        raw: Dataset,
        tokenizer: Any,
        max_length: int | None = None,
        doc_stride: int | None = None,
        train: bool = False,
    ) -> Dataset:
        """Token ids of each example (truncated to ``max_length``, not padded) and ``labels``.

        ``doc_stride`` and ``train`` do not matter for GLUE: every example is one feature and
        keeps its label, so dev features also give a dev loss."""
        from datasets import Features, List, Value

        max_length = max_length or self.defaults.max_length
        self.check_columns(raw, self.text_columns)
        labelled = "label" in raw.column_names and self._labelled(raw)
        sample = tokenizer(*(["a"] for _ in self.text_columns))
        columns: dict[str, Any] = {key: List(Value("int32")) for key in sample}
        if labelled:
            columns["labels"] = Value("float32" if self.head == "regression" else "int64")
        text_columns = self.text_columns

        def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
            encoding = tokenizer(
                *(batch[c] for c in text_columns), truncation=True, max_length=max_length
            )
            out = {key: encoding[key] for key in sample}
            if labelled:
                out["labels"] = batch["label"]
            return out

        return raw.map(
            tokenize,
            batched=True,
            remove_columns=raw.column_names,
            features=Features(columns),
            desc=f"Tokenizing {self.name}",
        )

    def _labelled(self, raw: Dataset) -> bool:
        if self.head == "regression":
            return True
        return min(raw["label"], default=0) >= 0  # the hub's test splits say -1

    # -- metrics ------------------------------------------------------------------------------

    def metrics(
        self, raw: Dataset | None, encoded: Dataset | None, predictions: Any
    ) -> dict[str, float]:
        """``metric_names`` of the predictions against the gold labels, in percent.

        Gold labels come from ``encoded["labels"]`` (else ``raw["label"]``), in the same order
        as ``predictions``."""
        if encoded is not None and "labels" in encoded.column_names:
            gold = encoded["labels"]
        elif raw is not None and "label" in raw.column_names:
            gold = raw["label"]
        else:
            raise UserError(f"no gold labels to score task '{self.name}' against")
        gold = list(gold)
        if self.head == "regression":
            preds = regression_predictions(predictions)
        else:
            if min(gold, default=0) < 0:
                raise UserError(f"this {self.name} split has no gold labels (label -1)")
            preds = class_predictions(predictions, self.num_labels)
        return glue_scores(self.metric_names, preds, gold)


class CoLA(GlueTask):
    """GLUE CoLA: grammatical acceptability of a sentence (Matthews correlation)."""

    name = "cola"
    summary = "GLUE CoLA: grammatical acceptability (Matthews corr.)"
    hub_name = "cola"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("unacceptable", "acceptable")
    metric_names = ("matthews_correlation",)
    main_metric = "matthews_correlation"
    text_columns = ("sentence",)
    folders = ("CoLA",)
    tsv = TsvLayout(
        fields={"sentence": 3},
        label=1,
        width=4,
        names=("source", "label", "original label mark", "sentence"),
    )


class SST2(GlueTask):
    """GLUE SST-2: binary sentiment of a movie-review sentence (accuracy)."""

    name = "sst2"
    summary = "GLUE SST-2: sentence sentiment (accuracy)"
    hub_name = "sst2"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("negative", "positive")
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    text_columns = ("sentence",)
    folders = ("SST-2",)
    tsv = TsvLayout(fields={"sentence": "sentence"}, label="label", columns=("sentence", "label"))


class MRPC(GlueTask):
    """GLUE MRPC: whether two news sentences are paraphrases (accuracy and F1; F1 selects)."""

    name = "mrpc"
    summary = "GLUE MRPC: paraphrase detection (accuracy and F1)"
    hub_name = "mrpc"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("not_equivalent", "equivalent")
    metric_names = ("accuracy", "f1")
    main_metric = "f1"
    text_columns = ("sentence1", "sentence2")
    folders = ("MRPC",)
    tsv = TsvLayout(
        fields={"sentence1": "#1 String", "sentence2": "#2 String"},
        label="Quality",
        columns=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
    )


class STSB(GlueTask):
    """GLUE STS-B: similarity score 0-5 of a sentence pair (Pearson; also Spearman)."""

    name = "stsb"
    summary = "GLUE STS-B: semantic similarity regression (Pearson and Spearman)"
    hub_name = "stsb"
    head: ClassVar[Head] = "regression"
    num_labels = 1
    labels = ()
    metric_names = ("pearson", "spearmanr")
    main_metric = "pearson"
    text_columns = ("sentence1", "sentence2")
    folders = ("STS-B",)
    tsv = TsvLayout(
        fields={"sentence1": "sentence1", "sentence2": "sentence2"},
        label="score",
        columns=(
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ),
    )


class QQP(GlueTask):
    """GLUE QQP: whether two Quora questions are duplicates (accuracy and F1; accuracy selects)."""

    name = "qqp"
    summary = "GLUE QQP: duplicate questions (accuracy and F1)"
    hub_name = "qqp"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("not_duplicate", "duplicate")
    metric_names = ("accuracy", "f1")
    main_metric = "accuracy"
    text_columns = ("question1", "question2")
    folders = ("QQP",)
    defaults = LARGE_GLUE_DEFAULTS
    tsv = TsvLayout(
        fields={"question1": "question1", "question2": "question2"},
        label="is_duplicate",
        columns=("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
    )


class MNLI(GlueTask):
    """GLUE MNLI: entailment, neutral or contradiction; matched and mismatched dev sets are
    separate eval splits, each scored on its own (accuracy; matched selects)."""

    name = "mnli"
    summary = "GLUE MNLI: NLI, matched and mismatched accuracy reported separately"
    hub_name = "mnli"
    head: ClassVar[Head] = "classification"
    num_labels = 3
    labels = ("entailment", "neutral", "contradiction")
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    defaults = LARGE_GLUE_DEFAULTS
    text_columns = ("premise", "hypothesis")
    eval_splits = ("validation_matched", "validation_mismatched")
    folders = ("MNLI",)
    tsv_files: ClassVar[dict[str, str]] = {
        "train": "train.tsv",
        "validation_matched": "dev_matched.tsv",
        "validation_mismatched": "dev_mismatched.tsv",
    }
    # train.tsv has label1 before gold_label, the dev files label1..label5: found by name.
    tsv = TsvLayout(
        fields={"premise": "sentence1", "hypothesis": "sentence2"},
        label="gold_label",
        columns=(
            "index",
            "promptID",
            "pairID",
            "genre",
            "sentence1_binary_parse",
            "sentence2_binary_parse",
            "sentence1_parse",
            "sentence2_parse",
            "sentence1",
            "sentence2",
            "label1",
            "...",
            "gold_label",
        ),
    )


class QNLI(GlueTask):
    """GLUE QNLI: whether a sentence answers a question (accuracy)."""

    name = "qnli"
    summary = "GLUE QNLI: question-answer entailment (accuracy)"
    hub_name = "qnli"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("entailment", "not_entailment")
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    text_columns = ("question", "sentence")
    folders = ("QNLI",)
    tsv = TsvLayout(
        fields={"question": "question", "sentence": "sentence"},
        label="label",
        columns=("index", "question", "sentence", "label"),
    )


class RTE(GlueTask):
    """GLUE RTE: textual entailment (accuracy)."""

    name = "rte"
    summary = "GLUE RTE: textual entailment (accuracy)"
    hub_name = "rte"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("entailment", "not_entailment")
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    text_columns = ("sentence1", "sentence2")
    folders = ("RTE",)
    tsv = TsvLayout(
        fields={"sentence1": "sentence1", "sentence2": "sentence2"},
        label="label",
        columns=("index", "sentence1", "sentence2", "label"),
    )


class WNLI(GlueTask):
    """GLUE WNLI: Winograd-schema entailment (accuracy)."""

    name = "wnli"
    summary = "GLUE WNLI: Winograd entailment (accuracy)"
    hub_name = "wnli"
    head: ClassVar[Head] = "classification"
    num_labels = 2
    labels = ("not_entailment", "entailment")
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    text_columns = ("sentence1", "sentence2")
    folders = ("WNLI",)
    tsv = TsvLayout(
        fields={"sentence1": "sentence1", "sentence2": "sentence2"},
        label="label",
        columns=("index", "sentence1", "sentence2", "label"),
    )


GLUE_TASKS: tuple[type[GlueTask], ...] = (CoLA, SST2, MRPC, STSB, QQP, MNLI, QNLI, RTE, WNLI)
