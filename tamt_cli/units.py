"""Structured masks: whole FFN neurons and attention heads, pruned in the same number in every
layer.

A layer's neurons are the rows of its FFN-in matrix (with their bias) and the columns of its
FFN-out matrix; its heads are blocks of ``head_size`` rows of its query, key and value matrices
and of columns of its attention-output matrix. A structured mask is held as one boolean vector
a layer and kind of unit (a *unit mask*, ``True`` = kept), named after the layer
(``encoder.layer.0.neurons``), and expanded into the ordinary weight masks, so that everything
that reads weight masks (fine-tuning, evaluation, bench, reports) reads it unchanged.

A plain Hugging Face checkpoint has one FFN width and one head count for all its layers and no
way to hold pruned heads (transformers 5 dropped ``prune_heads``): the fraction pruned is the
same in every layer, so that a neuron-structured subnetwork is exported as a smaller model of
the same class (:func:`slice_model`), and pruned heads are exported as zeros.

Nothing heavy is imported at module level: :mod:`tamt_cli.maskfile` reads the unit groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tamt_cli.errors import UserError

#: the ``--structure`` values: every weight on its own, or whole units of one or both kinds
STRUCTURES = ("weights", "neurons", "heads", "neurons+heads")
#: kinds of unit, the kinds of matrix (:data:`tamt_cli.masking.KINDS`) whose rows and columns
#: they are, and one of them in words
UNIT_KINDS = {"neurons": (("I",), ("O",)), "heads": (("Q", "K", "V"), ("AO",))}
SINGULAR = {"neurons": "neuron", "heads": "head"}

_LAYER_PREFIX = re.compile(r"^(.*?\.layer\.\d+)\.")


def kinds_of(structure: str) -> tuple[str, ...]:
    """The kinds of unit a ``--structure`` prunes (none for ``weights``)."""
    parts = set(structure.split("+"))
    return tuple(kind for kind in UNIT_KINDS if kind in parts)


@dataclass(frozen=True)
class UnitGroup:
    """One layer's units of one kind and the matrices they are rows and columns of."""

    name: str  # the layer's module name and the kind: encoder.layer.0.neurons
    kind: str  # neurons | heads
    layer: int
    count: int
    rows: tuple[str, ...]  # weights whose output rows are the units, in equal blocks
    columns: tuple[str, ...]  # weights whose input columns are the units, in equal blocks

    def record(self) -> dict[str, Any]:
        """What a mask file's header keeps of the group."""
        return {"kind": self.kind, "layer": self.layer, "rows": list(self.rows),
                "columns": list(self.columns)}  # fmt: skip

    @classmethod
    def from_record(cls, name: str, count: int, record: Mapping[str, Any]) -> UnitGroup:
        return cls(
            name=name,
            kind=str(record["kind"]),
            layer=int(record["layer"]),
            count=count,
            rows=tuple(str(r) for r in record["rows"]),
            columns=tuple(str(c) for c in record["columns"]),
        )


@dataclass
class UnitMasks:
    """A structured mask: the ``--structure`` it was found with, its groups and a keep-vector
    for each group (by name)."""

    structure: str
    groups: list[UnitGroup]
    masks: dict[str, Any]

    def kept(self) -> dict[str, list[int]]:
        """Units kept per layer, by kind of unit (JSON-ready)."""
        out: dict[str, list[int]] = {}
        for group in self.groups:
            out.setdefault(group.kind, []).append(int(self.masks[group.name].sum()))
        return out

    def layers(self) -> list[int]:
        """The layers the groups are in, in order (the order of :meth:`kept`'s lists)."""
        return sorted({group.layer for group in self.groups})

    def counts(self) -> dict[str, int]:
        """Units a layer has, by kind of unit."""
        return {group.kind: group.count for group in self.groups}


def unit_groups(model: Any, weights: Iterable[Any], structure: str) -> list[UnitGroup]:
    """The unit groups of every encoder layer of ``model`` for ``structure``, from its prunable
    weights (:func:`tamt_cli.masking.prunable_weights`); a one-line error when a layer lacks
    a matrix a unit spans or the shapes do not divide into the units."""
    by_layer: dict[int, dict[str, Any]] = {}
    for p in weights:
        if p.layer is not None:
            by_layer.setdefault(p.layer, {})[p.kind] = p
    heads = int(getattr(model.config, "num_attention_heads", 0) or 0)
    groups = []
    for layer in sorted(by_layer):
        found = by_layer[layer]
        for kind in kinds_of(structure):
            row_kinds, column_kinds = UNIT_KINDS[kind]
            missing = [k for k in (*row_kinds, *column_kinds) if k not in found]
            if missing:
                raise UserError(
                    f"--structure {structure}: layer {layer} has no {missing[0]} matrix that "
                    f"tamt can find, so its {kind} cannot be pruned whole"
                )
            rows = [found[k] for k in row_kinds]
            columns = [found[k] for k in column_kinds]
            count = rows[0].shape[0] if kind == "neurons" else heads
            _check_divides(structure, layer, kind, count, rows, columns)
            match = _LAYER_PREFIX.match(rows[0].name)
            prefix = match.group(1) if match else f"layer.{layer}"
            groups.append(
                UnitGroup(
                    name=f"{prefix}.{kind}",
                    kind=kind,
                    layer=layer,
                    count=count,
                    rows=tuple(p.name for p in rows),
                    columns=tuple(p.name for p in columns),
                )
            )
    return groups


