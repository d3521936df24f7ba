"""Text corpora for mask training: tokenised, split, cut into fixed-length blocks, cached.

``--corpus`` takes one of

* ``demo``: Python's own reference text (``pydoc_data.topics``), English and always offline;
* a hub alias, ``wikitext-103`` or ``wikitext-2`` (Hugging Face ``Salesforce/wikitext``): the
  ``train`` split trains, the ``validation`` split is held out;
* local UTF-8 text files: a path, a directory (its ``*.txt`` files, not recursive), a glob
  (``**`` recursive), or several of these separated by commas.

Every line is tokenised without special tokens. A *document* is a run of non-blank lines: blank
lines, and the end of a file (of a demo topic), end one (wikitext's documents are so its
sections, a heading standing alone). Apart from the hub aliases, the held-out part is chosen on
this text before any block is cut, so that it is held out at every ``max_length``: the *units*
are the documents when the corpus has at least :data:`MIN_DOCUMENTS` of them, else its lines (a
corpus of one paragraph a line); they are drawn in a seeded order (:data:`SPLIT_SEED`) until
they hold ``held_out`` of the tokens (at least one unit, never all). The training and held-out
lines, each in corpus order, are concatenated and cut into blocks of ``max_length - 2`` tokens,
each wrapped as ``[CLS] … [SEP]`` (``<s> … </s>`` for RoBERTa-style tokenizers); each part's
incomplete last block is dropped. :attr:`Blocks.split` records the split (unit, seed, counts and
a SHA-256 of the held-out tokens, the same at every length).

For ``-o kd_data=sections`` the training documents are also laid out as the reference KD data
are (:func:`_sections`): one document section per sequence, two segments, padded later.

Blocks (and sections, once asked for) are cached as safetensors (``train`` and ``held_out``
int32 tensors) in ``blocks/`` of tamt's cache (:mod:`tamt_cli.cache`; of ``cache_dir``, when
given), named by a fingerprint of the corpus content, the tokenizer, ``max_length``,
``held_out``, the split seed and :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
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
FORMAT_VERSION = "2"  # bump when the tokenising / splitting rule changes
MIN_MAX_LENGTH = 8
#: the seed of the held-out split of a local or demo corpus (recorded in the run's manifest)
SPLIT_SEED = 0
#: fewer documents than this and the held-out split draws lines instead
MIN_DOCUMENTS = 20
#: the seed of the sections layout (``-o kd_data=sections``): the same sequences in every run,
#: as the reference pregenerates its KD data once for every seed
SECTIONS_SEED = 0
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
    #: how the held-out part was chosen: unit, seed, fraction, counts, ``held_out_sha256``
    split: dict[str, Any] = field(default_factory=dict)
    #: the training documents in the reference's KD layout, when asked for
    sections: Sections | None = None


@dataclass
class Sections:
    """Training sequences in the reference's KD layout (``-o kd_data=sections``), unpadded:
    ``[CLS] A [SEP] B [SEP]`` (RoBERTa: ``<s> A </s></s> B </s>``), or ``[CLS] A [SEP]`` when
    the section had one line; one token of each corrupted as the reference's are."""

    ids: torch.Tensor  # int32: every sequence's tokens, special tokens included, in turn
    offsets: torch.Tensor  # int64 [N + 1]: sequence i is ids[offsets[i] : offsets[i + 1]]
    second: torch.Tensor  # int32 [N]: where segment B starts in sequence i (its length: no B)
    max_length: int  # what every sequence is padded to
    pad_id: int
    token_types: bool  # the tokenizer gives segment B token type 1 (BERT's; RoBERTa has none)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1


@dataclass
class _Lines:
    """Tokenised lines: their ids one after another, each line's token count (-1: a blank
    line) and whether it holds ``=`` (the reference's test for a wikitext heading)."""

    ids: np.ndarray  # int32
    lengths: np.ndarray  # int32, one per line
    equals: np.ndarray  # bool, one per line


