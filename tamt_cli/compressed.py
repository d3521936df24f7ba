"""Compressed exports: masked weights stored in compressed-tensors' ``sparse-bitmask`` layout.

Each masked weight ``<module>.weight`` of shape ``R × C`` is replaced in ``model.safetensors``
by four tensors, as compressed-tensors' ``sparse-bitmask`` format lays them out:

* ``<module>.shape``: the dense shape (int64);
* ``<module>.compressed``: the non-zero values in row-major order (the weight's dtype);
* ``<module>.bitmask``: ``R × ⌈C/8⌉`` uint8, bit ``c % 8`` of byte ``c // 8`` of row ``r`` set
  where ``W[r, c] ≠ 0`` (NumPy's ``packbits`` along the rows, little bit order);
* ``<module>.row_offsets``: where each row starts in ``compressed`` (int64).

Every other tensor is stored as it is. ``config.json`` carries a ``quantization_config`` with
``quant_method: compressed-tensors`` and a ``sparsity_config`` (``format: sparse-bitmask``), as
compressed-tensors writes it. compressed-tensors dropped its sparse compressors in 0.15 and
transformers 5 needs 0.15 or newer, so no released pair of the two reads such a folder with
transformers 5: :func:`dense_state` (or the few lines of NumPy in docs/runs.md, "Compressed
exports") decodes it.
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
    dense[torch.from_numpy(keep.reshape(shape))] = values
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
    """The ``quantization_config`` that names the format in ``config.json``."""
    return {
        "quant_method": "compressed-tensors",
        "format": "dense",
        "config_groups": {},
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
    """The dense state dict of a compressed export (every weight decoded)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    try:
        stored = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"cannot read compressed weights '{path}': {exc}") from None
    state: dict[str, Any] = {}
    for key, value in stored.items():
        prefix, _, part = key.rpartition(".")
        if part not in PARTS:
            state[key] = value
        elif part == "bitmask":
            try:
                parts = {p: stored[f"{prefix}.{p}"] for p in PARTS}
            except KeyError as missing:
                raise UserError(f"'{path}' lacks {missing} of '{prefix}.weight'") from None
            state[f"{prefix}.weight"] = decode(parts)
    return state


def load_model(folder: Path, cls: Any = None) -> Any:
    """A compressed export as a transformers model (``cls``: an ``AutoModel*`` class)."""
    from transformers import AutoConfig, AutoModel

    cls = cls or AutoModel
    config = AutoConfig.from_pretrained(str(folder))
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = cls.from_config(config)
    model.load_state_dict(dense_state(folder), strict=False)
    return model.eval()


def folder_bytes(folder: Path) -> int:
    """The bytes of every file in ``folder`` (recursively)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
