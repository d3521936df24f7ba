"""The mask file format, written and read back with every check on what is read.

A mask file (a run's ``masks.safetensors``) holds one ``uint8`` tensor per masked weight, named
by the weight's state-dict key relative to the base encoder, holding the boolean keep-mask
(1 = kept) flattened in row-major order and bit-packed eight to a byte, least significant bit
first. The safetensors header metadata holds ``format`` = ``tamt.masks``, ``version`` and
``shapes`` (a JSON object of name → shape), so any safetensors reader with ``numpy.unpackbits``
can decode it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tamt_cli import files
from tamt_cli.errors import UserError, first_line

MASK_FORMAT = "tamt.masks"
MASK_FORMAT_VERSION = "1"


def encode_masks(masks: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """Bit-packed safetensors bytes for boolean masks (torch or numpy)."""
    from safetensors.numpy import save

    packed: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for name, mask in masks.items():
        arr = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
        packed[name] = np.packbits(arr.astype(bool).reshape(-1), bitorder="little")
        shapes[name] = list(arr.shape)
    meta = {
        "format": MASK_FORMAT,
        "version": MASK_FORMAT_VERSION,
        "shapes": json.dumps(shapes, separators=(",", ":")),
        **(metadata or {}),
    }
    return save(packed, metadata=meta)


def save_masks(path: Path, masks: Mapping[str, Any], metadata: Mapping[str, str] | None = None):
    files.write_bytes(path, encode_masks(masks, metadata))


def load_masks(path: Path) -> dict[str, Any]:
    """Boolean keep-masks (torch tensors) from a mask file; one-line errors if it is not one or
    is damaged: every tensor must be ``uint8`` bytes, ⌈numel/8⌉ of them for the shape the header
    gives it, and every name must have both a tensor and a shape."""
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
            if meta.get("version") != MASK_FORMAT_VERSION:
                raise UserError(
                    f"mask file '{path}' has format version {meta.get('version')!r}; "
                    f"this tamt reads version {MASK_FORMAT_VERSION}"
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
    return masks


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
