"""What runs leave on disk: every name in a run, export or sweep folder, the manifests, the
run writer.

How the files are written is :mod:`tamt_cli.files`; the mask file format is
:mod:`tamt_cli.maskfile`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from tamt_cli import __version__, files, maskfile, records
from tamt_cli.errors import UserError

# -- the names of a run directory's files ------------------------------------------------------
#
# A search run: SPEC_FILE, MANIFEST, MASK_FILE (the final mask), MASKS_DIR/step-NNNNNN.safetensors
# (masks at checkpoints), METRICS_LOG, HEAD_WARMUP_LOG and HEAD_FILE (MLM objectives),
# CHECKPOINTS/step-NNNNNN/ (CHECKPOINT_TENSORS, CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE; removed
# when the run completes, unless --keep-checkpoints was given).
# A fine-tuning run: SPEC_FILE, MANIFEST, SUMMARY and one seed_folder(N) per seed (a plain Hugging
# Face folder with SEED_METRICS, METRICS_LOG, PREDICTIONS, MASK_FILE, MANIFEST and CARD;
# CHECKPOINTS/ while the seed trains).
# An export (`extract --export`): the model's files, MASK_FILE, MANIFEST and CARD.

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
#: a search manifest's kept-weight Jaccard of the final mask with the OMP mask of the same
#: sparsity, scope, pattern and weights (the magnitude of the pre-trained weights)
OMP_JACCARD = "omp_kept_jaccard"
#: a fine-tuning run's best and final scores over its seeds
SUMMARY = "summary.json"
#: one fine-tuned seed's best and final scores and every evaluation
SEED_METRICS = "metrics.json"
#: the model card of an export or a fine-tuned seed (:mod:`tamt_cli.modelcard`)
CARD = "README.md"
#: one fine-tuned seed's prediction for every example of the main eval split, a JSON object a line
PREDICTIONS = "predictions.jsonl"
#: where runs go when no --out is given
RUNS = "runs"

# -- the names in a sweep directory ------------------------------------------------------------
#
# SWEEP_GRID (the grid as last run), SWEEP_INDEX (every cell), the search runs
# (sweep_search(subnetwork)), the held-out losses (sweep_heldout(subnetwork, objective)) and the
# fine-tuning runs (sweep_finetune(task, subnetwork, seed)); a subnetwork is named
# sweep_subnetwork(method, sparsity), the dense model DENSE.

#: where sweeps go when neither the grid nor --out names a folder
SWEEPS = "sweeps"
SWEEP_INDEX = "sweep.json"
SWEEP_GRID = "grid.yaml"
#: the lock the processes of one sweep (its shards) take to write SWEEP_INDEX
SWEEP_LOCK = ".sweep.lock"
#: the lock a sweep holds while it runs: files.LOCK_FILE without --shard, this one (K, N) with
#: --shard K/N; beside each, its name + HOLDER_SUFFIX records the process holding it
SWEEP_SHARD_LOCK = ".sweep-shard-{}-of-{}.lock"
HOLDER_SUFFIX = ".pid"
SWEEP_SEARCHES = "search"
SWEEP_FINETUNES = "finetune"
HELDOUT_PREFIX = "heldout-"
#: the dense model's name in a sweep's folder and file names
DENSE = "dense"


# -- output folders ------------------------------------------------------------------------
#
# One rule for every folder a command writes (``search --out``, ``finetune --out``,
# ``extract --export``), checked by ``check_output`` before any work:
#
# * a folder that exists is never written into; ``--overwrite`` (where a command has it)
#   replaces it only when it is a tamt run or export (its manifest says so), never when it is
#   the source of the command, the current directory or a folder holding either;
# * a folder another live tamt process is writing is refused;
# * a folder is built under a temporary name and renamed into place when complete, or (a
#   training run's) holds a lock while a process works in it: see :mod:`tamt_cli.files`.

#: kinds of manifest a folder may have for ``--overwrite`` to replace it
REPLACEABLE_KINDS = frozenset({"search", "subnetwork", "finetune"})


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
    target = files.absolute(path)
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
    if files.busy(target):
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
        unfinished = _unfinished(target)
        if unfinished is not None:
            hint += f", or continue it with: tamt {unfinished} --resume {path}"
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


def _unfinished(path: Path) -> str | None:
    """The kind of run (``search``, ``finetune``) ``path`` holds when it is an unfinished one
    that ``--resume`` continues."""
    try:
        manifest = read_manifest(path)
    except UserError:
        return None
    running = manifest.get("status") == "running"
    kind = manifest.get("kind")
    return str(kind) if running and kind in {"search", "finetune"} else None


def resumable(run_dir: Path, kind: str) -> Path:
    """The spec file of ``run_dir``, a run of ``kind`` that ``--resume`` may continue: not
    complete, made by this major version of tamt, not being written by a live process."""
    saved_path = Path(run_dir) / SPEC_FILE
    manifest = read_manifest(run_dir)
    if manifest.get("status") == "complete":
        raise UserError(f"run '{run_dir}' is already complete; there is nothing to resume")
    if manifest.get("kind") != kind:
        raise UserError(f"'{run_dir}' is a {manifest.get('kind')} run, not a {kind} run")
    made_by = str(manifest.get("tamt_version"))
    if made_by.split(".")[0] != __version__.split(".")[0]:
        raise UserError(
            f"run '{run_dir}' was started by tamt {made_by}; this tamt {__version__} is another "
            f"major version and would not continue it as it began: resume it with tamt {made_by}"
            ", or start a new run"
        )
    if not saved_path.is_file():
        raise UserError(f"'{run_dir}' has no {SPEC_FILE}; it cannot be resumed")
    if files.busy(run_dir):
        raise UserError(
            f"run '{run_dir}' is being written by another tamt process that is still running; "
            "wait for it to end (or stop it) before resuming"
        )
    return saved_path


# -- run directories ------------------------------------------------------------------------


def timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def default_run_dir(*parts: str) -> Path:
    name = "-".join([*parts, timestamp()])
    path = Path(RUNS) / name
    n = 1
    while path.exists():
        n += 1
        path = Path(RUNS) / f"{name}-{n}"
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


def remove_checkpoints(run_dir: Path) -> None:
    """Remove a run's resumable checkpoints (``checkpoints/``, optimiser state included); its
    masks, metrics and manifest stay."""
    import shutil

    shutil.rmtree(Path(run_dir) / CHECKPOINTS, ignore_errors=True)


# -- sweep directories ----------------------------------------------------------------------


def sweep_subnetwork(method: str, sparsity: float | None) -> str:
    """How a sweep names the subnetwork of ``method`` at ``sparsity`` (the dense model: no
    sparsity)."""
    return method if sparsity is None else f"{method}-s{sparsity:g}"


def sweep_search(subnetwork: str) -> str:
    """The search run of ``subnetwork``, relative to the sweep directory."""
    return f"{SWEEP_SEARCHES}/{subnetwork}"


def sweep_heldout(subnetwork: str, objective: str) -> str:
    """The held-out ``objective`` loss of ``subnetwork``, relative to the sweep directory."""
    return f"{HELDOUT_PREFIX}{subnetwork}-{objective}.json"


def sweep_heldout_files(sweep_dir: Path) -> list[Path]:
    """The held-out loss files of a sweep, by name."""
    return sorted(Path(sweep_dir).glob(f"{HELDOUT_PREFIX}*.json"))


def heldout_subnetwork(file_name: str, objective: str | None) -> str:
    """The subnetwork whose held-out ``objective`` loss a sweep keeps in ``file_name``."""
    return file_name.removeprefix(HELDOUT_PREFIX).removesuffix(f"-{objective}.json")


def sweep_finetune(task: str, subnetwork: str, seed: int) -> str:
    """The fine-tuning run of ``subnetwork`` on ``task`` with ``seed``, relative to the sweep
    directory."""
    return f"{SWEEP_FINETUNES}/{task}-{subnetwork}-seed{seed}"


# -- manifests ------------------------------------------------------------------------------


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of ``run_dir``, checked as its kind's (:data:`tamt_cli.records.MANIFESTS`):
    a folder without one, or one that is corrupt or of the wrong shape, is a one-line error."""
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
    return records.as_dict(records.check(path, manifest, records.manifest_model(manifest)))


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


