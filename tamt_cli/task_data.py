"""Task data as model features: tokenised once per run, cached across runs; seeded subsets of
the training examples, batches of model inputs and the eval sets a model is scored on.

``tamt finetune`` tokenises its training examples once for all its seeds (with
``--train-size``, the examples any of the seeds draws) and every dev split once; ``tamt eval
--task`` tokenises the dev splits it scores. The features are cached under ``features/`` in
tamt's cache (:mod:`tamt_cli.cache`), one folder per set of features, written by
``datasets``' ``save_to_disk`` and read back memory-mapped with ``load_from_disk``::

    <cache>/features/<key>/
    ├── data-00000-of-00001.arrow, dataset_info.json, state.json    (datasets' own layout)
    └── tamt-features.json    what they are (task, split, rows, settings) and the SHA-256 of
                              every file above, checked on every read

``key`` is a SHA-256 of everything the features depend on: the examples (``datasets``'
fingerprint of the raw examples, which follows the content of the files they were read from,
and, for a subset, the rows chosen), the tokenizer (its full definition: vocabulary,
normalisation, special tokens, padding side), the settings (max length, doc stride, training
or dev features), the task (its class, the distribution and version that provide it, its
``encoding_version`` and options) and :data:`FORMAT_VERSION`. A change to any of them is a
miss. An entry is built under a temporary name and renamed into place when complete, so an
interrupted run leaves nothing that is later read; an entry that fails its check (a file
changed, missing or truncated) is removed and the features are tokenised again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tamt_cli import cache, corpora, verbosity
from tamt_cli.errors import UserError, first_line
from tamt_cli.tasks.base import MODEL_INPUTS

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

FORMAT = "tamt.features"
FORMAT_VERSION = "1"  # bump when what is stored, or how the key is made, changes
META_FILE = "tamt-features.json"
#: the feature column a task may add: the row of the raw examples a feature was made from
EXAMPLE_INDEX = "example_index"

#: encoded columns the model reads at prediction time (gold labels stay out)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: what :func:`tokenise` did, for the run's manifest
HIT, MISS, OFF = "hit", "miss", "off"


@dataclass
class Tokenised:
    """Features of a set of examples and where they came from: ``hit`` (read from the cache),
    ``miss`` (tokenised now, then cached) or ``off`` (tokenised now, not cached: the cache
    could not be written)."""

    features: Dataset
    cache: str
    key: str

    def record(self) -> dict[str, Any]:
        return {"features": len(self.features), "cache": self.cache, "key": self.key}


def cache_folder(cache_dir: Path | None = None) -> Path:
    """Where features are cached: ``features/`` in tamt's cache."""
    return cache.folder(cache.FEATURES, cache_dir)


# -- tokenising, through the cache ------------------------------------------------------------


def tokenise(
    task: Any,
    raw: Dataset,
    tokenizer: Any,
    *,
    split: str,
    max_length: int | None,
    doc_stride: int | None,
    train: bool,
    cache_dir: Path | None = None,
    console: Any = None,
) -> Tokenised:
    """``task.encode(raw, tokenizer, max_length, doc_stride, train)``, read from the cache when
    the same examples were tokenised the same way before, else tokenised and cached."""
    max_length = max_length or task.defaults.max_length
    if doc_stride is None and task.head == "span":
        doc_stride = task.defaults.doc_stride
    key = cache_key(task, raw, tokenizer, max_length, doc_stride, train)
    if key is None:  # not a datasets.Dataset with a fingerprint: nothing to key it by
        return Tokenised(_encode(task, raw, tokenizer, max_length, doc_stride, train), OFF, "")
    folder = cache_folder(cache_dir) / key
    cached = _read(folder, key, console)
    if cached is not None:
        _debug(console, f"{task.name} {split}: {len(cached)} features from the cache ({key[:12]})")
        return Tokenised(cached, HIT, key)
    features = _encode(task, raw, tokenizer, max_length, doc_stride, train)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "key": key,
        "task": task.name,
        "split": split,
        "train": train,
        "examples": len(raw),
        "rows": len(features),
        "columns": list(features.column_names),
        "max_length": max_length,
        "doc_stride": doc_stride,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
    }
    stored = _write(folder, features, meta, console)
    if stored is None:
        return Tokenised(features, OFF, key)
    _debug(
        console, f"{task.name} {split}: {len(stored)} features tokenised and cached ({key[:12]})"
    )
    return Tokenised(stored, MISS, key)


