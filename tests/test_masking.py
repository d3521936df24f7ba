"""Mask mathematics on real tensors and the tiny BERT: OMP against torch's pruning utilities,
exact sparsity, tie-breaking, prunable-weight discovery, attaching/baking and reports."""

from __future__ import annotations

import copy
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import nn
from torch.nn.utils import prune

from tamt_cli import masking
from tamt_cli.errors import UserError

SPARSITIES = (0.1, 0.5, 0.7, 0.9)
# Sparsities where the naive float product n*s floors to the wrong count for some sizes below.
TRICKY = (0.29, 0.57, 0.3, 0.7)

EXPECTED_NAMES = [
    "embeddings.word_embeddings.weight",
    *[
        f"encoder.layer.{i}.{suffix}.weight"
        for i in range(2)
        for suffix in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    ],
    "pooler.dense.weight",
]
EXPECTED_KINDS = ["embedding", *(["Q", "K", "V", "AO", "I", "O"] * 2), "pooler"]
EXPECTED_LAYERS = [None, *([0] * 6), *([1] * 6), None]
EXPECTED_SHAPES = [
    (120, 32),
    *([(32, 32)] * 4 + [(64, 32), (32, 64)]) * 2,
    (32, 32),
]


def exact_count(n: int, s: float) -> int:
    return int(Fraction(str(s)) * n)


def pruned(mask: torch.Tensor) -> int:
    return mask.numel() - int(mask.sum())


@pytest.fixture
def model(tiny_bert):
    m = transformers.AutoModel.from_pretrained(str(tiny_bert))
    m.eval()
    return m


@pytest.fixture
def weights(model):
    return masking.prunable_weights(model)


def holder(weight: torch.Tensor) -> nn.Module:
    """A bare module owning a copy of ``weight``, for torch.nn.utils.prune."""
    module = nn.Module()
    module.weight = nn.Parameter(weight.detach().clone())
    return module


# -- OMP against torch.nn.utils.prune ----------------------------------------------------------


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_local_omp_matches_torch_l1_unstructured(weights, sparsity):
    masks = masking.masks_from_scores(masking.magnitude_scores(weights), sparsity, "local")
    assert list(masks) == [p.name for p in weights]
    for p in weights:
        ref = holder(p.weight)
        prune.l1_unstructured(ref, "weight", amount=masking.prune_count(p.numel, sparsity))
        expected = ref.weight_mask.bool()
        got = masks[p.name]
        assert got.dtype == torch.bool
        assert got.shape == p.weight.shape
        assert torch.equal(got, expected), p.name
        assert pruned(got) == exact_count(p.numel, sparsity)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_global_omp_matches_torch_global_unstructured(weights, sparsity):
    masks = masking.masks_from_scores(masking.magnitude_scores(weights), sparsity, "global")
    holders = [holder(p.weight) for p in weights]
    total = sum(p.numel for p in weights)
    count = masking.prune_count(total, sparsity)
    prune.global_unstructured(
        [(h, "weight") for h in holders], pruning_method=prune.L1Unstructured, amount=count
    )
    for p, h in zip(weights, holders, strict=True):
        assert masks[p.name].shape == p.weight.shape
        assert torch.equal(masks[p.name], h.weight_mask.bool()), p.name
    assert sum(pruned(m) for m in masks.values()) == exact_count(total, sparsity)
    # Global pruning really is global: per-matrix sparsities differ from the target.
    if sparsity == 0.5:
        per_matrix = {pruned(masks[p.name]) / p.numel for p in weights}
        assert len(per_matrix) > 1


def test_omp_prunes_the_smallest_magnitudes(weights):
    masks = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5, "local")
    for p in weights:
        mag = p.weight.detach().abs()
        keep = masks[p.name]
        assert mag[~keep].max() <= mag[keep].min(), p.name


# -- exact sparsity ----------------------------------------------------------------------------


def test_prune_count_is_exact_decimal_floor():
    assert masking.prune_count(100, 0.29) == 29  # naive int(100 * 0.29) == 28
    assert masking.prune_count(100, 0.57) == 57  # naive int(100 * 0.57) == 56
    assert masking.prune_count(90, 0.7) == 63  # naive int(90 * 0.7) == 62
    assert masking.prune_count(10, 0.3) == 3
    assert masking.prune_count(7, 0.5) == 3
    assert masking.prune_count(1024, 0.0) == 0
    assert masking.prune_count(1024, 1.0) == 1024
    for n in range(1, 400):
        for s in (*TRICKY, *SPARSITIES, 0.05, 0.99):
            assert masking.prune_count(n, s) == exact_count(n, s), (n, s)


