"""`tamt report`: tables and plots from finished runs; nothing is recomputed.

It reads sweep directories (their ``sweep.json``), search runs, fine-tuning runs (or one seed's
folder), the JSON that ``tamt eval --objective --json`` prints, and mask files, and builds one
document (the ``--format json`` output, version :data:`VERSION`):

- ``rows``: per task, method and target sparsity, the main metric's mean ± sample std over every
  fine-tuning seed (the best evaluation, as the paper reports), every other metric (best and
  final), the *matching* verdict (BERT-Tickets: within one std of the dense mean, or above it),
  held-out pre-training losses and search seconds; the dense model has ``method`` "dense".
- ``glue_average``: the mean of the main metrics over the GLUE tasks, where several are present.
- ``correlations``: Spearman ρ between held-out loss and score over the subnetworks of a task.
- ``subnetworks``: achieved sparsity overall, per kind and per layer, and the Jaccard similarity
  of its kept weights with the OMP mask of the same settings (recorded by the search, else
  against an OMP run of the report); ``overlap``: Jaccard similarity of kept weights between the
  masks of one sparsity, and of the weights each flips relative to the OMP mask.
- ``notes``: what was left out, and every subnetwork whose mask is OMP's in all but name
  (:func:`omp_like`).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tamt_cli import artifacts, maskfile, records
from tamt_cli.display import plus_minus
from tamt_cli.errors import UserError
from tamt_cli.tasks.metrics import over_seeds

FORMAT = "tamt.report"
VERSION = 1
DENSE = artifacts.DENSE  # as the sweep names the dense model
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
#: methods in this order first, then the others by name
METHOD_ORDER = ("dense", "mlm", "kd", "mlm-kd", "imp", "omp", "random")
#: kept-weight Jaccard with OMP's mask from which a subnetwork is OMP's in all but name
OMP_LIKE = 0.99
#: IMP's training steps a round in the paper (docs/imp.md)
PAPER_IMP_STEPS = 2792

Key = tuple[str, float | None]  # (method, target sparsity)


@dataclass
class Inputs:
    """What the paths hold, read defensively."""

    searches: dict[Path, dict[str, Any]] = field(default_factory=dict)  # run → manifest
    seeds: list[dict[str, Any]] = field(default_factory=list)  # one fine-tuning seed each
    heldout: list[dict[str, Any]] = field(default_factory=list)  # eval --objective results
    mask_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- reading --------------------------------------------------------------------------------


def read(paths: Iterable[Path]) -> Inputs:
    inputs = Inputs()
    for path in paths:
        path = Path(path)
        if path.is_file() and path.suffix == ".safetensors":
            inputs.mask_files.append(path)
        elif path.is_file() and path.suffix == ".json":
            inputs.heldout.append(_heldout(path, records.load(path, records.HeldOut), None))
        elif path.is_dir() and (path / artifacts.SWEEP_INDEX).is_file():
            _read_sweep(path, inputs)
        elif path.is_dir() and (path / artifacts.MANIFEST).is_file():
            _read_run(path, inputs)
        else:
            raise UserError(
                f"'{path}' is not a sweep directory, a tamt run, an eval result (.json) or a "
                "mask file (.safetensors)"
            )
    if inputs.mask_files and (inputs.searches or inputs.seeds or inputs.heldout):
        raise UserError("give either mask files to compare, or runs and sweeps, not both")
    return inputs


def _read_sweep(path: Path, inputs: Inputs) -> None:
    """A sweep directory's runs, found by its layout: what is on disk counts, as for the sweep
    itself (runs still in progress are hidden or incomplete, and left out)."""
    for kind in (artifacts.SWEEP_SEARCHES, artifacts.SWEEP_FINETUNES):
        folder = path / kind
        runs = sorted(folder.iterdir()) if folder.is_dir() else []
        for run in runs:
            if not run.name.startswith(".") and (run / artifacts.MANIFEST).is_file():
                _read_run(run, inputs)
    for file in artifacts.sweep_heldout_files(path):
        result = records.load(file, records.HeldOut)
        name = artifacts.heldout_subnetwork(file.name, result.objective)
        if name == DENSE:
            inputs.heldout.append(_heldout(file, result, {"method": DENSE}))
            continue
        search = path / artifacts.sweep_search(name)
        if not (search / artifacts.MANIFEST).is_file():
            inputs.notes.append(f"'{file}' scores no search run of the sweep; left out")
            continue
        manifest = artifacts.read_manifest(search)
        cell = {"method": name_of(manifest), "sparsity": manifest.get("sparsity")}
        inputs.heldout.append(_heldout(file, result, cell))


def _read_run(path: Path, inputs: Inputs) -> None:
    manifest = artifacts.read_manifest(path)
    kind = manifest.get("kind")
    if kind in {"search", "subnetwork"}:
        if manifest.get("status", "complete") != "complete":
            inputs.notes.append(f"search run '{path}' is not complete; left out")
            return
        inputs.searches[path.resolve()] = manifest
    elif kind == "finetune" and manifest.get("status", "complete") != "complete":
        inputs.notes.append(f"fine-tuning run '{path}' is not complete; left out")
    elif kind == "finetune" and manifest.get("members") is not None:
        file = path / artifacts.SUMMARY
        summary = records.load(file, records.Summary) if file.is_file() else records.Summary()
        for run in summary.runs or []:
            record = records.as_dict(run)
            folder = path / Path(str(record.get("folder", ""))).name
            member = _member_manifest(folder)
            link = (member or manifest).get("subnetwork") or manifest.get("subnetwork") or {}
            task = manifest.get("task")
            inputs.seeds.append(_seed(path, task, summary.selected_by, link, record))
    elif kind == "finetune":
        file = path / artifacts.SEED_METRICS
        metrics = records.load(file, records.SeedMetrics) if file.is_file() else None
        record = {
            "seed": manifest.get("seed"),
            "best": _evaluation(metrics.best if metrics else None),
            "final": _evaluation(metrics.final if metrics else None),
        }
        link = manifest.get("subnetwork") or {}
        selected = metrics.selected_by if metrics else None
        inputs.seeds.append(_seed(path, manifest.get("task"), selected, link, record))
    else:
        raise UserError(f"'{path}' is a {kind} run; tamt report reads search and finetune runs")


def _member_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a seed's folder; None where the folder has none."""
    if not (folder / artifacts.MANIFEST).is_file():
        return None
    return artifacts.read_manifest(folder)


