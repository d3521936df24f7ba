"""What a command is pointed at: a search run, an exported subnetwork, a mask file over a model,
a fine-tuned model or a plain model, resolved to a model and the mask (if any) over it.

Used by `tamt finetune`, `tamt eval` and `tamt sweep`; reads run directories through
:mod:`tamt_cli.artifacts` and loads no model itself (an export's own weights are read, to be
checked against its mask: :mod:`tamt_cli.exports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamt_cli import artifacts, compressed, exports, maskfile, models, units
from tamt_cli.errors import UserError


@dataclass
class Subject:
    """What is scored or fine-tuned: a model, and the mask (if any) over its pre-trained weights.

    ``kind`` is ``search`` (a search run), ``subnetwork`` (an exported subnetwork folder),
    ``mask`` (a bare mask file over ``--model``) or ``model`` (a plain model: dense)."""

    ref: models.ModelRef
    masks: dict[str, Any] | None
    head_file: Path | None
    manifest: dict[str, Any] | None
    description: str
    embeddings: bool = True
    pooler: bool = True
    kind: str = "model"
    mask_file: Path | None = None
    #: SHA-256 the weights at ``ref`` must have for the mask to mean what it meant (or None)
    weights_sha256: str | None = None
    #: the export folder, when the subject is an exported subnetwork (``kind`` ``subnetwork``)
    export: Path | None = None
    #: an export's unit masks (a structured mask's: :mod:`tamt_cli.units`), else None
    unit_masks: Any = None


def resolve(
    checkpoint: str,
    step: int | None = None,
    *,
    model: str | None = None,
    own_weights: bool = False,
) -> Subject:
    """A search run or exported subnetwork (its manifest names the pre-trained model, whose
    dense weights are the KD teacher), a mask file (``*.safetensors``) over ``model``, or a plain
    model (dense: no mask).

    ``model`` also says where a search run's model is loaded from now (the recorded weight hash
    must still match). ``own_weights``: an exported subnetwork is its own folder (the zeros baked
    in, as fine-tuning wants) rather than the pre-trained model it was cut from."""
    path = Path(checkpoint)
    if path.suffix == ".safetensors" and not path.is_dir():
        if step is not None:
            raise UserError(f"--step needs a search run; '{checkpoint}' is a mask file")
        if model is None:
            raise UserError(
                f"mask file '{checkpoint}' needs --model, the model whose weights it masks"
            )
        masks = maskfile.load_masks(path)
        return Subject(
            ref=models.resolve(model),
            masks=masks,
            head_file=None,
            manifest=None,
            description=f"mask {path.name} over {model}",
            embeddings="embeddings.word_embeddings.weight" in masks,
            pooler="pooler.dense.weight" in masks,
            kind="mask",
            mask_file=path,
        )
    if (path / artifacts.MANIFEST).is_file():
        manifest = artifacts.read_manifest(path)
        kind = manifest.get("kind")
        if kind not in {"search", "subnetwork"}:
            raise UserError(f"'{checkpoint}' is a {kind} run, not a subnetwork")
        entry = artifacts.choose_mask(manifest, path, step=step)
        masks = maskfile.load_masks(path / entry["file"])
        found = maskfile.load_units(path / entry["file"]) if kind == "subnetwork" else None
        if kind == "subnetwork":  # its own weights must hold the mask's zeros
            exports.check(path, masks, unit_masks=found)
        head = path / artifacts.HEAD_FILE
        record = manifest["model"]
        # a compressed export's weights are its model's with the mask's zeros: that model
        # and the mask stand for it (transformers cannot read the sparse-bitmask layout)
        if kind == "subnetwork" and own_weights and not compressed.is_compressed(path):
            if model is not None:
                raise UserError(
                    f"'{checkpoint}' is an exported subnetwork, which is its own model; "
                    "--model is for a mask file or a search run"
                )
            ref, sha = models.resolve(str(path)), None
            if manifest.get("ffn_width") is not None and found is not None:
                masks = units.sliced_masks(masks, found)  # its pruned neurons were taken out
        else:
            ref, sha = models.resolve(model or record["id"]), record.get("weights_sha256")
        return Subject(
            ref=ref,
            masks=masks,
            head_file=head if head.is_file() else None,
            manifest=manifest,
            description=f"{manifest.get('method')} mask of {record['id']}",
            embeddings=manifest.get("embeddings", True),
            pooler=manifest.get("pooler", True),
            kind=str(kind),
            mask_file=path / entry["file"],
            weights_sha256=sha,
            export=path if kind == "subnetwork" else None,
            unit_masks=found,
        )
    if step is not None:
        raise UserError(f"--step needs a search run; '{checkpoint}' is a model")
    if model is not None:
        raise UserError(f"--model is for a mask file or a search run; '{checkpoint}' is a model")
    return Subject(models.resolve(checkpoint), None, None, None, f"dense {checkpoint}")


def fine_tuned(checkpoint: str) -> tuple[str, dict[str, Any] | None]:
    """The model folder ``checkpoint`` names (a one-seed run directory names its seed folder)
    and its fine-tuning manifest, if it has one."""
    path = Path(checkpoint)
    if not (path / artifacts.MANIFEST).is_file():
        return checkpoint, None
    manifest = artifacts.read_manifest(path)
    kind = manifest.get("kind")
    if kind != "finetune":
        if kind in {"search", "subnetwork"}:
            raise UserError(
                f"'{checkpoint}' is a {kind}, not a fine-tuned model; fine-tune it first: "
                f"tamt finetune {checkpoint} --task ..."
            )
        return checkpoint, None
    if manifest.get("status", "complete") != "complete":
        raise UserError(
            f"fine-tuning run '{checkpoint}' is not complete; evaluate a finished seed's folder "
            f"in it, or finish it with: tamt finetune --resume {checkpoint}"
        )
    members = manifest.get("members")
    if members is None:
        return checkpoint, manifest
    if len(members) != 1:
        shown = ", ".join(str(path / m) for m in members)
        raise UserError(
            f"'{checkpoint}' holds {len(members)} fine-tuned models; evaluate one of: {shown}"
        )
    return fine_tuned(str(path / members[0]))