# Sizes for which int(n * s) is wrong for at least one of TRICKY.
TRICKY_SHAPES = [(10, 10), (20, 10), (9, 10), (17, 10), (7, 100), (3, 5), (1,), (13, 17)]


def test_naive_product_really_is_wrong_for_these_cases():
    # Guards the tests below: they would not catch a float-floor implementation otherwise.
    wrong = [
        (s, shape)
        for s in TRICKY
        for shape in TRICKY_SHAPES
        if int(torch.Size(shape).numel() * s) != exact_count(torch.Size(shape).numel(), s)
    ]
    assert {s for s, _ in wrong} >= {0.29, 0.57, 0.7}


@pytest.mark.parametrize("sparsity", [*TRICKY, *SPARSITIES])
def test_local_masks_prune_exactly_floor_n_s(weights, sparsity):
    torch.manual_seed(0)
    scores = {f"m{i}": torch.rand(shape) for i, shape in enumerate(TRICKY_SHAPES)}
    scores.update(masking.magnitude_scores(weights))
    masks = masking.masks_from_scores(scores, sparsity, "local")
    assert set(masks) == set(scores)
    for name, s in scores.items():
        assert masks[name].shape == s.shape
        assert pruned(masks[name]) == exact_count(s.numel(), sparsity), name


@pytest.mark.parametrize("sparsity", [*TRICKY, *SPARSITIES])
@pytest.mark.parametrize("sizes", [[(10, 5), (50,)], [(9, 10)], [(7, 10), (10, 10)], [(3, 5)]])
def test_global_masks_prune_exactly_floor_total_s(sparsity, sizes):
    torch.manual_seed(1)
    scores = {f"m{i}": torch.rand(shape) for i, shape in enumerate(sizes)}
    total = sum(s.numel() for s in scores.values())
    masks = masking.masks_from_scores(scores, sparsity, "global")
    assert [tuple(m.shape) for m in masks.values()] == [tuple(s) for s in sizes]
    assert sum(pruned(m) for m in masks.values()) == exact_count(total, sparsity)
    # The pruned entries are the globally lowest scores.
    flat_scores = torch.cat([s.reshape(-1) for s in scores.values()])
    flat_keep = torch.cat([m.reshape(-1) for m in masks.values()])
    if 0 < int((~flat_keep).sum()) < total:
        assert flat_scores[~flat_keep].max() < flat_scores[flat_keep].min()


def test_global_exact_on_tiny_bert_with_tricky_sparsities(weights):
    total = sum(p.numel for p in weights)
    for s in TRICKY:
        masks = masking.masks_from_scores(masking.magnitude_scores(weights), s, "global")
        assert sum(pruned(m) for m in masks.values()) == exact_count(total, s)


# -- keep_all_but_lowest and ties --------------------------------------------------------------


def test_all_equal_scores_prune_earliest_first():
    scores = torch.ones(10)
    for k in range(11):
        keep = masking.keep_all_but_lowest(scores, k)
        assert keep.dtype == torch.bool
        assert keep.tolist() == [False] * k + [True] * (10 - k)


def test_repeated_values_break_ties_by_position():
    scores = torch.tensor([2.0, 1.0, 2.0, 1.0, 3.0, 1.0, 2.0])
    expected = {
        0: [True] * 7,
        1: [True, False, True, True, True, True, True],
        2: [True, False, True, False, True, True, True],
        3: [True, False, True, False, True, False, True],
        4: [False, False, True, False, True, False, True],
        5: [False, False, False, False, True, False, True],
        6: [False, False, False, False, True, False, False],
        7: [False] * 7,
    }
    for k, want in expected.items():
        first = masking.keep_all_but_lowest(scores, k)
        again = masking.keep_all_but_lowest(scores.clone(), k)
        assert first.tolist() == want, k
        assert torch.equal(first, again)
        assert pruned(first) == k


