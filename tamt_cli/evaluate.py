"""`tamt eval --objective`: the held-out pre-training loss of a subnetwork (a cheap proxy for
how well it will transfer), for a search run, an exported subnetwork, or a dense model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from tamt_cli import artifacts
from tamt_cli.errors import UserError
from tamt_cli.specs import EvalSpec


@dataclass
class Subject:
    """What is scored or fine-tuned: a model, and the mask (if any) over its pre-trained weights.

    ``kind`` is ``search`` (a search run), ``subnetwork`` (an exported subnetwork folder),
    ``mask`` (a bare mask file over ``--model``) or ``model`` (a plain model: dense)."""

    ref: Any
    masks: dict[str, Any] | None
    head_file: Path | None
    manifest: dict[str, Any] | None
    description: str
    embeddings: bool = True
    pooler: bool = True
    notes: dict[str, Any] = field(default_factory=dict)
    kind: str = "model"
    mask_file: Path | None = None
    #: SHA-256 the weights at ``ref`` must have for the mask to mean what it meant (or None)
    weights_sha256: str | None = None


def subject(
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
    from tamt_cli import extract, models, pretraining
    from tamt_cli.specs import ExtractSpec

    path = Path(checkpoint)
    if path.suffix == ".safetensors" and not path.is_dir():
        if step is not None:
            raise UserError(f"--step needs a search run; '{checkpoint}' is a mask file")
        if model is None:
            raise UserError(
                f"mask file '{checkpoint}' needs --model, the model whose weights it masks"
            )
        masks = artifacts.load_masks(path)
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
        entry = extract.choose(manifest, ExtractSpec(run=path, step=step))
        masks = artifacts.load_masks(path / entry["file"])
        head = path / pretraining.HEAD_FILE
        record = manifest["model"]
        if kind == "subnetwork" and own_weights:
            if model is not None:
                raise UserError(
                    f"'{checkpoint}' is an exported subnetwork, which is its own model; "
                    "--model is for a mask file or a search run"
                )
            ref, sha = models.resolve(str(path)), None
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
        )
    if step is not None:
        raise UserError(f"--step needs a search run; '{checkpoint}' is a model")
    if model is not None:
        raise UserError(f"--model is for a mask file or a search run; '{checkpoint}' is a model")
    return Subject(models.resolve(checkpoint), None, None, None, f"dense {checkpoint}")


def run_objective(spec: EvalSpec, console: Console) -> dict[str, Any]:
    """The held-out pre-training loss of a subnetwork. For MLM every subnetwork of a model is
    scored with the same head (``--head shared``): the checkpoint's pre-trained head, or one
    fitted once on the dense model; ``--head own`` scores a search run with the head it
    trained along with its mask."""
    from tamt_cli import masking, models, objectives, pretraining
    from tamt_cli.engine import Engine

    assert spec.objective is not None
    what = subject(spec.checkpoint, spec.step)
    if spec.head == "own" and "mlm" in spec.objective and what.head_file is None:
        raise UserError(
            f"--head own needs a search run that trained an MLM head; '{spec.checkpoint}' has "
            f"no {pretraining.HEAD_FILE} (use --head shared)"
        )
    engine = Engine("no", console)
    try:
        with console.status(f"loading model {what.ref.given}"):
            model = models.load_encoder(what.ref)
        recorded = (what.manifest or {}).get("model", {}).get("weights_sha256")
        if recorded is not None and models.weights_hash(model) != recorded:
            raise UserError(
                f"model '{what.ref.given}' now has different weights from those "
                f"'{spec.checkpoint}' was made from"
            )
        weights = masking.prunable_weights(model, embeddings=what.embeddings, pooler=what.pooler)
        for p in model.parameters():
            p.requires_grad_(False)
        batch = spec.batch_size or 16
        data_spec = SimpleNamespace(
            corpus=spec.corpus,
            max_length=spec.max_length or 128,
            held_out=spec.held_out,
            batch_size=batch,
            eval_blocks=spec.eval_blocks,
        )
        data = pretraining.prepare(what.ref, model, data_spec, engine, console)
        head, head_record = None, None
        if "mlm" in spec.objective:  # fitted (if at all) on the dense model: before the mask
            head, head_record = pretraining.shared_head(
                what.ref,
                model,
                weights,
                data,
                engine,
                console,
                steps=spec.head_warmup_steps,
                lr=spec.head_warmup_lr,
                batch_size=batch,
            )
            if spec.head == "own":
                assert what.head_file is not None
                _load_head(head, what.head_file)
                head_record = {"kind": "own", "about": "trained with the mask by the search"}
        sparsity = None
        if what.masks is not None:
            masking.check_fits(
                what.masks, masking.shapes(weights), f"the mask of '{spec.checkpoint}'"
            )
            masking.attach_masks(weights, what.masks)
            pruned = sum(int((~m).sum()) for m in what.masks.values())
            sparsity = pruned / sum(m.numel() for m in what.masks.values())
        module = objectives.PretrainingLoss(model, weights, spec.objective, head)
        module.to(engine.device)
        loss = pretraining.held_out_loss(module, data, spec.objective, data_spec, engine.device)
    finally:
        engine.end()
    return {
        "checkpoint": spec.checkpoint,
        "subject": what.description,
        "objective": spec.objective,
        "loss": loss,
        "split": "held-out",
        "examples": int(min(spec.eval_blocks, data.held_out.shape[0])),
        "corpus": data.source,
        "max_length": data_spec.max_length,
        "mask_sparsity": sparsity,
        "mlm_head": head_record,
    }


def _load_head(head: Any, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise UserError(f"head file '{path}' is unreadable or corrupt ({exc})") from None
    own = dict(head.named_parameters())
    unknown = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if unknown:
        raise UserError(f"head file '{path}' does not fit the model ('{unknown[0]}')")
    import torch

    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
