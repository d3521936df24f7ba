"""Bad inputs and faults through the real command line, on tiny models: every one is a single
line on stderr with exit code 2 (130 when interrupted), no traceback, and leaves the working
folder exactly as it was: no run folder or temporary file appears, no file changes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tamt_cli import artifacts, files, maskfile

os.environ["TAMT_NO_PROGRESS"] = "1"

TRAIN = ["--max-length", "16", "--batch-size", "4", "--max-steps", "4", "--lr", "0.01"]


@dataclass
class Env:
    """What the cases build on: tiny models, a corpus, a finished one-shot run and a training run
    interrupted after its checkpoint at step 2 (copied into each case's folder as needed)."""

    bert: Path
    other: Path
    corpus: Path
    omp: Path
    kd: Path
    kd_stderr: str  # what the interruption of the training run said
    held: list[Any]
    sst2: Path  # SST-2 in GLUE's layout

    def swept(self) -> Path:
        """A finished sweep (``out``) of ``grid.yaml``: OMP at 0.5, its held-out KD loss and one
        SST-2 seed; made on first use, then kept for the session."""
        from tamt_cli.cli import main
        from tests.tiny import write_sst2

        root = self.omp.parent / "sweep"
        if not (root / "out" / artifacts.SWEEP_INDEX).is_file():
            root.mkdir(exist_ok=True)
            grid = {
                "model": str(self.bert),
                "methods": ["omp"],
                "sparsities": [0.5],
                "tasks": ["sst2"],
                "dense": False,
                "finetune": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 32},
                "data": {"sst2": str(write_sst2(root / "SST-2", train=16, dev=8))},
                "heldout": {"objective": "kd", "corpus": str(self.corpus), "max_length": 16,
                            "eval_blocks": 4},
            }  # fmt: skip
            (root / "grid.yaml").write_text(json.dumps(grid))
            assert main(["sweep", str(root / "grid.yaml"), "--out", str(root / "out")]) == 0
        return root


@pytest.fixture(scope="session")
def env(tmp_path_factory, tiny_bert, other_bert, corpus) -> Env:
    from tamt_cli.cli import main
    from tamt_cli.methods import mask_training
    from tests.tiny import write_sst2

    root = tmp_path_factory.mktemp("fault-runs")
    cache = root / "cache"
    old_cache = os.environ.get("TAMT_CACHE_DIR")
    os.environ["TAMT_CACHE_DIR"] = str(cache)
    try:
        omp = root / "omp"
        code = main(["search", "-m", "omp", "-s", "0.5", "--model", str(tiny_bert), "--out",
                     str(omp)])  # fmt: skip
        assert code == 0
        original = mask_training._Hooks.after_step
        mask_training._Hooks.after_step = after_step(3, interrupt)  # type: ignore[method-assign]
        try:
            kd = root / "kd"
            args = ["-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus, *TRAIN]
            with contextlib.redirect_stderr(io.StringIO()) as err:
                code = main(["search", *map(str, args), "--save-every", "2", "--out", str(kd)])
        finally:
            mask_training._Hooks.after_step = original  # type: ignore[method-assign]
        assert code == 130
    finally:
        if old_cache is None:
            os.environ.pop("TAMT_CACHE_DIR", None)
        else:
            os.environ["TAMT_CACHE_DIR"] = old_cache
    assert json.loads((kd / "manifest.json").read_text())["status"] == "running"
    assert [p.name for p in (kd / "checkpoints").iterdir()] == ["step-000002"]
    sst2 = write_sst2(root / "SST-2")
    return Env(tiny_bert, other_bert, corpus, omp, kd, err.getvalue(), [], sst2)


# -- what the cases do before running ------------------------------------------------------


def omp_run(env: Env) -> None:
    shutil.copytree(env.omp, "run")


def kd_run(env: Env) -> None:
    shutil.copytree(env.kd, "part")


def folder_with_file(name: str) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        Path(name).mkdir(parents=True, exist_ok=True)
        (Path(name) / "notes.txt").write_text("mine, not tamt's")

    return make


def plain_file(name: str) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        Path(name).write_text("a file")

    return make


def both(*steps: Callable[[Env], None]) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        for step in steps:
            step(env)

    return make


def model_copy(damage: Callable[[Path], None]) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        shutil.copytree(env.bert, "model")
        damage(Path("model"))

    return make


def truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scramble_weights_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def pickle_only_weights(folder: Path) -> None:
    import datetime

    import torch
    from safetensors.torch import load_file

    state: dict[str, Any] = dict(load_file(str(folder / "model.safetensors")))
    state["made"] = datetime.datetime(2020, 1, 1)  # not a tensor: refused by weights_only
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def narrower_ffn(folder: Path) -> None:
    """A config whose feed-forward width (48) is not the weights' (64)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["intermediate_size"] = 48
    path.write_text(json.dumps(config))


def resave_masks(path: Path, change: Callable[[dict, dict], None]) -> None:
    """Rewrite a mask file with ``change(tensors, metadata)`` applied (a well-formed
    safetensors file whose content is damaged)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="np") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def damaged_mask(change: Callable[[dict, dict], None], where: str = "run") -> Callable[[Env], None]:
    def make(env: Env) -> None:
        omp_run(env)
        resave_masks(Path("run/masks.safetensors"), change)
        if where != "run":
            shutil.copy("run/masks.safetensors", where)

    return make


QUERY = "encoder.layer.0.attention.self.query.weight"
HALVED = f"tensor '{QUERY}' holds 64 bytes; its shape [32, 32] needs 128"