def test_ties_in_a_matrix_flatten_row_major():
    scores = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    keep = masking.keep_all_but_lowest(scores, 3)
    assert keep.shape == (6,)
    assert keep.tolist() == [True, False, False, False, True, True]


def test_random_ties_prune_exactly_k():
    torch.manual_seed(2)
    scores = torch.randint(0, 4, (257,)).float()  # many ties at every threshold
    for k in (0, 1, 50, 64, 128, 200, 256, 257):
        keep = masking.keep_all_but_lowest(scores, k)
        assert pruned(keep) == k
        if 0 < k < 257:
            assert scores[~keep].max() <= scores[keep].min()
            threshold = scores[~keep].max()
            tied = torch.nonzero(scores == threshold).reshape(-1)
            pruned_tied = [i for i in tied.tolist() if not keep[i]]
            kept_tied = [i for i in tied.tolist() if keep[i]]
            if pruned_tied and kept_tied:
                assert max(pruned_tied) < min(kept_tied)


def test_k_zero_keeps_all_and_k_n_prunes_all():
    torch.manual_seed(3)
    scores = torch.randn(4, 6)
    assert masking.keep_all_but_lowest(scores, 0).all()
    assert masking.keep_all_but_lowest(scores, 0).shape == (24,)
    assert not masking.keep_all_but_lowest(scores, 24).any()


@pytest.mark.parametrize("k", [-1, 25, 100])
def test_k_out_of_range_raises(k):
    with pytest.raises(ValueError):
        masking.keep_all_but_lowest(torch.randn(4, 6), k)


def test_integer_and_double_scores():
    assert masking.keep_all_but_lowest(torch.tensor([3, 1, 2]), 1).tolist() == [True, False, True]
    scores = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    assert masking.keep_all_but_lowest(scores, 2).tolist() == [True, False, False]


# -- prunable_weights --------------------------------------------------------------------------


def test_prunable_weights_of_tiny_bert(model, weights):
    assert [p.name for p in weights] == EXPECTED_NAMES
    assert [p.kind for p in weights] == EXPECTED_KINDS
    assert [p.layer for p in weights] == EXPECTED_LAYERS
    assert [p.shape for p in weights] == EXPECTED_SHAPES
    state = model.state_dict()
    for p in weights:
        assert p.weight is state[p.name] or torch.equal(p.weight, state[p.name])
        assert p.numel == state[p.name].numel()
        assert p.module.weight is p.weight
    assert masking.shapes(weights) == dict(zip(EXPECTED_NAMES, EXPECTED_SHAPES, strict=True))


def test_prunable_weights_options(model):
    no_emb = masking.prunable_weights(model, embeddings=False)
    assert [p.name for p in no_emb] == EXPECTED_NAMES[1:]
    no_pool = masking.prunable_weights(model, pooler=False)
    assert [p.name for p in no_pool] == EXPECTED_NAMES[:-1]
    neither = masking.prunable_weights(model, embeddings=False, pooler=False)
    assert [p.name for p in neither] == EXPECTED_NAMES[1:-1]
    assert {p.kind for p in neither} == {"Q", "K", "V", "AO", "I", "O"}


def test_prunable_weights_of_masked_lm_are_relative_to_base(model):
    mlm = transformers.BertForMaskedLM(model.config)
    found = masking.prunable_weights(mlm)
    assert [p.name for p in found] == EXPECTED_NAMES[:-1]  # no pooler in BertForMaskedLM
    assert [p.kind for p in found] == EXPECTED_KINDS[:-1]
    assert [p.layer for p in found] == EXPECTED_LAYERS[:-1]
    base_state = mlm.bert.state_dict()
    for p in found:
        assert p.weight.shape == base_state[p.name].shape
    # The same masks fit the bare encoder and the task model.
    masking.check_fits(
        {n: torch.ones(s, dtype=torch.bool) for n, s in masking.shapes(found).items()},
        masking.shapes(masking.prunable_weights(model, pooler=False)),
        "mask",
    )


