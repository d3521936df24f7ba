"""The mask file format, written and read back with every check on what is read.

A mask file (a run's ``masks.safetensors``) holds one ``uint8`` tensor per masked weight, named
by the weight's state-dict key relative to the base encoder, holding the boolean keep-mask
(1 = kept) flattened in row-major order and bit-packed eight to a byte, least significant bit
first. The safetensors header metadata holds ``format`` = ``tamt.masks``, ``version`` and
``shapes`` (a JSON object of name → shape), so any safetensors reader with ``numpy.unpackbits``
can decode it.

A structured mask (:mod:`tamt_cli.units`) is written as version ``2``: beside the weight masks
(expanded from the units, so that a reader of weight masks reads it as any other) it holds one
packed tensor per unit group, named after the group (``encoder.layer.0.neurons``: one bit a
unit), and the header adds ``structure`` (``neurons``, ``heads`` or ``neurons+heads``) and
``units`` (a JSON object of group name → kind, layer, and the weights whose rows and columns the
units are). tamt 0.2 and older read version 1 only and refuse a version 2 file; weight masks are
still written as version 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tamt_cli import files
from tamt_cli.errors import UserError, first_line

if TYPE_CHECKING:
    from tamt_cli.units import UnitMasks

MASK_FORMAT = "tamt.masks"
MASK_FORMAT_VERSION = "1"
#: the version of a file that also holds unit masks (a structured mask)
UNITS_FORMAT_VERSION = "2"
VERSIONS = (MASK_FORMAT_VERSION, UNITS_FORMAT_VERSION)


def encode_masks(
    masks: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    units: UnitMasks | None = None,
) -> bytes:
    """Bit-packed safetensors bytes for boolean masks (torch or numpy), and the unit masks they
    were expanded from (version 2), if any."""
    from safetensors.numpy import save

    packed: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    every = {**masks, **(units.masks if units is not None else {})}
    for name, mask in every.items():
        arr = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
        packed[name] = np.packbits(arr.astype(bool).reshape(-1), bitorder="little")
        shapes[name] = list(arr.shape)
    meta = {
        "format": MASK_FORMAT,
        "version": MASK_FORMAT_VERSION if units is None else UNITS_FORMAT_VERSION,
        "shapes": json.dumps(shapes, separators=(",", ":")),
        **(metadata or {}),
    }
    if units is not None:
        meta["structure"] = units.structure
        records = {group.name: group.record() for group in units.groups}
        meta["units"] = json.dumps(records, separators=(",", ":"))
    return save(packed, metadata=meta)


def save_masks(
    path: Path,
    masks: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    units: UnitMasks | None = None,
) -> None:
    files.write_bytes(path, encode_masks(masks, metadata, units))


def load_masks(path: Path) -> dict[str, Any]:
    """Boolean keep-masks (torch tensors) of every masked weight from a mask file (of a
    structured mask too: its weight masks); one-line errors if it is not one or is damaged:
    every tensor must be ``uint8`` bytes, ⌈numel/8⌉ of them for the shape the header gives it,
    and every name must have both a tensor and a shape."""
    return _load(Path(path))[0]


def load_units(path: Path) -> UnitMasks | None:
    """The unit masks of a structured mask file (None for a mask of weights), checked against
    its weight masks: every weight of a pruned unit must be pruned."""
    return _load(Path(path))[1]


def _load(path: Path) -> tuple[dict[str, Any], UnitMasks | None]:
    import torch
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        problem = "is a directory, not" if path.is_dir() else "does not exist"
        raise UserError(f"mask file '{path}' {problem}" + (" a file" if path.is_dir() else ""))
    try:
        with safe_open(str(path), framework="np") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != MASK_FORMAT:
                raise UserError(f"'{path}' is not a tamt mask file (no '{MASK_FORMAT}' header)")
            if meta.get("version") not in VERSIONS:
                raise UserError(
                    f"mask file '{path}' has format version {meta.get('version')!r}; "
                    f"this tamt reads versions {' and '.join(VERSIONS)}"
                )
            shapes = _header_shapes(path, meta)
            names = list(fh.keys())
            unlisted = [n for n in names if n not in shapes]
            if unlisted:
                raise UserError(
                    f"mask file '{path}' is damaged: tensor '{unlisted[0]}' has no shape in its "
                    "header"
                )
            absent = [n for n in shapes if n not in names]
            if absent:
                raise UserError(
                    f"mask file '{path}' is damaged: its header lists '{absent[0]}', which it "
                    "holds no tensor for"
                )
            masks = {}
            for name in names:
                shape = shapes[name]
                numel = int(np.prod(shape)) if shape else 1
                packed = fh.get_tensor(name)
                _check_packed(path, name, packed, shape, numel)
                bits = np.unpackbits(packed, count=numel, bitorder="little")
                masks[name] = torch.from_numpy(bits.astype(bool).reshape(shape))
    except UserError:
        raise
    except Exception as exc:
        why = first_line(exc)
        raise UserError(f"mask file '{path}' is unreadable or corrupt ({why})") from None
    if meta.get("version") == MASK_FORMAT_VERSION:
        return masks, None
    return _split_units(path, meta, masks)


def _split_units(
    path: Path, meta: Mapping[str, str], masks: dict[str, Any]
) -> tuple[dict[str, Any], UnitMasks]:
    """A version 2 file's weight masks and unit masks, checked against each other."""
    from tamt_cli import units

    damaged = f"mask file '{path}' is damaged"
    structure = meta.get("structure")
    if structure not in units.STRUCTURES[1:]:
        raise UserError(f"{damaged}: its header gives no known structure ({structure!r})")
    try:
        records = json.loads(meta["units"])
        groups = [
            units.UnitGroup.from_record(name, len(masks[name]), record)
            for name, record in records.items()
        ]
    except (KeyError, ValueError, TypeError, AttributeError):
        raise UserError(f"{damaged}: its header's units are unreadable or name no mask") from None
    unit_masks = {group.name: masks.pop(group.name) for group in groups}
    for group in groups:
        spanned = [*group.rows, *group.columns]
        absent = [name for name in spanned if name not in masks]
        if absent or unit_masks[group.name].dim() != 1:
            raise UserError(f"{damaged}: its units '{group.name}' span no weight mask")
        rows_ok = all(masks[n].dim() == 2 and masks[n].shape[0] % group.count == 0
                      for n in group.rows)  # fmt: skip
        columns_ok = all(masks[n].dim() == 2 and masks[n].shape[1] % group.count == 0
                         for n in group.columns)  # fmt: skip
        if not (rows_ok and columns_ok):
            raise UserError(f"{damaged}: the weights of units '{group.name}' do not divide")
    found = units.UnitMasks(str(structure), groups, unit_masks)
    wrong = units.agrees(groups, unit_masks, masks)
    if wrong:
        raise UserError(f"{damaged}: '{wrong}' keeps weights of units its header says are pruned")
    return masks, found


