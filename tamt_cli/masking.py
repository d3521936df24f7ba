"""Mask mathematics: which weights are prunable, exact-sparsity masks, attaching and baking.

Masks are boolean tensors, ``True`` where a weight is kept, keyed by the weight's state-dict name
relative to the model's base encoder (``encoder.layer.0.attention.self.query.weight``), so the same
mask fits the bare encoder and any task model built on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import types
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from tamt_cli.errors import UserError

Masks = dict[str, torch.Tensor]
Scope = Literal["local", "global"]

#: Kinds of prunable matrices, in report order.
KINDS = ("Q", "K", "V", "AO", "I", "O", "pooler", "embedding")
KIND_NAMES = {
    "Q": "query",
    "K": "key",
    "V": "value",
    "AO": "attn out",
    "I": "FFN in",
    "O": "FFN out",
    "pooler": "pooler",
    "embedding": "word emb",
}

_LAYER = r"^(?:encoder|transformer)\.layer\.(\d+)\."
# Module names (relative to the base model) of BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa, DistilBERT.
_PATTERNS = {
    "Q": re.compile(_LAYER + r"attention\.(?:self\.)?(?:query|query_proj|q_lin)$"),
    "K": re.compile(_LAYER + r"attention\.(?:self\.)?(?:key|key_proj|k_lin)$"),
    "V": re.compile(_LAYER + r"attention\.(?:self\.)?(?:value|value_proj|v_lin)$"),
    "AO": re.compile(_LAYER + r"attention\.(?:output\.dense|out_lin)$"),
    "I": re.compile(_LAYER + r"(?:intermediate\.dense|ffn\.lin1)$"),
    "O": re.compile(_LAYER + r"(?:output\.dense|ffn\.lin2)$"),
    "pooler": re.compile(r"^pooler\.dense$"),
    "embedding": re.compile(r"^embeddings\.word_embeddings$"),
}


@dataclass(frozen=True)
class Prunable:
    """One maskable weight matrix of a model."""

    name: str  # state-dict key relative to the base model, ending in ".weight"
    kind: str
    layer: int | None
    module: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        """The unmasked weight, whether or not a mask is attached."""
        if parametrize.is_parametrized(self.module, "weight"):
            return self.module.parametrizations.weight.original  # type: ignore[union-attr,return-value]
        return self.module.weight  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    @property
    def numel(self) -> int:
        return self.weight.numel()


def base_model(model: nn.Module) -> nn.Module:
    """The encoder inside a task model (``model.bert``), or the model itself."""
    return getattr(model, "base_model", model)


def prunable_weights(
    model: nn.Module, *, embeddings: bool = True, pooler: bool = True
) -> list[Prunable]:
    """The matrices the paper masks: Q, K, V, attention output, FFN in/out of every layer, the
    pooler and the word embeddings (the last two optional). Biases, LayerNorms, position and
    token-type embeddings and task heads are never masked, and neither is a weight that the
    checkpoint did not hold (:func:`absent_weights`: e.g. the pooler of an MLM checkpoint)."""
    absent = set(absent_weights(model))
    found = [
        p
        for p in _candidates(model)
        if p.name not in absent
        and not (p.kind == "embedding" and not embeddings)
        and not (p.kind == "pooler" and not pooler)
    ]
    if not any(p.layer is not None for p in found):
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UserError(
            f"no prunable encoder weights found in a '{model_type}' model; supported: "
            "BERT-family encoders (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa, DistilBERT)"
        )
    return found


def _candidates(model: nn.Module) -> list[Prunable]:
    """Every matrix of ``model``'s encoder that matches a prunable kind."""
    found: list[Prunable] = []
    for name, module in base_model(model).named_modules():
        if not isinstance(module, nn.Linear | nn.Embedding):
            continue
        for kind, pattern in _PATTERNS.items():
            match = pattern.match(name)
            if match:
                layer = int(match.group(1)) if match.groups() else None
                found.append(Prunable(f"{name}.weight", kind, layer, module))
                break
    return found


def absent_weights(model: nn.Module) -> list[str]:
    """Prunable-kind weights of ``model`` that its checkpoint did not hold: they were freshly
    initialised by the loader, so no mask computed from them would mean anything."""
    from tamt_cli.models import absent_keys

    absent = absent_keys(base_model(model))
    return [p.name for p in _candidates(model) if p.name in absent]