def halve(tensors: dict, meta: dict) -> None:
    tensors[QUERY] = tensors[QUERY][: len(tensors[QUERY]) // 2].copy()


def drop_shape(tensors: dict, meta: dict) -> None:
    shapes = json.loads(meta["shapes"])
    del shapes[QUERY]
    meta["shapes"] = json.dumps(shapes)


def drop_tensor(tensors: dict, meta: dict) -> None:
    del tensors[QUERY]


def widen(tensors: dict, meta: dict) -> None:
    tensors[QUERY] = tensors[QUERY].astype(np.int16)


def set_padding(tensors: dict, meta: dict) -> None:
    shapes = json.loads(meta["shapes"])
    shapes["pooler.dense.weight"] = [1021]  # 1021 bits in 128 bytes: three spare bits, now set
    meta["shapes"] = json.dumps(shapes)
    tensors["pooler.dense.weight"][-1] = 0xFF


#: exports of the one-shot run (``--format`` → folder), made once for every case that needs one
EXPORTS: dict[str, Path] = {}
Q = QUERY.removesuffix(".weight")


def exported(fmt: str, damage: Callable[[dict, dict], None] | None = None,
             name: str = "x") -> Callable[[Env], None]:  # fmt: skip
    """An export of the one-shot run as ``name`` (``--format fmt``), its weights rewritten with
    ``damage(tensors, masks)`` applied (a well-formed safetensors file whose content is not)."""

    def make(env: Env) -> None:
        from safetensors.torch import load_file, save_file

        from tamt_cli.cli import main

        source = EXPORTS.get(fmt)
        if source is None:
            source = env.omp.parent / f"export-{fmt}"
            if not source.exists():
                code = main(["-q", "extract", str(env.omp), "--export", str(source), "--format",
                             fmt])  # fmt: skip
                assert code == 0
            EXPORTS[fmt] = source
        shutil.copytree(source, name)
        if damage is not None:
            path = Path(name, "model.safetensors")
            tensors = dict(load_file(str(path)))
            damage(tensors, maskfile.load_masks(Path(name, artifacts.MASK_FILE)))
            save_file(tensors, str(path), metadata={"format": "pt"})

    return make


def unprune(tensors: dict, masks: dict) -> None:
    """One weight the mask prunes is no longer zero."""
    tensors[QUERY][tuple((~masks[QUERY]).nonzero()[0].tolist())] = 0.5


def shift_kept(tensors: dict, masks: dict) -> None:
    """One weight the mask keeps is no longer the pre-trained model's."""
    tensors[QUERY][tuple(masks[QUERY].nonzero()[0].tolist())] += 1.0


def shift_value(tensors: dict, masks: dict) -> None:
    tensors[f"{Q}.compressed"][0] += 1.0


def drop_value(tensors: dict, masks: dict) -> None:
    tensors[f"{Q}.compressed"] = tensors[f"{Q}.compressed"][:-1].clone()


def narrow_bitmask(tensors: dict, masks: dict) -> None:
    tensors[f"{Q}.bitmask"] = tensors[f"{Q}.bitmask"][:, :-1].clone()


def drop_part(part: str) -> Callable[[dict, dict], None]:
    def damage(tensors: dict, masks: dict) -> None:
        del tensors[f"{Q}.{part}"]

    return damage


def drop_weight(tensors: dict, masks: dict) -> None:
    for key in [k for k in tensors if k == QUERY or k.startswith(f"{Q}.")]:
        del tensors[key]


def shift_offsets(tensors: dict, masks: dict) -> None:
    tensors[f"{Q}.row_offsets"][1] += 1


def widen_shape(tensors: dict, masks: dict) -> None:
    tensors[f"{Q}.shape"][1] = 40


def no_weights(tensors: dict, masks: dict) -> None:
    tensors.clear()
    tensors["unrelated"] = masks[QUERY].float()


def garbage_mask(env: Env) -> None:
    omp_run(env)
    Path("run/masks.safetensors").write_bytes(os.urandom(300))


def checkpoint_file(change: Callable[[Path], None]) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        kd_run(env)
        change(Path("part/checkpoints/step-000002"))

    return make


def corrupt_state(folder: Path) -> None:
    (folder / "state.json").write_text('{"step": 2, "sched')


def state_without_step(folder: Path) -> None:
    (folder / "state.json").write_text('{"scheduler": {}}')


def wrong_shape_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "trainable.safetensors"))
    name = sorted(k for k in tensors if tensors[k].dim() == 2)[0]
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, str(folder / "trainable.safetensors"))


def truncated_tensors(folder: Path) -> None:
    path = folder / "trainable.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def pickled_object(folder: Path) -> None:
    import datetime

    import torch

    state = torch.load(folder / "optimizer.pt", weights_only=True)
    state["made"] = datetime.datetime(2020, 1, 1)
    torch.save(state, folder / "optimizer.pt")


def edit_manifest(**fields: Any) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        kd_run(env)
        path = Path("part/manifest.json")
        manifest = json.loads(path.read_text())
        manifest.update(fields)
        path.write_text(json.dumps(manifest))

    return make


def changed_corpus(env: Env) -> None:
    kd_run(env)
    Path("text.txt").write_text(env.corpus.read_text() + "the dog sat on the mat\n")
    spec = Path("part/spec.yaml")
    spec.write_text(spec.read_text().replace(str(env.corpus), str(Path("text.txt").resolve())))


def write_corpus(data: bytes) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        Path("text.txt").write_bytes(data)

    return make


def live_lock(path: str) -> Callable[[Env], None]:
    """A live process holds ``path`` (this test process, through a second file handle)."""

    def make(env: Env) -> None:
        lock = files.try_lock(Path(path))
        assert lock is not None
        env.held.append(lock)

    return make


def live_stage(name: str) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        stage = Path(f".{name}.x1y2.partial")
        stage.mkdir()
        live_lock(str(stage / files.LOCK_FILE))(env)

    return make


def spec_file(text: str, name: str = "spec.yaml") -> Callable[[Env], None]:
    def make(env: Env) -> None:
        Path(name).write_text(text)

    return make


def symlink_to_run(env: Env) -> None:
    omp_run(env)
    shutil.copytree("run", "other-run")
    Path("link").symlink_to("other-run")


def run_in_runs(env: Env) -> None:
    Path("runs").mkdir()
    shutil.copytree(env.omp, "runs/omp")


def symlink(link: str, target: str) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        Path(link).symlink_to(target)

    return make


SWEPT_FT = "finetune/sst2-omp-s0.5-seed1"  # the sweep's fine-tuning run
SWEPT_HELDOUT = "heldout-omp-s0.5-kd.json"


def swept(env: Env) -> None:
    """The finished sweep as ``sw``, its grid as ``grid.yaml``."""
    shutil.copytree(env.swept() / "out", "sw")
    shutil.copy(env.swept() / "grid.yaml", "grid.yaml")


def tuned(env: Env) -> None:
    """The sweep's fine-tuning run (one seed) as ``ft``."""
    shutil.copytree(env.swept() / "out" / SWEPT_FT, "ft")


def rewrite_json(path: str, change: Callable[[Any], Any]) -> Callable[[Env], None]:
    """Replace the JSON in ``path`` by ``change(it)``: valid JSON of another shape."""

    def make(env: Env) -> None:
        file = Path(path)
        file.write_text(json.dumps(change(json.loads(file.read_text()))))

    return make


