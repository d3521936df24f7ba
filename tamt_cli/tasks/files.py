"""Reading local task files with one-line errors that name the file and the line or record.

Two kinds of files: GLUE's original TSVs (tab-separated, no quoting — GLUE's TSVs contain stray
quote characters that are part of the text) and generic record files with the hub's column
names (``.jsonl``, ``.json`` holding a list or JSON lines, ``.csv`` with a header row).

They are read through ``datasets`` (``load_dataset("csv")``, with ``delimiter="\\t"`` and no
quoting for TSVs, or ``load_dataset("json")``) into its cache (``HF_DATASETS_CACHE``), and each
task turns the rows into its raw examples with :func:`convert`, cached as well: a later load of
an unchanged file memory-maps Arrow files instead of parsing text. Measured on a 400k-line
MNLI-shaped TSV (295 MB; ``python benchmarks/task_files.py``): the csv module took 7.8 s and
690 MB at peak on every load; ``datasets`` takes 7.5 s and 310 MB the first time, then 0.2 s and
210 MB; the cache holds 370 MB. On SST-2 (8.5k lines) both take 0.1-0.2 s.

``datasets`` (pandas, pyarrow) cannot say on which line of a file a row was, and reads some
malformed files without a word (pandas fills a short line with empty fields, and takes a long
first line's extra field for an index). So a file's rows are used only when nothing is wrong:
before its rows are converted (not again while the conversion is cached) every line of a TSV or
CSV is checked to have the header's number of fields, and anything ``datasets`` cannot read, or a
row that fails a check of the task (a label outside the label set, a missing or non-text
column; a blank line with tabs fails it too), raises :class:`Unreadable`. The task then reads the
file again with the ``csv`` or ``json`` module (:func:`read_tsv`, :func:`read_records`,
:func:`read_json`), which names the line (or record) of the first problem in a one-line
``UserError`` — or reads the file, uncached, when only ``datasets`` could not (it fails, for
one, on JSON lines with blank lines and a column of mixed types).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tamt_cli import verbosity
from tamt_cli.errors import UserError, first_line

if TYPE_CHECKING:
    from datasets import Dataset, Features

RECORD_SUFFIXES = (".jsonl", ".json", ".csv")

# GLUE's longest fields (parse trees in MNLI) are far below this; csv's default limit is 128 KiB.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024

#: bump when what :func:`convert`'s callers make of a row changes (their cached output is stale)
CONVERSION_VERSION = 1


class Unreadable(Exception):
    """``datasets`` could not read a file, or one of its rows failed a check: read it again with
    the ``csv`` or ``json`` module, which names the line."""


def where(path: Path, line: int | str) -> str:
    """``path:line`` for a line number, ``path (record 3)`` for anything else."""
    return f"{path}:{line}" if isinstance(line, int) else f"{path} ({line})"


# -- through datasets ----------------------------------------------------------------------------


def load_tsv(path: Path, width: int | None = None) -> Table:
    """A TSV with a header row (``width=None``) or a header-less one whose lines have ``width``
    fields (columns ``"0"``, ``"1"``, …), every field as text."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = handle.readline().rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text ({exc.reason})") from None
    if width is None:
        names = first.split("\t")
        if not any(name.strip() for name in names):
            raise Unreadable("no header on the first line")
    else:
        names = [str(i) for i in range(width)]
    rows = _load(
        "csv",
        path,
        names,
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        na_filter=False,  # "NA", "null" and empty fields are text
        header=None,
        skiprows=1 if width is None else None,
        column_names=names,
    )
    return Table(names, rows, lambda: _check_tsv(path, len(names)))


def load_records(path: Path) -> Table:
    """A ``.csv`` (every field as text), ``.jsonl`` or ``.json`` record file."""
    if path.suffix.lower() != ".csv":
        rows = _load("json", path, None)
        return Table(rows.column_names, rows, lambda: None)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Unreadable(first_line(exc)) from None
    if not header or len(set(header)) != len(header):
        raise Unreadable("no header row, or one that repeats a name")
    rows = _load("csv", path, header, na_filter=False, header=0)
    return Table(header, rows, lambda: _check_csv(path, len(header)))


@dataclass(frozen=True)
class Table:
    """The rows of a file as ``datasets`` read them, and the check of its lines that
    :func:`convert` runs before converting them (not when the conversion is cached)."""

    names: list[str]
    rows: Dataset
    check: Callable[[], None]


def unreadable(path: Path, exc: Unreadable) -> None:
    """Say under ``tamt -v`` why ``path`` is read again line by line."""
    verbosity.debug(verbosity.console(), f"{path}: read line by line ({exc})")


