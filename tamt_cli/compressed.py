"""Compressed exports: masked weights stored in compressed-tensors' ``sparse-bitmask`` layout.

Each masked weight ``<module>.weight`` of shape ``R × C`` is replaced in ``model.safetensors``
by four tensors, as compressed-tensors' ``sparse-bitmask`` format lays them out:

* ``<module>.shape``: the dense shape (int64);
* ``<module>.compressed``: the non-zero values in row-major order (the weight's dtype);
* ``<module>.bitmask``: ``R × ⌈C/8⌉`` uint8, bit ``c % 8`` of byte ``c // 8`` of row ``r`` set
  where ``W[r, c] ≠ 0`` (NumPy's ``packbits`` along the rows, little bit order);
* ``<module>.row_offsets``: where each row starts in ``compressed`` (int64).

Every other tensor is stored as it is. ``config.json`` carries a ``quantization_config`` holding
compressed-tensors' ``sparsity_config`` (``format: sparse-bitmask``) and no ``quant_method``:
compressed-tensors dropped its sparse compressors in 0.15 and transformers 5 needs 0.15 or
newer, so no released pair of the two reads such a folder, and with ``quant_method:
compressed-tensors`` transformers would load it with the masked matrices freshly initialised
once compressed-tensors is installed; without ``quant_method`` it refuses the folder whatever is
installed. :func:`dense_state` (or the few lines of NumPy in docs/runs.md, "Compressed
exports") decodes it, checking the layout as it goes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tamt_cli import files
from tamt_cli.errors import UserError

FORMAT = "sparse-bitmask"
WEIGHTS_FILE = "model.safetensors"
PARTS = ("shape", "compressed", "bitmask", "row_offsets")


def encode(weight: Any) -> dict[str, Any]:
    """The four ``sparse-bitmask`` tensors of one 2-D weight (keys: :data:`PARTS`)."""
    import torch

    if weight.dim() != 2:
        raise ValueError(f"sparse-bitmask stores 2-D weights, got shape {list(weight.shape)}")
    dense = weight.detach().to("cpu").contiguous()
    nonzero = dense != 0
    counts = nonzero.sum(dim=1)
    bits = np.packbits(nonzero.numpy(), axis=-1, bitorder="little")
    return {
        "shape": torch.tensor(list(dense.shape), dtype=torch.int64),
        "compressed": dense[nonzero].contiguous(),
        "bitmask": torch.from_numpy(bits),
        "row_offsets": (torch.cumsum(counts, 0) - counts).to(torch.int64),
    }


def decode(parts: Mapping[str, Any]) -> Any:
    """The dense weight from its ``sparse-bitmask`` tensors."""
    import torch

    shape = [int(x) for x in parts["shape"].tolist()]
    keep = np.unpackbits(
        parts["bitmask"].numpy(), axis=-1, count=shape[-1], bitorder="little"
    ).astype(bool)
    values = parts["compressed"]
    dense = torch.zeros(shape, dtype=values.dtype)
    dense.masked_scatter_(torch.from_numpy(keep.reshape(shape)), values)  # row-major order
    return dense


def compress_state(state: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``state`` with every weight in ``names`` (keys ending in ``.weight``) replaced by its
    ``sparse-bitmask`` tensors; the other tensors unchanged."""
    chosen = set(names)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key not in chosen:
            out[key] = value.detach().contiguous()
            continue
        prefix = key.removesuffix(".weight")
        for part, tensor in encode(value).items():
            out[f"{prefix}.{part}"] = tensor
    return out


def config_entry(names: Iterable[str], sparsity: float, structure: str) -> dict[str, Any]:
    """The ``quantization_config`` that names the format in ``config.json``: compressed-tensors'
    ``sparsity_config`` and no ``quant_method``, so that transformers refuses the folder (a
    ``ValueError``, before it asks for any quantization package) instead of loading the masked
    matrices freshly initialised, which it does with compressed-tensors 0.15 or newer installed
    when ``quant_method`` is ``compressed-tensors``."""
    return {
        "sparsity_config": {
            "format": FORMAT,
            "global_sparsity": sparsity,
            "sparsity_structure": structure,
            "targets": sorted(n.removesuffix(".weight") for n in names),
            "ignore": [],
        },
    }


def write(
    folder: Path, state: Mapping[str, Any], names: Iterable[str], sparsity: float, structure: str
) -> None:
    """Write the weights of a folder that already holds ``config.json`` as a compressed export:
    ``model.safetensors`` in the ``sparse-bitmask`` layout and the format in ``config.json``."""
    from safetensors.torch import save

    names = list(names)
    data = save(compress_state(state, names), metadata={"format": "pt"})
    files.write_bytes(Path(folder) / WEIGHTS_FILE, data)
    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["quantization_config"] = config_entry(names, sparsity, structure)
    files.write_json(config_path, config)