def _evaluation(evaluation: records.Evaluation | None) -> dict[str, Any] | None:
    return None if evaluation is None else records.as_dict(evaluation)


def _seed(
    path: Path, task: Any, selected: Any, link: dict[str, Any], record: dict[str, Any]
) -> dict[str, Any]:
    split, _, metric = str(selected or "").partition("/")
    dense = link.get("kind") in {None, "model"}
    return {
        "run": str(path),
        "task": task,
        "split": split or None,
        "metric": metric or None,
        "method": DENSE
        if dense
        else str(link.get("label") or _structured(link.get("method") or link.get("kind"), link)),
        "sparsity": None if dense else _number(link.get("sparsity")),
        "subnetwork": link.get("path"),
        "seed": record.get("seed"),
        "best": (record.get("best") or {}).get("metrics") or {},
        "final": (record.get("final") or {}).get("metrics") or {},
    }


def name_of(manifest: dict[str, Any]) -> str:
    """What a search run or export is called in the tables: its label, else its method (and
    the units it prunes whole: ``omp-neurons``)."""
    return str(manifest.get("label") or _structured(manifest.get("method"), manifest))


def _structured(method: Any, record: dict[str, Any]) -> str:
    structure = record.get("structure") or "weights"
    return str(method) if structure == "weights" else f"{method}-{structure}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _heldout(path: Path, result: records.HeldOut, cell: dict[str, Any] | None) -> dict[str, Any]:
    """An eval --objective result, tied to the subnetwork it scored."""
    if cell is not None:
        method, sparsity = str(cell.get("method")), _number(cell.get("sparsity"))
    else:
        method, sparsity = _subject_of(result)
    return {
        "file": str(path),
        "objective": result.objective,
        "loss": result.loss,
        "method": method,
        "sparsity": None if method == DENSE else sparsity,
    }