def test_prunable_weights_of_distilbert():
    config = transformers.DistilBertConfig(
        vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32
    )
    model = transformers.AutoModel.from_config(config)
    found = masking.prunable_weights(model, embeddings=False)
    assert [p.kind for p in found] == ["Q", "K", "V", "AO", "I", "O"]
    assert [p.layer for p in found] == [0] * 6
    assert [p.name for p in found] == [
        "transformer.layer.0.attention.q_lin.weight",
        "transformer.layer.0.attention.k_lin.weight",
        "transformer.layer.0.attention.v_lin.weight",
        "transformer.layer.0.attention.out_lin.weight",
        "transformer.layer.0.ffn.lin1.weight",
        "transformer.layer.0.ffn.lin2.weight",
    ]
    assert [p.shape for p in found] == [(16, 16)] * 4 + [(32, 16), (16, 32)]
    with_emb = masking.prunable_weights(model)
    assert [p.kind for p in with_emb] == ["embedding", "Q", "K", "V", "AO", "I", "O"]


def test_non_bert_model_raises_user_error():
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    model = transformers.AutoModel.from_config(config)
    with pytest.raises(UserError, match="gpt2"):
        masking.prunable_weights(model)


# -- random scores -----------------------------------------------------------------------------


def test_random_scores_are_seeded(weights):
    a = masking.masks_from_scores(masking.random_scores(weights, 7), 0.6)
    b = masking.masks_from_scores(masking.random_scores(weights, 7), 0.6)
    c = masking.masks_from_scores(masking.random_scores(weights, 8), 0.6)
    assert list(a) == [p.name for p in weights]
    for p in weights:
        assert torch.equal(a[p.name], b[p.name])
        assert a[p.name].shape == p.weight.shape
        assert pruned(a[p.name]) == exact_count(p.numel, 0.6)
        assert pruned(c[p.name]) == exact_count(p.numel, 0.6)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # Every matrix differs between seeds (a 1024-entry mask at 60% would collide with ~0 prob).
    assert all(not torch.equal(a[n], c[n]) for n in a)


def test_random_scores_do_not_depend_on_global_rng(weights):
    torch.manual_seed(0)
    a = masking.random_scores(weights, 3)
    torch.manual_seed(12345)
    torch.rand(10)
    b = masking.random_scores(weights, 3)
    for name in a:
        assert torch.equal(a[name], b[name])


def test_random_global_masks_exact(weights):
    total = sum(p.numel for p in weights)
    for seed in (0, 1):
        for s in (0.29, 0.5, 0.9):
            masks = masking.masks_from_scores(masking.random_scores(weights, seed), s, "global")
            assert sum(pruned(m) for m in masks.values()) == exact_count(total, s)


# -- check_fits --------------------------------------------------------------------------------