def prune_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a sparsity prunes: ⌊n·s⌋, exact for the decimal given."""
    return int(Fraction(str(sparsity)) * numel)  # str: the shortest decimal of its own type


Pattern = tuple[int, int]


def parse_pattern(text: str) -> Pattern:
    """``"2:4"`` as ``(2, 4)``: keep N of every M consecutive weights (0 < N < M)."""
    n_text, sep, m_text = str(text).partition(":")
    try:
        n, m = int(n_text), int(m_text)
    except ValueError:
        n = m = 0
    if not sep or not 0 < n < m:
        raise ValueError(
            f"must be N:M with whole numbers 0 < N < M, such as 2:4 or 4:8, got {text!r}"
        )
    return n, m


def pattern_sparsity(pattern: Pattern) -> float:
    """The sparsity an N:M pattern implies, 1 − N/M."""
    n, m = pattern
    return float(Fraction(m - n, m))


def check_pattern(weights: Iterable[Prunable], pattern: Pattern) -> None:
    """Refuse a pattern that some matrix cannot take: N:M groups run along each matrix's last
    (input) dimension, which must be a multiple of M."""
    n, m = pattern
    for p in weights:
        if p.shape[-1] % m:
            raise UserError(
                f"--pattern {n}:{m} needs every masked matrix's input dimension to be a multiple "
                f"of {m}; '{p.name}' has shape {list(p.shape)} (leave it out with "
                "--no-embeddings / --no-pooler, or choose another M)"
            )


def nm_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """A keep-mask holding exactly the ``n`` highest scores of every group of ``m`` consecutive
    entries along the last dimension (a multiple of ``m``). Ties are broken by position as in
    :func:`keep_all_but_lowest`: the earlier entry of a group is pruned first."""
    if scores.shape[-1] % m:
        raise ValueError(f"last dimension {scores.shape[-1]} is not a multiple of {m}")
    groups = scores.detach().float().reshape(-1, m)
    if torch.isnan(groups).any():
        raise ValueError("scores contain NaN; no mask can be ranked from them")
    order = torch.argsort(groups, dim=-1, stable=True)
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[:, : m - n], False)
    return keep.reshape(scores.shape)


def pattern_breaks(masks: Mapping[str, torch.Tensor], pattern: Pattern) -> list[str]:
    """Names of the masks in which some group of M does not keep exactly N."""
    n, m = pattern
    bad = []
    for name, mask in masks.items():
        if mask.shape[-1] % m or not bool((mask.reshape(-1, m).sum(-1) == n).all()):
            bad.append(name)
    return bad


def keep_all_but_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A flat keep-mask that prunes exactly the ``k`` lowest scores.

    Ties at the threshold are broken by position: the earlier index is pruned first, so the
    result is the same on every run and device."""
    flat = scores.reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"cannot prune {k} of {n} weights")
    if k == 0:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    flat = flat.float()
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN; no mask can be ranked from them")
    threshold = torch.kthvalue(flat, k).values
    keep = flat > threshold
    n_below = int((flat < threshold).sum())
    ties = torch.nonzero(flat == threshold).reshape(-1)
    keep[ties[k - n_below :]] = True
    return keep


def local_masks(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int]) -> Masks:
    """Per-matrix masks pruning ``counts[name]`` lowest scores of every matrix."""
    return {
        name: keep_all_but_lowest(score, counts[name]).reshape(score.shape)
        for name, score in scores.items()
    }