def _subject_of(result: records.HeldOut) -> Key:
    checkpoint = Path(str(result.checkpoint))
    if (checkpoint / artifacts.MANIFEST).is_file():
        manifest = artifacts.read_manifest(checkpoint)
        return name_of(manifest), _number(manifest.get("sparsity"))
    if result.mask_sparsity is None:
        return DENSE, None
    return checkpoint.name, result.mask_sparsity


# -- the tables -----------------------------------------------------------------------------


def _order(key: Key) -> tuple[int, str, float]:
    method, sparsity = key
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return rank, method, sparsity if sparsity is not None else -1.0


def _all_metrics(seeds: list[dict[str, Any]], which: str) -> dict[str, dict[str, Any]]:
    names = sorted(
        {f"{split}/{name}" for seed in seeds for split, ms in seed[which].items() for name in ms}
    )
    out = {}
    for full in names:
        split, _, name = full.partition("/")
        values = [seed[which][split][name] for seed in seeds if name in seed[which].get(split, {})]
        values = [float(v) for v in values if isinstance(v, (int, float))]
        if values:
            out[full] = over_seeds(values)
    return out


def build(inputs: Inputs) -> dict[str, Any]:
    """The report document (see the module docs)."""
    heldout: dict[Key, dict[str, list[float]]] = {}
    for h in inputs.heldout:
        if h["loss"] is not None:
            key = (h["method"], h["sparsity"])
            heldout.setdefault(key, {}).setdefault(h["objective"], []).append(h["loss"])
    losses = {k: {o: statistics.fmean(v) for o, v in d.items()} for k, d in heldout.items()}
    seconds: dict[Key, list[float]] = {}
    for manifest in inputs.searches.values():
        value = _number(manifest.get("seconds"))
        if value is not None:
            key = (name_of(manifest), _number(manifest.get("sparsity")))
            seconds.setdefault(key, []).append(value)
    groups: dict[tuple[str, str, str, Key], list[dict[str, Any]]] = {}
    for seed in inputs.seeds:
        if seed["task"] and seed["split"] and seed["metric"]:
            group = (
                seed["task"],
                seed["split"],
                seed["metric"],
                (seed["method"], seed["sparsity"]),
            )
            groups.setdefault(group, []).append(seed)
    rows = []
    for (task, split, metric, key), seeds in sorted(
        groups.items(), key=lambda kv: (kv[0][0], _order(kv[0][3]))
    ):
        values = [
            float(seed["best"][split][metric])
            for seed in seeds
            if isinstance(seed["best"].get(split, {}).get(metric), (int, float))
        ]
        if not values:
            continue
        main = over_seeds(values)
        rows.append(
            {
                "task": task,
                "method": key[0],
                "sparsity": key[1],
                "metric": f"{split}/{metric}",
                "seeds": sorted(seed["seed"] for seed in seeds if seed["seed"] is not None),
                "mean": main["mean"],
                "std": main["std"],
                "values": main["values"],
                "matching": None,
                "heldout": losses.get(key, {}),
                "search_seconds": statistics.fmean(seconds[key]) if key in seconds else None,
                "best": _all_metrics(seeds, "best"),
                "final": _all_metrics(seeds, "final"),
                "runs": sorted({seed["run"] for seed in seeds}),
            }
        )
    _matching(rows)
    subnetworks, overlap = masks_of(inputs.searches)
    versus_omp: dict[Key, list[float]] = {}
    for sub in subnetworks:
        if sub["omp_jaccard"] is not None:
            versus_omp.setdefault((sub["method"], sub["sparsity"]), []).append(sub["omp_jaccard"])
    for r in rows:
        found = versus_omp.get((r["method"], r["sparsity"]))
        r["omp_jaccard"] = statistics.fmean(found) if found else None
    flags = [sub["omp_like"] for sub in subnetworks if sub["omp_like"]]
    return {
        "format": FORMAT,
        "version": VERSION,
        "rows": rows,
        "glue_average": glue_average(rows),
        "correlations": correlations(rows),
        "heldout": [
            {"method": k[0], "sparsity": k[1], "losses": v}
            for k, v in sorted(losses.items(), key=lambda kv: _order(kv[0]))
        ],
        "subnetworks": subnetworks,
        "overlap": overlap,
        "notes": [*inputs.notes, *flags],
    }