def _header_shapes(path: Path, meta: Mapping[str, str]) -> dict[str, list[int]]:
    try:
        shapes = json.loads(meta["shapes"])
    except (KeyError, ValueError):
        raise UserError(
            f"mask file '{path}' is damaged: its header has no readable shapes"
        ) from None
    ok = isinstance(shapes, dict) and all(
        isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                    for d in v)
        for v in shapes.values()
    )  # fmt: skip
    if not ok:
        raise UserError(f"mask file '{path}' is damaged: its header shapes are not lists of sizes")
    return shapes


def _check_packed(path: Path, name: str, packed: Any, shape: list[int], numel: int) -> None:
    """A packed mask must be exactly ⌈numel/8⌉ bytes with zero padding bits."""
    need = -(-numel // 8)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise UserError(
            f"mask file '{path}' is damaged: tensor '{name}' is {packed.dtype} of shape "
            f"{list(packed.shape)}, not a row of packed bytes"
        )
    if packed.size != need:
        raise UserError(
            f"mask file '{path}' is damaged: tensor '{name}' holds {packed.size} bytes; its shape "
            f"{shape} needs {need}"
        )
    spare = need * 8 - numel
    if spare and int(packed[-1]) >> (8 - spare):
        raise UserError(
            f"mask file '{path}' is damaged: tensor '{name}' has bits set beyond its {numel} "
            "weights"
        )
