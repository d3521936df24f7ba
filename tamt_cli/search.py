"""`tamt search`: run a pruning method on a pre-trained model and write the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from tamt_cli import artifacts, registry, specs
from tamt_cli.specs import SearchSpec


def resolve(spec: SearchSpec) -> tuple[Any, SearchSpec]:
    """The method instance and the spec with its run directory filled in; validates everything
    that can be checked without computing (method name, its options, the model path)."""
    from tamt_cli import models
    from tamt_cli.methods.base import check_spec

    method_cls = registry.methods().get(spec.method)
    options = specs.validate(method_cls.Options, spec.options, f"options of method '{spec.method}'")
    method = method_cls(options)
    check_spec(method, spec)
    models.resolve(spec.model)
    if spec.out is None:
        level = f"s{spec.sparsity:g}" if spec.sparsity is not None else "like"
        spec = spec.model_copy(update={"out": artifacts.default_run_dir(spec.method, level)})
    return method, spec


def run(spec: SearchSpec, method: Any, console: Console) -> dict[str, Any]:
    """Compute the masks and write the run directory atomically; returns the summary."""
    from tamt_cli import masking, models
    from tamt_cli.methods.base import SearchJob

    out = Path(spec.out or ".")
    if out.exists():
        raise specs.UserError(f"run directory '{out}' already exists; choose another --out")
    ref = models.resolve(spec.model)
    with console.status(f"loading model {spec.model}"):
        model = models.load_encoder(ref)
        weights_sha = models.weights_hash(model)
    weights = masking.prunable_weights(model, embeddings=spec.embeddings, pooler=spec.pooler)
    job = SearchJob(spec=spec, model=model, weights=weights, console=console)
    with console.status(f"searching with {spec.method}"):
        masks = method.search(job)
    masking.check_fits(masks, masking.shapes(weights), f"the mask from method '{spec.method}'")
    masks = {p.name: masks[p.name].detach().to("cpu", dtype=bool) for p in weights}
    targets = job.targets
    if targets is None and spec.scope == "local" and spec.sparsity is not None:
        targets = {p.name: spec.sparsity for p in weights}
    report = masking.sparsity_report(weights, masks, targets)
    plugin = registry.methods().plugin(spec.method)
    manifest = artifacts.new_manifest(
        "search",
        method=spec.method,
        method_plugin={"distribution": plugin.distribution, "version": plugin.version},
        model=model_record(ref, model, weights_sha),
        seed=spec.seed,
        sparsity=spec.sparsity,
        scope=spec.scope,
        embeddings=spec.embeddings,
        pooler=spec.pooler,
        notes=job.notes,
        masks=[
            {
                "file": artifacts.MASK_FILE,
                "sparsity": spec.sparsity,
                "achieved": report["overall"]["sparsity"],
                "step": None,
                "final": True,
            }
        ],
        sparsity_report=report,
    )
    with artifacts.staged_dir(out) as stage:
        artifacts.write_text(stage / artifacts.SPEC_FILE, spec.to_yaml())
        artifacts.save_masks(stage / artifacts.MASK_FILE, masks, {"method": spec.method})
        artifacts.write_json(stage / artifacts.MANIFEST, manifest)
    return {"run": str(out), "method": spec.method, "model": spec.model, "report": report}


def model_record(ref: Any, model: Any, weights_sha: str) -> dict[str, Any]:
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
