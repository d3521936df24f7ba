"""SQuAD v1.1 and v2.0: extractive question answering (exact match and F1).

Without a data dir the examples come from the hub (``rajpurkar/squad``,
``rajpurkar/squad_v2``). With one, the task reads the official files — ``train-v1.1.json`` and
``dev-v1.1.json`` (v2: ``train-v2.0.json``, ``dev-v2.0.json``) in their nested layout
``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers",
"is_impossible"}]}]}]}`` — or ``{train,validation}.{jsonl,json}`` files of flat records with the
hub's columns. Raw examples are flat: ``id``, ``title``, ``context``, ``question``,
``answers{text: [...], answer_start: [...]}`` (empty lists for a v2 question without answer).

Features follow the Hugging Face ``run_qa`` recipe: a fast tokenizer cuts each (question,
context) pair into windows of ``max_length`` tokens that overlap by ``doc_stride`` tokens
(``return_overflowing_tokens``; note that original BERT's ``doc_stride`` was the step between
windows, not their overlap). Post-processing takes, for every example, the best-scoring span
(start logit + end logit) over all its windows among the ``n_best`` best starts and ends, no
longer than ``max_answer_length`` tokens and inside the context; v2 answers ``""`` when the
best null score (start and end on CLS) beats it by more than ``null_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tamt_cli.errors import UserError, first_line
from tamt_cli.tasks.base import SQUAD_DEFAULTS, Head, TaskBase, load_hub
from tamt_cli.tasks.files import (
    Unreadable,
    convert,
    load_records,
    per_row,
    read_json,
    read_records,
    unreadable,
    where,
)
from tamt_cli.tasks.metrics import squad_scores

if TYPE_CHECKING:
    from datasets import Dataset, Features


class Squad(TaskBase):
    """SQuAD v1.1: the answer is always a span of the context (exact match and F1)."""

    name = "squad"
    summary = "SQuAD v1.1: extractive question answering (exact match and F1)"
    head: ClassVar[Head] = "span"
    num_labels = 2  # start and end logits
    labels = ()
    metric_names: ClassVar[tuple[str, ...]] = ("exact_match", "f1")
    main_metric = "f1"
    defaults = SQUAD_DEFAULTS
    folders = ("SQuAD", "squad")
    hub_path: ClassVar[str] = "rajpurkar/squad"
    files: ClassVar[dict[str, str]] = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}
    version_2: ClassVar[bool] = False
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0

    # -- loading ------------------------------------------------------------------------------

    def load(self, split: str, data_dir: str | Path | None = None) -> Dataset:
        """Flat raw examples of ``split`` from the hub (``data_dir=None``) or local files."""
        split = self.split(split)
        if data_dir is None:
            return load_hub(self.hub_path, None, split, self.name)
        candidates = (self.files[split], f"{split}.jsonl", f"{split}.json")
        path = self.find_file(data_dir, split, candidates)
        from datasets import Dataset

        if path.suffix.lower() == ".jsonl":
            try:
                examples = self._read_jsonl(path)
            except Unreadable as exc:
                unreadable(path, exc)
            else:
                self._unique_ids(path, examples["id"])
                return examples
        # the official files nest questions in paragraphs in articles, one JSON document that
        # datasets' json builder reads as a single row: they are read with the json module
        rows = self._read(path)
        if not rows:
            raise UserError(f"{path}: no examples")
        self._unique_ids(path, [row["id"] for row in rows])
        return Dataset.from_list(rows, features=self.features())

    def _unique_ids(self, path: Path, ids: Sequence[str]) -> None:
        seen: set[str] = set()
        for id_ in ids:
            if id_ in seen:
                raise UserError(f"{path}: question id '{id_}' occurs twice")
            seen.add(id_)

    def _read_jsonl(self, path: Path) -> Dataset:
        """Flat JSON-lines records through ``datasets``; :class:`Unreadable` at the first
        problem (:meth:`_read` then names its line)."""
        table = load_records(path)

        def example(record: dict[str, Any]) -> dict[str, Any]:
            if record.get("answers", []) is None:  # absent from this line, or null
                raise Unreadable("a record without answers")
            return self._flat(path, "record", record)

        task_key = (type(self).__module__, type(self).__qualname__, self.version_2)
        features = self.features()
        return convert(table, per_row(example, list(features)), features, task_key)

    def features(self) -> Features:
        from datasets import Features, List, Value

        return Features(
            {
                "id": Value("string"),
                "title": Value("string"),
                "context": Value("string"),
                "question": Value("string"),
                "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
            }
        )

    def _read(self, path: Path) -> list[dict[str, Any]]:
        if path.suffix.lower() == ".json":
            document = read_json(path)
            articles = document.get("data") if isinstance(document, dict) else None
            if isinstance(articles, list) and all(
                isinstance(a, dict) and "paragraphs" in a for a in articles
            ):
                return self._from_nested(path, articles)
            if isinstance(articles, list) or isinstance(document, list):
                records = articles if isinstance(articles, list) else document
                return [self._flat(path, f"record {n}", r) for n, r in enumerate(records or [], 1)]
            raise UserError(
                f'{path}: not SQuAD JSON; expected {{"data": [{{"title", "paragraphs": '
                f'[{{"context", "qas": [...]}}]}}]}} or a list of flat records'
            )
        return [self._flat(path, loc, record) for loc, record in read_records(path)]

    def _from_nested(self, path: Path, articles: list[Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for a, article in enumerate(articles, 1):
            title = article.get("title", "")
            paragraphs = article.get("paragraphs")
            if not isinstance(paragraphs, list):
                raise UserError(f"{where(path, f'article {a}')}: 'paragraphs' is not a list")
            for p, paragraph in enumerate(paragraphs, 1):
                loc = f"article {a}, paragraph {p}"
                if not isinstance(paragraph, dict):
                    raise UserError(f"{where(path, loc)}: expected a JSON object")
                context = paragraph.get("context")
                qas = paragraph.get("qas")
                if not isinstance(context, str) or not isinstance(qas, list):
                    raise UserError(
                        f"{where(path, loc)}: expected a text 'context' and a list 'qas'"
                    )
                for q, qa in enumerate(qas, 1):
                    qloc = f"{loc}, question {q}"
                    if not isinstance(qa, dict):
                        raise UserError(f"{where(path, qloc)}: expected a JSON object")
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    record = {
                        "id": qa.get("id"),
                        "title": title,
                        "context": context,
                        "question": qa.get("question"),
                        "answers": answers,
                    }
                    rows.append(self._flat(path, qloc, record))
        return rows

    def _flat(self, path: Path, loc: int | str, record: Any) -> dict[str, Any]:
        """One checked flat example; answers given as a list of ``{text, answer_start}`` or as
        the hub's ``{text: [...], answer_start: [...]}``."""
        if not isinstance(record, dict):
            raise UserError(f"{where(path, loc)}: expected a JSON object")
        for key, kinds in (("id", (str, int)), ("context", str), ("question", str)):
            value = record.get(key)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise UserError(
                    f"{where(path, loc)}: missing or non-text '{key}'; a SQuAD example needs "
                    "id, context, question and answers"
                )
        context = str(record["context"])
        answers = record.get("answers", [])
        if isinstance(answers, dict):
            texts, starts = answers.get("text"), answers.get("answer_start")
            if not isinstance(texts, list) or not isinstance(starts, list):
                texts, starts = None, None
        elif isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
            texts = [a.get("text") for a in answers]
            starts = [a.get("answer_start") for a in answers]
        else:
            texts, starts = None, None
        if texts is None or starts is None or len(texts) != len(starts):
            raise UserError(
                f"{where(path, loc)}: 'answers' must be a list of {{text, answer_start}} or "
                "{text: [...], answer_start: [...]} of equal length"
            )
        for text, start in zip(texts, starts, strict=True):
            if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
                raise UserError(
                    f"{where(path, loc)}: an answer needs a text 'text' and an integer "
                    f"'answer_start', found {text!r} at {start!r}"
                )
            if not 0 <= start <= len(context) - len(text):
                raise UserError(
                    f"{where(path, loc)}: answer {text!r} starts at {start}, outside the "
                    f"{len(context)}-character context"
                )
        if texts and not self.version_2 and not all(texts):
            raise UserError(f"{where(path, loc)}: empty answer text")
        return {
            "id": str(record["id"]),
            "title": str(record.get("title") or ""),
            "context": context,
            "question": str(record["question"]),
            "answers": {"text": list(texts), "answer_start": list(starts)},
        }

    # -- encoding -----------------------------------------------------------------------------

    def encode(
        self,
        raw: Dataset,
        tokenizer: Any,
        max_length: int | None = None,
        doc_stride: int | None = None,
        train: bool = False,
    ) -> Dataset:
        """Windows of (question, context) padded to ``max_length``; see the module docs.

        ``train=True``: ``start_positions``/``end_positions`` of the first gold answer (the
        CLS index where the window does not hold it) and ``example_index`` (the row of ``raw``
        the window was cut from). ``train=False``: ``example_id`` and
        ``offset_mapping`` (character span of each context token, ``None`` elsewhere)."""
        from datasets import Features

        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                f"task '{self.name}' needs a fast (Rust) tokenizer for offset mappings; "
                f"{type(tokenizer).__name__} is not one"
            )
        max_length = max_length or self.defaults.max_length
        stride = self.defaults.doc_stride if doc_stride is None else doc_stride
        stride = stride or 0
        if stride >= max_length:
            raise UserError(f"--doc-stride {stride} must be smaller than --max-length {max_length}")
        self.check_columns(raw, ("id", "context", "question", "answers"))
        windows = Windows.of(self.name, tokenizer, max_length, stride)
        return raw.map(
            windows.train_features if train else windows.eval_features,
            batched=True,
            with_indices=True,
            remove_columns=raw.column_names,
            features=Features(windows.columns(train)),
            desc=f"Tokenizing {self.name}",
        )

    # -- post-processing and metrics ----------------------------------------------------------

    def postprocess(self, raw: Dataset, encoded: Dataset, predictions: Any) -> dict[str, str]:
        """``{example id: predicted answer text}`` from ``(start_logits, end_logits)`` of the
        eval features ``encoded`` (made with ``train=False``), in feature order."""
        if "example_id" not in encoded.column_names or "offset_mapping" not in encoded.column_names:
            raise UserError(
                f"task '{self.name}': score eval features (encode with train=False), which "
                "keep example_id and offset_mapping"
            )
        start_logits, end_logits = span_logits(predictions)
        if len(start_logits) != len(encoded):
            raise UserError(
                f"{len(start_logits)} predictions for {len(encoded)} features of '{self.name}'"
            )
        return best_answers(
            raw["id"],
            raw["context"],
            encoded["example_id"],
            encoded["offset_mapping"],
            start_logits,
            end_logits,
            n_best=self.n_best,
            max_answer_length=self.max_answer_length,
            allow_null=self.version_2,
            null_threshold=self.null_threshold,
        )

    def metrics(self, raw: Dataset, encoded: Dataset, predictions: Any) -> dict[str, float]:
        """Exact match and F1 in percent (v2: also the has-answer/no-answer breakdown)."""
        answers = self.postprocess(raw, encoded, predictions)
        gold = {qid: a["text"] for qid, a in zip(raw["id"], raw["answers"], strict=True)}
        return squad_scores(answers, gold, v2=self.version_2)