def test_check_fits(weights):
    expected = masking.shapes(weights)
    good = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5)
    masking.check_fits(good, expected, "the mask")

    extra = {**good, "encoder.layer.9.attention.self.query.weight": torch.ones(32, 32)}
    with pytest.raises(UserError, match=r"encoder\.layer\.9\.attention\.self\.query\.weight"):
        masking.check_fits(extra, expected, "the mask")

    missing = dict(good)
    del missing["encoder.layer.1.output.dense.weight"]
    with pytest.raises(UserError, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        masking.check_fits(missing, expected, "the mask")

    wrong = dict(good)
    wrong["encoder.layer.0.intermediate.dense.weight"] = torch.ones(32, 64, dtype=torch.bool)
    with pytest.raises(UserError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight") as e:
        masking.check_fits(wrong, expected, "the mask")
    assert "\n" not in str(e.value)
    assert "the mask" in str(e.value)


def test_check_fits_rejects_other_model(weights, other_bert):
    other = masking.prunable_weights(transformers.AutoModel.from_pretrained(str(other_bert)))
    masks = masking.masks_from_scores(masking.magnitude_scores(other), 0.5)
    with pytest.raises(UserError, match="shape"):
        masking.check_fits(masks, masking.shapes(weights), "the mask")


# -- attach, bake, detach ----------------------------------------------------------------------


def _input_ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    return torch.randint(5, 120, (2, 9), generator=g)


@torch.no_grad()
def _hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).last_hidden_state


def test_attach_matches_bake_and_detach_restores(model, weights):
    ids = _input_ids()
    originals = {p.name: p.weight.detach().clone() for p in weights}
    before = _hidden(model, ids)
    baked_model = copy.deepcopy(model)
    baked_weights = masking.prunable_weights(baked_model)

    masks = masking.masks_from_scores(masking.magnitude_scores(weights), 0.7)
    masking.attach_masks(weights, masks)
    for p in weights:
        mask = masks[p.name]
        w = p.module.weight
        assert w.shape == mask.shape
        assert torch.all(w[~mask] == 0), p.name
        assert torch.equal(w[mask], originals[p.name][mask]), p.name
        assert int((w != 0).sum()) <= int(mask.sum())
        # Prunable.weight is the unmasked weight while attached.
        assert torch.equal(p.weight, originals[p.name])
        assert int((p.weight[~mask] != 0).sum()) > 0
    attached = _hidden(model, ids)

    masking.bake_masks(baked_weights, masks)
    for p in baked_weights:
        assert torch.all(p.weight[~masks[p.name]] == 0)
        assert torch.equal(p.weight[masks[p.name]], originals[p.name][masks[p.name]])
    baked = _hidden(baked_model, ids)

    assert torch.equal(attached, baked)
    assert not torch.allclose(attached, before)

    masking.detach_masks(weights)
    for p in weights:
        assert isinstance(p.module.weight, nn.Parameter)
        assert torch.equal(p.module.weight, originals[p.name])
        assert torch.equal(p.weight, originals[p.name])
    assert torch.equal(_hidden(model, ids), before)
    # Detaching twice is harmless.
    masking.detach_masks(weights)
    assert torch.equal(_hidden(model, ids), before)


def test_attached_masks_block_gradients_of_pruned_weights(model, weights):
    masks = masking.masks_from_scores(masking.random_scores(weights, 0), 0.5)
    masking.attach_masks(weights, masks)
    out = model(input_ids=_input_ids())
    (out.last_hidden_state.sum() + out.pooler_output.sum()).backward()
    for p in weights:
        grad = p.weight.grad
        assert grad is not None, p.name
        # Masked positions receive no gradient through W * M; kept ones do.
        assert torch.all(grad[~masks[p.name]] == 0), p.name
        if p.kind != "embedding":  # only the looked-up rows of the embedding get gradients
            assert int((grad[masks[p.name]] != 0).sum()) > 0, p.name
    masking.detach_masks(weights)


def test_all_kept_mask_is_identity(model, weights):
    ids = _input_ids()
    before = _hidden(model, ids)
    masks = masking.masks_from_scores(masking.magnitude_scores(weights), 0.0)
    assert all(m.all() for m in masks.values())
    masking.attach_masks(weights, masks)
    assert torch.equal(_hidden(model, ids), before)
    masking.detach_masks(weights)


# -- sparsity_report ---------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["local", "global"])
def test_sparsity_report_counts(weights, scope):
    masks = masking.masks_from_scores(masking.random_scores(weights, 5), 0.57, scope)
    targets = {p.name: 0.57 for p in weights[:3]}
    report = masking.sparsity_report(weights, masks, targets)

    numel = sum(int(m.numel()) for m in masks.values())
    n_pruned = sum(int((~m).sum()) for m in masks.values())
    assert report["overall"]["numel"] == numel == 21248
    assert report["overall"]["pruned"] == n_pruned
    assert report["overall"]["sparsity"] == pytest.approx(n_pruned / numel)
    if scope == "global":
        assert n_pruned == exact_count(numel, 0.57)

    assert list(report["kinds"]) == ["Q", "K", "V", "AO", "I", "O", "pooler", "embedding"]
    for kind, entry in report["kinds"].items():
        members = [p for p in weights if p.kind == kind]
        k_numel = sum(p.numel for p in members)
        k_pruned = sum(int((~masks[p.name]).sum()) for p in members)
        assert entry["matrices"] == len(members)
        assert entry["numel"] == k_numel
        assert entry["pruned"] == k_pruned
        assert entry["sparsity"] == pytest.approx(k_pruned / k_numel)

    assert [m["name"] for m in report["matrices"]] == [p.name for p in weights]
    for entry, p in zip(report["matrices"], weights, strict=True):
        mask = masks[p.name]
        assert entry["kind"] == p.kind
        assert entry["layer"] == p.layer
        assert entry["shape"] == list(p.shape)
        assert entry["numel"] == p.numel
        assert entry["pruned"] == int((~mask).sum())
        assert entry["sparsity"] == pytest.approx(int((~mask).sum()) / p.numel)
        assert entry["target"] == targets.get(p.name)


def test_sparsity_report_duck_typed_and_without_targets():
    masks = {
        "a": torch.tensor([[True, False], [False, False]]),
        "b": torch.tensor([True, True, True, False, True]),
        "c": torch.ones(3, dtype=torch.bool),
    }
    ws = [
        SimpleNamespace(name="a", kind="O", layer=1),
        SimpleNamespace(name="b", kind="Q", layer=0),
        SimpleNamespace(name="c", kind="O", layer=0),
    ]
    report = masking.sparsity_report(ws, masks)
    assert report["overall"] == {"numel": 12, "pruned": 4, "sparsity": pytest.approx(4 / 12)}
    assert list(report["kinds"]) == ["Q", "O"]
    assert report["kinds"]["O"] == {
        "matrices": 2,
        "numel": 7,
        "pruned": 3,
        "sparsity": pytest.approx(3 / 7),
    }
    assert report["kinds"]["Q"]["pruned"] == 1
    assert [m["pruned"] for m in report["matrices"]] == [3, 1, 0]
    assert all(m["target"] is None for m in report["matrices"])
    empty = masking.sparsity_report([], {})
    assert empty["overall"] == {"numel": 0, "pruned": 0, "sparsity": 0.0}


def test_nan_scores_are_refused():
    s = torch.tensor([0.5, float("nan"), 0.1, 0.2, 0.9])
    with pytest.raises(ValueError, match="NaN"):
        masking.keep_all_but_lowest(s, 1)


def test_prune_count_is_exact_for_numpy_floats():
    import numpy as np

    assert masking.prune_count(100, np.float32(0.29)) == 29
    assert masking.prune_count(100, np.float64(0.29)) == 29


# -- graded initial scores ----------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("sparsity", (0.3, 0.7))
def test_graded_scores_give_the_initial_mask_and_keep_the_ranking(weights, scope, sparsity):
    tau = 0.01
    ranking = masking.magnitude_scores(weights)
    keep = masking.masks_from_scores(ranking, sparsity, scope)
    graded = masking.graded_scores(ranking, keep, tau)
    for p in weights:
        score, mask = graded[p.name], keep[p.name]
        assert torch.equal(score > tau, mask), p.name
        # the order of |W| survives: scores are a monotone function of the magnitudes
        order = torch.argsort(ranking[p.name].reshape(-1), stable=True)
        assert bool((score.reshape(-1)[order].diff() >= 0).all()), p.name
        # and they are spread around τ, not two values 2τ / 0
        assert score.unique().numel() > 10
        assert float(score[mask].min()) - tau < 0.1 * tau
        assert tau - float(score[~mask].max()) < 0.1 * tau


def test_graded_scores_nearest_the_boundary_flip_first(model, weights):
    """One step of the same size on every score flips only the weights next to the boundary
    when scores are graded, and every one of them when they are binary."""
    ranking = masking.magnitude_scores(weights)
    keep = masking.masks_from_scores(ranking, 0.5)
    graded = masking.graded_scores(ranking, keep, 0.01)
    binary = {n: m.float() * 0.02 for n, m in keep.items()}
    for name, mask in keep.items():
        step = torch.where(mask, -0.002, 0.002)  # every kept score down, every pruned one up
        flipped_graded = int(((graded[name] + step > 0.01) != mask).sum())
        flipped_binary = int(((binary[name] + step > 0.01) != mask).sum())
        assert flipped_binary == 0  # 2τ / 0 are 0.01 away: a small step flips nothing...
        step = step * 10  # ...and a step of τ flips every score at once
        assert int(((binary[name] + step > 0.01) != mask).sum()) == mask.numel()
        assert 0 < flipped_graded < mask.numel() // 2, name


def test_score_mask_from_float_scores_is_the_graded_mask(model, weights):
    ranking = masking.magnitude_scores(weights)
    keep = masking.masks_from_scores(ranking, 0.6)
    graded = masking.graded_scores(ranking, keep, 0.01)
    mods = masking.attach_scores(weights, graded, 0.01)
    for name, mod in mods.items():
        assert torch.equal(mod.keep(), keep[name])
        assert torch.equal(mod.score.detach(), graded[name])
    masking.detach_masks(weights)
