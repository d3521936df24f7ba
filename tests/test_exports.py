"""An export's own weights, read back: checked against its mask, and against the pre-trained
model it was cut from where that model is loaded (the command-line cases are in
test_faults.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tamt_cli import compressed, exports, maskfile, models, subjects, task_model
from tamt_cli.errors import UserError
from tamt_cli.registry import create_task

QUERY = "encoder.layer.0.attention.self.query.weight"
Q = QUERY.removesuffix(".weight")


@pytest.fixture(scope="module")
def exported(omp_run, tmp_path_factory) -> dict[str, Path]:
    """A dense and a compressed export of the one-shot run."""
    from tamt_cli.cli import main

    root = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt in ("dense", "compressed"):
        out[fmt] = root / fmt
        assert main(["-q", "extract", str(omp_run), "--export", str(out[fmt]), "--format",
                     fmt]) == 0  # fmt: skip
    return out


def copy(source: Path, change: Callable[[dict], None] | None = None) -> Path:
    """``source`` copied into the working folder, its weights rewritten with ``change``."""
    folder = Path(source.name)
    shutil.copytree(source, folder)
    if change is not None:
        path = folder / "model.safetensors"
        tensors = dict(load_file(str(path)))
        change(tensors)
        save_file(tensors, str(path), metadata={"format": "pt"})
    return folder


def masks_of(folder: Path) -> dict:
    return maskfile.load_masks(folder / "masks.safetensors")


def encoder_of(folder: Path):
    record = subjects.resolve(str(folder)).manifest["model"]  # type: ignore[index]
    return models.load_encoder(models.resolve(record["id"]))


@pytest.mark.parametrize("fmt", ["dense", "compressed"])
def test_an_intact_export_holds_its_models_weights_under_its_mask(exported, cli, fmt):
    folder = copy(exported[fmt])
    exports.check(folder, masks_of(folder), encoder_of(folder), "the model")
    state = exports.stored_state(folder)
    masks = masks_of(folder)
    assert all(bool((state[name][~mask] == 0).all()) for name, mask in masks.items())


def test_a_kept_weight_changed_is_found_where_the_model_is_loaded(exported, cli):
    """finetune of a compressed export builds its task model from the pre-trained model: the
    export's own weights are checked against it there (the mask alone cannot tell)."""
    index = None

    def shift(tensors: dict) -> None:
        nonlocal index
        index = int(tensors[f"{Q}.row_offsets"][3])  # the first value of row 3
        tensors[f"{Q}.compressed"][index] += 1.0

    folder = copy(exported["compressed"], shift)
    subject = subjects.resolve(str(folder), own_weights=True)  # the mask's zeros still hold
    with pytest.raises(UserError, match=rf"'{QUERY}' is not the weights of .* \(1 of 1024 differ"):
        task_model.build(create_task("sst2"), subject, seed=0)


def test_a_task_model_without_the_pooler_is_no_false_alarm(exported, cli):
    """A QA model has no pooler: the export's pooler is not compared with anything."""
    subject = subjects.resolve(str(copy(exported["compressed"])), own_weights=True)
    built = task_model.build(create_task("squad"), subject, seed=0)
    assert built.masks is not None and "pooler.dense.weight" not in built.masks


def test_a_dense_export_saved_in_shards_is_read_and_checked(exported, cli):
    from transformers import AutoModel

    folder = copy(exported["dense"])
    AutoModel.from_pretrained(str(folder)).save_pretrained(str(folder), max_shard_size="20KB")
    (folder / "model.safetensors").unlink()
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / exports.SHARD_INDEX).is_file()
    exports.check(folder, masks_of(folder), encoder_of(folder), "the model")
    holder = next(p for p in shards if QUERY in load_file(str(p)))
    tensors = dict(load_file(str(holder)))
    tensors[QUERY][~masks_of(folder)[QUERY]] = 1.0
    save_file(tensors, str(holder), metadata={"format": "pt"})
    with pytest.raises(UserError, match=f"'{QUERY}' is non-zero at 512 positions its mask"):
        exports.check(folder, masks_of(folder))
    index = json.loads((folder / exports.SHARD_INDEX).read_text())
    index["weight_map"][QUERY] = "../" + holder.name  # never read from outside the export
    (folder / exports.SHARD_INDEX).write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"index\.json' is damaged .* outside the folder"):
        exports.check(folder, masks_of(folder))


def set_part(part: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def change(tensors: dict) -> None:
        key = f"{Q}.{part}"
        tensors[key] = value(tensors[key]).contiguous()

    return change


DAMAGE = {
    "shape-of-three": (set_part("shape", lambda s: torch.tensor([32, 32, 1])),
                       f"'{Q}.shape' holds [32, 32, 1]; a matrix's shape is two sizes"),
    "shape-negative": (set_part("shape", lambda s: torch.tensor([32, -32])),
                       f"'{Q}.shape' holds [32, -32]"),
    "shape-in-floats": (set_part("shape", lambda s: s.float()),
                        f"'{Q}.shape' holds [32.0, 32.0]"),
    "bits-past-the-columns": (set_part("shape", lambda s: torch.tensor([32, 31])),
                              f"'{Q}.bitmask' has bits set beyond its 31 columns"),
    "bitmask-widened": (set_part("bitmask", lambda b: b.to(torch.int16)),
                        f"'{Q}.bitmask' is int16 [32, 4]; a [32, 32] matrix needs uint8 [32, 4]"),
    "values-as-integers": (set_part("compressed", lambda v: v.to(torch.int32)),
                           f"'{Q}.compressed' is int32 [512], not a row of values"),
    "values-in-a-matrix": (set_part("compressed", lambda v: v.reshape(2, -1)),
                           f"'{Q}.compressed' is float32 [2, 256], not a row of values"),
    "one-value-too-many": (set_part("compressed", lambda v: torch.cat([v, v[:1]])),
                           f"'{Q}.compressed' holds 513 values; its bitmask keeps 512"),
    "row-offsets-short": (set_part("row_offsets", lambda r: r[:-1]),
                          f"'{Q}.row_offsets' does not match its bitmask"),
    "row-offsets-in-floats": (set_part("row_offsets", lambda r: r.float()),
                              f"'{Q}.row_offsets' does not match its bitmask"),
    "dense-and-compressed": (lambda t: t.update({QUERY: torch.zeros(32, 32)}),
                             f"holds '{QUERY}' dense and compressed"),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_compressed_layout_names_the_tensor(exported, cli, damage):
    change, message = DAMAGE[damage]
    folder = copy(exported["compressed"], change)
    with pytest.raises(UserError, match=r"model\.safetensors' is damaged: ") as err:
        compressed.dense_state(folder)
    assert message in str(err.value)
    with pytest.raises(UserError, match="is damaged"):
        compressed.load_model(folder)


def test_load_model_refuses_a_compressed_weight_that_is_gone(exported, cli):
    def drop(tensors: dict) -> None:
        for part in compressed.PARTS:
            del tensors[f"{Q}.{part}"]

    folder = copy(exported["compressed"], drop)
    with pytest.raises(UserError, match=f"holds no '{QUERY}', a weight its config.json lists"):
        compressed.load_model(folder)
