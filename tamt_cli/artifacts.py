"""What runs leave on disk: run directories, the mask file format, manifests, atomic writes.

Mask file (``masks.safetensors``): one ``uint8`` tensor per masked weight, named by the weight's
state-dict key relative to the base encoder, holding the boolean keep-mask (1 = kept) flattened
in row-major order and bit-packed eight to a byte, least significant bit first. The safetensors
header metadata holds ``format`` = ``tamt.masks``, ``version`` and ``shapes`` (a JSON object of
name → shape), so any safetensors reader with ``numpy.unpackbits`` can decode it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tamt_cli import __version__
from tamt_cli.errors import UserError, first_line

# -- the names of a run directory's files ------------------------------------------------------
#
# A search run: SPEC_FILE, MANIFEST, MASK_FILE (the final mask), MASKS_DIR/step-NNNNNN.safetensors
# (masks at checkpoints), METRICS_LOG, HEAD_WARMUP_LOG and HEAD_FILE (MLM objectives),
# CHECKPOINTS/step-NNNNNN/ (CHECKPOINT_TENSORS, CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE).
# A fine-tuning run: SPEC_FILE, MANIFEST, SUMMARY and one seed_folder(N) per seed (a plain Hugging
# Face folder with SEED_METRICS, METRICS_LOG, MASK_FILE and MANIFEST).

MASK_FILE = "masks.safetensors"
MANIFEST = "manifest.json"
SPEC_FILE = "spec.yaml"
MASKS_DIR = "masks"
#: the training loop's log: one JSON object per logged step
METRICS_LOG = "metrics.jsonl"
#: the log of the MLM head's fit on the dense model
HEAD_WARMUP_LOG = "head_warmup.jsonl"
#: the MLM head a search trained along with its mask
HEAD_FILE = "head.safetensors"
CHECKPOINTS = "checkpoints"
CHECKPOINT_TENSORS = "trainable.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"
CHECKPOINT_STATE = "state.json"
#: a fine-tuning run's best and final scores over its seeds
SUMMARY = "summary.json"
#: one fine-tuned seed's best and final scores and every evaluation
SEED_METRICS = "metrics.json"
MASK_FORMAT = "tamt.masks"
MASK_FORMAT_VERSION = "1"


# -- atomic writes -------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, then a rename. A
    failure (a full disk) raises ``OSError`` naming ``path`` and leaves the old file as it was."""
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# -- output folders ------------------------------------------------------------------------
#
# One rule for every folder a command writes (``search --out``, ``finetune --out``,
# ``extract --export``), checked by ``check_output`` before any work:
#
# * a folder that exists is never written into; ``--overwrite`` (where a command has it)
#   replaces it only when it is a tamt run or export (its manifest says so), never when it is
#   the source of the command, the current directory or a folder holding either;
# * a folder another live tamt process is writing is refused;
# * a folder is built under a temporary name beside it (``.NAME.XXXX.partial``, holding a lock
#   while its process lives) and renamed into place when complete; a training run's folder is
#   made with an exclusive ``mkdir`` and holds the lock (``.tamt.lock``) while a process works in
#   it. A temporary folder whose lock nobody holds belongs to a process that died: it is removed
#   the next time tamt writes beside it.

LOCK_FILE = ".tamt.lock"
PARTIAL_SUFFIX = ".partial"
#: kinds of manifest a folder may have for ``--overwrite`` to replace it
REPLACEABLE_KINDS = frozenset({"search", "subnetwork", "finetune"})


def _absolute(path: Path) -> Path:
    """``path`` made absolute without following a symbolic link at its end."""
    return Path(os.path.abspath(Path(path).expanduser()))