def grid_file(path: str = "grid.yaml") -> Callable[[Env], None]:
    """A grid of one one-shot search, with a comment of the user's in it."""

    def make(env: Env) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(
            f"# my notes\nmodel: {env.bert}\nmethods: [omp]\nsparsities: [0.5]\ndense: false\n"
        )

    return make


def sweep_dir(name: str, grid: str = "grid.yaml") -> Callable[[Env], None]:
    """A sweep directory as `tamt sweep --print-commands` makes it: its grid and its index."""

    def make(env: Env) -> None:
        from tamt_cli.cli import main

        grid_file(grid)(env)
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["sweep", grid, "--out", name, "--print-commands"]) == 0

    return make


def live_sweep(name: str) -> Callable[[Env], None]:
    """A sweep directory that a live `tamt sweep` holds (this test process)."""

    def make(env: Env) -> None:
        from tamt_cli import sweep

        sweep_dir(name)(env)
        env.held.append(sweep.claim(Path(name), None))

    return make


def with_fields(**fields: Any) -> Callable[[Any], Any]:
    return lambda data: {**data, **fields}


def first_mask_file(number: int) -> Callable[[Any], Any]:
    return lambda data: {**data, "masks": [{**data["masks"][0], "file": number}]}


# -- patches: faults of the machine and interruptions ----------------------------------------


def full_disk(*args: Any) -> None:
    """``os.fsync`` on a full disk (every tamt file write ends with one)."""
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def interrupt(*args: Any, **kw: Any) -> None:
    raise KeyboardInterrupt


def after_step(step: int, action: Callable[[], None]) -> Callable[[Any, int], None]:
    """The mask-training hook after each optimiser step, doing ``action`` after ``step``."""
    from tamt_cli.methods import mask_training

    original = mask_training._Hooks.after_step

    def hook(self: Any, done: int) -> None:
        original(self, done)
        if done == step:
            action()

    return hook


def disk_full(monkeypatch) -> None:
    monkeypatch.setattr(os, "fsync", full_disk)