def global_masks(scores: Mapping[str, torch.Tensor], sparsity: float) -> Masks:
    """Masks pruning the lowest ⌊N·s⌋ scores over all matrices together."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    keep = keep_all_but_lowest(flat, prune_count(flat.numel(), sparsity))
    out: Masks = {}
    start = 0
    for name in names:
        size = scores[name].numel()
        out[name] = keep[start : start + size].reshape(scores[name].shape)
        start += size
    return out


def masks_from_scores(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    scope: Scope = "local",
    pattern: Pattern | None = None,
) -> Masks:
    """Exact-sparsity keep-masks that prune the lowest scores, per matrix or globally; with an
    N:M ``pattern``, the N highest of every M consecutive scores along the last dimension."""
    if pattern is not None:
        return {name: nm_keep(s, *pattern) for name, s in scores.items()}
    if scope == "global":
        return global_masks(scores, sparsity)
    counts = {name: prune_count(score.numel(), sparsity) for name, score in scores.items()}
    return local_masks(scores, counts)


def magnitude_scores(weights: Iterable[Prunable]) -> dict[str, torch.Tensor]:
    return {p.name: p.weight.detach().abs() for p in weights}


def magnitude_masks(
    weights: Iterable[Prunable],
    sparsity: float,
    scope: Scope = "local",
    pattern: Pattern | None = None,
) -> Masks:
    """One-shot magnitude pruning (OMP) of the weights as they are now: the lowest ``|W|`` per
    matrix or globally, or the N largest of every M with an N:M ``pattern``."""
    return masks_from_scores(magnitude_scores(weights), sparsity, scope, pattern)


def kept_jaccard(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float | None:
    """Jaccard similarity of the weights two keep-masks keep (both over the same weights):
    |kept by both| / |kept by either|; None when neither keeps anything."""
    both = either = 0
    for name, x in a.items():
        x, y = x.bool().cpu(), b[name].bool().cpu()
        both += int((x & y).sum())
        either += int((x | y).sum())
    return both / either if either else None


def random_scores(weights: Iterable[Prunable], seed: int) -> dict[str, torch.Tensor]:
    """Uniform scores from one seeded CPU generator, so a seed means the same mask everywhere."""
    gen = torch.Generator().manual_seed(seed)
    return {p.name: torch.rand(p.shape, generator=gen) for p in weights}


@torch.no_grad()
def graded_scores(
    raw: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor], tau: float
) -> dict[str, torch.Tensor]:
    """Initial scores that give exactly the mask ``keep`` at threshold ``τ`` but keep the order
    of ``raw`` (e.g. ``|W|``): ``S = τ·raw/t``, with ``t`` each matrix's boundary between its
    kept and its pruned raw scores. Weights near the boundary then start near ``τ`` and are the
    first a trained score moves across it, instead of every score starting ``τ`` away."""
    out = {}
    for name, values in raw.items():
        values = values.detach().float().abs()
        kept = keep[name].to(values.device, torch.bool)
        low = float(values[kept].min()) if bool(kept.any()) else None
        high = float(values[~kept].max()) if bool((~kept).any()) else None
        if low is not None and high is not None:
            boundary = (low + high) / 2
        elif low is not None:
            boundary = low / 2
        else:
            boundary = high if high is not None else 1.0
        scale = boundary if boundary > 0 else 1.0
        score = values * (tau / scale)
        above = torch.nextafter(torch.tensor(tau), torch.tensor(float("inf"))).item()
        score = torch.where(kept, score.clamp(min=above), score.clamp(max=tau))
        out[name] = score
    return out


def shapes(weights: Iterable[Prunable]) -> dict[str, tuple[int, ...]]:
    return {p.name: p.shape for p in weights}


def check_fits(
    masks: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]], what: str
) -> None:
    """Raise a one-line error unless ``masks`` has exactly the expected names and shapes."""
    missing = [n for n in expected if n not in masks]
    extra = [n for n in masks if n not in expected]
    if extra:
        raise UserError(
            f"{what} does not fit the model: it masks '{extra[0]}', which the model has no "
            f"prunable weight for ({len(extra)} such entries)"
        )
    if missing:
        raise UserError(
            f"{what} does not fit the model: it has no mask for '{missing[0]}' "
            f"({len(missing)} prunable weights missing; check --no-embeddings/--no-pooler)"
        )
    for name, shape in expected.items():
        got = tuple(masks[name].shape)
        if got != tuple(shape):
            raise UserError(
                f"{what} does not fit the model: '{name}' has shape {list(got)} in the mask "
                f"and {list(shape)} in the model"
            )


class KeepMask(nn.Module):
    """Parametrization ``W ↦ W ⊙ M`` with a fixed boolean mask (switchable off)."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool), persistent=False)
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask if self.enabled else weight

    def keep(self) -> torch.Tensor:
        return self.mask


