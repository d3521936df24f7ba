"""`tamt search`: run a pruning method on a pre-trained model and write the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from tamt_cli import artifacts, registry, specs
from tamt_cli.errors import UserError
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


def resumed_spec(run_dir: Path, spec_file: Path | None, flags: dict[str, Any]) -> SearchSpec:
    """The spec saved in ``run_dir``; a spec file or flags given as well must agree with it."""
    saved_path = Path(run_dir) / artifacts.SPEC_FILE
    if artifacts.read_manifest(run_dir).get("status") == "complete":
        raise UserError(f"run '{run_dir}' is already complete; there is nothing to resume")
    if not saved_path.is_file():
        raise UserError(f"'{run_dir}' has no {artifacts.SPEC_FILE}; it cannot be resumed")
    saved = specs.validate(SearchSpec, specs.read_spec_file(saved_path), str(saved_path))
    asked = {k: v for k, v in flags.items() if v is not None}
    if spec_file is not None:
        given = specs.build(SearchSpec, spec_file, flags)
        asked = {**given.model_dump(exclude_unset=True), **asked}
    current = saved.model_dump()
    for key, value in asked.items():
        if key in {"out", "report_to"}:  # where the run is and what watches it may change
            continue
        old = current.get(key)
        new = {**(old or {}), **value} if key == "options" else value
        if _normalise(old) != _normalise(new):
            raise UserError(
                f"--resume: the run was started with {key}={old!r}, not {new!r}; resume it "
                "with the same settings (or start a new run)"
            )
    report_to = asked.get("report_to", saved.report_to)
    return saved.model_copy(update={"out": Path(run_dir), "report_to": report_to})


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def run(spec: SearchSpec, method: Any, console: Console, *, resume: bool = False) -> dict[str, Any]:
    """Compute the masks and write the run directory; returns the summary."""
    if getattr(method, "trains", False):
        return _run_training(spec, method, console, resume)
    if resume:
        raise UserError(f"method '{spec.method}' runs in one shot; there is nothing to resume")
    return _run_once(spec, method, console)


def _run_once(spec: SearchSpec, method: Any, console: Console) -> dict[str, Any]:
    """One-shot methods: everything is computed, then the run directory appears at once."""
    from tamt_cli import masking, models
    from tamt_cli.methods.base import SearchJob

    out = Path(spec.out or ".")
    if out.exists():
        raise UserError(f"run directory '{out}' already exists; choose another --out")
    ref = models.resolve(spec.model)
    with console.status(f"loading model {spec.model}"):
        model = models.load_encoder(ref)
        weights_sha = models.weights_hash(model)
    weights = masking.prunable_weights(model, embeddings=spec.embeddings, pooler=spec.pooler)
    job = SearchJob(spec=spec, model=model, weights=weights, console=console, ref=ref)
    with console.status(f"searching with {spec.method}"):
        masks = method.search(job)
    masks, report = _checked(spec, job, masks)
    writer = RunWriter(out, _manifest(spec, ref, model, weights_sha, job), enabled=True)
    with artifacts.staged_dir(out) as stage:
        writer.root = stage
        artifacts.write_text(stage / artifacts.SPEC_FILE, spec.to_yaml())
        writer.finish(masks, report, job.notes)
    return {"run": str(out), "method": spec.method, "model": spec.model, "report": report}


def _run_training(spec: SearchSpec, method: Any, console: Console, resume: bool) -> dict[str, Any]:
    """Training methods: the run directory exists from the start (checkpoints, masks at steps,
    metrics) and every file in it is written atomically; the manifest says whether it is
    complete."""
    from tamt_cli import masking, models
    from tamt_cli.engine import Engine
    from tamt_cli.methods.base import SearchJob

    engine = Engine(spec.mixed_precision, console, spec.report_to)
    try:
        spec = spec.model_copy(update={"out": engine.broadcast(spec.out)})
        out = Path(spec.out or ".")
        if not resume and out.exists():
            raise UserError(
                f"run directory '{out}' already exists; choose another --out, or continue it "
                f"with --resume {out}"
            )
        engine.barrier()
        ref = models.resolve(spec.model)
        with console.status(f"loading model {spec.model}"):
            model = models.load_encoder(ref)
            weights_sha = models.weights_hash(model)
        weights = masking.prunable_weights(model, embeddings=spec.embeddings, pooler=spec.pooler)
        job = SearchJob(
            spec=spec,
            model=model,
            weights=weights,
            console=console,
            ref=ref,
            engine=engine,
            resume=resume,
        )
        manifest = _manifest(spec, ref, model, weights_sha, job)
        if resume:
            previous = artifacts.read_manifest(out)
            if previous.get("model", {}).get("weights_sha256") != weights_sha:
                raise UserError(f"model '{spec.model}' has changed since run '{out}' started")
            manifest["masks"] = previous.get("masks", [])
            manifest["created"] = previous.get("created", manifest["created"])
        writer = RunWriter(out, manifest, enabled=engine.is_main)
        job.run = writer
        if engine.is_main:
            out.mkdir(parents=True, exist_ok=True)
            artifacts.write_text(out / artifacts.SPEC_FILE, spec.to_yaml())
            writer.write_manifest()
        engine.barrier()
        engine.track(out, out.name, spec.model_dump(mode="json"))
        masks = method.search(job)
        masks, report = _checked(spec, job, masks)
        writer.finish(masks, report, job.notes, step=job.notes.get("steps"))
        engine.barrier()
    finally:
        engine.end()
    return {"run": str(out), "method": spec.method, "model": spec.model, "report": report}


def _checked(spec: SearchSpec, job: Any, masks: dict[str, Any]) -> tuple[dict, dict]:
    from tamt_cli import masking

    masking.check_fits(masks, masking.shapes(job.weights), f"the mask from method '{spec.method}'")
    masks = {p.name: masks[p.name].detach().to("cpu", dtype=bool) for p in job.weights}
    targets = job.targets
    if targets is None and spec.scope == "local" and spec.sparsity is not None:
        targets = {p.name: spec.sparsity for p in job.weights}
    report = masking.sparsity_report(job.weights, masks, targets)
    report["not_prunable"] = {
        name: "not in the checkpoint" for name in masking.absent_weights(job.model)
    }
    return masks, report


def _manifest(spec: SearchSpec, ref: Any, model: Any, weights_sha: str, job: Any) -> dict:
    plugin = registry.methods().plugin(spec.method)
    return artifacts.new_manifest(
        "search",
        status="running",
        method=spec.method,
        method_plugin={"distribution": plugin.distribution, "version": plugin.version},
        model=model_record(ref, model, weights_sha),
        seed=spec.seed,
        sparsity=spec.sparsity,
        scope=spec.scope,
        embeddings=spec.embeddings,
        pooler=spec.pooler,
        notes=job.notes,
        masks=[],
        sparsity_report=None,
    )


class RunWriter:
    """Writes a search run's masks, extra files and manifest (on the main process only)."""

    def __init__(self, root: Path, manifest: dict[str, Any], enabled: bool) -> None:
        self.root = root
        self.manifest = manifest
        self.enabled = enabled

    def write_manifest(self) -> None:
        if self.enabled:
            artifacts.write_json(self.root / artifacts.MANIFEST, self.manifest)

    def save_masks(self, masks: dict[str, Any], *, step: int | None, **extra: Any) -> None:
        """Keep a mask (e.g. at a checkpoint) as ``masks/step-NNNNNN.safetensors``."""
        if not self.enabled:
            return
        name = f"masks/step-{step:06d}.safetensors" if step is not None else artifacts.MASK_FILE
        artifacts.save_masks(self.root / name, masks)
        kept = [m for m in self.manifest["masks"] if m.get("file") != name]
        sparsity = self.manifest.get("sparsity")
        pruned = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        kept.append(
            {
                "file": name,
                "sparsity": sparsity,
                "achieved": pruned / total,
                "step": step,
                "final": False,
                **extra,
            }
        )
        self.manifest["masks"] = sorted(kept, key=lambda m: (m["step"] is None, m["step"] or 0))
        self.write_manifest()

    def save_tensors(self, name: str, tensors: dict[str, Any], metadata: dict | None = None):
        """An extra safetensors file of the run (e.g. a trained head)."""
        if self.enabled:
            from safetensors.torch import save as st_save

            cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            artifacts.write_bytes(self.root / name, st_save(cpu, metadata=metadata))

    def finish(
        self, masks: dict[str, Any], report: dict[str, Any], notes: dict, step: int | None = None
    ) -> None:
        """The final mask as ``masks.safetensors`` and the completed manifest."""
        if not self.enabled:
            return
        artifacts.save_masks(self.root / artifacts.MASK_FILE, masks)
        entries = [m for m in self.manifest["masks"] if m.get("file") != artifacts.MASK_FILE]
        final = {
            "file": artifacts.MASK_FILE,
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