def _matching(rows: list[dict[str, Any]]) -> None:
    dense = {r["task"]: r for r in rows if r["method"] == DENSE}
    for r in rows:
        ref = dense.get(r["task"])
        if r["method"] == DENSE or ref is None or ref["std"] is None:
            continue
        r["matching"] = bool(r["mean"] >= ref["mean"] - ref["std"])


def glue_average(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and sparsity, the mean main metric over the GLUE tasks present (when there are
    several, and only for subnetworks scored on all of them)."""
    tasks = sorted({r["task"] for r in rows if r["task"] in GLUE_TASKS})
    if len(tasks) < 2:
        return []
    by_key: dict[Key, dict[str, float]] = {}
    for r in rows:
        if r["task"] in tasks:
            by_key.setdefault((r["method"], r["sparsity"]), {})[r["task"]] = r["mean"]
    return [
        {"method": k[0], "sparsity": k[1], "tasks": tasks, "mean": statistics.fmean(v.values())}
        for k, v in sorted(by_key.items(), key=lambda kv: _order(kv[0]))
        if len(v) == len(tasks)
    ]


def correlations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spearman ρ between held-out loss and mean score over the subnetworks of each task (the
    dense model left out); ρ is null with fewer than three points or constant values."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        subnets = [r for r in rows if r["task"] == task and r["method"] != DENSE]
        for objective in sorted({o for r in subnets for o in r["heldout"]}):
            points = [
                (r["heldout"][objective], r["mean"]) for r in subnets if objective in r["heldout"]
            ]
            rho = p = None
            if (
                len(points) >= 3
                and len({x for x, _ in points}) > 1
                and len({y for _, y in points}) > 1
            ):
                from scipy.stats import spearmanr

                result = spearmanr([x for x, _ in points], [y for _, y in points])
                rho, p = float(result.statistic), float(result.pvalue)
            out.append({"task": task, "objective": objective, "rho": rho, "p": p, "n": len(points)})
    return out


# -- masks ----------------------------------------------------------------------------------


def _layers(report: dict[str, Any]) -> dict[str, float]:
    """Sparsity per layer (``embedding`` and ``pooler`` apart), weighted by matrix size."""
    sums: dict[str, list[int]] = {}
    for m in report.get("matrices") or []:
        layer = m.get("layer")
        name = str(layer) if layer is not None else str(m.get("kind"))
        acc = sums.setdefault(name, [0, 0])
        acc[0] += int(m.get("pruned") or 0)
        acc[1] += int(m.get("numel") or 0)
    return {k: v[0] / v[1] for k, v in sums.items() if v[1]}


def _flat(masks: dict[str, Any]) -> Any:
    import torch

    return torch.cat([masks[name].reshape(-1) for name in sorted(masks)])


def masks_of(searches: dict[Path, dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Per search run its achieved sparsity; per sparsity the overlap of its masks."""
    subnetworks = []
    by_sparsity: dict[float | None, list[tuple[str, Path, dict[str, Any]]]] = {}
    names: dict[str, int] = {}
    for path, manifest in sorted(
        searches.items(), key=lambda kv: _order((name_of(kv[1]), _sparsity(kv[1])))
    ):
        method, sparsity = name_of(manifest), _sparsity(manifest)
        label = method if sparsity is None else f"{method} s{sparsity:g}"
        names[label] = names.get(label, 0) + 1
        if names[label] > 1:
            label = f"{label} ({path.name})"
        report = manifest.get("sparsity_report") or {}
        subnetworks.append(
            {
                "name": label,
                "run": str(path),
                "method": method,
                "sparsity": sparsity,
                "achieved": ((report.get("overall") or {}).get("sparsity")),
                "kinds": {k: v.get("sparsity") for k, v in (report.get("kinds") or {}).items()},
                "layers": _layers(report),
                "units": report.get("units"),
                "seconds": _number(manifest.get("seconds")),
            }
        )
        by_sparsity.setdefault(sparsity, []).append((label, path, manifest))
    _versus_omp(subnetworks, searches)
    overlap = []
    for sparsity, members in by_sparsity.items():
        if len(members) < 2:
            continue
        masks = {}
        for label, path, _ in members:
            file = path / artifacts.MASK_FILE
            if file.is_file():
                masks[label] = maskfile.load_masks(file)
        overlap += compare(masks, sparsity)
    return subnetworks, overlap


def _sparsity(manifest: dict[str, Any]) -> float | None:
    return _number(manifest.get("sparsity"))


#: what must agree for two runs' masks to be the same OMP mask's comparison
_OMP_SETTINGS = ("sparsity", "pattern", "scope", "embeddings", "pooler")


def _omp_settings(manifest: dict[str, Any]) -> tuple[Any, ...]:
    weights = (manifest.get("model") or {}).get("weights_sha256")
    structure = manifest.get("structure") or "weights"  # runs before --structure: weights
    return (weights, structure, *(manifest.get(k) for k in _OMP_SETTINGS))


def _versus_omp(subnetworks: list[dict[str, Any]], searches: dict[Path, dict[str, Any]]) -> None:
    """Each subnetwork's kept-weight Jaccard with the OMP mask of its model at its sparsity,
    scope, pattern, embeddings and pooler: as its search computed it from the model's weights
    (``omp_from`` "model"), else against an OMP run of the report with those settings
    (``omp_from``: its name), else None; and the note of :func:`omp_like` where the two are
    nearly one mask."""
    omp_runs = {
        _omp_settings(searches[Path(sub["run"])]): sub
        for sub in subnetworks
        if searches[Path(sub["run"])].get("method") == "omp" and sub["sparsity"] is not None
    }
    loaded: dict[str, Any] = {}

    def masks(sub: dict[str, Any]) -> Any:
        if sub["run"] not in loaded:
            file = Path(sub["run"]) / artifacts.MASK_FILE
            loaded[sub["run"]] = maskfile.load_masks(file) if file.is_file() else None
        return loaded[sub["run"]]

    for sub in subnetworks:
        manifest = searches[Path(sub["run"])]
        jaccard, source = _number(manifest.get(artifacts.OMP_JACCARD)), "model"
        omp = omp_runs.get(_omp_settings(manifest))
        if jaccard is None and omp is not None and omp is not sub:
            mine, theirs = masks(sub), masks(omp)
            if mine is not None and theirs is not None and _same_shapes(mine, theirs):
                from tamt_cli.masking import kept_jaccard

                jaccard, source = kept_jaccard(mine, theirs), omp["name"]
        elif jaccard is None and omp is sub:
            jaccard, source = 1.0, sub["name"]
        sub["omp_jaccard"] = jaccard
        sub["omp_from"] = source if jaccard is not None else None
        sub["omp_like"] = omp_like(manifest, jaccard, sub["name"])


def _same_shapes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}