class _StraightThrough(torch.autograd.Function):
    """``W ⊙ keep`` (``keep = 1[S > τ]``, or the top N of every M scores) whose gradient reaches
    ``S`` as if the step were the identity."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, score: torch.Tensor, keep: torch.Tensor):
        # one pass, no float copy of the mask; the mask is kept only if W itself trains
        ctx.save_for_backward(weight, keep if ctx.needs_input_grad[0] else None)
        return torch.where(keep, weight, weight.new_zeros(()))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        weight, keep = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.where(keep, grad, grad.new_zeros(()))
        grad_score = grad * weight if ctx.needs_input_grad[1] else None
        return grad_weight, grad_score, None


class ScoreMask(nn.Module):
    """Parametrization ``W ↦ W ⊙ 1[S > τ]`` with a learned real score ``S`` per weight and a
    straight-through gradient. Initialised from a keep-mask (``S = 2τ`` kept, ``0`` pruned) or
    from given float scores. With an N:M ``pattern`` the mask is the top N of every M scores at
    every forward pass, and τ is not used."""

    score: nn.Parameter
    tau: torch.Tensor

    def __init__(self, init: torch.Tensor, tau: float = 0.01, pattern: Pattern | None = None):
        super().__init__()
        self.pattern = pattern  # N:M: the keep-mask is the top N of every M scores, not S > τ
        _init_score(self, init, tau)
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        score = self.score.to(weight.dtype)
        masked = _StraightThrough.apply(weight, score, self._keep(score))
        live = _RECOMPUTED.get()
        if live is not None and masked.is_contiguous():
            live[masked.untyped_storage().data_ptr()] = (weakref.ref(masked), self, weight)
        return masked

    @torch.no_grad()
    def masked(self, weight: torch.Tensor) -> torch.Tensor:
        """``W ⊙ keep`` as :meth:`forward` computes it, bit for bit, without a graph."""
        keep = self._keep(self.score.to(weight.dtype))
        return torch.where(keep, weight, weight.new_zeros(()))

    def rows(self, weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of the masked matrix, computed from those rows only: what
        ``forward(weight)[index]`` gives, with the same gradients (the scores' gradient is
        ``W·∂L/∂W'`` on those rows, scattered into zeros of the scores' shape). Row-wise, since
        ``S > τ`` is elementwise and N:M groups lie within a row."""
        score = self.score.index_select(0, index).to(weight.dtype)
        return _StraightThrough.apply(weight.index_select(0, index), score, self._keep(score))

    def _keep(self, score: torch.Tensor) -> torch.Tensor:
        if self.pattern is not None:
            return nm_keep(score, *self.pattern)
        return score.detach() > self.tau

    def keep(self) -> torch.Tensor:
        return self._keep(self.score)