def is_compressed(folder: Path) -> bool:
    """Whether ``folder`` is a model folder whose weights are stored in this layout."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    sparsity = (config.get("quantization_config") or {}).get("sparsity_config") or {}
    return sparsity.get("format") == FORMAT


def dense_state(folder: Path) -> dict[str, Any]:
    """The dense state dict of a compressed export (every weight decoded), with a one-line
    error naming the tensor when the layout does not hold together (:func:`decode_checked`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    try:
        stored = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"cannot read compressed weights '{path}': {exc}") from None
    prefixes = sorted({k.rpartition(".")[0] for k in stored if k.rpartition(".")[2] in PARTS})
    state = {k: v for k, v in stored.items() if k.rpartition(".")[2] not in PARTS}
    for prefix in prefixes:
        keys = [f"{prefix}.{p}" for p in PARTS]
        missing = [k for k in keys if k not in stored]
        if missing:
            held = next(k for k in keys if k in stored)
            raise UserError(f"'{path}' is damaged: it holds '{held}' but no '{missing[0]}'")
        if f"{prefix}.weight" in state:
            raise UserError(f"'{path}' is damaged: it holds '{prefix}.weight' dense and compressed")
        try:
            state[f"{prefix}.weight"] = decode_checked({p: stored[f"{prefix}.{p}"] for p in PARTS})
        except ValueError as exc:
            raise UserError(f"'{path}' is damaged: '{prefix}.{exc}") from None
    return state


def decode_checked(parts: Mapping[str, Any]) -> Any:
    """:func:`decode` after checking that the four tensors agree: ``shape`` two sizes,
    ``bitmask`` ``uint8`` of ``R × ⌈C/8⌉`` bytes with no bit set past column ``C``, as many
    floating-point ``compressed`` values as set bits, ``row_offsets`` where each row's values
    start. A ``ValueError`` otherwise, its message the part's name and what is wrong with it
    (``bitmask' is uint8 [4, 1]; ...``: the caller puts the weight's name before it)."""
    import torch

    shape, bits, values = parts["shape"], parts["bitmask"], parts["compressed"]
    sizes = shape.tolist() if shape.dim() == 1 and not shape.is_floating_point() else None
    if sizes is None or len(sizes) != 2 or min(sizes) < 0:
        raise ValueError(f"shape' holds {shape.tolist()}; a matrix's shape is two sizes")
    rows, cols = sizes
    needs = [rows, -(-cols // 8)]
    if bits.dtype != torch.uint8 or list(bits.shape) != needs:
        kind = f"{str(bits.dtype).removeprefix('torch.')} {list(bits.shape)}"
        raise ValueError(f"bitmask' is {kind}; a {sizes} matrix needs uint8 {needs}")
    keep = np.unpackbits(bits.numpy(), axis=-1, bitorder="little")
    if keep[:, cols:].any():
        raise ValueError(f"bitmask' has bits set beyond its {cols} columns")
    counts = keep.sum(axis=1, dtype=np.int64)
    if values.dim() != 1 or not values.is_floating_point():
        kind = str(values.dtype).removeprefix("torch.")
        raise ValueError(f"compressed' is {kind} {list(values.shape)}, not a row of values")
    if values.numel() != counts.sum():
        raise ValueError(
            f"compressed' holds {values.numel()} values; its bitmask keeps {int(counts.sum())}"
        )
    offsets = parts["row_offsets"]
    starts = (np.cumsum(counts) - counts).tolist()
    if offsets.dim() != 1 or offsets.is_floating_point() or offsets.tolist() != starts:
        raise ValueError("row_offsets' does not match its bitmask")
    return decode(parts)


def load_model(folder: Path, cls: Any = None) -> Any:
    """A compressed export as a transformers model (``cls``: an ``AutoModel*`` class)."""
    from transformers import AutoConfig, AutoModel

    cls = cls or AutoModel
    config = AutoConfig.from_pretrained(str(folder))
    quantization = getattr(config, "quantization_config", None)
    sparsity = quantization.get("sparsity_config") or {} if isinstance(quantization, dict) else {}
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = cls.from_config(config)
    state = dense_state(folder)
    absent = [f"{t}.weight" for t in sparsity.get("targets") or [] if f"{t}.weight" not in state]
    if absent:
        raise UserError(
            f"'{Path(folder) / WEIGHTS_FILE}' is damaged: it holds no '{absent[0]}', a weight "
            "its config.json lists as compressed"
        )
    model.load_state_dict(state, strict=False)
    return model.eval()


def folder_bytes(folder: Path) -> int:
    """The bytes of every file in ``folder`` (recursively)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