def omp_like(
    manifest: dict[str, Any], jaccard: float | None = None, name: str | None = None
) -> str | None:
    """A one-line note when a search run's mask (not OMP's own) keeps weights with Jaccard
    at least :data:`OMP_LIKE` with the OMP mask of the same settings: at its budget, training
    did not move the mask off magnitude pruning. ``jaccard``: the run's recorded one if None."""
    if jaccard is None:
        jaccard = _number(manifest.get(artifacts.OMP_JACCARD))
    if jaccard is None or jaccard < OMP_LIKE or manifest.get("method") == "omp":
        return None
    if name is None:
        sparsity = _sparsity(manifest)
        name = name_of(manifest) + ("" if sparsity is None else f" s{sparsity:g}")
    notes = manifest.get("notes") or {}
    same = f"(kept-weight Jaccard {jaccard:.4f} with OMP's mask)"
    per_round = notes.get("steps_per_round")
    if manifest.get("method") == "imp" and per_round:
        return (
            f"{name}: IMP ≈ OMP at this budget: {per_round} steps a round is too few to move "
            f"the mask {same}; the paper trained {PAPER_IMP_STEPS} steps a round at 512 tokens "
            "(docs/imp.md)"
        )
    if notes.get("steps"):
        return (
            f"{name} ≈ OMP at this budget: {notes['steps']} steps is too few to move the mask "
            f"{same}"
        )
    return f"{name} ≈ OMP: its mask is magnitude pruning's in all but name {same}"