def safetensors_disk_full(monkeypatch) -> None:
    """``save_pretrained``'s safetensors writer on a full disk: part of the file is written, then
    the error safetensors raises (its text only: no errno, no file name)."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def write(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", write)


def staging_not_permitted(monkeypatch) -> None:
    """The folder that holds an output is not writable: making the temporary folder fails (as
    ``mkdtemp`` does there, naming the folder it tried to make)."""
    import errno
    import tempfile

    def mkdtemp(suffix: str = "", prefix: str = "", dir: Any = None) -> str:
        path = os.path.join(dir or ".", f"{prefix}x1y2z3w4{suffix}")
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def interrupt_saving(monkeypatch) -> None:
    monkeypatch.setattr(maskfile, "save_masks", interrupt)


def interrupt_at_step_1(monkeypatch) -> None:
    from tamt_cli.methods import mask_training

    monkeypatch.setattr(mask_training._Hooks, "after_step", after_step(1, interrupt))


@dataclass
class Case:
    id: str
    args: list[str]
    message: str
    setup: Callable[[Env], None] | None = None
    code: int = 2
    patch: Callable[[Any], None] | None = None


OMP = ["search", "-m", "omp", "-s", "0.5", "--model", "{bert}"]
KD = ["search", "-m", "kd", "-s", "0.5", "--model", "{bert}", "--corpus", "{corpus}", *TRAIN]
KD_TEXT = [*KD[:-len(TRAIN) - 2], "--corpus", "text.txt", *TRAIN]  # fmt: skip
FT = ["finetune", "--task", "sst2"]
FT_DATA = ["--data-dir", "{sst2}", "--max-length", "16", "--train-size", "8", "--batch-size", "4",
           "--epochs", "1"]  # fmt: skip
LIKE = ["search", "-m", "random", "--like", "m.safetensors", "--model"]
SHORT = ["--max-length", "16"]
A50 = "a" * 50  # the ends of a long value that an error line keeps

# fmt: off
CASES = [
    # command line and spec files
    Case("unknown-method", ["search", "-m", "ompp", "-s", "0.5"], "did you mean 'omp'?"),
    Case("sparsity-out-of-range", [*OMP[:4], "1.5"], "strictly between 0 and 1"),
    Case("spec-is-a-folder", ["search", "--spec", "."], "is a directory"),
    Case("spec-missing", ["search", "--spec", "nope.yaml"], "does not exist"),
    Case("spec-bad-yaml", ["search", "--spec", "spec.yaml"], "is not valid YAML",
         spec_file("method: [omp\n")),
    Case("spec-unknown-field", ["search", "--spec", "spec.yaml"], "did you mean 'sparsity'?",
         spec_file("method: omp\nsparsty: 0.5\n")),
    Case("spec-carries-overwrite", ["extract", "--spec", "spec.yaml"],
         "'overwrite' is taken only from the command line",
         spec_file("run: run\noverwrite: true\n")),
    Case("options-of-a-method-without-any", [*OMP, "-o", "foo=1"], "there are none to give"),
    Case("option-without-value", [*OMP, "-o", "foo"], "takes name=value"),
    Case("seeds-not-integers", [*FT[:1], "run", *FT[1:], "--seeds", "1,x"], "comma-separated"),
    Case("sweep-of-a-folder", ["sweep", "mine"],
         "grid file 'mine' is a directory; tamt sweep takes a grid file (YAML, JSON or TOML)",
         folder_with_file("mine")),
    Case("sweep-of-a-sweep-directory", ["sweep", "done"],
         "tamt report done reads its results", sweep_dir("done")),
    # structured masks
    Case("structure-the-method-lacks",
         [*KD[:2], "imp", *KD[3:], "--structure", "neurons", "--out", "r"],
         "method 'imp' does not take --structure neurons; kd, mlm, mlm-kd, omp, random do"),
    Case("structure-with-pattern", [*OMP, "--structure", "heads", "--pattern", "2:4"],
         "--structure heads prunes whole units, --pattern single weights"),
    Case("structure-prunes-no-unit", [*OMP[:4], "0.3", *OMP[5:], "--structure", "heads"],
         "--sparsity 0.3 prunes no head of a layer of 2 heads"),
    Case("structure-with-embeddings", [*OMP, "--structure", "neurons", "--embeddings"],
         "--embeddings does not apply"),
    Case("structure-global", [*OMP, "--structure", "neurons", "--scope", "global"],
         "--scope global does not apply"),
    Case("structure-random-like", [*LIKE, "{bert}", "--structure", "neurons", "--out", "r"],
         "does not go with --structure neurons", damaged_mask(lambda t, m: None, "m.safetensors")),
    # models
    Case("model-path-missing", [*OMP[:-1], "./nope"], "does not exist"),
    Case("eval-of-a-missing-run-folder", ["eval", "runs/nope", "--objective", "kd"],
         "'runs/nope' does not exist (there is a local folder 'runs'", folder_with_file("runs")),
    Case("model-without-config", [*OMP[:-1], "model"], "no config.json", model_copy(no_config)),
    Case("model-weights-truncated", [*OMP[:-1], "model"], "model.safetensors' is damaged",
         model_copy(truncate_weights)),
    Case("model-weights-header-corrupt", [*OMP[:-1], "model"], "model.safetensors' is damaged",
         model_copy(scramble_weights_header)),
    Case("model-pickle-with-objects", [*OMP[:-1], "model"], "which tamt does not unpickle",
         model_copy(pickle_only_weights)),
    # output folders
    Case("out-is-a-foreign-folder", [*OMP, "--out", "mine"], "already exists",
         folder_with_file("mine")),
    Case("out-is-a-file", [*OMP, "--out", "afile"], "already exists", plain_file("afile")),
    Case("out-under-a-file", [*OMP, "--out", "afile/run"], "afile' is not a folder",
         plain_file("afile")),
    Case("training-out-is-a-run", [*KD, "--out", "part"],
         "or continue it with: tamt search --resume part", kd_run),
    Case("out-being-written-by-a-live-run", [*OMP, "--out", "busy"],
         "being written by another tamt process", live_stage("busy")),
    Case("finetune-out-exists", [*FT[:1], "run", *FT[1:], "--out", "mine"], "already exists",
         both(omp_run, folder_with_file("mine"))),
    Case("export-exists", ["extract", "run", "--export", "mine"], "or pass --overwrite",
         both(omp_run, folder_with_file("mine"))),
    Case("overwrite-a-foreign-folder", ["extract", "run", "--export", "mine", "--overwrite"],
         "not a tamt run or export", both(omp_run, folder_with_file("mine"))),
    Case("overwrite-the-source", ["extract", "run", "--export", "run", "--overwrite"],
         "is the source of this command", omp_run),
    Case("overwrite-a-folder-holding-the-source",
         ["extract", "runs/omp", "--export", "runs", "--overwrite"],
         "a folder holding the source", run_in_runs),
    Case("overwrite-the-current-folder", ["extract", "run", "--export", ".", "--overwrite"],
         "is the current directory", omp_run),
    Case("overwrite-a-file", ["extract", "run", "--export", "afile", "--overwrite"],
         "not a folder", both(omp_run, plain_file("afile"))),
    Case("overwrite-a-symlink", ["extract", "run", "--export", "link", "--overwrite"],
         "is a symbolic link", symlink_to_run),
    # sweep directories and the files of printed command lines
    Case("sweep-into-the-folder-of-its-grid", ["sweep", "exp/grid.yaml", "--out", "exp"],
         "holds the grid file given", grid_file("exp/grid.yaml")),
    Case("sweep-by-default-into-the-folder-of-its-grid", ["sweep", "sweeps/grid/grid.yaml"],
         "the sweep directory 'sweeps/grid' holds the grid file given",
         both(sweep_dir("sweeps/grid"), lambda env: shutil.copy("grid.yaml", "sweeps/grid"))),
    Case("sweep-into-a-foreign-folder", ["sweep", "grid.yaml", "--out", "mine"],
         "is not a tamt sweep", both(grid_file(), folder_with_file("mine"))),
    Case("sweep-commands-into-a-foreign-folder",
         ["sweep", "grid.yaml", "--out", "mine", "--print-commands"], "is not a tamt sweep",
         both(grid_file(), folder_with_file("mine"))),
    Case("sweep-listed-into-a-foreign-folder", ["sweep", "grid.yaml", "--out", "mine", "--dry-run"],
         "is not a tamt sweep", both(grid_file(), folder_with_file("mine"))),
    Case("sweep-through-a-symlink", ["sweep", "grid.yaml", "--out", "link"],
         "is a symbolic link",
         both(grid_file(), folder_with_file("mine"), symlink("link", "mine"))),
    Case("sweep-through-a-symlink-to-a-sweep", ["sweep", "grid.yaml", "--out", "link"],
         "is a symbolic link", both(sweep_dir("done"), symlink("link", "done"))),
    Case("sweep-into-a-file", ["sweep", "grid.yaml", "--out", "afile"], "is not a folder",
         both(grid_file(), plain_file("afile"))),
    Case("sweep-being-run", ["sweep", "grid.yaml", "--out", "live"],
         f"in use by another tamt sweep (pid {os.getpid()} on ", live_sweep("live")),
    Case("sweep-commands-of-a-sweep-being-run",
         ["sweep", "grid.yaml", "--out", "live", "--print-commands"],
         f"in use by another tamt sweep (pid {os.getpid()} on ", live_sweep("live")),
    Case("eval-json-out-in-a-missing-folder",
         ["eval", "run", "--objective", "kd", "--corpus", "{corpus}", "--json-out", "no/h.json"],
         "--json-out 'no/h.json': its folder 'no' does not exist", omp_run),
    Case("eval-json-out-is-a-folder",
         ["eval", "run", "--objective", "kd", "--corpus", "{corpus}", "--json-out", "mine"],
         "--json-out 'mine' is a folder", both(omp_run, folder_with_file("mine"))),
    # mask files
    Case("mask-tensor-truncated", ["extract", "run"], HALVED, damaged_mask(halve)),
    Case("mask-shape-missing", ["extract", "run"], f"'{QUERY}' has no shape",
         damaged_mask(drop_shape)),
    Case("mask-tensor-missing", ["extract", "run"], f"lists '{QUERY}', which it holds no",
         damaged_mask(drop_tensor)),
    Case("mask-tensor-not-bytes", ["extract", "run"], f"'{QUERY}' is int16",
         damaged_mask(widen)),
    Case("mask-padding-bits-set", ["extract", "run"], "bits set beyond its 1021 weights",
         damaged_mask(set_padding)),
    Case("mask-file-garbage", ["extract", "run"], "unreadable or corrupt", garbage_mask),
    Case("finetune-truncated-mask-file",
         [*FT[:1], "m.safetensors", "--model", "{bert}", *FT[1:]], HALVED,
         damaged_mask(halve, "m.safetensors")),
    Case("like-truncated-mask-file", [*LIKE, "{bert}", "--out", "r"], HALVED,
         damaged_mask(halve, "m.safetensors")),
    Case("mask-of-another-model", [*LIKE, "{other}", "--out", "r"], "does not fit the model",
         damaged_mask(lambda t, m: None, "m.safetensors")),
    # exports: their own weights against their mask and the pre-trained model they were cut from
    Case("export-pruned-weight-not-zero", [*FT[:1], "x", *FT[1:], *SHORT],
         f"'{QUERY}' is non-zero at 1 position its mask prunes", exported("dense", unprune)),
    Case("export-kept-weight-changed", ["extract", "x", "--export", "again"],
         f"'{QUERY}' is not the weights of", exported("dense", shift_kept)),
    Case("eval-of-an-export-kept-weight-changed",
         ["eval", "x", "--objective", "kd", "--corpus", "{corpus}", *SHORT],
         f"'{QUERY}' is not the weights of", exported("dense", shift_kept)),
    Case("export-masked-weight-missing", ["extract", "x"], f"holds no '{QUERY}'",
         exported("dense", drop_weight)),
    Case("export-weights-file-missing", ["extract", "x"], "holds no model.safetensors",
         both(exported("dense"), lambda env: Path("x/model.safetensors").unlink())),
    Case("compressed-export-values-missing", ["extract", "x"],
         f"'{Q}.compressed' holds 511 values; its bitmask keeps 512",
         exported("compressed", drop_value)),
    Case("compressed-export-value-changed", ["bench", "x", *SHORT],
         f"'{QUERY}' is not the weights of",
         exported("compressed", shift_value)),
    Case("compressed-export-bitmask-narrowed", [*FT[:1], "x", *FT[1:], *SHORT],
         f"'{Q}.bitmask' is uint8 [32, 3]; a [32, 32] matrix needs uint8 [32, 4]",
         exported("compressed", narrow_bitmask)),
    Case("compressed-export-bitmask-missing",
         ["eval", "x", "--objective", "kd", "--corpus", "{corpus}", *SHORT],
         f"holds '{Q}.shape' but no '{Q}.bitmask'",
         exported("compressed", drop_part("bitmask"))),
    Case("compressed-export-row-offsets-wrong", ["extract", "x"],
         f"'{Q}.row_offsets' does not match its bitmask", exported("compressed", shift_offsets)),
    Case("compressed-export-shape-wrong", ["extract", "x"],
         f"'{Q}.bitmask' is uint8 [32, 4]; a [32, 40] matrix needs uint8 [32, 5]",
         exported("compressed", widen_shape)),
    Case("compressed-export-masked-weight-missing", ["extract", "x"], f"holds no '{QUERY}'",
         exported("compressed", drop_weight)),
    # resume
    Case("resume-changed-setting", ["search", "--resume", "part", "-s", "0.6"],
         "started with sparsity=0.5", kd_run),
    Case("resume-changed-corpus", ["search", "--resume", "part"],
         "the corpus has changed since run 'part' started (corpus_blocks_sha256 differs); resume "
         "it with the corpus it started with",
         changed_corpus),
    Case("resume-other-major-version", ["search", "--resume", "part"],
         "another major version", edit_manifest(tamt_version="99.0.0")),
    Case("resume-changed-model", ["search", "--resume", "part"], "has changed since run",
         edit_manifest(model={"id": "x", "weights_sha256": "0" * 64})),
    Case("resume-complete-run", ["search", "--resume", "run"], "already complete", omp_run),
    Case("resume-live-run", ["search", "--resume", "part"], "still running",
         both(kd_run, live_lock("part/.tamt.lock"))),
    Case("resume-missing", ["search", "--resume", "nope"], "is not a directory"),
    Case("checkpoint-state-corrupt", ["search", "--resume", "part"], "state.json' is damaged",
         checkpoint_file(corrupt_state)),
    Case("checkpoint-state-without-step", ["search", "--resume", "part"],
         "state.json' is damaged", checkpoint_file(state_without_step)),
    Case("checkpoint-tensor-wrong-shape", ["search", "--resume", "part"], "has shape [",
         checkpoint_file(wrong_shape_tensor)),
    Case("checkpoint-tensors-truncated", ["search", "--resume", "part"],
         "trainable.safetensors' is damaged", checkpoint_file(truncated_tensors)),
    Case("checkpoint-pickled-object", ["search", "--resume", "part"],
         "optimizer.pt' is damaged: it holds objects other than tensors",
         checkpoint_file(pickled_object)),
    # run files of the wrong shape: valid JSON that is not what tamt wrote
    Case("summary-not-an-object", ["report", "ft"], "'ft/summary.json' is damaged or not a "
         "tamt fine-tuning summary: it should be an object, not a list",
         both(tuned, rewrite_json("ft/summary.json", lambda data: []))),
    Case("summary-runs-not-records", ["report", "ft"],
         "'ft/summary.json' is damaged or not a tamt fine-tuning summary: field 'runs.0' should "
         "be an object, not a string",
         both(tuned, rewrite_json("ft/summary.json", with_fields(runs=["x", 1])))),
    Case("seed-metrics-not-an-object", ["report", "ft/seed-1"],
         "'ft/seed-1/metrics.json' is damaged or not a tamt fine-tuned seed's metrics: it should "
         "be an object, not a list",
         both(tuned, rewrite_json("ft/seed-1/metrics.json", lambda data: []))),
    Case("seed-metrics-not-numbers-by-split", ["report", "ft/seed-1"],
         "field 'best.metrics.validation' should be an object, not a number",
         both(tuned, rewrite_json("ft/seed-1/metrics.json",
                                  with_fields(best={"step": 1, "metrics": {"validation": 0.5}})))),
    Case("manifest-masks-a-string", ["extract", "run"],
         "'run/manifest.json' is damaged or not a tamt run manifest: field 'masks' should be a "
         "list, not a string",
         both(omp_run, rewrite_json("run/manifest.json", with_fields(masks="masks.safetensors")))),
    Case("manifest-mask-file-a-number", ["extract", "run"],
         "field 'masks.0.file' should be a string, not an integer",
         both(omp_run, rewrite_json("run/manifest.json", first_mask_file(3)))),
    Case("manifest-model-a-list", ["eval", "run", "--objective", "kd", "--corpus", "{corpus}"],
         "'run/manifest.json' is damaged or not a tamt run manifest: field 'model' should be an "
         "object, not a list",
         both(omp_run, rewrite_json("run/manifest.json", with_fields(model=["demo"])))),
    Case("report-of-a-run-with-a-damaged-manifest", ["report", "ft"],
         "'ft/manifest.json' is damaged or not a tamt run manifest: field 'members' should be a "
         "list, not an object",
         both(tuned, rewrite_json("ft/manifest.json", with_fields(members={"seed-1": 1})))),
    Case("heldout-not-an-object", ["report", "sw"],
         f"'sw/{SWEPT_HELDOUT}' is damaged or not the output of tamt eval --objective --json: it "
         "should be an object, not a list",
         both(swept, rewrite_json(f"sw/{SWEPT_HELDOUT}", lambda data: []))),
    Case("heldout-without-objective", ["report", "sw"],
         f"'sw/{SWEPT_HELDOUT}' is damaged or not the output of tamt eval --objective --json: "
         "field 'objective' is missing",
         both(swept, rewrite_json(f"sw/{SWEPT_HELDOUT}", lambda data: {"loss": 3.5}))),
    Case("heldout-loss-not-a-number", ["report", f"sw/{SWEPT_HELDOUT}"],
         "field 'loss' should be a number, not a string",
         both(swept, rewrite_json(f"sw/{SWEPT_HELDOUT}", with_fields(loss="low")))),
    Case("sweep-index-cells-not-a-list", ["sweep", "grid.yaml", "--out", "sw"],
         "'sw/sweep.json' is damaged or not a tamt sweep index: field 'cells' should be a list, "
         "not a string; remove it to rebuild the sweep's index",
         both(swept, rewrite_json("sw/sweep.json", with_fields(cells="all")))),
    Case("sweep-index-cell-spec-a-string", ["sweep", "grid.yaml", "--out", "sw"],
         "field 'cells.1.spec' should be an object, not a string",
         both(swept, rewrite_json("sw/sweep.json", lambda data: {
             **data, "cells": [data["cells"][0], {**data["cells"][1], "spec": "x"}]}))),
    Case("sweep-cell-manifest-damaged", ["sweep", "grid.yaml", "--out", "sw"],
         "'sw/search/omp-s0.5/manifest.json' is damaged or not a tamt run manifest: field "
         "'status' should be a string, not an integer",
         both(swept, rewrite_json("sw/search/omp-s0.5/manifest.json", with_fields(status=1)))),
    Case("checkpoint-state-scheduler-not-an-object", ["search", "--resume", "part"],
         "state.json' is damaged or not a tamt checkpoint's state: field 'scheduler' should be "
         "an object, not a list",
         checkpoint_file(lambda folder: (folder / "state.json").write_text(
             '{"step": 2, "scheduler": []}'))),
    # corpora: before the run folder is made, or with it removed again
    Case("corpus-empty", [*KD_TEXT, "--out", "r"], "is empty", write_corpus(b"")),
    Case("corpus-binary", [*KD_TEXT, "--out", "r"], "holds a NUL byte",
         write_corpus(os.urandom(64) + b"\0")),
    Case("corpus-latin-1", [*KD_TEXT, "--out", "r"], "byte 0xe9 at offset 3",
         write_corpus("café\n".encode("latin-1"))),
    Case("corpus-glob-matches-nothing", [*KD[:-len(TRAIN) - 2], "--corpus", "no/*.txt", *TRAIN,
         "--out", "r"], "matches no file"),
    Case("corpus-too-small", [*KD_TEXT, "--out", "r"], "is too small",
         write_corpus(b"the cat sat\n")),
    Case("max-length-beyond-the-model", [*KD, "--max-length", "100", "--out", "r"],
         "beyond the model's 64 positions"),
    Case("batch-not-divisible", [*KD, "--batch-size", "3", "--grad-accum", "2", "--out", "r"],
         "must be a multiple of"),
    Case("mlm-without-head-and-no-warm-up",
         [*KD[:2], "mlm", *KD[3:], "--head-warmup-steps", "0", "--out", "r"],
         "--head-warmup-steps is 0"),
    # faults of the machine and interruptions
    Case("disk-full-writing-a-run", [*OMP, "--out", "r"], "No space left on device",
         patch=disk_full),
    Case("interrupted-one-shot-search", [*OMP, "--out", "r"], "interrupted", code=130,
         patch=interrupt_saving),
    Case("interrupted-before-the-first-checkpoint", [*KD, "--out", "r"],
         "interrupted before the first checkpoint; nothing was kept", code=130,
         patch=interrupt_at_step_1),
    # numbers: bounded in every spec, lengths within the model's positions
    Case("bench-max-length-beyond-the-model", ["bench", "run", "--max-length", "100000"],
         "--max-length 100000 is beyond the model's 64 positions", omp_run),
    Case("bench-default-length-beyond-the-model", ["bench", "run"],
         "--max-length 128 (the default) is beyond the model's 64 positions", omp_run),
    Case("search-default-length-beyond-the-model", [*KD[:-len(TRAIN)], "--out", "r"],
         "--max-length 128 (the default) is beyond the model's 64 positions"),
    Case("paper-budget-length-beyond-the-model",
         [*KD[:-len(TRAIN)], *TRAIN[2:], "--budget", "paper", "--out", "r"],
         "--max-length 512 (from --budget paper) is beyond the model's 64 positions"),
    Case("option-integer-of-5000-digits", [*KD, "-o", "reset_every=" + "9" * 5000],
         "reset_every: Unable to parse input string as an integer, exceeded maximum size (got "
         "'99999999"),
    Case("option-integer-too-large", [*KD, "-o", f"reset_every={10**20}"],
         "reset_every: Input should be less than or equal to"),
    Case("flag-integer-of-5000-digits", [*KD, "--max-steps", "9" * 5000],
         "Invalid value for '--max-steps'"),
    Case("spec-file-integer-of-5000-digits", ["search", "--spec", "spec.yaml"],
         "holds an integer of more than 4,300 digits",
         spec_file("method: kd\nsparsity: 0.5\nmax_steps: " + "9" * 5000 + "\n")),
    Case("spec-file-json-integer-of-5000-digits", ["search", "--spec", "spec.json"],
         "holds an integer of more than 4,300 digits",
         spec_file('{"method": "kd", "max_steps": ' + "9" * 5000 + "}", "spec.json")),
    Case("seed-too-large", [*KD, "--seed", str(2**64)],
         "seed: Input should be less than or equal to 4294967295"),
    Case("steps-too-large", [*KD, "--max-steps", str(10**20)],
         "max_steps: Input should be less than or equal to 1000000000"),
    Case("batch-size-too-large", [*KD, "--batch-size", str(10**20)],
         "batch_size: Input should be less than"),
    Case("learning-rate-infinite", [*KD, "--lr", "inf"], "lr: Input should be a finite number"),
    Case("learning-rate-too-large", [*KD, "--lr", "1e300"],
         "lr: Input should be less than or equal to 10"),
    Case("option-float-too-large", [*KD, "-o", "tau=1e300"],
         "tau: Input should be less than or equal to 1000000"),
    Case("option-infinite", [*KD, "-o", "tau=inf"], "tau: Input should be a finite number"),
    # faults of the machine name the path the user gave
    Case("disk-full-writing-an-export", ["extract", "run", "--export", "e"],
         "No space left on device: --export 'e'", omp_run, patch=safetensors_disk_full),
    Case("disk-full-writing-a-compressed-export",
         ["extract", "run", "--export", "e", "--format", "compressed"],
         "No space left on device: 'e/", omp_run, patch=disk_full),
    Case("disk-full-fine-tuning", [*FT[:1], "run", *FT[1:], *FT_DATA, "--out", "ft"],
         "No space left on device: --out 'ft'", omp_run, patch=safetensors_disk_full),
    Case("no-permission-for-the-out-folder", [*OMP, "--out", "r"],
         "Permission denied: --out 'r'", patch=staging_not_permitted),
    Case("no-permission-for-the-export-folder", ["extract", "run", "--export", "e"],
         "Permission denied: --export 'e'", omp_run, patch=staging_not_permitted),
    # long values: shortened in the middle, the option named
    Case("label-of-100000-characters", [*OMP, "--label", "a" * 100_000],
         f"(got '{A50}…{A50}' (100,000 characters))"),
    Case("model-name-too-long", [*OMP[:-1], "a" * 5000],
         f"File name too long: --model '{A50}…{A50}' (5,000 characters)"),
    Case("spec-name-too-long", ["search", "--spec", "a" * 5000 + ".yaml"],
         f"File name too long: --spec '{A50}…{A50[5:]}.yaml' (5,005 characters)"),
    Case("corpus-name-too-long", [*KD[:-len(TRAIN) - 2], "--corpus", "a" * 5000, *TRAIN],
         f"File name too long: --corpus '{A50}…{A50}' (5,000 characters)"),
    Case("unknown-option-of-5000-characters", [*OMP, "--" + "x" * 5000],
         f"No such option: --{'x' * 48}…{'x' * 50} (5,002 characters)"),
    # messages that say what is wrong and where it comes from
    Case("model-config-disagrees-with-weights", [*OMP[:-1], "model"],
         "weight 'encoder.layer.0.intermediate.dense.bias' has shape [64] in the checkpoint but "
         "[48] by its config.json (and 5 more)", model_copy(narrower_ffn)),
    Case("finetune-model-config-disagrees-with-weights",
         [*FT[:1], "model", *FT[1:], *FT_DATA, "--out", "ft"],
         "weight 'bert.encoder.layer.0.intermediate.dense.bias' has shape [64] in the checkpoint "
         "but [48] by its config.json", model_copy(narrower_ffn)),
    Case("option-given-as-flag-and-o", [*KD, "-o", "reset_every=5", "--reset-every", "10"],
         "method option 'reset_every' is given twice, as -o reset_every=... and as "
         "--reset-every"),
    Case("report-to-on-a-one-shot-method", [*OMP, "--report-to", "tensorboard"],
         "method 'omp' runs in one shot and logs no training"),
]
# fmt: on


#: the longest error line of the table (a list of valid fields, say); no value is repeated whole
LONGEST = 600


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (but the block cache) with a digest of each file's bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "cache" or rel.startswith("cache/"):
            continue
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def test_the_table_is_large_and_its_names_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, env: Env, cli, monkeypatch):
    if case.setup is not None:
        case.setup(env)
    if case.patch is not None:
        case.patch(monkeypatch)
    before = snapshot(Path("."))
    fields = {"bert": env.bert, "other": env.other, "corpus": env.corpus, "sst2": env.sst2}
    try:
        res = cli(*[a.format(**fields) for a in case.args])
    finally:
        for lock in env.held:
            files.release(lock)
        env.held.clear()
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert res.code == case.code, res.err
    assert "Traceback" not in res.err
    errors = [line for line in lines if line.startswith("tamt: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.err
    assert case.message in errors[0], errors[0][:1000]
    assert len(errors[0]) <= LONGEST, f"{len(errors[0])} characters: {errors[0][:1000]}"
    assert res.out == ""
    assert snapshot(Path(".")) == before  # nothing made, nothing changed, nothing left behind


# -- faults over time: concurrent runs, dead runs, interruptions, a disk filling up -------------


def test_interrupted_training_says_how_to_resume_and_resumes(cli, env):
    kd = str(env.kd)
    assert env.kd_stderr.splitlines()[-1] == (
        f"tamt: error: interrupted; resume with: tamt search --resume {kd}"
    )
    kd_run(env)
    res = cli("search", "--resume", "part")
    assert res.code == 0, res.err
    manifest = json.loads(Path("part/manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert (
        manifest["inputs"]["corpus_blocks_sha256"]
        == json.loads((env.kd / "manifest.json").read_text())["inputs"]["corpus_blocks_sha256"]
    )
    assert not Path("part", files.LOCK_FILE).exists()
    assert not (env.kd / files.LOCK_FILE).exists()


def test_a_full_disk_keeps_the_checkpoint_and_says_how_to_resume(
    cli, tiny_bert, corpus, monkeypatch
):
    from tamt_cli.methods import mask_training

    original = mask_training._Hooks.after_step
    real_fsync = os.fsync
    fill = after_step(3, lambda: monkeypatch.setattr(os, "fsync", full_disk))
    monkeypatch.setattr(mask_training._Hooks, "after_step", fill)
    args = [a.format(bert=tiny_bert, corpus=corpus) for a in KD]
    res = cli(*args, "--save-every", "2", "--out", "r")
    assert res.code == 2, res.err
    last = res.err.splitlines()[-1]
    assert last.startswith("tamt: error: No space left on device: '")
    assert last.endswith("'; resume with: tamt search --resume r")
    assert json.loads(Path("r/manifest.json").read_text())["status"] == "running"
    assert [p.name for p in Path("r/checkpoints").iterdir()] == ["step-000002"]
    assert not list(Path("r").rglob("*.tmp")) and not list(Path("r").rglob("*.partial"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(mask_training._Hooks, "after_step", original)
    res = cli("search", "--resume", "r")
    assert res.code == 0, res.err
    assert json.loads(Path("r/manifest.json").read_text())["status"] == "complete"


def test_a_run_folder_is_made_exclusively(cli, tiny_bert, corpus, monkeypatch):
    """Between the first check and the making of the folder another run may have made it: the
    exclusive mkdir still refuses, and that run's folder is left alone."""
    lock = files.create_run_dir(Path("r"))  # another live run's folder
    (Path("r") / "spec.yaml").write_text("theirs\n")
    monkeypatch.setattr(artifacts, "check_output", lambda *a, **kw: None)
    try:
        res = cli(*[a.format(bert=tiny_bert, corpus=corpus) for a in KD], "--out", "r")
    finally:
        files.release(lock, remove=True)
    assert res.code == 2 and "already exists" in res.err.splitlines()[-1]
    assert sorted(p.name for p in Path("r").iterdir()) == ["spec.yaml"]
    assert (Path("r") / "spec.yaml").read_text() == "theirs\n"