class _UnitStraightThrough(torch.autograd.Function):
    """``W ⊙ keep`` with ``keep`` a unit keep-vector spread over the units' rows (``axis`` 0) or
    columns (1) of ``W``, in ``count`` equal blocks; the gradient reaches each unit's score as
    if the step were the identity: the sum of ``W·∂L/∂W'`` over the unit's weights."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, score: torch.Tensor, keep: torch.Tensor,
                axis: int, count: int):  # fmt: skip
        spread = keep.repeat_interleave(weight.shape[axis] // count)
        spread = spread[:, None] if axis == 0 else spread[None, :]
        ctx.axis, ctx.count = axis, count
        ctx.save_for_backward(weight, spread if ctx.needs_input_grad[0] else None)
        return torch.where(spread, weight, weight.new_zeros(()))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        weight, spread = ctx.saved_tensors
        grad_weight = grad_score = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.where(spread, grad, grad.new_zeros(()))
        if ctx.needs_input_grad[1]:
            per_line = (grad * weight).sum(1 - ctx.axis)  # one value a row (or column)
            grad_score = per_line.reshape(ctx.count, -1).sum(1)
        return grad_weight, grad_score, None, None, None


class UnitScoreMask(nn.Module):
    """Parametrization ``W ↦ W ⊙ 1[S > τ]`` with a learned real score ``S`` per unit (a layer's
    FFN neurons or attention heads, :mod:`tamt_cli.units`), spread over the unit's rows or
    columns of ``W``, with a straight-through gradient. The matrices a unit spans share its
    scores and threshold: the first one attached (the *owner*) holds them, the others read the
    owner's. Scores start as for :class:`ScoreMask` (a keep-vector: ``2τ`` / ``0``, or given
    float scores)."""

    score: nn.Parameter
    tau: torch.Tensor

    def __init__(self, init: torch.Tensor | UnitScoreMask, axis: int, count: int,
                 tau: float = 0.01):  # fmt: skip
        super().__init__()
        self.axis, self.count = axis, count
        if isinstance(init, UnitScoreMask):
            self._owner = [init.owner]  # a list: not registered as a submodule
        else:
            _init_score(self, init, tau)
            self._owner = [self]
        self.enabled = True

    @property
    def owner(self) -> UnitScoreMask:
        return self._owner[0]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        owner = self.owner
        score = owner.score.to(weight.dtype)
        keep = score.detach() > owner.tau
        return _UnitStraightThrough.apply(weight, score, keep, self.axis, self.count)

    def keep(self) -> torch.Tensor:
        """The unit keep-vector ``S > τ``."""
        return self.owner.score.detach() > self.owner.tau


def attach_unit_scores(
    weights: Iterable[Prunable], groups: Iterable[Any], init: Mapping[str, torch.Tensor],
    tau: float = 0.01,
) -> dict[str, UnitScoreMask]:  # fmt: skip
    """Attach learnable unit scores (``groups``: :class:`tamt_cli.units.UnitGroup`) to the
    matrices the units span, initialised from unit keep-vectors or float scores (``init``, by
    group name); returns each group's owner (its scores and threshold) by group name."""
    by_name = {p.name: p for p in weights}
    out = {}
    for group in groups:
        owner: UnitScoreMask | None = None
        spans = [(name, 0) for name in group.rows] + [(name, 1) for name in group.columns]
        for name, axis in spans:
            p = by_name[name]
            start = owner if owner is not None else init[group.name].to(p.weight.device)
            mod = UnitScoreMask(start, axis, group.count, tau)
            parametrize.register_parametrization(p.module, "weight", mod)
            owner = owner or mod
        assert owner is not None
        out[group.name] = owner
    return out


def _init_score(module: nn.Module, init: torch.Tensor, tau: float) -> None:
    """Give ``module`` its trainable ``score`` and its threshold buffer ``tau``: a boolean
    ``init`` starts kept weights at 2τ and pruned ones at 0, a float one is the scores."""
    if init.dtype == torch.bool:
        score = init.to(torch.float32) * (2 * tau)
    else:
        score = init.to(torch.float32).clone()
    module.score = nn.Parameter(score)
    module.register_buffer("tau", torch.tensor(float(tau)))


def _looked_up_rows(self: nn.Embedding, input: torch.Tensor) -> torch.Tensor:
    """``forward`` of a word-embedding module under a :class:`ScoreMask`: the mask is applied to
    the rows the batch looks up, not to the whole vocabulary (the same output and gradients:
    see :meth:`ScoreMask.rows`). The dense teacher (masks off) reads the matrix as it is."""
    mask: ScoreMask = self.parametrizations.weight[0]  # type: ignore[union-attr,index,assignment]
    if not mask.enabled or self.max_norm is not None:
        return type(self).forward(self, input)  # the whole matrix, as without this
    index, inverse = torch.unique(input, return_inverse=True)
    padding = None  # the padding row gets no gradient, as in the whole matrix
    if self.padding_idx is not None:
        at = int(torch.searchsorted(index, self.padding_idx))
        if at < index.numel() and int(index[at]) == self.padding_idx:
            padding = at
    weight: torch.Tensor = self.parametrizations.weight.original  # type: ignore[union-attr,assignment]
    return F.embedding(
        inverse,
        mask.rows(weight, index),
        padding,
        None,
        self.norm_type,
        self.scale_grad_by_freq,
        self.sparse,
    )


#: the masked matrices of the forward pass under way in :func:`masked_weights_recomputed`, by
#: the address of their storage
_RECOMPUTED: contextvars.ContextVar[dict[int, tuple[Any, ScoreMask, torch.Tensor]] | None]
_RECOMPUTED = contextvars.ContextVar("tamt_recomputed_masked_weights", default=None)


