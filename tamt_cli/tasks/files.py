"""Reading local task files with one-line errors that name the file and the line or record.

Two kinds of files: GLUE's original TSVs (tab-separated, no quoting — GLUE's TSVs contain stray
quote characters that are part of the text) and generic record files with the hub's column
names (``.jsonl``, ``.json`` holding a list or JSON lines, ``.csv`` with a header row).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tamt_cli.errors import UserError

RECORD_SUFFIXES = (".jsonl", ".json", ".csv")

# GLUE's longest fields (parse trees in MNLI) are far below this; csv's default limit is 128 KiB.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024


def where(path: Path, line: int | str) -> str:
    """``path:line`` for a line number, ``path (record 3)`` for anything else."""
    return f"{path}:{line}" if isinstance(line, int) else f"{path} ({line})"


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
                if not fields:
                    continue
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