def try_lock(path: Path) -> Any | None:
    """The lock file ``path`` taken without waiting, or None while another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def release(lock: Any | None, *, remove: bool = False) -> None:
    """Let go of a lock from ``try_lock``; ``remove`` deletes the lock file first."""
    if lock is None:
        return
    if remove:
        with contextlib.suppress(OSError):
            os.unlink(lock.lock_file)
    lock.release()


def _held(lock_path: Path) -> bool:
    """Whether a live process holds the lock file ``lock_path`` (an absent file: no)."""
    if not lock_path.is_file():
        return False
    try:
        lock = try_lock(lock_path)
    except OSError:  # a lock file this user cannot open is nobody's lock of ours
        return False
    release(lock)
    return lock is None


def _stages(final: Path) -> list[Path]:
    """Temporary folders of ``final`` (tamt's, with a lock file) beside it."""
    parent = final.parent
    if not parent.is_dir():
        return []
    prefix = f".{final.name}."
    return [
        p
        for p in parent.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(PARTIAL_SUFFIX) and _is_stage(p)
    ]


def _is_stage(path: Path) -> bool:
    return (
        path.name.startswith(".")
        and path.name.endswith(PARTIAL_SUFFIX)
        and path.is_dir()
        and not path.is_symlink()
        and (path / LOCK_FILE).is_file()
    )


def busy(path: Path) -> bool:
    """Whether another live tamt process is writing the folder ``path``."""
    final = _absolute(path)
    return _held(final / LOCK_FILE) or any(_held(stage / LOCK_FILE) for stage in _stages(final))


def clean_stale(parent: Path) -> list[Path]:
    """Remove the temporary folders in ``parent`` left by tamt processes that died (their lock
    is held by nobody); returns them. Nothing without tamt's lock file is touched."""
    removed: list[Path] = []
    if not Path(parent).is_dir():
        return removed
    for path in sorted(Path(parent).iterdir()):
        if not _is_stage(path):
            continue
        lock = try_lock(path / LOCK_FILE)
        if lock is None:
            continue  # a live process is writing it
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            release(lock)
        removed.append(path)
    if removed:
        _note(
            "removed what interrupted tamt runs left unfinished: "
            + ", ".join(str(p) for p in removed)
        )
    return removed


def _note(text: str) -> None:
    from rich.console import Console

    from tamt_cli import verbosity

    verbosity.note(Console(stderr=True), text)


def check_output(
    path: Path,
    *,
    flag: str,
    overwrite: bool = False,
    can_overwrite: bool = False,
    sources: tuple[Path, ...] = (),
) -> None:
    """Refuse, before any work, a folder a command may not write (the rule above). ``flag``
    names the option that gave the path (``--out``, ``--export``); ``can_overwrite`` says
    whether the command has ``--overwrite``; ``sources`` are what the command reads."""
    target = _absolute(path)
    for parent in target.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise UserError(f"{flag} '{path}' cannot be made: '{parent}' is not a folder")
            break
    cwd = Path.cwd().resolve()
    resolved = target.resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(f"{flag} '{path}' is the current directory or holds it; name a new folder")
    for source in sources:
        src = Path(source).resolve()
        if resolved == src or resolved in src.parents:
            raise UserError(
                f"{flag} '{path}' is {'the' if resolved == src else 'a folder holding the'} "
                f"source of this command ('{source}'); name another folder"
            )
    if busy(target):
        raise UserError(
            f"{flag} '{path}' is being written by another tamt process; wait for it to end "
            "or choose another path"
        )
    if not os.path.lexists(target):
        return
    if not overwrite:
        hint = (
            " or pass --overwrite (it replaces only a tamt run or export)" if can_overwrite else ""
        )
        if _unfinished_search(target):
            hint += f", or continue it with: tamt search --resume {path}"
        raise UserError(f"{flag} '{path}' already exists; choose another path{hint}")
    if target.is_symlink() or not target.is_dir():
        problem = "a symbolic link" if target.is_symlink() else "not a folder"
        raise UserError(
            f"{flag} '{path}' is {problem}; --overwrite replaces only a tamt run or export folder"
        )
    try:
        kind = read_manifest(target).get("kind")
    except UserError:
        kind = None
    if kind not in REPLACEABLE_KINDS:
        raise UserError(
            f"{flag} '{path}' is not a tamt run or export (no tamt {MANIFEST}); --overwrite "
            "replaces only those: remove it yourself or choose another path"
        )


def _unfinished_search(path: Path) -> bool:
    try:
        manifest = read_manifest(path)
    except UserError:
        return False
    return manifest.get("kind") == "search" and manifest.get("status") == "running"


@contextlib.contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and rename it into place only
    if the block succeeds; on failure nothing at ``final`` is touched. An existing ``final`` is
    replaced only with ``replace`` (callers check what may be replaced: ``check_output``)."""
    final = _absolute(final)
    if os.path.lexists(final) and not replace:
        raise UserError(f"'{final}' already exists; nothing was written")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    stage, lock = _new_stage(final)
    try:
        yield stage
        for path in stage.rglob("*"):  # libraries writing into the stage may make private files
            if path.is_file() and not path.is_symlink():
                os.chmod(path, 0o666 & ~_umask())
        if os.path.lexists(final) and not replace:
            raise UserError(f"'{final}' was created by another process meanwhile; nothing written")
        os.unlink(stage / LOCK_FILE)
        if os.path.lexists(final):
            _swap(stage, final)
        else:
            try:
                os.rename(stage, final)
            except OSError as exc:
                if exc.errno not in {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR}:
                    raise
                raise UserError(
                    f"'{final}' was created by another process meanwhile; nothing written"
                ) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        release(lock)


def _new_stage(final: Path) -> tuple[Path, Any]:
    """A new locked temporary folder beside ``final``."""
    stage = Path(
        tempfile.mkdtemp(prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX, dir=final.parent)
    )
    os.chmod(stage, 0o777 & ~_umask())
    lock = try_lock(stage / LOCK_FILE)
    if lock is None:  # another process took it for stale in the instant after mkdtemp
        raise UserError(f"could not lock the temporary folder '{stage}'; try again")
    return stage, lock


def _swap(stage: Path, final: Path) -> None:
    """Put ``stage`` in the place of ``final``; the old one goes to a locked temporary folder
    first, so that an interruption leaves nothing that the next run does not clean away."""
    trash, lock = _new_stage(final)
    try:
        os.replace(final, trash / "replaced")
        os.replace(stage, final)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        release(lock)


def create_run_dir(path: Path) -> Any:
    """Make a training run's folder with an exclusive ``mkdir`` and take its lock; returns the
    lock (``release(lock, remove=True)`` when the run ends)."""
    path = _absolute(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        raise UserError(
            f"run directory '{path}' already exists; choose another --out, or continue it with "
            f"--resume {path}"
        ) from None
    lock = try_lock(path / LOCK_FILE)
    if lock is None:
        raise UserError(f"run directory '{path}' is being used by another tamt process")
    return lock


def lock_run_dir(path: Path) -> Any:
    """The lock of an existing run's folder, for ``--resume``; refused while a live process
    holds it."""
    lock = try_lock(_absolute(path) / LOCK_FILE)
    if lock is None:
        raise UserError(
            f"run '{path}' is being written by another tamt process that is still running; "
            "wait for it to end (or stop it) before resuming"
        )
    return lock


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


def seed_folder(seed: int) -> str:
    """The folder of one seed of a fine-tuning run."""
    return f"seed-{seed}"


def step_mask_file(step: int) -> str:
    """A search run's mask saved at ``step``, relative to the run directory."""
    return f"{MASKS_DIR}/step-{step:06d}.safetensors"


def checkpoint_folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


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


def choose_mask(
    manifest: dict[str, Any], run: Path, *, step: int | None = None, sparsity: float | None = None
) -> dict[str, Any]:
    """The entry of ``run``'s manifest for the mask saved at ``step`` and/or ``sparsity`` (by
    default the final mask)."""
    entries = manifest.get("masks") or []
    if not entries:
        raise UserError(f"run '{run}' holds no masks")
    if step is not None:
        hits = [e for e in entries if e.get("step") == step]
        if not hits:
            steps = [str(e["step"]) for e in entries if e.get("step") is not None]
            raise UserError(
                f"run '{run}' has no mask at step {step}; "
                f"available: {', '.join(steps) or 'none (not a training run)'}"
            )
        entries = hits
    if sparsity is not None:
        hits = [
            e
            for e in entries
            if e.get("sparsity") is not None and abs(e["sparsity"] - sparsity) < 1e-9
        ]
        if not hits:
            have = sorted({f"{e['sparsity']:g}" for e in entries if e.get("sparsity") is not None})
            raise UserError(
                f"run '{run}' has no mask at sparsity {sparsity:g}; "
                f"available: {', '.join(have) or 'none'}"
            )
        entries = hits
    finals = [e for e in entries if e.get("final")]
    return (finals or entries)[-1]


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


def environment(plugins: Mapping[str, str]) -> dict[str, Any]:
    """Versions that matter for reproducing a run (``plugins``: distribution → version of what
    provides methods and tasks)."""
    import torch
    import transformers

    return {
        "tamt": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "plugins": dict(plugins),
    }


def new_manifest(kind: str, plugins: Mapping[str, str], **fields: Any) -> dict[str, Any]:
    """A manifest of ``kind`` holding ``fields``, the tamt version, the time and the
    environment (``plugins``: see :func:`environment`)."""
    return {
        "tamt_version": __version__,
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "environment": environment(plugins),
    }


# -- search runs -----------------------------------------------------------------------------


class RunWriter:
    """Writes a search run's masks, extra files and manifest (on the main process only).

    The manifest's ``seconds`` is the wall-clock time of the search so far (of earlier runs
    up to their last write, when resumed)."""

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        enabled: bool,
        previous: dict[str, Any] | None = None,
        started: float | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.enabled = enabled
        self.previous = previous  # the manifest of the run being resumed
        self.started = time.perf_counter() if started is None else started
        self.before = float(manifest.get("seconds") or 0.0)

    def record_input(self, name: str, value: Any, what: str) -> None:
        """Record a fact the result depends on (e.g. a digest of the corpus) in the manifest's
        ``inputs``; resuming refuses to go on when it differs from what the run started with."""
        before = ((self.previous or {}).get("inputs") or {}).get(name)
        if before is not None and before != value:
            raise UserError(
                f"--resume: {what} has changed since run '{self.root}' started ({name} differs); "
                f"resume it with the same {what}, or start a new run"
            )
        if before is None:
            self.manifest.setdefault("inputs", {})[name] = value
            self.write_manifest()

    def write_manifest(self) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            self.manifest["seconds"] = round(self.before + elapsed, 2)
            write_json(self.root / MANIFEST, self.manifest)

    def save_masks(self, masks: dict[str, Any], *, step: int | None, **extra: Any) -> None:
        """Keep a mask (e.g. at a checkpoint) as ``masks/step-NNNNNN.safetensors``."""
        if not self.enabled:
            return
        from tamt_cli import masking

        name = step_mask_file(step) if step is not None else MASK_FILE
        save_masks(self.root / name, masks)
        kept = [m for m in self.manifest["masks"] if m.get("file") != name]
        sparsity = self.manifest.get("sparsity")
        kept.append(
            {
                "file": name,
                "sparsity": sparsity,
                "achieved": masking.pruned_fraction(masks),
                "step": step,
                "final": False,
                **extra,
            }
        )
        self.manifest["masks"] = sorted(kept, key=lambda m: (m["step"] is None, m["step"] or 0))
        self.write_manifest()

    def save_tensors(
        self, name: str, tensors: dict[str, Any], metadata: dict | None = None
    ) -> None:
        """An extra safetensors file of the run (e.g. a trained head)."""
        if self.enabled:
            from safetensors.torch import save as st_save

            cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            write_bytes(self.root / name, st_save(cpu, metadata=metadata))

    def finish(
        self, masks: dict[str, Any], report: dict[str, Any], notes: dict, step: int | None = None
    ) -> None:
        """The final mask as ``masks.safetensors`` and the completed manifest."""
        if not self.enabled:
            return
        save_masks(self.root / MASK_FILE, masks)
        entries = [m for m in self.manifest["masks"] if m.get("file") != MASK_FILE]
        final = {
            "file": MASK_FILE,
            "sparsity": self.manifest.get("sparsity"),
            "achieved": report["overall"]["sparsity"],
            "step": step,
            "final": True,
        }
        self.manifest.update(
            status="complete", masks=[*entries, final], sparsity_report=report, notes=notes
        )
        self.write_manifest()


def model_record(ref: Any, model: Any, weights_sha: str) -> dict[str, Any]:
    """The model a run was made from: what was given, where it loaded from, its shape and the
    hash of its weights."""
    config = model.config
    return {
        "id": ref.given,
        "location": ref.location,
        "local": ref.local,
        "class": type(model).__name__,
        "model_type": config.model_type,
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "weights_sha256": weights_sha,
    }
