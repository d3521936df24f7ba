"""`tamt search`: run a pruning method on a pre-trained model and write the run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tamt_cli import artifacts, files, registry, specs
from tamt_cli.errors import Interrupted, UserError, environment_fault
from tamt_cli.specs import SearchSpec


def resolve(spec: SearchSpec) -> tuple[Any, SearchSpec]:
    """The method instance and the spec with its run directory filled in; validates everything
    that can be checked without computing (method name, its options, the model path)."""
    from tamt_cli import models
    from tamt_cli.methods.base import check_spec, structures_of

    if spec.budget == "paper":
        spec = _paper_budget(spec, registry.methods().get(spec.method))
    method = registry.create_method(spec.method, spec.options)
    if spec.pattern is not None and not getattr(method, "patterns", False):
        raise UserError(
            f"method '{spec.method}' does not take --pattern; "
            f"{', '.join(registry.methods_with('patterns'))} do"
        )
    if spec.structure not in structures_of(method):
        able = registry.methods_with_structure(spec.structure)
        raise UserError(
            f"method '{spec.method}' does not take --structure {spec.structure}; "
            f"{', '.join(able) or 'no installed method'} {'does' if len(able) == 1 else 'do'}"
        )
    if spec.report_to and not getattr(method, "trains", False):
        raise UserError(
            f"--report-to {','.join(spec.report_to)}: method '{spec.method}' runs in one shot "
            "and logs no training, so no tracker would get anything; leave --report-to out"
        )
    check_spec(method, spec)
    models.resolve(spec.model)
    if spec.out is None:
        level = f"s{spec.sparsity:g}" if spec.sparsity is not None else "like"
        if spec.pattern is not None:
            level = spec.pattern.replace(":", "of")
        if spec.structure != "weights":
            level = f"{spec.structure}-{level}"
        spec = spec.model_copy(
            update={"out": artifacts.default_run_dir(spec.label or spec.method, level)}
        )
    return method, spec


def trackers_where_trained(data: dict[str, Any]) -> dict[str, Any]:
    """Search fields (a sweep cell's) without ``report_to`` when their method runs in one shot:
    the trackers a grid names for its searches watch those that train; a one-shot method, which
    logs nothing, refuses them."""
    if not data.get("report_to"):
        return data
    try:
        method = registry.methods().get(str(data.get("method")))
    except UserError:  # an unknown method: the search says so
        return data
    if getattr(method, "trains", False):
        return data
    return {k: v for k, v in data.items() if k != "report_to"}


def advise(method: Any, spec: SearchSpec, console: Any) -> None:
    """Print the method's notes on a run it will do but its measurements advise against."""
    from tamt_cli import verbosity

    hook = getattr(method, "advice", None)
    for text in hook(spec) if hook is not None else []:
        verbosity.note(console, text)


def _paper_budget(spec: SearchSpec, method_cls: Any) -> SearchSpec:
    """The spec with the paper's values where it gives none (fields not set, options absent);
    what is given explicitly wins. The saved spec holds the values, so a resumed or repeated
    run needs nothing else."""
    hook = getattr(method_cls, "paper_budget", None)
    if hook is None:
        raise UserError(
            f"--budget paper is a mask-training protocol; method '{spec.method}' has none "
            f"({', '.join(registry.methods_with('paper_budget'))} do)"
        )
    fields, options = hook(spec)
    update = {k: v for k, v in fields.items() if k not in spec.model_fields_set}
    update["options"] = {**options, **spec.options}
    given = spec.model_dump(exclude_unset=True)  # what was left open stays open
    filled = specs.validate(SearchSpec, {**given, **update}, "--budget paper")
    filled.filled_in(set(update) - {"options"}, "from --budget paper")
    return filled


def resumed_spec(run_dir: Path, spec_file: Path | None, flags: dict[str, Any]) -> SearchSpec:
    """The spec saved in ``run_dir``; a spec file or flags given as well must agree with it.
    The run must be incomplete, made by this major version of tamt and not in use."""
    saved_path = artifacts.resumable(run_dir, "search")
    return specs.resumed(SearchSpec, run_dir, saved_path, spec_file, flags, merged="options")


def run(spec: SearchSpec, method: Any, console: Console, *, resume: bool = False) -> dict[str, Any]:
    """Compute the masks and write the run directory; returns the summary. The run records
    the mixed precision it uses (``auto`` resolved for this machine)."""
    from tamt_cli import precision

    if getattr(method, "trains", False):
        spec = spec.model_copy(update={"mixed_precision": precision.resolve(spec.mixed_precision)})
        return _run_training(spec, method, console, resume)
    if resume:
        raise UserError(f"method '{spec.method}' runs in one shot; there is nothing to resume")
    artifacts.check_output(Path(spec.out or "."), flag="--out")
    return _run_once(spec, method, console)


def _run_once(spec: SearchSpec, method: Any, console: Console) -> dict[str, Any]:
    """One-shot methods: everything is computed, then the run directory appears at once."""
    from tamt_cli import masking, models
    from tamt_cli.methods.base import SearchJob

    started = time.perf_counter()
    out = Path(spec.out or ".")
    ref = models.resolve(spec.model)
    with console.status(f"loading model {spec.model}"):
        model = models.load_encoder(ref)
        weights_sha = models.weights_hash(model)
    weights = masking.prunable_weights(model, embeddings=spec.embeddings, pooler=spec.pooler)
    job = SearchJob(spec=spec, model=model, weights=weights, console=console, ref=ref)
    _check_layout(job)
    omp = _omp_masks(spec, job)
    with console.status(f"searching with {spec.method}"):
        masks = method.search(job)
    masks, report, found = _checked(spec, job, masks)
    manifest = _manifest(spec, ref, model, weights_sha, job)
    manifest[artifacts.OMP_JACCARD] = _omp_jaccard(masks, omp)
    writer = artifacts.RunWriter(out, manifest, enabled=True, started=started)
    with files.staged_dir(out) as stage:
        writer.root = stage
        files.write_text(stage / artifacts.SPEC_FILE, spec.to_yaml())
        writer.finish(masks, report, job.notes, units=found)
    return {"run": str(out), "method": spec.method, "model": spec.model, "report": report}


def _run_training(spec: SearchSpec, method: Any, console: Console, resume: bool) -> dict[str, Any]:
    """Training methods: the run directory exists from the start (checkpoints, masks at steps,
    metrics) and every file in it is written atomically; the manifest says whether it is
    complete. Everything that can be checked without computing is checked before the directory
    is made; a new run that fails before its first checkpoint leaves no directory behind."""
    from tamt_cli import masking, models
    from tamt_cli.engine import Engine
    from tamt_cli.methods.base import SearchJob

    started = time.perf_counter()
    engine = Engine(spec.mixed_precision, console, spec.report_to)
    if engine.is_main and not resume:
        advise(method, spec, console)
    lock, created = None, False
    out = Path(spec.out or ".")
    try:
        spec = spec.model_copy(update={"out": engine.broadcast(spec.out)})
        out = Path(spec.out or ".")
        previous = artifacts.read_manifest(out) if resume else None
        if not resume:
            artifacts.check_output(out, flag="--out")
        engine.barrier()
        ref = models.resolve(spec.model)
        with console.status(f"loading model {spec.model}"):
            model = models.load_encoder(ref)
            weights_sha = models.weights_hash(model)
        if previous is not None:
            recorded = previous.get("model", {}).get("weights_sha256")
            models.check_weights(model, recorded, spec.model, f"run '{out}'", sha=weights_sha)
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
        _check_layout(job)
        preflight = getattr(method, "preflight", None)
        if preflight is not None:
            preflight(job)
        omp = _omp_masks(spec, job)  # of the pre-trained weights, before any training
        if previous is not None:
            job.notes.update(previous.get("notes") or {})
        manifest = _carried_over(_manifest(spec, ref, model, weights_sha, job), previous)
        writer = artifacts.RunWriter(
            out, manifest, enabled=engine.is_main, previous=previous, started=started
        )
        job.run = writer
        if engine.is_main:
            if resume:
                lock = files.lock_run_dir(out)
            else:  # a resumed run's files change only once it trains again
                lock = files.create_run_dir(out)
                created = True
                files.write_text(out / artifacts.SPEC_FILE, spec.to_yaml())
                writer.write_manifest()
        engine.barrier()
        engine.track(out, out.name, spec.model_dump(mode="json"))
        masks = method.search(job)
        masks, report, found = _checked(spec, job, masks)
        writer.manifest[artifacts.OMP_JACCARD] = _omp_jaccard(masks, omp)
        writer.finish(masks, report, job.notes, step=job.notes.get("steps"), units=found)
        if engine.is_main and spec.keep_checkpoints is None:
            artifacts.remove_checkpoints(out)  # a complete run is never resumed
        engine.barrier()
        if engine.is_main:
            _say_if_omp(writer.manifest, console)
    except BaseException as exc:
        if engine.is_main:
            _stopped(exc, out, created=created, resumed=resume)
        raise
    finally:
        files.release(lock, remove=True)
        engine.end()
    return {"run": str(out), "method": spec.method, "model": spec.model, "report": report}


def _carried_over(manifest: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """A resumed run's manifest keeps the masks, creation time, inputs and time so far."""
    if previous is not None:
        manifest["masks"] = previous.get("masks", [])
        manifest["created"] = previous.get("created", manifest["created"])
        manifest["inputs"] = dict(previous.get("inputs") or {})
        manifest["seconds"] = previous.get("seconds")
    return manifest


def _stopped(exc: BaseException, out: Path, *, created: bool, resumed: bool) -> None:
    """A training run ended early: a new run with no checkpoint yet leaves nothing behind; one
    with a checkpoint says how to resume it. Raises the exception to report, if it differs."""
    import shutil

    resumable = (resumed or (created and bool(artifacts.checkpoints(out)))) and out.is_dir()
    if created and not resumable:
        shutil.rmtree(out, ignore_errors=True)
    hint = f"resume with: tamt search --resume {out}" if resumable else None
    if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
        if hint:
            raise Interrupted(f"interrupted; {hint}") from None
        if created:
            raise Interrupted("interrupted before the first checkpoint; nothing was kept") from None
        return
    if isinstance(exc, Exception) and not isinstance(exc, UserError):
        fault = environment_fault(exc, out)
        if fault is not None:
            raise UserError(f"{fault}; {hint}" if hint else fault) from None


def _check_layout(job: Any) -> None:
    """What the weights must allow, checked before any compute: a pattern's groups fit every
    matrix; a structure's units are found in every layer and the sparsity prunes some of each
    layer's but not all (``job.units`` is filled in)."""
    from tamt_cli import masking, units

    if job.pattern is not None:
        masking.check_pattern(job.weights, job.pattern)
    if job.structure != "weights":
        job.units = units.unit_groups(job.model, job.weights, job.structure)
        units.prune_counts(job.units, job.sparsity)


def _omp_masks(spec: SearchSpec, job: Any) -> dict[str, Any] | None:
    """The OMP mask the run's mask is compared with: the magnitude of the pre-trained weights at
    the run's sparsity, scope and pattern, over the same weights (embeddings, pooler); of a
    structured run, the unit magnitude's at its sparsity. Held bit-packed (one bit a weight)
    while the search runs."""
    import numpy as np

    from tamt_cli import masking, units

    if spec.sparsity is None:  # a per-matrix target (e.g. random --like) has no one OMP mask
        return None
    if job.units:
        scores = units.magnitude_scores(job.units, job.weights)
        kept = units.keep_units(job.units, scores, spec.sparsity)
        expanded = units.expand(job.units, kept, masking.shapes(job.weights))
        return {name: np.packbits(keep.numpy().reshape(-1)) for name, keep in expanded.items()}
    whole = spec.scope == "global" and job.pattern is None
    groups = [job.weights] if whole else [[p] for p in job.weights]  # one matrix at a time
    packed = {}
    for group in groups:
        masks = masking.magnitude_masks(group, spec.sparsity, spec.scope, job.pattern)
        for name, keep in masks.items():
            packed[name] = np.packbits(keep.cpu().numpy().reshape(-1))
    return packed


def _omp_jaccard(masks: dict[str, Any], omp: dict[str, Any] | None) -> float | None:
    """Jaccard similarity of the kept weights of ``masks`` and the packed OMP mask."""
    import numpy as np
    import torch

    if omp is None:
        return None
    both = either = 0
    for name, keep in masks.items():
        keep = keep.to("cpu", dtype=torch.bool).reshape(-1)
        bits = np.unpackbits(omp[name], count=keep.numel()).astype(bool)
        ref = torch.from_numpy(bits)
        both += int((keep & ref).sum())
        either += int((keep | ref).sum())
    return round(both / either, 6) if either else None


def _say_if_omp(manifest: dict[str, Any], console: Any) -> None:
    """A note when a trained mask ended where magnitude pruning starts (report.omp_like)."""
    from tamt_cli import report, verbosity

    text = report.omp_like(manifest)
    if text is not None:
        verbosity.note(console, text)


def _checked(spec: SearchSpec, job: Any, masks: dict[str, Any]) -> tuple[dict, dict, Any]:
    """The method's masks checked and on the CPU, their sparsity report, and the unit masks of
    a structured run (expanded into the weight masks), else None."""
    from tamt_cli import masking, units

    found = None
    if job.units:
        what = f"the unit masks from method '{spec.method}'"
        kept = units.check_unit_masks(job.units, masks, job.sparsity, what)
        found = units.UnitMasks(spec.structure, job.units, kept)
        masks = units.expand(job.units, kept, masking.shapes(job.weights))
        spanned = {n for g in job.units for n in (*g.rows, *g.columns)}
        job.targets = {p.name: job.sparsity if p.name in spanned else 0.0 for p in job.weights}
    masking.check_fits(masks, masking.shapes(job.weights), f"the mask from method '{spec.method}'")
    masks = {p.name: masks[p.name].detach().to("cpu", dtype=bool) for p in job.weights}
    broken = masking.pattern_breaks(masks, job.pattern) if job.pattern is not None else []
    if broken:
        raise UserError(
            f"method '{spec.method}' returned a mask that breaks --pattern {spec.pattern} in "
            f"'{broken[0]}' ({len(broken)} matrices)"
        )
    targets = job.targets
    if targets is None and spec.scope == "local" and spec.sparsity is not None:
        targets = {p.name: spec.sparsity for p in job.weights}
    report = masking.sparsity_report(job.weights, masks, targets)
    report["not_prunable"] = {
        name: "not in the checkpoint" for name in masking.absent_weights(job.model)
    }
    if found is not None:
        report["units"] = units_report(found)
    return masks, report, found


def units_report(found: Any) -> dict[str, Any]:
    """A structured mask's units in its sparsity report: the structure, units a layer has and
    units kept in each layer, by kind of unit."""
    return {
        "structure": found.structure,
        "count": found.counts(),
        "layers": found.layers(),
        "kept": found.kept(),
    }


def _manifest(spec: SearchSpec, ref: Any, model: Any, weights_sha: str, job: Any) -> dict:
    plugin = registry.methods().plugin(spec.method)
    return artifacts.new_manifest(
        "search",
        registry.installed_distributions(),
        status="running",
        method=spec.method,
        label=spec.label,
        method_plugin={"distribution": plugin.distribution, "version": plugin.version},
        model=artifacts.model_record(ref, model, weights_sha),
        seed=spec.seed,
        sparsity=spec.sparsity,
        pattern=spec.pattern,
        structure=spec.structure,
        scope=spec.scope,
        embeddings=spec.embeddings,
        pooler=spec.pooler,
        notes=job.notes,
        masks=[],
        sparsity_report=None,
    )