@dataclass(frozen=True)
class _Recompute:
    """What the backward pass needs to remake a saved masked matrix (or a view of it)."""

    mask: ScoreMask
    weight: torch.Tensor
    size: torch.Size
    stride: tuple[int, ...]
    offset: int


@contextlib.contextmanager
def masked_weights_recomputed() -> Iterator[None]:
    """Forward passes inside the block save no masked matrix ``W ⊙ keep`` of a
    :class:`ScoreMask` for the backward pass (a linear layer saves its weight to compute the
    gradient of its input): the backward pass remakes each from ``W`` and the scores when it
    needs it, one matrix at a time, bit for bit (the scores do not change between the two
    passes). It saves a float per masked weight for the time of a pass, at the cost of computing
    ``S > τ`` and the masked copy a second time (:func:`torch.autograd.graph.saved_tensors_hooks`).
    """
    live: dict[int, tuple[Any, ScoreMask, torch.Tensor]] = {}
    token = _RECOMPUTED.set(live)

    def pack(tensor: torch.Tensor) -> Any:
        # What is not a masked matrix is saved as a detached alias (same storage and version),
        # never as the tensor itself: a tensor saved by the node that made it (tanh saves its
        # output) would hold that node, which holds it, a cycle that only a backward pass
        # through the node breaks. Where none runs (the pooler under `kd` and `mlm`), the
        # node and everything it leads back to, the whole step's graph, would stay for good.
        entry = None
        if live and tensor.layout == torch.strided:
            entry = live.get(tensor.untyped_storage().data_ptr())
        if entry is None or entry[0]() is None:  # not a masked matrix (or one long freed)
            return tensor.detach()
        _, mask, weight = entry
        offset = int(tensor.storage_offset())
        return _Recompute(mask, weight, tensor.size(), tensor.stride(), offset)

    def unpack(saved: Any) -> torch.Tensor:
        if not isinstance(saved, _Recompute):
            return saved
        whole = saved.mask.masked(saved.weight)
        return whole.as_strided(saved.size, saved.stride, saved.offset)

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        _RECOMPUTED.reset(token)
        live.clear()


def attach_masks(weights: Iterable[Prunable], masks: Mapping[str, torch.Tensor]) -> None:
    """Make each ``module.weight`` return the masked weight; the model stays a stock HF model."""
    for p in weights:
        mask = masks[p.name].to(p.weight.device)
        parametrize.register_parametrization(p.module, "weight", KeepMask(mask))


def attach_scores(
    weights: Iterable[Prunable],
    init: Mapping[str, torch.Tensor],
    tau: float = 0.01,
    pattern: Pattern | None = None,
    *,
    looked_up_rows: bool = True,
) -> dict[str, ScoreMask]:
    """Attach learnable score masks initialised from keep-masks (``2τ`` / ``0``) or from float
    scores (see :func:`graded_scores`); returns them by weight name.

    With ``looked_up_rows`` (the default) a masked embedding matrix is masked, in the forward
    and the backward pass, only in the rows each batch looks up; ``False`` masks the whole
    matrix at every pass (the same results, at the cost of the vocabulary)."""
    out = {}
    for p in weights:
        mod = ScoreMask(init[p.name].to(p.weight.device), tau, pattern)
        parametrize.register_parametrization(p.module, "weight", mod)
        if looked_up_rows and isinstance(p.module, nn.Embedding):
            p.module.forward = types.MethodType(_looked_up_rows, p.module)  # type: ignore[method-assign]
        out[p.name] = mod
    return out


def parametrizations(weights: Iterable[Prunable]) -> dict[str, Any]:
    """The mask parametrization attached to each weight (KeepMask or ScoreMask)."""
    out = {}
    for p in weights:
        if parametrize.is_parametrized(p.module, "weight"):
            out[p.name] = p.module.parametrizations.weight[0]  # type: ignore[union-attr,index]
    return out


@contextlib.contextmanager
def masks_disabled(weights: Iterable[Prunable]) -> Iterator[None]:
    """Run the dense model: every attached mask is switched off inside the block.

    The dense teacher of distillation is the same model, sharing every tensor, with this on."""
    mods = list(parametrizations(weights).values())
    previous = [m.enabled for m in mods]
    for m in mods:
        m.enabled = False
    try:
        yield
    finally:
        for m, was in zip(mods, previous, strict=True):
            m.enabled = was