@dataclass
class _Text:
    """The non-blank lines of a corpus (of one hub split) and where its documents start."""

    ids: np.ndarray  # int32: every line's tokens, in order
    lengths: np.ndarray  # int64, one per line
    starts: np.ndarray  # bool, one per line: it begins a document
    equals: np.ndarray  # bool, one per line

    def select(self, lines: np.ndarray) -> np.ndarray:
        """The ids of the lines where ``lines`` (bool, one per line) is True, in order."""
        return self.ids[np.repeat(lines, self.lengths)]


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


def absolute_corpus(corpus: str) -> str:
    """``corpus`` as ``--corpus`` takes it from any folder: a name as it is, each local path or
    glob made absolute (what a run records, so that ``tamt eval`` finds the text again)."""
    given = corpus.strip()
    if given == DEMO or given in HUB_ALIASES:
        return given
    whole = Path(given).expanduser().exists()
    items = [given] if whole else [item.strip() for item in given.split(",")]
    return ",".join(os.path.abspath(Path(item).expanduser()) for item in items)


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


def _blocks_fingerprint(*parts: str) -> str:
    """The block cache's key: the format, what was tokenised and how, and the split's seed."""
    digest = hashlib.sha256()
    for part in (FORMAT, FORMAT_VERSION, *parts, f"split_seed={SPLIT_SEED}"):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def load_blocks(
    corpus: str,
    tokenizer: Any,
    max_length: int,
    *,
    held_out: float = 0.05,
    cache_dir: Path | None = None,
    console: Any = None,
    sections: bool = False,
) -> Blocks:
    """Training and held-out token blocks of ``corpus`` (see the module docstring), read from
    the block cache when this corpus, tokenizer and length were tokenised before; with
    ``sections``, the training documents in the reference's KD layout too."""
    _check_args(max_length, held_out)
    spec = _resolve(corpus)
    source = _describe(spec)
    cls_id, sep_id = _wrap_ids(tokenizer)
    splits = _hub_splits(spec) if isinstance(spec, _Hub) else None

    fingerprint = _blocks_fingerprint(
        _corpus_identity(spec, splits),
        tokenizer_fingerprint(tokenizer),
        f"wrap={cls_id},{sep_id}",
        f"max_length={int(max_length)}",
        f"held_out={float(held_out)!r}",
    )

    root = cache.folder(cache.BLOCKS, cache_dir)
    path = root / f"{fingerprint}.safetensors"
    cached = _read_cache(path, fingerprint, max_length, console, sections)
    if cached is not None:
        return Blocks(cached.train, cached.held_out, fingerprint, source, cached.split,
                      cached.sections)  # fmt: skip

    import torch

    quiet = verbosity.quiet_libraries() if splits is not None or isinstance(spec, _Local) else None
    with quiet or contextlib.nullcontext(), _status(console, f"Tokenising {source}…"):
        if splits is not None:
            text = _join([_dataset_lines(splits["train"], tokenizer, fingerprint + "-train")])
            held_text = _join(
                [_dataset_lines(splits["validation"], tokenizer, fingerprint + "-held")]
            )
            train_ids, held_ids = text.ids, held_text.ids
            in_training = np.ones(len(text.lengths), dtype=bool)
            split: dict[str, Any] = {
                "unit": "split",
                "held_out": "validation",
                "seed": None,
                "fraction": None,
                "tokens": int(train_ids.size + held_ids.size),
                "held_out_tokens": int(held_ids.size),
            }
            train = _blocks(train_ids, max_length, cls_id, sep_id, corpus, "train split")
            held = _blocks(held_ids, max_length, cls_id, sep_id, corpus, "validation split")
        else:
            if isinstance(spec, _Local):
                text = _local_text(spec, tokenizer, root, fingerprint)
            else:
                text = _join([_tokenize(topic, tokenizer) for topic in _demo_topics()])
            _blocks(text.ids, max_length, cls_id, sep_id, corpus, None, need=2)  # size check
            held_lines, split = split_lines(text, held_out)
            in_training = ~held_lines
            train_ids, held_ids = text.select(in_training), text.select(held_lines)
            train = _blocks(train_ids, max_length, cls_id, sep_id, corpus, "training part")
            held = _held_out_blocks(held_ids, max_length, cls_id, sep_id, corpus, split)
        split["held_out_sha256"] = hashlib.sha256(held_ids.astype("<i4").tobytes()).hexdigest()
        laid_out = _sections(text, in_training, tokenizer, max_length) if sections else None

    train_t = torch.from_numpy(np.ascontiguousarray(train))
    held_t = torch.from_numpy(np.ascontiguousarray(held))
    blocks = Blocks(train_t, held_t, fingerprint, source, split, laid_out)
    _write_cache(path, blocks, max_length, console)
    return blocks


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