def compare(masks: dict[str, dict[str, Any]], sparsity: float | None = None) -> list[dict]:
    """Jaccard similarity of the kept weights of every pair of masks that cover the same
    weights; with an OMP mask among them (a label starting with ``omp``), also of the weights
    each one flips relative to it (kept where OMP prunes, or pruned where OMP keeps)."""
    labels = list(masks)
    flat = {}
    for label in labels:
        shapes = {k: tuple(v.shape) for k, v in masks[label].items()}
        flat[label] = (shapes, _flat(masks[label]))
    omp = next((lb for lb in labels if lb.split()[0] == "omp"), None)
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            if flat[a][0] != flat[b][0]:
                continue
            x, y = flat[a][1], flat[b][1]
            row = {
                "sparsity": sparsity,
                "a": a,
                "b": b,
                "weights": int(x.numel()),
                "kept_jaccard": _jaccard(x, y),
                "flipped_jaccard": None,
            }
            if omp is not None and flat[omp][0] == flat[a][0] and omp not in (a, b):
                ref = flat[omp][1]
                row["flipped_jaccard"] = _jaccard(x ^ ref, y ^ ref)
            out.append(row)
    return out


def _jaccard(x: Any, y: Any) -> float | None:
    union = int((x | y).sum())
    return int((x & y).sum()) / union if union else None


def compare_files(paths: list[Path]) -> dict[str, Any]:
    """Two or more mask files compared directly."""
    if len(paths) < 2:
        raise UserError("give at least two mask files to compare")
    masks = {}
    for path in paths:
        label = str(path)
        masks[label] = maskfile.load_masks(path)
    from tamt_cli.masking import pruned_fraction

    rows = compare(masks)
    if not rows:
        raise UserError("the mask files cover different weights; there is nothing to compare")
    files = []
    for label, m in masks.items():
        total = sum(v.numel() for v in m.values())
        files.append({"file": label, "weights": total, "sparsity": pruned_fraction(m) or 0})
    return {"format": FORMAT, "version": VERSION, "masks": files, "overlap": rows}


# -- output ---------------------------------------------------------------------------------


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one line per task, method and sparsity."""
    objectives = sorted({o for r in doc["rows"] for o in r["heldout"]})
    versus_omp = any(r.get("omp_jaccard") is not None for r in doc["rows"])
    header = ["task", "method", "sparsity", "seeds", "metric", "mean ± std", "matching"]
    header += [f"held-out {o}" for o in objectives] + ["search s"]
    header += [OMP_COLUMN] if versus_omp else []
    lines = []
    for r in doc["rows"]:
        lines.append(
            [
                r["task"],
                r["method"],
                "-" if r["sparsity"] is None else f"{r['sparsity']:g}",
                str(len(r["values"])),
                r["metric"].split("/")[-1],
                plus_minus(r["mean"], r["std"]),
                _cell(r["matching"]),
                *[_cell(r["heldout"].get(o)) for o in objectives],
                "-" if r["search_seconds"] is None else f"{r['search_seconds']:.0f}",
                *([_cell(r.get("omp_jaccard"))] if versus_omp else []),
            ]
        )
    return header, lines


#: the column of kept-weight Jaccard with the OMP mask of the same settings
OMP_COLUMN = "kept J. vs OMP"


def subnetwork_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The search runs the main table does not show (none was fine-tuned): sparsity, and the
    kept-weight Jaccard with OMP's mask."""
    shown = {(r["method"], r["sparsity"]) for r in doc["rows"]}
    header = ["subnetwork", "achieved", OMP_COLUMN, "OMP mask from", "search s"]
    lines = [
        [
            s["name"],
            _cell(s["achieved"]),
            _cell(s.get("omp_jaccard")),
            s.get("omp_from") or "-",
            "-" if s["seconds"] is None else f"{s['seconds']:.0f}",
        ]
        for s in doc.get("subnetworks") or []
        if (s["method"], s["sparsity"]) not in shown
    ]
    return header, lines