def _check_divides(structure: str, layer: int, kind: str, count: int, rows, columns) -> None:
    width = rows[0].shape[0]
    ok = count > 0 and all(p.shape[0] == width for p in rows)
    ok = ok and all(p.shape[1] == width for p in columns) and width % max(count, 1) == 0
    if not ok:
        shapes = ", ".join(f"{p.name} {list(p.shape)}" for p in (*rows, *columns))
        raise UserError(
            f"--structure {structure}: layer {layer}'s matrices do not divide into {count} "
            f"{kind} ({shapes})"
        )


def prune_counts(groups: Iterable[UnitGroup], sparsity: float) -> dict[str, int]:
    """Units pruned in each group at ``sparsity``: ⌊n·s⌋, as for weights; a one-line error
    when that prunes none of a layer's units, or all of them."""
    from fractions import Fraction

    from tamt_cli.masking import prune_count

    out = {}
    for group in groups:
        k = prune_count(group.count, sparsity)
        what = f"{group.count} {group.kind}"
        if k == 0:
            least = Fraction(1, group.count)
            raise UserError(
                f"--sparsity {sparsity:g} prunes no {SINGULAR[group.kind]} of a layer of {what} "
                f"(⌊{group.count} × {sparsity:g}⌋ = 0); give at least {float(least):.4g}"
            )
        if k >= group.count:
            raise UserError(
                f"--sparsity {sparsity:g} leaves no {SINGULAR[group.kind]} in a layer of {what}; "
                "give a smaller sparsity"
            )
        out[group.name] = k
    return out


def magnitude_scores(groups: Iterable[UnitGroup], weights: Iterable[Any]) -> dict[str, Any]:
    """Each unit's magnitude: the L2 norm of all its weights together (a neuron's FFN-in row
    and FFN-out column; a head's query, key and value rows and attention-output columns)."""
    import torch

    by_name = {p.name: p for p in weights}
    out = {}
    for group in groups:
        total = torch.zeros(group.count, dtype=torch.float64)
        for name in group.rows:
            w = by_name[name].weight.detach().double()
            total += w.pow(2).reshape(group.count, -1).sum(1).cpu()
        for name in group.columns:
            w = by_name[name].weight.detach().double()
            total += w.pow(2).reshape(w.shape[0], group.count, -1).sum((0, 2)).cpu()
        out[group.name] = total.sqrt()
    return out


def random_scores(groups: Iterable[UnitGroup], seed: int) -> dict[str, Any]:
    """Uniform scores from one seeded CPU generator, a layer after another."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {group.name: torch.rand(group.count, generator=gen) for group in groups}


def keep_units(groups: Iterable[UnitGroup], scores: Mapping[str, Any], sparsity: float):
    """Unit masks pruning the ⌊n·s⌋ lowest-scored units of every group (ties: the earlier
    unit first, as for weights)."""
    from tamt_cli.masking import keep_all_but_lowest

    groups = list(groups)
    counts = prune_counts(groups, sparsity)
    return {g.name: keep_all_but_lowest(scores[g.name], counts[g.name]) for g in groups}


def check_unit_masks(
    groups: list[UnitGroup], masks: Mapping[str, Any], sparsity: float, what: str
) -> dict[str, Any]:
    """``masks`` as boolean CPU vectors, after checking that they are one per group, of its
    size, each pruning exactly the group's count at ``sparsity``."""
    import torch

    names = [g.name for g in groups]
    extra = [n for n in masks if n not in names]
    missing = [n for n in names if n not in masks]
    if extra or missing:
        problem = f"has no group '{extra[0]}'" if extra else f"gives no mask for '{missing[0]}'"
        raise UserError(f"{what} does not fit the model: the model {problem}")
    counts = prune_counts(groups, sparsity)
    out = {}
    for group in groups:
        mask = torch.as_tensor(masks[group.name]).detach().to("cpu", dtype=torch.bool)
        if tuple(mask.shape) != (group.count,):
            raise UserError(
                f"{what} does not fit the model: '{group.name}' has shape {list(mask.shape)}, "
                f"not [{group.count}]"
            )
        pruned = group.count - int(mask.sum())
        if pruned != counts[group.name]:
            raise UserError(
                f"{what} prunes {pruned} of the {group.count} {group.kind} of '{group.name}'; "
                f"sparsity {sparsity:g} prunes {counts[group.name]}"
            )
        out[group.name] = mask
    return out


