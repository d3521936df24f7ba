"""Text corpora for mask training: tokenised, cut into fixed-length blocks, cached.

``--corpus`` takes one of

* ``demo``: Python's own reference text (``pydoc_data.topics``), English and always offline;
* a hub alias, ``wikitext-103`` or ``wikitext-2`` (Hugging Face ``Salesforce/wikitext``): the
  ``train`` split trains, the ``validation`` split is held out;
* local UTF-8 text files: a path, a directory (its ``*.txt`` files, not recursive), a glob
  (``**`` recursive), or several of these separated by commas.

Every non-empty line is tokenised without special tokens, all ids are concatenated in order and
cut into blocks of ``max_length - 2`` tokens, each wrapped as ``[CLS] … [SEP]`` (``<s> … </s>``
for RoBERTa-style tokenizers); the incomplete last block is dropped. Apart from the hub aliases,
the held-out blocks are the last ``ceil(held_out * blocks)`` of the stream, so held-out text never
overlaps training text.

Blocks are cached as safetensors (``train`` and ``held_out`` int32 tensors) in ``blocks/`` of
tamt's cache (:mod:`tamt_cli.cache`; of ``cache_dir``, when given), named by a fingerprint of
the corpus content, the tokenizer, ``max_length``, ``held_out`` and :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tamt_cli import cache, hub, verbosity
from tamt_cli.errors import UserError, did_you_mean, first_line

if TYPE_CHECKING:
    import torch

DEMO = "demo"
HUB_DATASET = "Salesforce/wikitext"  # the hub's canonical id for the former `wikitext`
HUB_ALIASES = {
    "wikitext-103": (HUB_DATASET, "wikitext-103-raw-v1"),
    "wikitext-2": (HUB_DATASET, "wikitext-2-raw-v1"),
}
FORMAT = "tamt.blocks"
FORMAT_VERSION = "1"  # bump when the tokenising / splitting rule changes
MIN_MAX_LENGTH = 8
_VALID = (
    "demo, wikitext-103, wikitext-2, or text files (a path, directory or glob; comma-separated)"
)
_GLOB_CHARS = frozenset("*?[")


@dataclass
class Blocks:
    """Token blocks of one corpus, ready for masked-language modelling or distillation."""

    train: torch.Tensor  # [N, L] int32 token ids, each row one training block
    held_out: torch.Tensor  # [M, L] int32, never overlapping the training text
    fingerprint: str  # hex digest of corpus content + tokenizer + length + split rule
    source: str  # human description of the corpus


@dataclass(frozen=True)
class _Local:
    files: tuple[Path, ...]  # resolved, in reading order


@dataclass(frozen=True)
class _Hub:
    alias: str
    name: str
    config: str


_Corpus = str | _Local | _Hub  # str: DEMO


# -- resolving --corpus --------------------------------------------------------------------


def describe_corpus(corpus: str) -> str:
    """Validate ``corpus`` without tokenising (files must exist and start as UTF-8 text; the hub
    is not asked) and return a human description of it."""
    spec = _resolve(corpus)
    if isinstance(spec, _Local):
        texts = [_check_text(path, limit=SNIFF_BYTES) for path in spec.files]
        if not any(texts):
            raise UserError(f"corpus '{corpus}' is empty: it has no text to tokenise; use {_VALID}")
    return _describe(spec)


SNIFF_BYTES = 1 << 16  # what describe_corpus reads of each file


def _check_text(path: Path, limit: int | None = None) -> bool:
    """Whether the file holds any text; a one-line error naming the file and the offset when it
    is not UTF-8 text (undecodable bytes, or a NUL byte: a binary file). Reads ``limit`` bytes,
    or all."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, text = 0, False
    try:
        with path.open("rb") as fh:
            while limit is None or offset < limit:
                chunk = fh.read(1 << 20 if limit is None else min(1 << 20, limit - offset))
                if not chunk:
                    break
                nul = chunk.find(b"\0")
                if nul >= 0:
                    raise UserError(
                        f"corpus file '{_display_path(path)}' is not text: it holds a NUL byte at "
                        f"offset {offset + nul} (a binary file?); give UTF-8 text files"
                    )
                pending = len(decoder.getstate()[0])  # bytes of a character cut by the chunk
                try:
                    text = bool(decoder.decode(chunk, final=False).strip()) or text
                except UnicodeDecodeError as exc:
                    at = offset - pending + exc.start
                    raise UserError(
                        f"corpus file '{_display_path(path)}' is not UTF-8 text: byte "
                        f"0x{exc.object[exc.start]:02x} at offset {at} cannot be decoded; "
                        "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                    ) from None
                offset += len(chunk)
            if limit is None or offset < limit:
                decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UserError(
            f"corpus file '{_display_path(path)}' is not UTF-8 text: it ends inside a character"
        ) from None
    except OSError as exc:
        raise UserError(
            f"cannot read corpus file '{_display_path(path)}': {exc.strerror or exc}"
        ) from None
    return text


def _describe(spec: _Corpus) -> str:
    if isinstance(spec, _Hub):
        return f"{spec.alias} ({spec.name}/{spec.config})"
    if isinstance(spec, _Local):
        if len(spec.files) == 1:
            return _display_path(spec.files[0])
        return f"{len(spec.files)} files"
    return "demo (Python's pydoc reference text)"


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _resolve(corpus: str) -> _Corpus:
    if not isinstance(corpus, str) or not corpus.strip():
        raise UserError(f"--corpus is empty; use {_VALID}")
    given = corpus.strip()
    if given == DEMO:
        return DEMO
    if given in HUB_ALIASES:
        name, config = HUB_ALIASES[given]
        return _Hub(given, name, config)
    # The whole string first, so that a file whose name holds a comma still works.
    items = [given] if Path(given).expanduser().exists() else given.split(",")
    files: list[Path] = []
    for raw in items:
        item = raw.strip()
        if not item:
            raise UserError(f"--corpus '{corpus}' has an empty entry between commas")
        files.extend(_expand(item, corpus))
    unique: dict[Path, None] = dict.fromkeys(files)  # first occurrence keeps its place
    return _Local(tuple(unique))


def _expand(item: str, corpus: str) -> list[Path]:
    path = Path(item).expanduser()
    in_list = f" (in --corpus '{corpus}')" if item != corpus.strip() else ""
    if _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            raise UserError(
                f"corpus glob '{item}'{in_list} matches no file; give existing text files, a "
                f"directory or a glob that matches some (e.g. 'texts/*.txt'), or use --corpus demo"
            )
        out: list[Path] = []
        for match in matches:
            p = Path(match)
            if p.is_dir():
                out.extend(sorted(f.resolve() for f in p.glob("*.txt") if f.is_file()))
            elif p.is_file():
                out.append(p.resolve())
        if not out:
            raise UserError(f"corpus glob '{item}'{in_list} matches no text file")
        return out
    if path.is_dir():
        return _dir_files(path, item)
    if path.is_file():
        return [path.resolve()]
    if path.exists():
        raise UserError(f"corpus path '{item}'{in_list} is not a regular file or directory")
    looks_like_name = not any(c in item for c in "/\\.~")
    if looks_like_name:
        hint = did_you_mean(item, [DEMO, *HUB_ALIASES])
        raise UserError(
            f"unknown corpus '{item}'{in_list} and no such file{hint or ';'} use {_VALID}"
        )
    raise UserError(f"corpus file '{item}'{in_list} does not exist; use {_VALID}")


def _dir_files(path: Path, item: str) -> list[Path]:
    files = sorted(p.resolve() for p in path.glob("*.txt") if p.is_file())
    if not files:
        raise UserError(
            f"corpus directory '{item}' has no *.txt files; name the files or a glob "
            f"(e.g. '{item.rstrip('/')}/**/*.txt' to look in subfolders)"
        )
    return files


# -- loading -------------------------------------------------------------------------------


def load_blocks(
    corpus: str,
    tokenizer: Any,
    max_length: int,
    *,
    held_out: float = 0.05,
    cache_dir: Path | None = None,
    console: Any = None,
) -> Blocks:
    """Training and held-out token blocks of ``corpus`` (see the module docstring), read from
    the block cache when this corpus, tokenizer and length were tokenised before."""
    _check_args(max_length, held_out)
    spec = _resolve(corpus)
    source = _describe(spec)
    cls_id, sep_id = _wrap_ids(tokenizer)
    splits = _hub_splits(spec) if isinstance(spec, _Hub) else None

    digest = hashlib.sha256()
    for part in (
        FORMAT,
        FORMAT_VERSION,
        _corpus_identity(spec, splits),
        tokenizer_fingerprint(tokenizer),
        f"wrap={cls_id},{sep_id}",
        f"max_length={int(max_length)}",
        f"held_out={float(held_out)!r}",
    ):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    fingerprint = digest.hexdigest()

    root = cache.folder(cache.BLOCKS, cache_dir)
    path = root / f"{fingerprint}.safetensors"
    cached = _read_cache(path, fingerprint, max_length, console)
    if cached is not None:
        return Blocks(cached[0], cached[1], fingerprint, source)

    import torch

    quiet = verbosity.quiet_libraries() if splits is not None or isinstance(spec, _Local) else None
    with quiet or contextlib.nullcontext(), _status(console, f"Tokenising {source}…"):
        if splits is not None:
            train_ids = _dataset_ids(splits["train"], tokenizer, fingerprint + "-train")
            held_ids = _dataset_ids(splits["validation"], tokenizer, fingerprint + "-held")
            train = _blocks(train_ids, max_length, cls_id, sep_id, corpus, "train split")
            held = _blocks(held_ids, max_length, cls_id, sep_id, corpus, "validation split")
        else:
            if isinstance(spec, _Local):
                ids = _local_ids(spec, tokenizer, root, fingerprint)
            else:
                ids = _tokenize(_demo_lines(), tokenizer)
            everything = _blocks(ids, max_length, cls_id, sep_id, corpus, None, need=2)
            n_held = max(1, math.ceil(held_out * len(everything)))
            train, held = everything[:-n_held], everything[-n_held:].copy()

    train_t = torch.from_numpy(np.ascontiguousarray(train))
    held_t = torch.from_numpy(np.ascontiguousarray(held))
    _write_cache(path, train_t, held_t, fingerprint, source, max_length, console)
    return Blocks(train_t, held_t, fingerprint, source)


def _check_args(max_length: Any, held_out: Any) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise UserError(f"max_length {max_length!r} is not a whole number; use e.g. 128")
    if max_length < MIN_MAX_LENGTH:
        raise UserError(
            f"max_length {max_length} is too small; use at least {MIN_MAX_LENGTH} (e.g. 128)"
        )
    if isinstance(held_out, bool) or not isinstance(held_out, int | float):
        raise UserError(f"held-out fraction {held_out!r} is not a number; use e.g. 0.05")
    if not 0 < held_out <= 0.5:  # also rejects NaN
        raise UserError(
            f"held-out fraction {held_out} is out of range; use a value in (0, 0.5], e.g. 0.05"
        )


def _wrap_ids(tokenizer: Any) -> tuple[int, int]:
    cls_id = getattr(tokenizer, "cls_token_id", None)
    if cls_id is None:
        cls_id = getattr(tokenizer, "bos_token_id", None)
    sep_id = getattr(tokenizer, "sep_token_id", None)
    if sep_id is None:
        sep_id = getattr(tokenizer, "eos_token_id", None)
    if cls_id is None or sep_id is None:
        raise UserError(
            "the model's tokenizer has no [CLS]/<s> and [SEP]/</s> tokens to wrap blocks with; "
            "use a BERT- or RoBERTa-style model"
        )
    return int(cls_id), int(sep_id)


def _blocks(
    ids: np.ndarray,
    max_length: int,
    cls_id: int,
    sep_id: int,
    corpus: str,
    split: str | None,
    need: int = 1,
) -> np.ndarray:
    """``[n, max_length]`` int32 blocks ``[CLS] ids… [SEP]``; the incomplete last one dropped."""
    source = f"corpus '{corpus}'" + (f" ({split})" if split else "")
    if ids.size == 0:
        raise UserError(f"{source} is empty: it has no text to tokenise; use {_VALID}")
    body = max_length - 2
    n = ids.size // body
    if n < need:
        raise UserError(
            f"{source} is too small: its {ids.size} tokens make {n} block(s) of max_length "
            f"{max_length} ({body} tokens each) and at least {need} are needed; give more text "
            f"or a smaller max_length"
        )
    out = np.empty((n, max_length), dtype=np.int32)
    out[:, 0] = cls_id
    out[:, -1] = sep_id
    out[:, 1:-1] = ids[: n * body].reshape(n, body)
    return out


# -- tokenising ----------------------------------------------------------------------------


def _tokenize(lines: Sequence[str], tokenizer: Any) -> np.ndarray:
    """The ids of the non-empty ``lines``, without special tokens, concatenated in order."""
    texts = [line for line in lines if line.strip()]
    if not texts:
        return np.zeros(0, dtype=np.int32)
    # verbose=False: lines longer than the model's maximum are fine, blocks are cut later.
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32)