def extra_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for g in doc["glue_average"]:
        level = "" if g["sparsity"] is None else f" s{g['sparsity']:g}"
        lines.append(
            f"GLUE average ({', '.join(g['tasks'])}) {g['method']}{level}: {g['mean']:.2f}"
        )
    for c in doc["correlations"]:
        rho = "undefined" if c["rho"] is None else f"{c['rho']:+.3f} (p = {c['p']:.3g})"
        lines.append(
            f"Spearman ρ, held-out {c['objective']} loss vs {c['task']} score: {rho}, "
            f"n = {c['n']} subnetworks"
        )
    lines += doc.get("notes") or []
    return lines


def mask_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["a", "b", "kept Jaccard", "flipped vs OMP Jaccard"]
    return header, [
        [o["a"], o["b"], _cell(o["kept_jaccard"]), _cell(o["flipped_jaccard"])]
        for o in doc["overlap"]
    ]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def _mask_files(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [[m["file"], f"{m['weights']:,}", f"{m['sparsity']:.4f}"] for m in doc["masks"]]
    return ["file", "weights", "sparsity"], rows


def to_markdown(doc: dict[str, Any]) -> str:
    if "masks" in doc:  # mask files compared directly
        return markdown(*_mask_files(doc)) + "\n\n" + markdown(*mask_rows(doc)) + "\n"
    parts = [markdown(*table_rows(doc))]
    header, searches = subnetwork_rows(doc)
    if searches:
        parts.append(markdown(header, searches))
    extra = extra_lines(doc)
    if extra:
        parts.append("\n".join(f"- {line}" for line in extra))
    if doc["overlap"]:
        parts.append(markdown(*mask_rows(doc)))
    return "\n\n".join(parts) + "\n"


def to_csv(doc: dict[str, Any]) -> str:
    """One line per task, method and sparsity, with every metric (best and final); for mask
    files compared directly, one line per pair."""
    if "masks" in doc:
        pairs = io.StringIO()
        by_name = csv.DictWriter(pairs, list(doc["overlap"][0]), lineterminator="\n")
        by_name.writeheader()
        by_name.writerows(doc["overlap"])
        return pairs.getvalue()
    metrics = sorted({f"{w}/{m}" for r in doc["rows"] for w in ("best", "final") for m in r[w]})
    objectives = sorted({o for r in doc["rows"] for o in r["heldout"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["task", "method", "sparsity", "seeds", "metric", "mean", "std", "matching"]
    header += [f"heldout_{o}" for o in objectives] + ["search_seconds", "omp_kept_jaccard"]
    header += [f"{m}/{stat}" for m in metrics for stat in ("mean", "std")]
    writer.writerow(header)
    for r in doc["rows"]:
        line = [r["task"], r["method"], r["sparsity"], len(r["values"]), r["metric"], r["mean"]]
        line += [r["std"], r["matching"]] + [r["heldout"].get(o) for o in objectives]
        line += [r["search_seconds"], r.get("omp_jaccard")]
        for m in metrics:
            which, _, name = m.partition("/")
            stat = r[which].get(name) or {}
            line += [stat.get("mean"), stat.get("std")]
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()


def _rich(title: str, header: list[str], lines: list[list[str]], left: set[str]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in header:
        table.add_column(col, justify="left" if col in left else "right")
    for line in lines:
        table.add_row(*line)
    return table


def render(doc: dict[str, Any], console: Any) -> None:
    if "masks" in doc:  # mask files compared directly
        console.print(_rich("Masks", *_mask_files(doc), left={"file"}))
    else:
        console.print(_rich("Transfer", *table_rows(doc), left={"task", "method"}))
        header, searches = subnetwork_rows(doc)
        if searches:
            console.print(
                _rich("Search runs", header, searches, left={"subnetwork", "OMP mask from"})
            )
        for extra in extra_lines(doc):
            console.print(extra)
    if doc["overlap"]:
        console.print(_rich("Mask overlap", *mask_rows(doc), left={"a", "b"}))