class SquadV2(Squad):
    """SQuAD v2.0: v1.1 plus questions without an answer in the context."""

    name = "squad_v2"
    summary = "SQuAD v2.0: question answering with unanswerable questions (exact match and F1)"
    metric_names = (
        "exact_match",
        "f1",
        "has_ans_exact_match",
        "has_ans_f1",
        "no_ans_exact_match",
        "no_ans_f1",
    )
    main_metric = "f1"
    hub_path = "rajpurkar/squad_v2"
    files: ClassVar[dict[str, str]] = {"train": "train-v2.0.json", "validation": "dev-v2.0.json"}
    version_2 = True


@dataclass(frozen=True)
class Windows:
    """Cuts a batch of (question, context) pairs into windows of ``max_length`` tokens that
    overlap by ``stride`` tokens, padded to ``max_length`` (see the module docs)."""

    task: str  # the task's name, for errors
    tokenizer: Any  # a fast tokenizer
    max_length: int
    stride: int
    token_keys: list[str]  # what the tokenizer makes of a pair, offsets aside
    question_first: bool  # a tokenizer padding on the right: question, then context
    specials: int  # special tokens the tokenizer adds to a pair

    @classmethod
    def of(cls, task: str, tokenizer: Any, max_length: int, stride: int) -> Windows:
        return cls(
            task,
            tokenizer,
            max_length,
            stride,
            token_keys=[k for k in tokenizer("a", "b") if k != "offset_mapping"],
            question_first=tokenizer.padding_side == "right",
            specials=tokenizer.num_special_tokens_to_add(pair=True),
        )

    @property
    def context_seq(self) -> int:
        """The sequence id of the context's tokens."""
        return 1 if self.question_first else 0

    def columns(self, train: bool) -> dict[str, Any]:
        """The features' columns (see :meth:`train_features` and :meth:`eval_features`)."""
        from datasets import List, Value

        columns: dict[str, Any] = {key: List(Value("int32")) for key in self.token_keys}
        if train:
            columns["start_positions"] = Value("int64")
            columns["end_positions"] = Value("int64")
            columns["example_index"] = Value("int64")
        else:
            columns["example_id"] = Value("string")
            columns["offset_mapping"] = List(List(Value("int64")))
        return columns

    def train_features(self, batch: dict[str, list[Any]], rows: list[int]) -> dict[str, Any]:
        """Windows with the token positions of the first gold answer (the CLS index where the
        window does not hold it) and the row of the examples each was cut from."""
        encoding = self.cut(batch)
        samples = encoding["overflow_to_sample_mapping"]
        cls_id = self.tokenizer.cls_token_id
        starts: list[int] = []
        ends: list[int] = []
        for i, sample in enumerate(samples):
            input_ids = encoding["input_ids"][i]
            cls = input_ids.index(cls_id) if cls_id in input_ids else 0
            context_tokens = [
                t for t, seq_id in enumerate(encoding.sequence_ids(i)) if seq_id == self.context_seq
            ]
            offsets = encoding["offset_mapping"][i]
            start, end = answer_tokens(batch["answers"][sample], offsets, context_tokens)
            starts.append(cls if start is None else start)
            ends.append(cls if end is None else end)
        out: dict[str, Any] = {key: encoding[key] for key in self.token_keys}
        out["start_positions"], out["end_positions"] = starts, ends
        out["example_index"] = [rows[sample] for sample in samples]
        return out

    def eval_features(self, batch: dict[str, list[Any]], rows: list[int]) -> dict[str, Any]:
        """Windows with the id of the example each was cut from and the character span of each
        context token (``None`` elsewhere)."""
        encoding = self.cut(batch)
        example_ids: list[str] = []
        offset_maps: list[list[Any]] = []
        for i, sample in enumerate(encoding["overflow_to_sample_mapping"]):
            sequence_ids = encoding.sequence_ids(i)
            example_ids.append(batch["id"][sample])
            offset_maps.append(
                [
                    list(o) if sequence_ids[t] == self.context_seq else None
                    for t, o in enumerate(encoding["offset_mapping"][i])
                ]
            )
        out: dict[str, Any] = {key: encoding[key] for key in self.token_keys}
        out["example_id"], out["offset_mapping"] = example_ids, offset_maps
        return out

    def cut(self, batch: dict[str, list[Any]]) -> Any:
        """The tokenizer's windows of the batch, with offsets and the example of each."""
        questions = [q.lstrip() for q in batch["question"]]
        contexts = batch["context"]
        self._check_room(batch["id"], questions)
        first = self.question_first
        try:
            return self.tokenizer(
                questions if first else contexts,
                contexts if first else questions,
                truncation="only_second" if first else "only_first",
                max_length=self.max_length,
                stride=self.stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                padding="max_length",
            )
        except Exception as exc:  # the Rust tokenizer's truncation errors
            raise UserError(
                f"task '{self.task}': cannot fit a question and context window in "
                f"{self.max_length} tokens with doc stride {self.stride} ({first_line(exc)}); "
                "raise --max-length or lower --doc-stride"
            ) from None

    def _check_room(self, ids: list[Any], questions: list[str]) -> None:
        """Every question leaves more context tokens in a window than the stride (the Rust
        tokenizer would panic otherwise)."""
        lengths = self.tokenizer(questions, add_special_tokens=False)["input_ids"]
        for qid, tokens in zip(ids, lengths, strict=True):
            room = self.max_length - self.specials - len(tokens)
            if room <= self.stride:
                raise UserError(
                    f"task '{self.task}': question '{qid}' has {len(tokens)} tokens, leaving "
                    f"{max(room, 0)} context tokens per window of {self.max_length}, not more "
                    f"than the doc stride {self.stride}; raise --max-length or lower --doc-stride"
                )