def _encode(
    task: Any,
    raw: Dataset,
    tokenizer: Any,
    max_length: int | None,
    doc_stride: int | None,
    train: bool,
) -> Dataset:
    """The task's own encoding, with ``datasets``' cache off: these features are cached here,
    and a second copy in ``HF_DATASETS_CACHE`` would only take room (``datasets`` keeps the
    result in a temporary folder it removes at exit)."""
    import datasets

    caching = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        return task.encode(raw, tokenizer, max_length, doc_stride, train=train)
    finally:
        if caching:
            datasets.enable_caching()


# -- the key ----------------------------------------------------------------------------------


def cache_key(
    task: Any,
    raw: Any,
    tokenizer: Any,
    max_length: int | None,
    doc_stride: int | None,
    train: bool,
) -> str | None:
    """The SHA-256 naming the features (see the module docs); None for examples that are not a
    ``datasets.Dataset`` (they have no fingerprint)."""
    fingerprint = getattr(raw, "_fingerprint", None)
    if not fingerprint:
        return None
    parts = {
        "format": [FORMAT, FORMAT_VERSION],
        "task": task_identity(task),
        "examples": {
            "fingerprint": fingerprint,
            "rows": len(raw),
            "columns": list(raw.column_names),
        },
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "settings": {"max_length": max_length, "doc_stride": doc_stride, "train": bool(train)},
    }
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def task_identity(task: Any) -> dict[str, Any]:
    """What of a task decides its features: its class, the distribution (and version) that
    provides it, its ``encoding_version`` and its instance state (options, labels found in the
    data)."""
    cls = type(task)
    distribution = version = None
    try:
        from tamt_cli import registry

        plugin = registry.tasks().plugin(task.name)
        if plugin.obj is cls:
            distribution, version = plugin.distribution, plugin.version
    except Exception:  # a task built outside the registry (a test, a script)
        pass
    state = json.dumps(vars(task), sort_keys=True, default=repr)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "name": getattr(task, "name", ""),
        "distribution": distribution,
        "version": version,
        "encoding_version": getattr(task, "encoding_version", None),
        "head": getattr(task, "head", None),
        "labels": list(getattr(task, "labels", ()) or ()),
        "state": state,
    }


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of everything a tokenizer's output depends on: its full definition (vocabulary,
    normaliser, pre-tokeniser, post-processor and added tokens, as :mod:`tamt_cli.corpora` keys
    token blocks), its class, special tokens and padding and truncation sides."""
    extra = {
        "class": type(tokenizer).__name__,
        "fast": bool(getattr(tokenizer, "is_fast", False)),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "special": {
            name: getattr(tokenizer, name, None)
            for name in ("pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id")
        },
        "special_tokens": list(getattr(tokenizer, "all_special_tokens", []) or []),
    }
    digest = hashlib.sha256(corpora.tokenizer_fingerprint(tokenizer).encode("utf-8"))
    digest.update(json.dumps(extra, sort_keys=True, default=repr).encode("utf-8"))
    return digest.hexdigest()


# -- the cache --------------------------------------------------------------------------------


def _read(folder: Path, key: str, console: Any) -> Dataset | None:
    """The cached features in ``folder``, or None when there are none. An entry that fails its
    check is removed (it is rebuilt by the caller) and said so."""
    if not folder.is_dir():
        return None
    try:
        from datasets import Dataset

        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if (meta.get("format"), meta.get("version"), meta.get("key")) != (
            FORMAT,
            FORMAT_VERSION,
            key,
        ):
            raise ValueError(f"{META_FILE} does not describe these features")
        files = meta.get("files")
        if not isinstance(files, dict) or not files:
            raise ValueError(f"{META_FILE} lists no files")
        for name, digest in files.items():
            if Path(name).name != name:
                raise ValueError(f"{META_FILE} names a file outside the entry")
            if _sha256(folder / name) != digest:
                raise ValueError(f"{name} does not match its SHA-256")
        with verbosity.quiet_libraries():
            features = Dataset.load_from_disk(str(folder))
        if len(features) != meta.get("rows") or features.column_names != meta.get("columns"):
            raise ValueError("its rows or columns are not those recorded")
        return features
    except Exception as exc:
        verbosity.note(
            console, f"ignoring damaged cached features {folder} ({first_line(exc)}); rebuilding"
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _write(folder: Path, features: Dataset, meta: dict[str, Any], console: Any) -> Dataset | None:
    """Store ``features`` as the entry ``folder`` (built under a temporary name, renamed when
    complete) and return them read back from it; None when the cache cannot be written."""
    from datasets import Dataset

    from tamt_cli import files

    try:
        with files.staged_dir(folder) as stage, verbosity.quiet_libraries():
            features.save_to_disk(str(stage))
            digests = {
                path.name: _sha256(path)
                for path in sorted(stage.iterdir())
                if path.is_file() and path.name != files.LOCK_FILE
            }
            files.write_json(stage / META_FILE, {**meta, "files": digests})
    except UserError:  # another process stored the same features meanwhile: use theirs
        return _read(folder, meta["key"], console)
    except OSError as exc:  # caching is an optimisation: a read-only or full cache is not fatal
        verbosity.note(console, f"could not cache the tokenised features in {folder.parent} "
                       f"({exc.strerror or first_line(exc)})")  # fmt: skip
        return None
    with verbosity.quiet_libraries():
        return Dataset.load_from_disk(str(folder))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def entries(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every complete entry of the feature cache: its folder, metadata, bytes and time."""
    root = cache_folder(cache_dir)
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                continue
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            modified = (folder / META_FILE).stat().st_mtime
        except (OSError, ValueError, AttributeError):
            continue
        out.append({"folder": folder, "meta": meta, "bytes": size, "modified": modified})
    return out


