"""`--pattern N:M`: exactly N kept in every group of M consecutive weights, for every method."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tamt_cli import maskfile, masking

os.environ["TAMT_NO_PROGRESS"] = "1"

TRAINING = (
    "--corpus", "{corpus}", "--max-length", "16", "--batch-size", "4", "--lr", "0.01",
    "--head-warmup-steps", "2", "--eval-blocks", "8",
)  # fmt: skip


def every_group_keeps(masks: dict, n: int, m: int) -> None:
    for name, mask in masks.items():
        assert mask.shape[-1] % m == 0, name
        counts = mask.reshape(-1, m).sum(-1)
        assert bool((counts == n).all()), (name, counts.unique().tolist())


def test_nm_keep_keeps_the_top_n_of_every_group_with_ties_by_position():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0], [1, 2, 3, 4, 8, 7, 6, 5]])
    keep = masking.nm_keep(scores, 2, 4)
    assert keep.tolist() == [
        [True, False, True, False, False, False, True, True],  # ties: the earlier pruned first
        [False, False, True, True, True, True, False, False],
    ]
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(24, 48, generator=gen)
    for n, m in [(1, 4), (2, 4), (3, 4), (4, 8), (1, 2), (5, 6)]:
        keep = masking.nm_keep(big, n, m)
        every_group_keeps({"w": keep}, n, m)
        groups = big.reshape(-1, m)
        kept_min = torch.where(keep.reshape(-1, m), groups, torch.inf).min(-1).values
        pruned_max = torch.where(keep.reshape(-1, m), -torch.inf, groups).max(-1).values
        assert bool((kept_min >= pruned_max).all())
    assert masking.pattern_breaks({"a": masking.nm_keep(big, 2, 4), "b": big > 0}, (2, 4)) == ["b"]
    with pytest.raises(ValueError, match="multiple"):
        masking.nm_keep(torch.zeros(2, 6), 2, 4)


@pytest.mark.parametrize("text", ["2", "4:2", "0:4", "2:2", "a:b", "2:4:8", "-1:4"])
def test_parse_pattern_refuses(text):
    with pytest.raises(ValueError, match="N:M"):
        masking.parse_pattern(text)


@pytest.mark.parametrize(
    "method, extra",
    [
        ("omp", ()),
        ("random", ("--seed", "3")),
        ("kd", ("--max-steps", "4", *TRAINING)),
        ("mlm", ("--max-steps", "2", *TRAINING)),
        ("mlm-kd", ("--max-steps", "2", *TRAINING)),
        ("imp", ("--steps-per-round", "2", "--objective", "kd", *TRAINING)),
    ],
)
def test_every_group_of_every_masked_matrix_keeps_exactly_n(cli, tiny_bert, corpus, method, extra):
    extra = tuple(str(corpus) if a == "{corpus}" else a for a in extra)
    res = cli("search", "-m", method, "--pattern", "2:4", "--model", tiny_bert, "--out", "run",
              *extra, "--json")  # fmt: skip
    assert res.code == 0, res.err
    manifest = json.loads(Path("run/manifest.json").read_text())
    assert manifest["pattern"] == "2:4" and manifest["sparsity"] == 0.5
    masks = maskfile.load_masks(Path("run/masks.safetensors"))
    assert len(masks) == 14
    every_group_keeps(masks, 2, 4)
    assert manifest["sparsity_report"]["overall"]["sparsity"] == 0.5
    if method == "imp":  # round 1 keeps 3 of every 4, round 2 the target 2
        steps = [m for m in manifest["masks"] if m.get("round") == 1]
        every_group_keeps(maskfile.load_masks(Path("run") / steps[0]["file"]), 3, 4)
    # extract and its export carry the pattern and the mask unchanged
    assert cli("extract", "run", "--export", "sub").code == 0
    sub = json.loads(Path("sub/manifest.json").read_text())
    assert sub["pattern"] == "2:4"
    assert all(
        torch.equal(a, masks[n])
        for n, a in maskfile.load_masks(Path("sub/masks.safetensors")).items()
    )


def test_kd_moves_away_from_the_magnitude_pattern(cli, tiny_bert, corpus):
    """Per-group top-N at every forward pass: kd's 2:4 mask keeps 2 of every 4 but not the
    2:4 magnitude mask it started from."""
    extra = tuple(str(corpus) if a == "{corpus}" else a for a in TRAINING)
    assert (
        cli("search", "-m", "omp", "--pattern", "2:4", "--model", tiny_bert, "--out", "omp").code
        == 0
    )
    res = cli("search", "-m", "kd", "--pattern", "2:4", "--model", tiny_bert, "--out", "kd",
              "--max-steps", "8", *extra)  # fmt: skip
    assert res.code == 0, res.err
    omp = maskfile.load_masks(Path("omp/masks.safetensors"))
    kd = maskfile.load_masks(Path("kd/masks.safetensors"))
    every_group_keeps(kd, 2, 4)
    changed = {n: int((kd[n] != omp[n]).sum()) for n in omp}
    trained = [n for n in changed if not n.startswith("pooler")]
    assert sum(changed[n] for n in trained) > 0.01 * sum(omp[n].numel() for n in trained)
    assert changed["pooler.dense.weight"] == 0  # read by no loss: it stays the initial mask


@pytest.mark.parametrize(
    "args, message",
    [
        (("-m", "omp", "--pattern", "2:4", "-s", "0.7"), "contradicts --pattern"),
        (("-m", "omp", "--pattern", "4:2"), "N:M"),
        (("-m", "omp", "--pattern", "2:4", "--scope", "global"), "--scope global"),
        (("-m", "omp", "--pattern", "1:3"), "multiple of 3"),
        (("-m", "random", "--pattern", "2:4", "--like", "x.safetensors"), "--like"),
        (("-m", "imp", "--pattern", "2:4", "--prune-fraction", "0.25"), "--prune-fraction"),
    ],
)
def test_bad_pattern_input(cli, tiny_bert, args, message):
    res = cli("search", *args, "--model", tiny_bert, "--out", "run")
    assert res.code == 2, res.err
    assert message in res.err and "Traceback" not in res.err and len(res.err.splitlines()) == 1
    assert not Path("run").exists()


def test_pattern_gives_the_sparsity_and_dry_run_shows_it(cli, tiny_bert):
    res = cli(
        "search", "-m", "omp", "--pattern", "4:8", "--model", tiny_bert, "--dry-run", "--json"
    )
    assert res.code == 0, res.err
    assert res.json()["sparsity"] == 0.5 and res.json()["pattern"] == "4:8"
    res = cli("search", "-m", "omp", "--pattern", "1:4", "-s", "0.75", "--model", tiny_bert,
              "--dry-run", "--json")  # fmt: skip
    assert res.code == 0 and res.json()["sparsity"] == 0.75