def test_two_training_runs_with_the_same_out(tmp_path, tiny_bert, corpus):
    """Two processes started together: one writes the run, the other is refused (exit 2)."""
    import subprocess
    import sys

    env = {**os.environ, "TAMT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = [a.format(bert=tiny_bert, corpus=corpus) for a in KD]
    cmd = [sys.executable, "-m", "tamt_cli", *args, "--seed", "1", "--out", str(tmp_path / "r")]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "r' already exists" in refused or "being written by another" in refused
    rows = [json.loads(r) for r in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [1, 2, 3, 4]  # one run's rows,
    assert [r["step"] for r in rows if "loss" in r] == [4]  # not two interleaved
    assert json.loads((tmp_path / "r/manifest.json").read_text())["status"] == "complete"


def test_what_a_killed_run_left_is_cleaned_by_the_next(cli, tiny_bert):
    """kill -9 while a folder is being staged: the next command writing beside it removes the
    temporary folder (its lock died with its process); a live one's is left alone."""
    import signal
    import subprocess
    import sys

    Path("runs").mkdir()
    script = (
        "import sys, time\n"
        "from tamt_cli import files\n"
        "with files.staged_dir(sys.argv[1]) as stage:\n"
        "    (stage / 'half.bin').write_bytes(b'x' * 1000)\n"
        "    print(stage, flush=True)\n"
        "    time.sleep(120)\n"
    )
    dead = subprocess.Popen([sys.executable, "-c", script, "runs/ft"], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    dead_stage = Path(dead.stdout.readline().strip())  # type: ignore[union-attr]
    live = files.staged_dir(Path("runs/other"))
    live_stage = live.__enter__()
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=30)
        assert dead_stage.is_dir()
        res = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "runs/omp")
        assert res.code == 0, res.err
        assert "removed what interrupted tamt runs left unfinished" in res.err
        assert not dead_stage.exists() and live_stage.is_dir()
    finally:
        live.__exit__(None, None, None)
        dead.stdout.close()  # type: ignore[union-attr]
    assert sorted(p.name for p in Path("runs").iterdir()) == ["omp", "other"]


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_an_unwritable_out_is_a_one_line_error(cli, tiny_bert):
    Path("locked").mkdir()
    os.chmod("locked", 0o500)
    try:
        res = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "locked/r")
    finally:
        os.chmod("locked", 0o700)
    assert (
        res.code == 2
        and res.err.splitlines()[-1] == "tamt: error: Permission denied: --out 'locked/r'"
    )
    assert list(Path("locked").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_an_unwritable_export_folder_is_named_as_given(cli, omp_run):
    """The line names the --export given, never the temporary folder tamt stages it in."""
    Path("locked").mkdir()
    os.chmod("locked", 0o500)
    try:
        res = cli("extract", omp_run, "--export", "locked/e")
    finally:
        os.chmod("locked", 0o700)
    assert res.code == 2, res.err
    assert res.err.splitlines()[-1] == "tamt: error: Permission denied: --export 'locked/e'"
    assert list(Path("locked").iterdir()) == []


def test_error_lines_shorten_long_values_in_the_middle():
    from tamt_cli.errors import LONGEST_VALUE, one_line, shorten

    value = "x" * 60 + "y" * 99_880 + "z" * 60
    assert shorten(value) == "x" * 50 + "…" + "z" * 50
    assert shorten("a" * LONGEST_VALUE) == "a" * LONGEST_VALUE  # short enough: whole
    line = one_line(f"label: too long (got '{value}')\nsee --help")
    assert line == f"label: too long (got '{'x' * 50}…{'z' * 50}' (100,000 characters)) see --help"
    spaced = " ".join(["word"] * 100)  # a quoted value with spaces is one value too
    assert one_line(f'name "{spaced}" is wrong') == (
        f'name "{spaced[:50]}…{spaced[-50:]}" (499 characters) is wrong'
    )
    assert one_line(f"No such option: --{'q' * 300}") == (
        f"No such option: --{'q' * 48}…{'q' * 50} (302 characters)"
    )
    # apostrophes are not quotes: ordinary text stays whole however long
    text = "the model's " + "long words " * 40 + "and the run's end"
    assert one_line(text) == text


def test_a_fault_names_the_option_that_gave_the_path():
    import errno

    from tamt_cli import errors

    fault = OSError(errno.ENOSPC, "No space left on device", os.path.abspath("out/r"))
    with errors.given({"--out": "out/r/", "--model": "m"}):
        assert errors.environment_fault(fault) == "No space left on device: --out 'out/r/'"
        assert errors.environment_fault(OSError(errno.EACCES, "x", "m/config.json")) == (
            "Permission denied: 'm/config.json'"
        )
    assert errors.environment_fault(fault) == f"No space left on device: '{fault.filename}'"
    wrapped = RuntimeError("Error while serializing: I/O error: No space left on device (os 28)")
    assert errors.environment_fault(wrapped, "exp") == "No space left on device: 'exp'"
    assert errors.environment_fault(wrapped) == (
        "No space left on device (Error while serializing: I/O error: No space left on device "
        "(os 28))"
    )
    assert errors.environment_fault(ValueError("bad value")) is None
