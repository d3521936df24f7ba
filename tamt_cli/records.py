"""The files tamt writes and reads back, as pydantic models: run manifests, a fine-tuning run's
summary, a seed's metrics, a checkpoint's state, a sweep's index, held-out losses (what
``tamt eval --objective --json`` prints), a run's saved spec and the lines of its metrics log.

Every such file is read through :func:`load` (or checked through :func:`check` once parsed): a
file that cannot be read, is not JSON (YAML for a spec) or has the wrong shape is a one-line
:class:`~tamt_cli.errors.UserError` naming the file and the field. The models type the fields
tamt reads and keep every other one as it is (older and newer versions of tamt write fields
this one does not know); a field that may be absent has a default, and :func:`as_dict` gives
back only the fields the file holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tamt_cli.errors import UserError


class Record(BaseModel):
    """A file (or part of one) tamt wrote: the fields tamt reads, typed (strictly: a number
    is no string, a flag no number); any others kept."""

    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())
    #: what the file is, as messages name it
    about: ClassVar[str] = "a tamt file"

    def missing(self) -> str | None:
        """A field the record lacks that what else it holds needs (None: it lacks none)."""
        return None


R = TypeVar("R", bound=Record)


# -- the parts ----------------------------------------------------------------------------


class Evaluation(Record):
    """One evaluation of a fine-tuned seed: its step and the metrics per eval split."""

    step: int
    metrics: dict[str, dict[str, Any]]
    epoch: float | None = None


class SeedRecord(Record):
    """What one seed of a fine-tuning run did (a run manifest's ``completed``, a summary's
    ``runs``)."""

    seed: int
    folder: str | None = None
    steps: int | None = None
    seconds: float | None = None
    best: Evaluation | None = None
    final: Evaluation | None = None


class MaskEntry(Record):
    """A mask a run keeps: its file (relative to the run), target and achieved sparsity, the
    step it was saved at, and whether it is the final one."""

    file: str
    sparsity: float | None = None
    achieved: float | None = None
    step: int | None = None
    final: bool | None = None


class MatrixReport(Record):
    name: str
    kind: str
    layer: int | None
    shape: list[int]
    numel: int
    pruned: int
    sparsity: float
    target: float | None


class Counts(Record):
    numel: int | None = None
    pruned: int | None = None
    sparsity: float | None = None


class SparsityReport(Record):
    """Pruned weights overall, per kind of matrix and per matrix."""

    overall: Counts
    kinds: dict[str, Counts] = Field(default_factory=dict)
    matrices: list[MatrixReport]
    not_prunable: dict[str, str] | None = None


class BaseModelRecord(Record):
    """The pre-trained model a mask was found on: what was given and the hash of its weights."""

    id: str
    weights_sha256: str | None = None
    location: str | None = None
    local: bool | None = None


class HeldOutSplit(Record):
    corpus: str
    fraction: float | None = None
    held_out_sha256: str | None = None


class SearchNotes(Record):
    objective: str | None = None
    steps: int | None = None
    steps_per_round: int | None = None
    max_length: int | None = None
    held_out_split: HeldOutSplit | None = None


class Link(Record):
    """What a fine-tuned model came from (a fine-tuning manifest's ``subnetwork``)."""

    kind: str | None = None
    method: str | None = None
    label: str | None = None
    sparsity: float | None = None
    path: str | None = None
    mask_sparsity: float | None = None


class Hyperparameters(Record):
    max_length: int | None = None
    doc_stride: int | None = None
    eval_batch_size: int | None = None


# -- run manifests ------------------------------------------------------------------------


class Manifest(Record):
    """``manifest.json`` of a run of any kind (and of one this tamt does not know)."""

    about: ClassVar[str] = "a tamt run manifest"

    tamt_version: str
    kind: str | None = None
    status: str | None = None
    created: str | None = None
    seconds: float | None = None
    method: str | None = None
    label: str | None = None
    seed: int | None = None
    sparsity: float | None = None
    inputs: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None


class SearchManifest(Manifest):
    """A search run's manifest, or an exported subnetwork's (kind ``subnetwork``)."""

    model: BaseModelRecord | None = None  # there from the start: a mask needs it
    masks: list[MaskEntry] = Field(default_factory=list)
    sparsity_report: SparsityReport | None = None
    notes: SearchNotes | None = None
    pattern: str | None = None
    scope: str | None = None
    embeddings: bool = True
    pooler: bool = True
    omp_kept_jaccard: float | None = None
    # an export's
    source_run: str | None = None
    source_mask: MaskEntry | None = None
    format: str | None = None
    search_corpus: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    commands: list[str] | None = None

    def missing(self) -> str | None:
        return "model" if self.masks and self.model is None else None


class FinetuneManifest(Manifest):
    """A fine-tuning run's manifest (``members``: its seeds' folders), or one seed's."""

    task: str | None = None
    task_options: dict[str, Any] | None = None
    seeds: list[int] | None = None
    members: list[str] | None = None
    completed: list[SeedRecord] | None = None
    subnetwork: Link | None = None
    hyperparameters: Hyperparameters | None = None
    data: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    best: Evaluation | None = None
    final: Evaluation | None = None
    notes: list[str] | None = None


#: the manifest of each kind of run; another kind's is a :class:`Manifest`
MANIFESTS: dict[str, type[Manifest]] = {
    "search": SearchManifest,
    "subnetwork": SearchManifest,
    "finetune": FinetuneManifest,
}


def manifest_model(data: Any) -> type[Manifest]:
    """The model of the manifest ``data`` (parsed JSON), by its ``kind``."""
    kind = data.get("kind") if isinstance(data, dict) else None
    return MANIFESTS.get(kind, Manifest) if isinstance(kind, str) else Manifest


# -- the other files of runs and sweeps ---------------------------------------------------------


class Summary(Record):
    """``summary.json`` of a fine-tuning run: every seed's record and the scores over seeds."""

    about: ClassVar[str] = "a tamt fine-tuning summary"

    task: str | None = None
    selected_by: str | None = None
    seeds: list[int] | None = None
    mask_sparsity: float | None = None
    best: dict[str, dict[str, Any]] | None = None
    final: dict[str, dict[str, Any]] | None = None
    runs: list[SeedRecord] | None = None
    notes: list[str] | None = None


class SeedMetrics(Record):
    """``metrics.json`` of a fine-tuned seed: its best and final evaluations, and every one."""

    about: ClassVar[str] = "a tamt fine-tuned seed's metrics"

    task: str | None = None
    seed: int | None = None
    selected_by: str | None = None
    best: Evaluation | None = None
    final: Evaluation | None = None
    evaluations: list[Evaluation] | None = None


class CheckpointExtra(Record):
    """What a fine-tuning seed's checkpoint keeps besides the schedule."""

    running_loss: tuple[float, int] | None = Field(default=None, strict=False)  # a list in JSON
    evaluations: list[Evaluation] | None = None
    eval_seconds: float | None = None
    seconds: float | None = None


class CheckpointState(Record):
    """``state.json`` of a checkpoint: its step and the learning-rate schedule's state."""

    about: ClassVar[str] = "a tamt checkpoint's state"

    step: int
    scheduler: dict[str, Any]
    extra: CheckpointExtra | None = None


class HeldOut(Record):
    """A held-out pre-training loss: what ``tamt eval --objective --json`` prints and a sweep
    keeps as ``heldout-*.json``."""

    about: ClassVar[str] = "the output of tamt eval --objective --json"

    objective: str
    loss: float | None
    checkpoint: str | None = None
    mask_sparsity: float | None = None


class SweepCell(Record):
    """A cell of a sweep's index: its id (and path), status, error, time and spec."""

    id: str
    kind: str | None = None
    status: str | None = None
    error: str | None = None
    seconds: float | None = None
    spec: dict[str, Any] | None = None


class SweepIndex(Record):
    """``sweep.json``: every cell of a sweep."""

    about: ClassVar[str] = "a tamt sweep index"

    cells: list[SweepCell] = Field(default_factory=list)


class SavedSpec(Record):
    """A run's ``spec.yaml``, as the model card reads it."""

    about: ClassVar[str] = "a tamt run's spec"

    corpus: str | None = None


class LogRow(Record):
    """A line of a run's ``metrics.jsonl``."""

    about: ClassVar[str] = "a line of a tamt metrics log"

    step: int | None = None


# -- reading ------------------------------------------------------------------------------


def load(path: Path, record: type[R]) -> R:
    """The file ``path`` (YAML for ``.yaml``/``.yml``, else JSON) as a ``record``; one that
    cannot be read, is empty, does not parse or has the wrong shape is a
    :class:`~tamt_cli.errors.UserError` naming it (and the field)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"'{path}' is damaged: it is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise UserError(f"'{path}' cannot be read: {exc.strerror or exc}") from None
    if not text.strip():
        raise UserError(f"'{path}' is damaged: it is empty")
    return check(path, _parse(path, text), record)


def _parse(path: Path, text: str) -> Any:
    if Path(path).suffix in {".yaml", ".yml"}:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise UserError(f"'{path}' is damaged: it is not readable YAML{line}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"'{path}' is damaged: it is not readable JSON ({exc})") from None


def check(path: Path, data: Any, record: type[R], line: int | None = None) -> R:
    """``data``, parsed from the file ``path`` (its line ``line`` for a JSON-lines file), as a
    ``record``; the wrong shape is a :class:`~tamt_cli.errors.UserError` naming the file and
    the first field that is wrong."""
    where = f"'{path}'" if line is None else f"line {line} of '{path}'"
    try:
        checked = record.model_validate(data)
    except ValidationError as exc:
        problem = describe(exc.errors(include_url=False)[0])
        raise UserError(f"{where} is damaged or not {record.about}: {problem}") from None
    missing = checked.missing()
    if missing is not None:
        raise UserError(f"{where} is damaged or not {record.about}: field '{missing}' is missing")
    return checked


def as_dict(record: Record) -> dict[str, Any]:
    """``record`` as the JSON object it was read from: only the fields it holds (none of the
    defaults)."""
    return record.model_dump(exclude_unset=True)


#: what pydantic's error types ask for, in JSON's words
_SHOULD_BE = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}

#: the length of the longest field path a message shows whole
_LONGEST = 80


def describe(error: Any) -> str:
    """One pydantic error in a few words: the field (``runs.1.folder``), what it should be and
    what it is (``field 'runs.1' should be an object, not a string``)."""
    loc = ".".join(str(part) for part in error["loc"])
    if len(loc) > _LONGEST:
        loc = f"{loc[: _LONGEST // 2]}…{loc[-_LONGEST // 2 :]}"
    field = f"field '{loc}'" if loc else "it"
    if error["type"] == "missing":
        return f"{field} is missing"
    should = _SHOULD_BE.get(error["type"])
    if should is None:
        message = str(error["msg"])
        return f"{field}: {message[:1].lower()}{message[1:]}"
    return f"{field} should be {should}, not {json_type(error.get('input'))}"


def json_type(value: Any) -> str:
    """What ``value`` (parsed JSON or YAML) is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, words in ((dict, "an object"), (list, "a list"), (str, "a string"),
                        (int, "an integer"), (float, "a number")):  # fmt: skip
        if isinstance(value, kind):
            return words
    return type(value).__name__
