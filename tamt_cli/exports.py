"""An export's own weights read back and checked: against its mask, and against the pre-trained
model it was cut from where a command has that model loaded.

An export (``tamt extract RUN --export DIR``) holds its weights (``model.safetensors``, dense or
in the sparse-bitmask layout of :mod:`tamt_cli.compressed`), its mask (``masks.safetensors``)
and a manifest naming the pre-trained model and the hash of its weights. Every command that
reads an export checks, before any work, that each weight its mask covers is there with the
mask's shape and is exactly zero wherever the mask prunes (:func:`check`); a command that loads
the pre-trained model and finds its weights still hash to the recorded value then checks every
weight of the export against that model's, masked (:func:`check_against`). A damaged export is
a one-line error naming the tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tamt_cli import compressed, models
from tamt_cli.errors import UserError, first_line

#: the index of a dense export saved in several files
SHARD_INDEX = "model.safetensors.index.json"


def stored_state(folder: Path) -> dict[str, Any]:
    """The weights an export holds, decoded to dense tensors (a compressed export's layout is
    checked as it is decoded: :func:`tamt_cli.compressed.dense_state`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if compressed.is_compressed(folder):
        return compressed.dense_state(folder)
    if (folder / compressed.WEIGHTS_FILE).is_file():
        paths = [folder / compressed.WEIGHTS_FILE]
    elif (folder / SHARD_INDEX).is_file():
        try:
            shards = json.loads((folder / SHARD_INDEX).read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(shards.values()))
            outside = [n for n in names if not isinstance(n, str) or Path(n).name != n]
            if outside or not names:
                raise ValueError(f"it names no shard or one outside the folder: {outside[:1]}")
            paths = [folder / name for name in names]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"'{folder / SHARD_INDEX}' is damaged ({first_line(exc)})") from None
    else:
        raise UserError(f"export '{folder}' holds no {compressed.WEIGHTS_FILE}")
    state: dict[str, Any] = {}
    for path in paths:
        try:
            state.update(load_file(str(path)))
        except (OSError, SafetensorError) as exc:
            raise UserError(f"'{path}' is damaged ({first_line(exc)})") from None
    return state


def check(
    folder: Path,
    masks: Mapping[str, Any],
    base: Any = None,
    model: str | None = None,
    unit_masks: Any = None,
) -> None:
    """One-line error unless the export in ``folder`` holds every weight ``masks`` covers, with
    the mask's shape and exactly zero wherever the mask prunes; with ``base`` (the pre-trained
    model ``model`` the export was cut from, loaded, its weights checked against the manifest's
    hash: the encoder or a task model built on it), every weight both hold must also be
    ``base``'s, masked (weights the checkpoint lacked, :func:`models.absent_keys`, aside)."""
    import torch

    from tamt_cli import units

    state = stored_state(folder)
    where = f"export '{folder}' is damaged"
    # a dense export of a structured mask (``unit_masks``) lost its pruned neurons and its
    # pruned heads' biases (:func:`tamt_cli.units.slice_model`); its mask file did not
    fitted = unit_masks is not None and not compressed.is_compressed(folder)
    full = masks
    if fitted:
        masks = units.sliced_masks(masks, unit_masks)
    for name, mask in masks.items():
        weight = state.get(name)
        if weight is None:
            raise UserError(f"{where}: it holds no '{name}', a weight its mask covers")
        if weight.shape != mask.shape:
            raise UserError(
                f"{where}: '{name}' has shape {list(weight.shape)} and its mask {list(mask.shape)}"
            )
        stray = int(torch.count_nonzero(weight.masked_fill(mask.bool(), 0)))
        if stray:
            raise UserError(
                f"{where}: '{name}' is non-zero at {stray} position{'s' if stray > 1 else ''} "
                "its mask prunes"
            )
    if base is None:
        return
    encoder = getattr(base, "base_model", base)
    absent = models.absent_keys(encoder)
    weights = {k: v.detach().to("cpu") for k, v in encoder.state_dict().items() if k not in absent}
    weights = {k: v.masked_fill(~full[k].bool(), 0) if k in full else v for k, v in weights.items()}
    if fitted:
        weights = units.fitted_state(weights, unit_masks)
    for name in sorted(set(state) & set(weights)):
        want = weights[name]
        have = state[name].to(want.dtype)
        if have.shape != want.shape:
            raise UserError(
                f"{where}: '{name}' has shape {list(have.shape)}; the weights of '{model}', "
                f"which it was cut from, {list(want.shape)}"
            )
        if not torch.equal(have, want):
            differ = int(torch.count_nonzero(have != want))
            raise UserError(
                f"{where}: '{name}' is not the weights of '{model}' under its mask, which the "
                f"export was cut from ({differ} of {want.numel()} differ)"
            )


def check_against(subject: Any, base: Any) -> None:
    """For a :class:`tamt_cli.subjects.Subject` (which imports this module) that is an export
    read through its pre-trained model: :func:`check` with ``base``, that model (the encoder or
    a task model built on it) just loaded and found to hash to the manifest's value. Nothing to
    do for any other subject, or where the manifest records no hash (or the export is its own
    model: ``finetune`` of a dense export)."""
    if subject.export is None or subject.weights_sha256 is None or subject.masks is None:
        return
    check(subject.export, subject.masks, base, subject.ref.given, subject.unit_masks)
