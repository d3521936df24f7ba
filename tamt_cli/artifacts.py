"""What runs leave on disk: run directories, the mask file format, manifests, atomic writes.

Mask file (``masks.safetensors``): one ``uint8`` tensor per masked weight, named by the weight's
state-dict key relative to the base encoder, holding the boolean keep-mask (1 = kept) flattened
in row-major order and bit-packed eight to a byte, least significant bit first. The safetensors
header metadata holds ``format`` = ``tamt.masks``, ``version`` and ``shapes`` (a JSON object of
name → shape), so any safetensors reader with ``numpy.unpackbits`` can decode it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tamt_cli import __version__
from tamt_cli.errors import UserError

MASK_FILE = "masks.safetensors"
MANIFEST = "manifest.json"
SPEC_FILE = "spec.yaml"
MASK_FORMAT = "tamt.masks"
MASK_FORMAT_VERSION = "1"


# -- atomic writes -------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files; use normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def staged_dir(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and rename it into place only
    if the block succeeds; on failure nothing at ``final`` is touched."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise UserError(f"'{final}' already exists; choose another path or pass --overwrite")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(stage, 0o777 & ~_umask())
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for path in stage.rglob("*"):  # libraries writing into the stage may make private files
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~_umask())
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- mask files ----------------------------------------------------------------------------


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
    write_bytes(path, encode_masks(masks, metadata))


def load_masks(path: Path) -> dict[str, Any]:
    """Boolean keep-masks (torch tensors) from a mask file; one-line errors if it is not one."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask file '{path}' does not exist")
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
            shapes = json.loads(meta["shapes"])
            masks = {}
            for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = shapes[name]
                numel = int(np.prod(shape)) if shape else 1
                bits = np.unpackbits(fh.get_tensor(name), count=numel, bitorder="little")
                masks[name] = torch.from_numpy(bits.astype(bool).reshape(shape))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"mask file '{path}' is unreadable or corrupt ({exc})") from None
    return masks


# -- run directories and manifests ---------------------------------------------------------


def timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def default_run_dir(*parts: str) -> Path:
    name = "-".join([*parts, timestamp()])
    path = Path("runs") / name
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{name}-{n}"
    return path


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).is_dir():
        raise UserError(f"'{run_dir}' is not a directory")
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a tamt run (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"'{path}' is corrupt: {exc}") from None
    if not isinstance(manifest, dict) or "tamt_version" not in manifest:
        raise UserError(f"'{path}' is not a tamt manifest")
    return manifest


def git_commit() -> str | None:
    """The commit of the source tree tamt runs from, when it is a git checkout."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Versions that matter for reproducing a run."""
    import torch
    import transformers

    from tamt_cli.registry import installed_distributions

    return {
        "tamt": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "plugins": installed_distributions(),
    }


def new_manifest(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "tamt_version": __version__,
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "environment": environment(),
    }
