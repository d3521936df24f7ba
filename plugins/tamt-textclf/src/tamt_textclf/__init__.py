"""``textclf``: sentence or sentence-pair classification from local CSV / JSON Lines files.

Built only on ``tamt_cli.api``; see the README for the options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tamt_cli.api import Defaults, TaskBase, UserError

__version__ = "0.1.0"

SUFFIXES = (".csv", ".jsonl", ".json")
SPLIT_FILES = {"train": ("train",), "validation": ("validation", "dev")}


class TextClfOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_column: str = Field(description="the column holding the text")
    text_pair_column: str | None = Field(None, description="a second text column (pairs)")
    label_column: str = Field("label", description="the column holding the label")
    labels: list[str] | None = Field(None, description="label names in order")

    @field_validator("labels", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class TextClassification(TaskBase):
    """Sentence or sentence-pair classification from local CSV/JSONL files."""

    tamt_api = 1
    name = "textclf"
    summary = "text classification from local CSV/JSONL files with named columns"
    head = "classification"
    num_labels = 0  # set per instance, from the options or the training file
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro")
    main_metric = "accuracy"
    defaults = Defaults(lr=2e-5, batch_size=32, epochs=3, max_length=128)
    Options = TextClfOptions

    def __init__(self, options: TextClfOptions) -> None:
        self.options = options
        self.labels = tuple(options.labels) if options.labels else ()
        self.num_labels = len(self.labels)

    # -- loading ------------------------------------------------------------------------------

    def load(self, split: str, data_dir: str | Path | None = None) -> Any:
        """Raw examples (``text``, optional ``text_pair``, ``label`` id) of one split."""
        split = self.split(split)
        if data_dir is None:
            raise UserError("task 'textclf' reads local files only: pass --data-dir")
        path = self._file(data_dir, split)
        rows = self._read(path)
        if not self.labels:  # the training file's labels, sorted, fix the label ids
            train = rows if split == "train" else self._read(self._file(data_dir, "train"))
            found = sorted({str(r[self.options.label_column]) for r in train})
            if len(found) < 2:
                raise UserError(f"{path}: fewer than two labels in '{self.options.label_column}'")
            self.labels = tuple(found)
            self.num_labels = len(found)
        ids = {label: i for i, label in enumerate(self.labels)}
        out = []
        for n, row in enumerate(rows, start=1):
            label = str(row[self.options.label_column])
            if label not in ids:
                raise UserError(
                    f"{path}: record {n} has label '{label}', not one of {', '.join(self.labels)}"
                )
            example = {"text": str(row[self.options.text_column]), "label": ids[label]}
            if self.options.text_pair_column:
                example["text_pair"] = str(row[self.options.text_pair_column])
            out.append(example)
        from datasets import Dataset

        return Dataset.from_list(out)

    def _file(self, data_dir: str | Path, split: str) -> Path:
        names = tuple(f"{stem}{suffix}" for stem in SPLIT_FILES[split] for suffix in SUFFIXES)
        return self.find_file(data_dir, split, names)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        import csv
        import json

        try:
            if path.suffix == ".csv":
                with path.open(newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
            elif path.suffix == ".jsonl":
                lines = path.read_text(encoding="utf-8").splitlines()
                rows = [json.loads(line) for line in lines if line.strip()]
            else:
                data = json.loads(path.read_text(encoding="utf-8"))
                rows = data if isinstance(data, list) else data.get("data", [])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
            raise UserError(f"{path}: unreadable ({exc})") from None
        if not rows:
            raise UserError(f"{path}: no records")
        wanted = [self.options.text_column, self.options.label_column]
        if self.options.text_pair_column:
            wanted.append(self.options.text_pair_column)
        columns = list(rows[0])
        for column in wanted:
            if column not in columns:
                raise UserError(
                    f"{path}: no column '{column}'; its columns are {', '.join(columns)}"
                )
        return rows

    # -- features and metrics -----------------------------------------------------------------

    def encode(
        self,
        raw: Any,
        tokenizer: Any,
        max_length: int | None = None,
        doc_stride: int | None = None,
        train: bool = False,
    ) -> Any:
        length = max_length or self.defaults.max_length
        pair = "text_pair" in raw.column_names

        def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
            enc = tokenizer(
                batch["text"],
                batch["text_pair"] if pair else None,
                truncation=True,
                max_length=length,
            )
            enc["labels"] = batch["label"]
            return dict(enc)

        return raw.map(tokenize, batched=True, remove_columns=raw.column_names)

    def metrics(self, raw: Any, encoded: Any, predictions: Any) -> dict[str, float]:
        import numpy as np
        from sklearn.metrics import accuracy_score, f1_score

        predicted = np.asarray(predictions).argmax(axis=-1)
        gold = np.asarray(raw["label"])
        return {
            "accuracy": 100.0 * float(accuracy_score(gold, predicted)),
            "f1_macro": 100.0
            * float(f1_score(gold, predicted, average="macro", labels=range(self.num_labels))),
        }
