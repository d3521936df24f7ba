"""Writing files and folders safely: atomic writes, folders built under a temporary name and
renamed into place, and the locks that tell a live tamt process's folder from one a dead process
left behind.

* A file is written to a temporary file beside it, then renamed over it
  (:func:`write_bytes`): a failure leaves the old file as it was.
* A folder is built under a temporary name beside it (``.NAME.XXXX.partial``, holding a lock
  while its process lives) and renamed into place when complete (:func:`staged_dir`). A
  training run's folder is made with an exclusive ``mkdir`` and holds the lock (``.tamt.lock``)
  while a process works in it (:func:`create_run_dir`, :func:`lock_run_dir`).
* A temporary folder whose lock nobody holds belongs to a process that died: it is removed the
  next time tamt writes beside it (:func:`clean_stale`); :func:`busy` says whether a live process
  is writing a folder.

Which folders a command may write or replace is :func:`tamt_cli.artifacts.check_output`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tamt_cli.errors import UserError, fault_of_machine

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


# -- staged folders and locks --------------------------------------------------------------

#: the lock file of a folder a live tamt process is writing
LOCK_FILE = ".tamt.lock"
PARTIAL_SUFFIX = ".partial"
#: the suffix of a temporary folder while its process takes its lock (see :func:`_new_stage`)
STARTING_SUFFIX = ".starting"


def absolute(path: Path) -> Path:
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
    final = absolute(path)
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


@contextlib.contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and rename it into place only
    if the block succeeds; on failure nothing at ``final`` is touched. An existing ``final`` is
    replaced only with ``replace`` (callers check what may be replaced:
    :func:`tamt_cli.artifacts.check_output`)."""
    given, final = Path(final), absolute(final)
    if os.path.lexists(final) and not replace:
        raise UserError(f"'{final}' already exists; nothing was written")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    try:
        stage, lock = _new_stage(final)
    except Exception as exc:
        _name_the_output(exc, final, given)
        raise
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
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        _name_the_output(exc, final, given)
        raise
    finally:
        release(lock)


def _name_the_output(exc: BaseException, final: Path, given: Path) -> None:
    """For a fault of the machine (a full disk, no permission) met while ``final`` was staged,
    raise an ``OSError`` that names the output as the user gave it (``given``, or the file in
    it), never tamt's temporary folder, nor nothing at all (safetensors names no file). Other
    exceptions, and faults on files elsewhere, are left as they are."""
    fault = None if isinstance(exc, UserError) else fault_of_machine(exc)
    if fault is None:
        return
    number, filename, _ = fault
    shown = given
    if filename is not None:
        path = absolute(Path(filename))
        temporary = next((p for p in (path, *path.parents) if _temporary_of(p, final)), None)
        if temporary is None:
            return
        inside = path.relative_to(temporary)
        if inside.parts and inside.parts[0] not in {LOCK_FILE, "replaced"}:
            shown = given / inside
    raise OSError(number, os.strerror(number), str(shown)) from exc


def _temporary_of(path: Path, final: Path) -> bool:
    """Whether ``path`` is one of the temporary folders :func:`staged_dir` makes for ``final``."""
    return (
        path.parent == final.parent
        and path.name.startswith(f".{final.name}.")
        and path.name.endswith((PARTIAL_SUFFIX, STARTING_SUFFIX))
    )


def _new_stage(final: Path) -> tuple[Path, Any]:
    """A new locked temporary folder beside ``final``. It is made under a name no process reads
    as a temporary folder (``.starting``), locked, and only then renamed to its ``.partial``
    name: another process cleaning the folder beside it (:func:`clean_stale`) never finds it
    with its lock file made but not yet held, and takes it for a dead process's."""
    start = Path(
        tempfile.mkdtemp(prefix=f".{final.name}.", suffix=STARTING_SUFFIX, dir=final.parent)
    )
    os.chmod(start, 0o777 & ~_umask())
    lock = try_lock(start / LOCK_FILE)
    stage = start.with_name(start.name.removesuffix(STARTING_SUFFIX) + PARTIAL_SUFFIX)
    try:
        if lock is None:
            raise UserError(f"could not lock the temporary folder '{start}'; try again")
        os.rename(start, stage)  # the lock is held through the rename: it locks the open file
    except BaseException:
        release(lock)
        shutil.rmtree(start, ignore_errors=True)
        raise
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
    path = absolute(path)
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
    lock = try_lock(absolute(path) / LOCK_FILE)
    if lock is None:
        raise UserError(
            f"run '{path}' is being written by another tamt process that is still running; "
            "wait for it to end (or stop it) before resuming"
        )
    return lock