def convert(
    table: Table,
    examples: Callable[[dict[str, list[Any]]], dict[str, list[Any]]],
    features: Features,
    key: tuple[Any, ...],
    columns: list[str] | None = None,
) -> Dataset:
    """``examples`` applied to batches of ``table``'s rows (a dict of columns, ``columns`` only
    when given: fewer is faster; it returns the columns of ``features``), after the table's
    check, cached in ``datasets``' cache under ``key`` (what, besides the rows, the result
    depends on). A ``UserError`` or :class:`Unreadable` from either becomes :class:`Unreadable`."""
    from datasets.fingerprint import Hasher

    raw = table.rows
    inputs = list(raw.column_names if columns is None else dict.fromkeys(columns))
    checked: list[bool] = []

    def batch(*values: list[Any]) -> dict[str, list[Any]]:
        if not checked:
            table.check()
            checked.append(True)
        return examples(dict(zip(inputs, values, strict=True)))

    fingerprint = Hasher.hash([raw._fingerprint, CONVERSION_VERSION, *key, inputs])
    try:
        with verbosity.quiet_libraries():
            converted = raw.map(
                batch,
                batched=True,
                input_columns=inputs,
                remove_columns=raw.column_names,
                features=features,
                new_fingerprint=fingerprint,
            )
    except UserError as exc:
        raise Unreadable(str(exc)) from None
    if len(converted) == 0:
        raise Unreadable("no rows")
    return converted


def per_row(
    row: Callable[[dict[str, Any]], dict[str, Any]], names: list[str]
) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
    """A batch function for :func:`convert` that makes one example of each row with ``row``."""

    def examples(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {name: [] for name in names}
        columns = list(batch)
        for values in zip(*batch.values(), strict=True):
            example = row(dict(zip(columns, values, strict=True)))
            for name in names:
                out[name].append(example[name])
        return out

    return examples


def _check_tsv(path: Path, width: int) -> None:
    """Every non-blank line of a TSV has ``width`` fields (pandas would fill a short line with
    empty fields, or take a long first line's extra field for an index)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            found = line.count(b"\t") + 1
            if found != width and line.strip():
                raise Unreadable(f"line {number} has {found} fields, not {width}")


def _check_csv(path: Path, width: int) -> None:
    """Every non-blank record of a CSV has ``width`` fields (as in :func:`_check_tsv`)."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            for fields in reader:
                if len(fields) != width and any(f.strip() for f in fields):
                    raise Unreadable(f"line {reader.line_num} has {len(fields)} fields")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Unreadable(first_line(exc)) from None


def _load(builder: str, path: Path, text_columns: list[str] | None, **options: Any) -> Dataset:
    """``load_dataset(builder)`` of one file, its columns ``text_columns`` read as text."""
    import datasets

    if text_columns is not None:
        options["features"] = datasets.Features(
            {name: datasets.Value("string") for name in text_columns}
        )
    try:
        with verbosity.quiet_libraries():
            return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as exc:  # pandas, pyarrow and datasets raise many kinds; all mean this
        raise Unreadable(first_line(exc.__cause__ or exc)) from None


# -- through the csv and json modules: every line counted -----------------------------------


def read_tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line of a TSV file, header included."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:  # MRPC starts with a BOM
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield reader.line_num, fields
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: cannot read as TSV: {exc}") from None


def read_records(path: Path) -> Iterator[tuple[int | str, dict[str, Any]]]:
    """``(line number or "record N", record)`` of a JSONL, JSON or CSV file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
        return
    text = _read_text(path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines in a .json file, as the hub's json loader allows
        if data is not None:
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise UserError(
                    f"{path}: expected a JSON list of records (or JSON lines), "
                    f"found a JSON {type(data).__name__}"
                )
            for n, record in enumerate(data, 1):
                if not isinstance(record, dict):
                    raise UserError(f"{where(path, f'record {n}')}: expected a JSON object")
                yield f"record {n}", record
            return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where(path, n)}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{where(path, n)}: expected a JSON object per line")
        yield n, record


def read_json(path: Path) -> Any:
    """A whole JSON document, or a one-line error."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where(path, exc.lineno)}: not valid JSON ({exc.msg})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_csv(path: Path) -> Iterator[tuple[int | str, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise UserError(f"{path}: empty CSV file (expected a header row)")
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue  # a blank line, as pandas and read_tsv skip it
                if len(fields) != len(header):
                    raise UserError(
                        f"{where(path, reader.line_num)}: expected {len(header)} comma-separated "
                        f"fields as in the header ({', '.join(header)}), found {len(fields)}"
                    )
                yield reader.line_num, dict(zip(header, fields, strict=True))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: cannot read as CSV: {exc}") from None