# -- the data of a fine-tuning run -----------------------------------------------------------


@dataclass
class TrainData:
    """The training examples of a run and their features, tokenised once for every seed:
    every example, or with ``--train-size`` the examples any seed draws (``rows``)."""

    raw: Dataset  # every training example
    tokenised: Tokenised  # features of ``rows`` (of every example when ``rows`` is None)
    rows: list[int] | None  # the examples tokenised, sorted
    picks: dict[int, list[int]]  # seed -> the examples it trains on (with --train-size)
    task: Any
    tokenizer: Any
    settings: dict[str, Any]  # max_length, doc_stride
    console: Any = None
    extra: list[Tokenised] = field(default_factory=list)  # per-seed tokenising, if any

    def for_seed(self, seed: int) -> tuple[int, Dataset]:
        """The number of examples seed ``seed`` trains on, and their features (in the order
        tokenising just those examples gives)."""
        features = self.tokenised.features
        if self.rows is None:
            return len(self.raw), features
        picked = self.picks[seed]
        if picked == self.rows:
            return len(picked), features
        position = {row: i for i, row in enumerate(self.rows)}
        wanted = [position[row] for row in picked]
        if EXAMPLE_INDEX in features.column_names:
            import numpy as np

            made_from = np.asarray(features[EXAMPLE_INDEX])
            keep = np.flatnonzero(np.isin(made_from, wanted)).tolist()
        elif len(features) == len(self.rows):  # one feature per example, in order
            keep = wanted
        else:  # features the task does not map back to examples: this seed's own tokenising
            tokenised = tokenise(
                self.task,
                self.raw.select(picked, keep_in_memory=True),
                self.tokenizer,
                split=self.task.train_split,
                max_length=self.settings["max_length"],
                doc_stride=self.settings["doc_stride"],
                train=True,
                console=self.console,
            )
            self.extra.append(tokenised)
            return len(picked), tokenised.features
        return len(picked), features.select(keep, keep_in_memory=True)

    def record(self) -> dict[str, Any]:
        return {
            **self.tokenised.record(),
            "examples": len(self.raw) if self.rows is None else len(self.rows),
        }


