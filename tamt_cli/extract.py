"""`tamt extract`: pick an exact-sparsity mask from a run and optionally export a subnetwork."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from tamt_cli import artifacts, files, hub, maskfile, modelcard, registry
from tamt_cli.errors import UserError
from tamt_cli.specs import ExtractSpec


def run(
    spec: ExtractSpec,
    console: Console,
    *,
    overwrite: bool = False,
    push: hub.Push | None = None,
) -> dict[str, Any]:
    """``overwrite``: replace an existing ``--export`` folder that is a tamt run or export;
    ``push``: upload the export to the Hub once it is written."""
    from tamt_cli import masking

    if push is not None and spec.export is None:
        raise UserError("--push-to-hub uploads the --export folder, which was not given")
    hub.check_push(push)
    manifest = artifacts.read_manifest(spec.run)
    if manifest.get("kind") not in {"search", "subnetwork"}:
        raise UserError(f"'{spec.run}' is a {manifest.get('kind')} run, not a search run")
    if spec.format != "dense" and spec.export is None:
        raise UserError(f"--format {spec.format} applies to --export DIR, which was not given")
    if spec.export is not None:
        artifacts.check_output(
            spec.export,
            flag="--export",
            overwrite=overwrite,
            can_overwrite=True,
            sources=(Path(spec.run),),
        )
    entry = artifacts.choose_mask(manifest, spec.run, step=spec.step, sparsity=spec.sparsity)
    mask_path = Path(spec.run) / entry["file"]
    masks = masking_cpu(maskfile.load_masks(mask_path))
    if manifest.get("kind") == "subnetwork" and spec.export is None:  # with --export: in export()
        from tamt_cli import exports

        exports.check(Path(spec.run), masks, unit_masks=maskfile.load_units(mask_path))
    infos = [SimpleNamespace(**m) for m in manifest["sparsity_report"]["matrices"]]
    masking.check_fits(masks, {m.name: m.shape for m in infos}, f"mask file '{mask_path}'")
    targets = {m.name: m.target for m in infos}
    report = masking.sparsity_report(infos, masks, targets)
    report["not_prunable"] = manifest["sparsity_report"].get("not_prunable") or {}
    if manifest["sparsity_report"].get("units"):
        report["units"] = manifest["sparsity_report"]["units"]
    result: dict[str, Any] = {
        "run": str(spec.run),
        "mask": str(mask_path),
        "step": entry.get("step"),
        "export": None,
        "report": report,
    }
    if spec.export is not None:
        export(spec, manifest, entry, masks, report, console, replace=overwrite, push=push)
        result["export"] = str(spec.export)
        result["format"] = spec.format
        if push is not None:
            with console.status(f"pushing {spec.export} to {push.repo_id}"):
                result["hub"] = hub.push_folder(push, Path(spec.export), "a subnetwork")
    return result


def masking_cpu(masks: dict[str, Any]) -> dict[str, Any]:
    return {name: mask.to("cpu") for name, mask in masks.items()}


def export(
    spec: ExtractSpec,
    manifest: dict[str, Any],
    entry: dict[str, Any],
    masks: dict[str, Any],
    report: dict[str, Any],
    console: Console,
    *,
    replace: bool = False,
    push: hub.Push | None = None,
) -> None:
    """Write a plain Hugging Face folder with the zeros baked in (``--format dense``) or the
    masked weights in the sparse-bitmask layout (``compressed``), plus mask file, manifest and
    model card; ``replace``: an existing folder (checked by ``artifacts.check_output``) is
    replaced; ``push``: where the card says the export is (its load snippet)."""
    from tamt_cli import compressed, exports, masking, models, pretraining

    record = manifest["model"]
    ref = models.resolve(record["id"])
    with console.status(f"loading model {record['id']}"):
        model = models.load_encoder(ref)
        models.check_weights(model, record["weights_sha256"], record["id"], f"run '{spec.run}'")
    weights = masking.prunable_weights(
        model, embeddings=manifest.get("embeddings", True), pooler=manifest.get("pooler", True)
    )
    masking.check_fits(masks, masking.shapes(weights), f"the mask of run '{spec.run}'")
    found = maskfile.load_units(Path(spec.run) / entry["file"])
    if manifest.get("kind") == "subnetwork":  # an export exported again: its own weights first
        base = model if record["weights_sha256"] is not None else None
        exports.check(Path(spec.run), masks, base, record["id"], found)
    masking.bake_masks(weights, masks)
    structured = structured_export(model, weights, found, spec.format)
    assert spec.export is not None
    sub_manifest = artifacts.new_manifest(
        "subnetwork",
        registry.installed_distributions(),
        source_run=artifacts.recorded_path(spec.run),
        source_mask=entry,
        method=manifest.get("method"),
        label=manifest.get("label"),
        model=record,
        seed=manifest.get("seed"),
        sparsity=entry.get("sparsity"),
        scope=manifest.get("scope"),
        embeddings=manifest.get("embeddings", True),
        pooler=manifest.get("pooler", True),
        masks=[{**entry, "file": artifacts.MASK_FILE, "final": True}],
        sparsity_report=report,
        pattern=manifest.get("pattern"),
        format=spec.format,
        **structured,
        # what `tamt eval --objective` of the export reads where no flag says otherwise
        search_corpus=pretraining.recorded_corpus(manifest, Path(spec.run)),
        search=modelcard.search_record(Path(spec.run), manifest, entry),
        commands=[
            *modelcard.previous_commands(Path(spec.run), manifest),
            modelcard.command_line("extract", ExtractSpec, spec.model_dump(mode="json"), ["run"]),
        ],
    )
    card = modelcard.export_card(sub_manifest, push)
    with (
        console.status(f"writing {spec.export}"),
        files.staged_dir(spec.export, replace=replace) as stage,
    ):
        # weights the checkpoint lacked (an MLM checkpoint's pooler) stay out of the export too
        absent = models.absent_keys(model)
        state = {k: v for k, v in model.state_dict().items() if k not in absent}
        if spec.format == "compressed":
            model.config.save_pretrained(str(stage))
            structure = manifest.get("pattern") or "unstructured"
            compressed.write(stage, state, list(masks), report["overall"]["sparsity"], structure)
        else:
            model.save_pretrained(str(stage), state_dict=state)
        models.save_tokenizer(ref, stage)
        maskfile.save_masks(stage / artifacts.MASK_FILE, masks, units=found)
        files.write_json(stage / artifacts.MANIFEST, sub_manifest)
        files.write_text(stage / artifacts.CARD, card)


def structured_export(model: Any, weights: list[Any], found: Any, format: str) -> dict[str, Any]:
    """A structured mask's export (``found``: its unit masks, or None): written dense, the model
    loses its pruned neurons (the FFN matrices sliced, the config's width reduced) and its
    pruned heads' biases (their weights are zeros already). What the export's manifest records:
    the structure and, when it was sliced, the FFN width (the export's mask file stays over the
    pre-trained model's shapes, :func:`tamt_cli.units.sliced_masks` fits it to the export)."""
    from tamt_cli import units

    if found is None:
        return {}
    width = units.slice_model(model, weights, found) if format == "dense" else None
    return {"structure": found.structure, "ffn_width": width}