#: the libraries whose versions decide what a run does
LIBRARIES = ("torch", "transformers", "datasets", "accelerate", "huggingface_hub", "tokenizers",
             "safetensors", "numpy", "scikit-learn", "scipy", "typer", "pydantic")  # fmt: skip


def version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (None when it is not installed)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def torch_version() -> str | None:
    """torch's full version, local suffix included (``2.14.1+cu130``, ``2.13.0+cpu``), as
    ``torch.__version__`` gives it: the CUDA wheels on PyPI leave the suffix out of their
    metadata, and it is what a report about a build needs (None when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def versions() -> dict[str, str | None]:
    """tamt's, Python's and every one of :data:`LIBRARIES`' version (torch's in full, see
    :func:`torch_version`): what a manifest records and ``tamt env`` shows."""
    found = {name: version(name) for name in LIBRARIES}
    found["torch"] = torch_version()
    return {"tamt": __version__, "python": platform.python_version(), **found}


def environment(plugins: Mapping[str, str]) -> dict[str, Any]:
    """Versions that matter for reproducing a run (see :func:`versions`; ``plugins``:
    distribution → version of what provides methods and tasks)."""
    found = versions()
    return {
        "tamt": found.pop("tamt"),
        "git_commit": git_commit(),
        "python": found.pop("python"),
        **found,
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
                f"resume it with {what} it started with, or start a new run"
            )
        if before is None:
            self.manifest.setdefault("inputs", {})[name] = value
            self.write_manifest()

    def write_manifest(self) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            self.manifest["seconds"] = round(self.before + elapsed, 2)
            files.write_json(self.root / MANIFEST, self.manifest)

    def save_masks(
        self, masks: dict[str, Any], *, step: int | None, units: Any = None, **extra: Any
    ) -> None:
        """Keep a mask (e.g. at a checkpoint) as ``masks/step-NNNNNN.safetensors`` (``units``:
        the unit masks of a structured one)."""
        if not self.enabled:
            return
        from tamt_cli import masking

        name = step_mask_file(step) if step is not None else MASK_FILE
        maskfile.save_masks(self.root / name, masks, units=units)
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
            files.write_bytes(self.root / name, st_save(cpu, metadata=metadata))

    def finish(
        self,
        masks: dict[str, Any],
        report: dict[str, Any],
        notes: dict,
        step: int | None = None,
        units: Any = None,
    ) -> None:
        """The final mask as ``masks.safetensors`` (with its unit masks, if structured) and the
        completed manifest."""
        if not self.enabled:
            return
        maskfile.save_masks(self.root / MASK_FILE, masks, units=units)
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


def recorded_path(path: str | Path) -> str:
    """A path as a manifest records it: as it was given (a relative path stays relative to the
    folder the command ran in), never made absolute, with the user's home folder written ``~``
    (so a manifest names no home folder of the machine that wrote it)."""
    text = str(path)
    home = os.path.expanduser("~")
    if home not in {"~", os.sep} and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


def model_location(ref: Any) -> str:
    """Where a model was loaded from, as a manifest records it: a local folder as it was given
    (see :func:`recorded_path`; ``demo`` for the demo model), a hub id as it is."""
    return recorded_path(ref.given) if ref.local else str(ref.location)


def model_record(ref: Any, model: Any, weights_sha: str) -> dict[str, Any]:
    """The model a run was made from: what was given, where it loaded from, its shape and the
    hash of its weights."""
    config = model.config
    return {
        "id": recorded_path(ref.given),
        "location": model_location(ref),
        "local": ref.local,
        "class": type(model).__name__,
        "model_type": config.model_type,
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "weights_sha256": weights_sha,
    }