@torch.no_grad()
def reset_thresholds(
    scores: Mapping[str, ScoreMask], sparsity: float, scope: Scope = "local"
) -> None:
    """Set each τ to the k-th smallest score (k = ⌊n·s⌋), per matrix or over all matrices, so
    that ``S > τ`` prunes (up to ties) exactly the target fraction again."""
    if scope == "global":
        flat = torch.cat([m.score.detach().reshape(-1).float() for m in scores.values()])
        k = prune_count(flat.numel(), sparsity)
        tau = torch.kthvalue(flat, k).values if k > 0 else flat.min() - 1
        for m in scores.values():
            m.tau.copy_(tau)
        return
    for m in scores.values():
        flat = m.score.detach().reshape(-1).float()
        k = prune_count(flat.numel(), sparsity)
        m.tau.copy_(torch.kthvalue(flat, k).values if k > 0 else flat.min() - 1)


def exact_masks_from(
    scores: Mapping[str, ScoreMask],
    sparsity: float,
    scope: Scope = "local",
    pattern: Pattern | None = None,
) -> Masks:
    """Exact-sparsity keep-masks from learned scores (the lowest ⌊n·s⌋ scores pruned, or the
    top N of every M with a ``pattern``)."""
    raw = {name: m.score.detach().float().cpu() for name, m in scores.items()}
    return masks_from_scores(raw, sparsity, scope, pattern)


def detach_masks(weights: Iterable[Prunable]) -> None:
    """Remove attached masks, leaving the original (unmasked) weights in place."""
    for p in weights:
        if parametrize.is_parametrized(p.module, "weight"):
            parametrize.remove_parametrizations(p.module, "weight", leave_parametrized=False)
        forward = p.module.__dict__.get("forward")
        if getattr(forward, "__func__", None) is _looked_up_rows:
            del p.module.forward


@torch.no_grad()
def bake_masks(weights: Iterable[Prunable], masks: Mapping[str, torch.Tensor]) -> None:
    """Write the zeros into the weights in place (masked positions become exactly 0).

    A weight tied to another (the word embeddings and an MLM decoder) is one tensor, so both
    get the zeros; :func:`attach_masks` instead masks only the module it is attached to."""
    for p in weights:
        p.weight.mul_(masks[p.name].to(device=p.weight.device, dtype=p.weight.dtype))


def pruned_fraction(masks: Mapping[str, torch.Tensor] | None) -> float | None:
    """The fraction of all the weights under ``masks`` (keep-masks) that are pruned; None when
    there is no mask."""
    if not masks:
        return None
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    return pruned / total if total else None


def sparsity_report(
    weights: Iterable[Any],
    masks: Mapping[str, torch.Tensor],
    targets: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """Pruned counts and sparsity per matrix, per kind and overall (JSON-ready).

    ``weights`` are :class:`Prunable` or anything with ``name``, ``kind`` and ``layer``."""
    matrices = []
    kinds: dict[str, dict[str, Any]] = {}
    total = pruned_total = 0
    for p in weights:
        mask = masks[p.name]
        numel = mask.numel()
        pruned = numel - int(mask.sum())
        matrices.append(
            {
                "name": p.name,
                "kind": p.kind,
                "layer": p.layer,
                "shape": list(mask.shape),
                "numel": numel,
                "pruned": pruned,
                "sparsity": pruned / numel,
                "target": None if targets is None else targets.get(p.name),
            }
        )
        k = kinds.setdefault(p.kind, {"matrices": 0, "numel": 0, "pruned": 0})
        k["matrices"] += 1
        k["numel"] += numel
        k["pruned"] += pruned
        total += numel
        pruned_total += pruned
    for k in kinds.values():
        k["sparsity"] = k["pruned"] / k["numel"]
    ordered = {kind: kinds[kind] for kind in KINDS if kind in kinds}
    return {
        "overall": {
            "numel": total,
            "pruned": pruned_total,
            "sparsity": pruned_total / total if total else 0.0,
        },
        "kinds": ordered,
        "matrices": matrices,
    }