def _held_out_blocks(
    ids: np.ndarray, max_length: int, cls_id: int, sep_id: int, corpus: str, split: dict[str, Any]
) -> np.ndarray:
    body = max_length - 2
    if ids.size < body:
        unit = split["unit"] if split["held_out_units"] != 1 else split["unit"][:-1]
        raise UserError(
            f"the held-out part of corpus '{corpus}' ({split['held_out_units']} {unit}, "
            f"{ids.size} tokens: --held-out {split['fraction']:g} of the text) is shorter than "
            f"one block of max_length {max_length} ({body} tokens); give more text, a larger "
            "--held-out or a smaller --max-length"
        )
    return _blocks(ids, max_length, cls_id, sep_id, corpus, "held-out part")


# -- the held-out split --------------------------------------------------------------------


def split_lines(
    text: _Text, fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which lines of ``text`` are held out (bool, one per line) and the record of the split.

    The units are the documents when there are at least :data:`MIN_DOCUMENTS`, else the lines;
    they are drawn in the order of a permutation seeded with ``seed`` until they hold
    ``fraction`` of the tokens (at least one unit, never every one)."""
    n_lines = len(text.lengths)
    document = np.cumsum(text.starts) - 1
    n_documents = int(document[-1]) + 1 if n_lines else 0
    if n_documents >= MIN_DOCUMENTS:
        unit, of_line, n_units = "documents", document, n_documents
    else:
        unit, of_line, n_units = "lines", np.arange(n_lines), n_lines
    if n_units < 2:
        raise UserError(
            f"the corpus has {n_units} line(s) of text: nothing to hold out and train on; give "
            "more text"
        )
    tokens = np.bincount(of_line, weights=text.lengths, minlength=n_units).astype(np.int64)
    order = np.random.default_rng(seed).permutation(n_units)
    reached = np.cumsum(tokens[order])
    k = int(np.searchsorted(reached, fraction * reached[-1])) + 1  # the first k reach it
    k = min(max(k, 1), n_units - 1)
    chosen = np.zeros(n_units, dtype=bool)
    chosen[order[:k]] = True
    record = {
        "unit": unit,
        "seed": seed,
        "fraction": fraction,
        "units": n_units,
        "held_out_units": k,
        "tokens": int(reached[-1]),
        "held_out_tokens": int(reached[k - 1]),
    }
    return chosen[of_line], record


# -- the reference's KD layout -------------------------------------------------------------

#: ``pregenerate_training_data.py`` of the reference (llyx97/TAMT, ``mask_training/``), run by
#: ``shell_scripts/generate_kd_data_bert.sh`` with ``--one_seq`` and its defaults
SHORT_SEQUENCE_PROBABILITY = 0.1  # :361 --short_seq_prob
MIN_FIRST_LINE = 20  # :394 a document whose first line is shorter (in tokens) is skipped


def _sections(text: _Text, keep: np.ndarray, tokenizer: Any, max_length: int) -> Sections:
    """The kept lines of ``text`` as the reference lays out its KD data
    (``pregenerate_training_data.py``, cited by line):

    * documents are runs of kept lines (a held-out line ends one too); a document whose first
      line holds ``=`` (a wikitext heading) or has under 20 tokens is skipped (:394);
    * a document's lines are gathered into a chunk until it reaches the target length, the room
      the special tokens leave (``max_length`` − 3 for BERT, − 4 for RoBERTa), or, one document
      in ten, a random length of 2 up to that room (:215-229, :240-244);
    * the chunk's first ``a`` lines (``a`` drawn from 1 … lines − 1; all of a one-line chunk)
      are segment A, the rest segment B (:248-279, ``--one_seq``: B is the chunk's own text);
    * the longer segment loses a token, at its start or end by a coin, until both fit (:119-134);
    * ``[CLS] A [SEP] B [SEP]``, token type 1 from B on (:293-299), or ``[CLS] A [SEP]``;
    * one token of the sequence is corrupted as BERT's MLM corrupts (``--masked_lm_prob`` 0 still
      chooses ``max(1, 0)`` = 1 position, :162-195): [MASK] 80%, kept 10%, a random token 10%.

    Drawn from :data:`SECTIONS_SEED`. Padding to ``max_length`` is left to the batches."""
    import random

    import torch

    prefix, middle, suffix, token_types = _pair_template(tokenizer)
    room, pad_id = _section_room(tokenizer, max_length, len(prefix) + len(middle) + len(suffix))
    mask_id = getattr(tokenizer, "mask_token_id", None)
    vocab = len(tokenizer)
    rng = random.Random(SECTIONS_SEED)
    begins = np.concatenate([[0], np.cumsum(text.lengths)])
    sequences: list[np.ndarray] = []
    seconds: list[int] = []

    def lay_out(document: list[int]) -> None:
        first = document[0]
        if text.equals[first] or text.lengths[first] < MIN_FIRST_LINE:
            return
        lines = [text.ids[begins[i] : begins[i + 1]] for i in document]
        target = room
        if rng.random() < SHORT_SEQUENCE_PROBABILITY:
            target = rng.randint(2, room)
        chunk: list[np.ndarray] = []
        size = 0
        for j, line in enumerate(lines):
            chunk.append(line)
            size += len(line)
            if j < len(lines) - 1 and size < target:
                continue
            a_end = rng.randrange(1, len(chunk)) if len(chunk) >= 2 else 1
            a = np.concatenate(chunk[:a_end])
            b = np.concatenate(chunk[a_end:]) if a_end < len(chunk) else a[:0]
            a, b = _truncate_pair(a, b, room, rng)
            chunk, size = [], 0
            if a.size == 0:
                continue
            sequence, second = _pair_sequence(a, b, (prefix, middle, suffix), mask_id, vocab, rng)
            sequences.append(sequence)
            seconds.append(second)

    document: list[int] = []
    for i in range(len(text.lengths)):
        if document and (not keep[i] or text.starts[i]):
            lay_out(document)
            document = []
        if keep[i]:
            document.append(i)
    if document:
        lay_out(document)
    if not sequences:
        raise UserError(
            "-o kd_data=sections found no section in the training text: every document starts "
            f"with a heading or a line of under {MIN_FIRST_LINE} tokens; use -o kd_data=blocks"
        )
    lengths = np.array([s.size for s in sequences], dtype=np.int64)
    return Sections(
        ids=torch.from_numpy(np.concatenate(sequences)),
        offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)),
        second=torch.tensor(seconds, dtype=torch.int32),
        max_length=max_length,
        pad_id=pad_id,
        token_types=token_types,
    )


def _section_room(tokenizer: Any, max_length: int, specials: int) -> tuple[int, int]:
    """The text tokens a section sequence holds, and the padding id; one-line errors where a
    sequence cannot be laid out."""
    room = max_length - specials
    if room < 2:
        raise UserError(f"max_length {max_length} leaves no room for two segments; use e.g. 128")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise UserError(
            "-o kd_data=sections pads sequences, and the tokenizer has no padding token"
        )
    return room, int(pad_id)


def _pair_sequence(
    a: np.ndarray,
    b: np.ndarray,
    template: tuple[Any, Any, Any],
    mask_id: int | None,
    vocab: int,
    rng: Any,
) -> tuple[np.ndarray, int]:
    """``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` with no B) with one text token corrupted
    as BERT's MLM corrupts, and where segment B starts."""
    prefix, middle, suffix = template
    if b.size:
        second = len(prefix) + a.size + len(middle)
        sequence = np.concatenate([prefix, a, middle, b, suffix]).astype(np.int32)
    else:
        sequence = np.concatenate([prefix, a, suffix]).astype(np.int32)
        second = sequence.size
    if mask_id is not None:
        texts = [*range(len(prefix), len(prefix) + a.size), *range(second, second + b.size)]
        at = rng.choice(texts)
        if rng.random() < 0.8:
            sequence[at] = mask_id
        elif rng.random() >= 0.5:
            sequence[at] = rng.randrange(vocab)
    return sequence, second


def _truncate_pair(
    a: np.ndarray, b: np.ndarray, room: int, rng: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Drop a token of the longer segment (B when as long), at its start or end by a coin,
    until both fit in ``room``."""
    a_lo, a_hi, b_lo, b_hi = 0, a.size, 0, b.size
    while (a_hi - a_lo) + (b_hi - b_lo) > room:
        front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return a[a_lo:a_hi], b[b_lo:b_hi]


def _pair_template(tokenizer: Any) -> tuple[list[int], list[int], list[int], bool]:
    """The special tokens the tokenizer puts before, between and after two segments, and whether
    it gives the second one token type 1."""
    try:
        encoded = tokenizer("a", "b", return_special_tokens_mask=True, return_token_type_ids=True)
        ids, special = list(encoded["input_ids"]), list(encoded["special_tokens_mask"])
    except Exception as exc:  # a tokenizer that cannot encode pairs
        raise UserError(
            f"-o kd_data=sections needs a tokenizer that encodes two segments ({first_line(exc)})"
        ) from None
    runs: list[tuple[bool, list[int]]] = []
    for token, is_special in zip(ids, special, strict=True):
        if runs and runs[-1][0] == bool(is_special):
            runs[-1][1].append(token)
        else:
            runs.append((bool(is_special), [token]))
    kinds = [is_special for is_special, _ in runs]
    if kinds != [True, False, True, False, True]:
        raise UserError(
            "-o kd_data=sections needs a BERT- or RoBERTa-style tokenizer ([CLS] A [SEP] B "
            "[SEP]); this one lays out two segments otherwise"
        )
    types = encoded.get("token_type_ids") or []
    return runs[0][1], runs[2][1], runs[4][1], any(types)


# -- tokenising ----------------------------------------------------------------------------


def _tokenize(lines: Sequence[str], tokenizer: Any) -> _Lines:
    """Every line's ids without special tokens (none for a blank line), one after another."""
    blank = np.array([not line.strip() for line in lines], dtype=bool)
    lengths = np.full(len(lines), -1, dtype=np.int32)
    texts = [line for line in lines if line.strip()]
    if not texts:
        return _Lines(np.zeros(0, dtype=np.int32), lengths, np.zeros(len(lines), dtype=bool))
    # verbose=False: lines longer than the model's maximum are fine, blocks are cut later.
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    lengths[~blank] = [len(e) for e in encoded]
    ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32)
    equals = np.array(["=" in line for line in lines], dtype=bool)
    return _Lines(ids, lengths, equals)


def _join(parts: Sequence[_Lines]) -> _Text:
    """The non-blank lines of ``parts`` (files, demo topics, a hub split), documents starting
    after blank lines and with each part."""
    if not parts:
        empty = np.zeros(0, dtype=bool)
        return _Text(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), empty, empty)
    lengths = np.concatenate([p.lengths for p in parts])
    blank = lengths < 0
    after_break = np.ones(lengths.size, dtype=bool)
    after_break[1:] = blank[:-1]
    firsts = np.cumsum([0, *(p.lengths.size for p in parts[:-1])])
    after_break[firsts[firsts < lengths.size]] = True
    keep = ~blank
    return _Text(
        ids=np.concatenate([p.ids for p in parts]),
        lengths=lengths[keep].astype(np.int64),
        starts=after_break[keep],
        equals=np.concatenate([p.equals for p in parts])[keep],
    )


def _demo_topics() -> list[list[str]]:
    from pydoc_data.topics import topics

    return [topics[key].splitlines() for key in sorted(topics)]


def _demo_lines() -> list[str]:
    return [line for topic in _demo_topics() for line in topic]


def _dataset_lines(dataset: Any, tokenizer: Any, fingerprint: str) -> _Lines:
    """Tokenise a ``text`` column through ``Dataset.map``, a line a row."""

    def tokenize_batch(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
        lines = _tokenize(batch["text"], tokenizer)
        return {
            "ids": [lines.ids],
            "lengths": [lines.lengths],
            "equals": [lines.equals.astype(np.int8)],
        }

    mapped = dataset.map(
        tokenize_batch,
        batched=True,
        batch_size=1000,
        remove_columns=dataset.column_names,
        keep_in_memory=True,
        new_fingerprint=hashlib.sha256(fingerprint.encode()).hexdigest()[:32],
        desc="Tokenising",
    )

    def column(name: str, dtype: Any) -> np.ndarray:
        chunks = [
            c.flatten().to_numpy(zero_copy_only=False) for c in mapped.data.column(name).chunks
        ]
        if not chunks:
            return np.zeros(0, dtype=dtype)
        return np.concatenate(chunks).astype(dtype, copy=False)

    return _Lines(column("ids", np.int32), column("lengths", np.int32), column("equals", bool))


def _local_text(spec: _Local, tokenizer: Any, root: Path, fingerprint: str) -> _Text:
    import datasets

    files = [path for path in spec.files if _check_text(path)]
    if not files:
        return _join([])

    # The datasets' own Arrow cache is not needed (the blocks are cached): keep it in a
    # temporary folder, beside the block cache when that is writable.
    tmp_parent: str | None = None
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
        tmp_parent = str(root) if root.is_dir() and os.access(root, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=".datasets-", dir=tmp_parent) as tmp:
        try:
            loaded = datasets.load_dataset(  # a split per file: a file ends a document
                "text",
                data_files={f"part{i}": [str(p)] for i, p in enumerate(files)},
                cache_dir=tmp,
            )
        except Exception as exc:  # datasets wraps decode and read errors in several types
            raise UserError(f"cannot read the corpus text files: {_root_cause(exc)}") from None
        return _join(
            [
                _dataset_lines(loaded[f"part{i}"], tokenizer, f"{fingerprint}-{i}")
                for i in range(len(files))
            ]
        )


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

_SECTION_TENSORS = ("sections_ids", "sections_offsets", "sections_second")


def _read_cache(
    path: Path, fingerprint: str, max_length: int, console: Any, sections: bool
) -> Blocks | None:
    """The cached blocks (with their sections when ``sections``; a file without them is not
    enough), or None when absent, stale or unreadable."""
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
            split = json.loads(meta["split"])
            train, held = fh.get_tensor("train"), fh.get_tensor("held_out")
            laid_out = None
            if sections:
                if not set(_SECTION_TENSORS) <= set(fh.keys()):
                    return None  # tokenised again, and cached with them
                about = json.loads(meta["sections"])
                ids, offsets, second = (fh.get_tensor(name) for name in _SECTION_TENSORS)
                laid_out = Sections(ids, offsets, second, max_length, int(about["pad_id"]),
                                    bool(about["token_types"]))  # fmt: skip
                if len(laid_out) != second.shape[0] or int(offsets[-1]) != ids.shape[0]:
                    raise ValueError("sections do not add up")
        for t in (train, held):
            if t.dtype != torch.int32 or t.dim() != 2 or t.shape[1] != max_length:
                raise ValueError(f"unexpected tensor {tuple(t.shape)} {t.dtype}")
        if len(train) == 0 or len(held) == 0:
            raise ValueError("no blocks")
        return Blocks(train, held, fingerprint, meta.get("source", ""), split, laid_out)
    except Exception as exc:
        verbosity.note(
            console, f"ignoring unreadable block cache {path} ({first_line(exc)}); rebuilding"
        )
        return None


def _write_cache(path: Path, blocks: Blocks, max_length: int, console: Any) -> None:
    from safetensors.torch import save

    from tamt_cli.files import write_bytes

    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fingerprint": blocks.fingerprint,
        "source": blocks.source,
        "max_length": str(max_length),
        "split": json.dumps(blocks.split),
    }
    tensors = {"train": blocks.train, "held_out": blocks.held_out}
    if blocks.sections is not None:
        laid_out = blocks.sections
        tensors.update(zip(_SECTION_TENSORS, (laid_out.ids, laid_out.offsets, laid_out.second),
                           strict=True))  # fmt: skip
        meta["sections"] = json.dumps(
            {"pad_id": laid_out.pad_id, "token_types": laid_out.token_types, "seed": SECTIONS_SEED}
        )
    try:
        write_bytes(path, save(tensors, metadata=meta))
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