def train_data(
    task: Any,
    raw: Dataset,
    tokenizer: Any,
    *,
    seeds: Sequence[int],
    train_size: int | None,
    max_length: int | None,
    doc_stride: int | None,
    console: Any = None,
) -> TrainData:
    """Tokenise the training examples every seed of a run needs, once (see :class:`TrainData`).
    ``--train-size`` larger than the data is a one-line error."""
    settings = {"max_length": max_length, "doc_stride": doc_stride}
    rows: list[int] | None = None
    picks: dict[int, list[int]] = {}
    part = raw
    if train_size is not None:
        for seed in seeds:
            picks[seed] = subset_rows(len(raw), train_size, seed, task.name)
        rows = sorted(set().union(*picks.values()))
        if len(rows) < len(raw):  # else every example: the features of the whole set serve
            part = raw.select(rows, keep_in_memory=True)
    tokenised = tokenise(
        task,
        part,
        tokenizer,
        split=task.train_split,
        max_length=max_length,
        doc_stride=doc_stride,
        train=True,
        console=console,
    )
    return TrainData(raw, tokenised, rows, picks, task, tokenizer, settings, console)


# -- subsets, batches and eval sets -----------------------------------------------------------


def subset(raw: Dataset, size: int | None, seed: int, task: str) -> Dataset:
    """``size`` examples drawn without replacement by ``seed`` (kept in file order)."""
    if size is None:
        return raw
    return raw.select(subset_rows(len(raw), size, seed, task))


def subset_rows(n: int, size: int, seed: int, task: str) -> list[int]:
    """The rows of :func:`subset`: ``size`` of ``n`` drawn by ``seed``, sorted."""
    if size > n:
        raise UserError(
            f"--train-size {size} is larger than the {n} training examples of task '{task}'"
        )
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:size].tolist())


class Batcher:
    """Model inputs for given feature indices, padded per batch by transformers'
    ``DataCollatorWithPadding`` (on the tokenizer's padding side; to a multiple of
    ``pad_to_multiple_of``, e.g. 8 for tensor cores under mixed precision); scalars stacked."""

    def __init__(
        self,
        features: Dataset,
        tokenizer: Any,
        keys: Sequence[str] = MODEL_INPUTS,
        pad_to_multiple_of: int | None = None,
    ):
        from transformers import DataCollatorWithPadding

        keep = [c for c in keys if c in features.column_names]
        self.data = features.select_columns(keep).with_format(None)
        self.collate = DataCollatorWithPadding(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"
        )

    def __len__(self) -> int:
        return len(self.data)

    def __call__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = self.data[list(indices)]
        examples = [
            dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)
        ]
        return dict(self.collate(examples))


@dataclass
class EvalSet:
    """One eval split: raw examples, their features, and batches of model inputs."""

    split: str
    raw: Dataset
    features: Dataset
    batcher: Batcher
    tokenised: dict[str, Any] = field(default_factory=dict)  # the feature cache's record
    loaders: dict[Any, Any] = field(default_factory=dict, repr=False)  # per engine, batch size

    @property
    def examples(self) -> int:
        return len(self.raw)

    @functools.cached_property
    def by_length(self) -> list[int]:
        """Feature indices from the shortest input to the longest (stable): scored in this order,
        a batch pads to lengths close to its own, not to the longest of a random draw."""
        lengths = [len(ids) for ids in self.features["input_ids"]]
        return sorted(range(len(lengths)), key=lengths.__getitem__)

    def sorted_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of the ``indices``-th features in :attr:`by_length` order."""
        order = self.by_length
        return self.batcher([order[i] for i in indices])


def eval_sets(
    task: Any,
    splits: Sequence[str],
    data_dir: Any,
    tokenizer: Any,
    max_length: int | None,
    doc_stride: int | None,
    console: Any = None,
) -> list[EvalSet]:
    """Every split's examples and features, tokenised through tamt's feature cache."""
    out = []
    for split in splits:
        raw = task.load(split, data_dir)
        tokenised = tokenise(
            task,
            raw,
            tokenizer,
            split=split,
            max_length=max_length,
            doc_stride=doc_stride,
            train=False,
            console=console,
        )
        features = tokenised.features
        batcher = Batcher(features, tokenizer, INPUTS)
        out.append(EvalSet(split, raw, features, batcher, tokenised.record()))
    return out


# -- output -----------------------------------------------------------------------------------


def _debug(console: Any, text: str) -> None:
    if console is not None:
        from tamt_cli import verbosity

        verbosity.debug(console, text)