def answer_tokens(
    answers: dict[str, list[Any]], offsets: Sequence[Sequence[int]], context_tokens: list[int]
) -> tuple[int | None, int | None]:
    """Token indices of the first gold answer inside this window, ``(None, None)`` if the
    window does not hold all of it (or there is no answer)."""
    if not answers["answer_start"] or not context_tokens:
        return None, None
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    first, last = context_tokens[0], context_tokens[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return None, None
    start = next((t for t in context_tokens if offsets[t][1] > start_char), None)
    end = next((t for t in reversed(context_tokens) if offsets[t][0] < end_char), None)
    if start is None or end is None or end < start:
        return None, None
    return start, end


def span_logits(predictions: Any) -> tuple[Any, Any]:
    """``(start_logits, end_logits)`` from a pair of arrays or one array ``[2, N, L]``."""
    import numpy as np

    if isinstance(predictions, (tuple, list)) and len(predictions) == 2:
        return np.asarray(predictions[0]), np.asarray(predictions[1])
    array = np.asarray(predictions)
    if array.ndim == 3 and array.shape[0] == 2:
        return array[0], array[1]
    raise UserError(
        "span predictions must be (start_logits, end_logits), each [features, sequence length]"
    )


def best_answers(
    ids: Sequence[str],
    contexts: Sequence[str],
    feature_example_ids: Sequence[str],
    feature_offsets: Sequence[Sequence[Any]],
    start_logits: Any,
    end_logits: Any,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """The best answer text per example over all its features (see the module docs).

    A span scores ``start_logits[s] + end_logits[e]`` with ``s <= e``, ``e - s + 1 <=
    max_answer_length``, both tokens inside the context and both among the ``n_best`` highest
    logits of their kind. With ``allow_null`` the answer is ``""`` when the lowest null score
    over the example's features (``start_logits[0] + end_logits[0]``, the CLS position) exceeds
    the best span score by more than ``null_threshold``; without it, ``""`` only when no span
    is valid."""
    import numpy as np

    index = {qid: i for i, qid in enumerate(ids)}
    by_example: list[list[int]] = [[] for _ in ids]
    for f, qid in enumerate(feature_example_ids):
        if qid in index:
            by_example[index[qid]].append(f)
    out: dict[str, str] = {}
    for i, qid in enumerate(ids):
        context = contexts[i]
        best_score, best_text = -np.inf, ""
        null_score = np.inf
        for f in by_example[i]:
            offsets = feature_offsets[f]
            length = min(len(offsets), len(start_logits[f]))
            starts = np.asarray(start_logits[f], dtype=np.float64)[:length]
            ends = np.asarray(end_logits[f], dtype=np.float64)[:length]
            if length:
                null_score = min(null_score, float(starts[0] + ends[0]))
            top_starts = np.argsort(-starts, kind="stable")[:n_best]
            top_ends = np.argsort(-ends, kind="stable")[:n_best]
            for start in top_starts:
                if offsets[start] is None:
                    continue
                for end in top_ends:
                    if offsets[end] is None or end < start or end - start + 1 > max_answer_length:
                        continue
                    score = float(starts[start] + ends[end])
                    if score > best_score:
                        best_score = score
                        best_text = context[offsets[start][0] : offsets[end][1]]
        if allow_null and (best_score == -np.inf or null_score - best_score > null_threshold):
            best_text = ""
        out[qid] = best_text
    return out