def expand(
    groups: Iterable[UnitGroup], unit_masks: Mapping[str, Any], shapes: Mapping[str, Any]
) -> dict[str, Any]:
    """The weight masks (``shapes``: every masked weight's) of unit masks: a pruned unit's
    rows and columns are pruned, every other weight is kept."""
    import torch

    masks = {name: torch.ones(tuple(shape), dtype=torch.bool) for name, shape in shapes.items()}
    for group in groups:
        keep = torch.as_tensor(unit_masks[group.name]).to("cpu", dtype=torch.bool)
        for name in group.rows:
            rows = keep.repeat_interleave(masks[name].shape[0] // group.count)
            masks[name] &= rows[:, None]
        for name in group.columns:
            columns = keep.repeat_interleave(masks[name].shape[1] // group.count)
            masks[name] &= columns[None, :]
    return masks


def agrees(groups: Iterable[UnitGroup], unit_masks: Mapping[str, Any], masks: Mapping) -> str:
    """The first weight (by name) whose mask keeps a weight of a pruned unit, or ``""``."""
    for group in groups:
        pruned = ~unit_masks[group.name].bool()
        for name in group.rows:
            rows = pruned.repeat_interleave(masks[name].shape[0] // group.count)
            if bool(masks[name][rows].any()):
                return name
        for name in group.columns:
            columns = pruned.repeat_interleave(masks[name].shape[1] // group.count)
            if bool(masks[name][:, columns].any()):
                return name
    return ""


def _neuron_index(unit_masks: UnitMasks) -> dict[str, tuple[UnitGroup, Any]]:
    """The neuron groups and the indices of their kept neurons, by group name."""
    import torch

    return {
        g.name: (g, torch.nonzero(torch.as_tensor(unit_masks.masks[g.name]).bool()).reshape(-1))
        for g in unit_masks.groups
        if g.kind == "neurons"
    }


def sliced_masks(masks: Mapping[str, Any], unit_masks: UnitMasks) -> dict[str, Any]:
    """The weight masks of the model :func:`slice_model` makes: the FFN matrices' masks with
    the pruned neurons' rows and columns taken out."""
    out = dict(masks)
    for group, index in _neuron_index(unit_masks).values():
        for name in group.rows:
            out[name] = out[name][index]
        for name in group.columns:
            out[name] = out[name][:, index]
    return out


def fitted_state(state: Mapping[str, Any], unit_masks: UnitMasks) -> dict[str, Any]:
    """``state`` (weights by name, over the pre-trained model's shapes, its mask applied) as
    :func:`slice_model` leaves them in a dense export: the pruned neurons' FFN-in rows and
    biases and FFN-out columns taken out, the pruned heads' query, key and value biases zero."""
    out = dict(state)
    for group, index in _neuron_index(unit_masks).values():
        for name in group.rows:
            for key in (name, _bias(name)):
                if key in out:
                    out[key] = out[key][index]
        for name in group.columns:
            out[name] = out[name][:, index]
    for group in unit_masks.groups:
        bias_names = (
            [b for b in map(_bias, group.rows) if b in out] if group.kind == "heads" else []
        )
        for key in bias_names:
            pruned = ~_as_bool(unit_masks.masks[group.name])
            out[key] = out[key].masked_fill(
                pruned.repeat_interleave(out[key].shape[0] // group.count), 0
            )
    return out


def _bias(name: str) -> str:
    return name[: -len("weight")] + "bias" if name.endswith("weight") else name


def _as_bool(value: Any) -> Any:
    import torch

    return torch.as_tensor(value).bool()


def slice_model(model: Any, weights: Iterable[Any], unit_masks: UnitMasks) -> int | None:
    """Make ``model`` (masks baked in, none attached) the plain model of its subnetwork: the
    pruned neurons' FFN-in rows and biases and FFN-out columns taken out and the config's FFN
    width set to what is kept; the pruned heads' query, key and value biases set to zero (their
    weights are zeros already). Returns the new FFN width (None when no neuron is pruned)."""
    import torch

    by_name = {p.name: p for p in weights}
    widths = set()
    with torch.no_grad():
        for group, index in _neuron_index(unit_masks).values():
            widths.add(int(index.numel()))
            for name in group.rows:
                _take(by_name[name].module, index, rows=True)
            for name in group.columns:
                _take(by_name[name].module, index, rows=False)
        for group in unit_masks.groups:
            if group.kind == "heads":
                pruned = ~unit_masks.masks[group.name].bool()
                for name in group.rows:
                    bias = by_name[name].module.bias
                    if bias is not None:
                        bias[pruned.repeat_interleave(bias.shape[0] // group.count)] = 0
    if not widths:
        return None
    if len(widths) > 1:  # prune_counts makes every layer the same
        raise ValueError(f"layers keep different numbers of neurons: {sorted(widths)}")
    (width,) = widths
    config = model.config
    setattr(config, "intermediate_size" if hasattr(config, "intermediate_size") else "hidden_dim",
            width)  # fmt: skip
    return width


def _take(module: Any, index: Any, *, rows: bool) -> None:
    """Keep only the output rows (with the bias) or input columns ``index`` of a linear layer."""
    from torch import nn

    weight = module.weight.detach()
    if rows:
        module.weight = nn.Parameter(weight[index].clone())
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.detach()[index].clone())
        module.out_features = int(index.numel())
    else:
        module.weight = nn.Parameter(weight[:, index].clone())
        module.in_features = int(index.numel())