def _demo_lines() -> list[str]:
    from pydoc_data.topics import topics

    return [line for key in sorted(topics) for line in topics[key].splitlines()]


def _dataset_ids(dataset: Any, tokenizer: Any, fingerprint: str) -> np.ndarray:
    """Tokenise a ``text`` column through ``Dataset.map``; each batch becomes one row."""

    def tokenize_batch(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
        return {"ids": [_tokenize(batch["text"], tokenizer)]}

    mapped = dataset.map(
        tokenize_batch,
        batched=True,
        batch_size=1000,
        remove_columns=dataset.column_names,
        keep_in_memory=True,
        new_fingerprint=hashlib.sha256(fingerprint.encode()).hexdigest()[:32],
        desc="Tokenising",
    )
    chunks = [chunk.flatten().to_numpy() for chunk in mapped.data.column("ids").chunks]
    if not chunks:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate(chunks).astype(np.int32, copy=False)


def _local_ids(spec: _Local, tokenizer: Any, root: Path, fingerprint: str) -> np.ndarray:
    import datasets

    files = [path for path in spec.files if _check_text(path)]
    if not files:
        return np.zeros(0, dtype=np.int32)

    # The datasets' own Arrow cache is not needed (the blocks are cached): keep it in a
    # temporary folder, beside the block cache when that is writable.
    tmp_parent: str | None = None
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
        tmp_parent = str(root) if root.is_dir() and os.access(root, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=".datasets-", dir=tmp_parent) as tmp:
        try:
            dataset = datasets.load_dataset(
                "text",
                data_files=[str(p) for p in files],
                split="train",
                cache_dir=tmp,
            )
        except Exception as exc:  # datasets wraps decode and read errors in several types
            raise UserError(f"cannot read the corpus text files: {_root_cause(exc)}") from None
        return _dataset_ids(dataset, tokenizer, fingerprint)


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost cause (datasets wraps the reason in a generic error)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return first_line(exc)


# -- the hub -------------------------------------------------------------------------------


def _hub_splits(spec: _Hub) -> dict[str, Any]:
    offline_hint = "; use --corpus demo or local text files (--corpus 'texts/*.txt')"
    if not hub.offline() and not hub.reachable():
        raise UserError(
            f"cannot load corpus '{spec.alias}': the Hugging Face hub is unreachable"
            f"{offline_hint} (or set HF_DATASETS_OFFLINE=1 to use a copy already cached)"
        )
    import datasets

    try:
        with verbosity.quiet_libraries():
            loaded = datasets.load_dataset(spec.name, spec.config)
        splits = {name: loaded[name] for name in ("train", "validation")}
    except Exception as exc:  # ConnectionError, DatasetNotFoundError, HTTP errors, …
        reason = first_line(exc)
        if hub.offline():
            reason = (
                "the Hugging Face hub is unreachable (offline mode: HF_HUB_OFFLINE or "
                f"HF_DATASETS_OFFLINE is set) and it is not in the local cache ({reason})"
            )
        raise UserError(f"cannot load corpus '{spec.alias}': {reason}{offline_hint}") from None
    return splits


# -- fingerprints --------------------------------------------------------------------------


def _corpus_identity(spec: _Corpus, splits: dict[str, Any] | None) -> str:
    if isinstance(spec, _Hub):
        prints = {k: getattr(v, "_fingerprint", None) for k, v in (splits or {}).items()}
        return json.dumps(["hub", spec.name, spec.config, prints], sort_keys=True)
    if isinstance(spec, _Local):
        files = []
        for path in spec.files:
            st = path.stat()
            files.append([str(path), st.st_size, st.st_mtime_ns])
        return json.dumps(["files", files])
    text = "\n".join(_demo_lines())
    return json.dumps(["demo", hashlib.sha256(text.encode("utf-8")).hexdigest()])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """``tokenizer=<sha256>`` of the tokenizer's definition (a fast tokenizer's JSON without its
    call-time truncation and padding, else its vocabulary)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings, not what the tokenizer produces
        state.pop("padding", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return "tokenizer=" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- the block cache -----------------------------------------------------------------------


def _read_cache(
    path: Path, fingerprint: str, max_length: int, console: Any
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached ``(train, held_out)`` blocks, or None when absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        import torch
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if (meta.get("format"), meta.get("version"), meta.get("fingerprint")) != (
                FORMAT,
                FORMAT_VERSION,
                fingerprint,
            ):
                raise ValueError("header does not match")
            train, held = fh.get_tensor("train"), fh.get_tensor("held_out")
        for t in (train, held):
            if t.dtype != torch.int32 or t.dim() != 2 or t.shape[1] != max_length:
                raise ValueError(f"unexpected tensor {tuple(t.shape)} {t.dtype}")
        if len(train) == 0 or len(held) == 0:
            raise ValueError("no blocks")
        return train, held
    except Exception as exc:
        verbosity.note(
            console, f"ignoring unreadable block cache {path} ({first_line(exc)}); rebuilding"
        )
        return None


def _write_cache(
    path: Path,
    train: torch.Tensor,
    held: torch.Tensor,
    fingerprint: str,
    source: str,
    max_length: int,
    console: Any,
) -> None:
    from safetensors.torch import save

    from tamt_cli.files import write_bytes

    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "source": source,
        "max_length": str(max_length),
    }
    try:
        write_bytes(path, save({"train": train, "held_out": held}, metadata=meta))
    except OSError as exc:  # caching is an optimisation: a read-only cache must not fail a run
        verbosity.note(
            console, f"could not cache the token blocks in {path.parent} ({exc.strerror})"
        )


# -- output --------------------------------------------------------------------------------


def _status(console: Any, text: str) -> contextlib.AbstractContextManager[Any]:
    if console is None:
        return contextlib.nullcontext()
    from rich.markup import escape

    return console.status(escape(text))
