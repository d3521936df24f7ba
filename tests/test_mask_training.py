"""Task-agnostic mask training (`mlm`, `kd`, `mlm-kd`) on a tiny BERT and a tiny corpus."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tamt_cli import maskfile, masking, objectives
from tests.tiny import interrupt_mask_training

os.environ["TAMT_NO_PROGRESS"] = "1"


def train_args(tiny_bert, corpus, method="kd", out="run", *extra):
    return [
        "search", "-m", method, "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
        "--max-length", "16", "--batch-size", "4", "--max-steps", "8", "--lr", "0.01",
        "--out", out, *extra,
    ]  # fmt: skip


def loaded_model(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(path)).eval()


def test_kd_run_saves_exact_masks_at_every_checkpoint(cli, tiny_bert, corpus):
    res = cli(*train_args(tiny_bert, corpus, "kd", "run", "--save-every", "2", "--eval-every",
                          "4", "--keep-checkpoints", "1", "--json"))  # fmt: skip
    assert res.code == 0, res.err
    run = Path("run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    steps = [m["step"] for m in manifest["masks"]]
    assert steps == [2, 4, 6, 8]
    assert manifest["masks"][-1]["final"] and manifest["masks"][-1]["file"] == "masks.safetensors"
    model = loaded_model(tiny_bert)
    weights = masking.prunable_weights(model)
    changed = False
    init = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5)
    for entry in manifest["masks"]:
        masks = maskfile.load_masks(run / entry["file"])
        for p in weights:
            assert int((~masks[p.name]).sum()) == p.numel // 2, (entry["file"], p.name)
            changed |= not torch.equal(masks[p.name], init[p.name])
    assert changed, "mask training never moved the mask away from its magnitude start"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in rows) and any("loss" in r for r in rows)
    assert len(list((run / "checkpoints").iterdir())) == 1  # --keep-checkpoints 1
    assert manifest["notes"]["objective"] == "kd" and manifest["notes"]["steps"] == 8
    # every saved mask is a normal mask artifact
    assert cli("extract", "run", "--step", "4", "--export", "sub4").code == 0
    exported = loaded_model("sub4")
    mask4 = maskfile.load_masks(run / "masks/step-000004.safetensors")
    q = "encoder.layer.0.attention.self.query.weight"
    assert torch.all(exported.state_dict()[q][~mask4[q]] == 0)


def test_gradients_reach_only_the_scores(tiny_bert):
    model = loaded_model(tiny_bert).train()
    for p in model.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = masking.prunable_weights(model)
    init = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5)
    scores = masking.attach_scores(weights, init)
    module = objectives.PretrainingLoss(model, weights, "kd")
    opt = torch.optim.AdamW([m.score for m in scores.values()], lr=0.05)
    ids = torch.randint(5, 120, (4, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        loss = module(input_ids=ids, attention_mask=torch.ones_like(ids))
        loss.backward()
        for name, m in scores.items():
            if name.startswith("pooler"):  # unused by the objective: no gradient at all
                assert m.score.grad is None
            else:
                assert m.score.grad is not None and m.score.grad.abs().sum() > 0, name
        opt.step()
        opt.zero_grad()
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".score") for n in trainable)
    masking.detach_masks(weights)
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name  # frozen weights unchanged, bit for bit


def test_graded_scores_move_the_mask_where_binary_scores_cannot(cli, tiny_bert, corpus):
    """At a learning rate whose 8 steps move a score by far less than τ, scores that start at
    2τ / 0 flip nothing, while graded scores flip the weights next to the magnitude boundary
    (and only a few of them); both end at exactly the target sparsity."""
    slow = ("--lr", "1e-4", "--seed", "1")
    assert (
        cli(*train_args(tiny_bert, corpus, "kd", "binary", *slow, "-o", "scores=binary")).code == 0
    )
    res = cli(*train_args(tiny_bert, corpus, "kd", "graded", *slow))  # graded is the default
    assert res.code == 0, res.err
    notes = json.loads(Path("graded/manifest.json").read_text())["notes"]
    assert notes["scores"] == "graded" and notes["lr"] == 1e-4
    model = loaded_model(tiny_bert)
    weights = masking.prunable_weights(model)
    omp = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5)
    binary = maskfile.load_masks(Path("binary/masks.safetensors"))
    graded = maskfile.load_masks(Path("graded/masks.safetensors"))
    assert all(torch.equal(binary[n], omp[n]) for n in omp)
    flipped = {n: int((graded[n] != omp[n]).sum()) for n in omp}
    assert 0 < sum(flipped.values()) < 0.1 * sum(m.numel() for m in omp.values())
    for p in weights:
        assert int((~graded[p.name]).sum()) == p.numel // 2, p.name
        if flipped[p.name]:  # what flipped lies next to the boundary in |W|
            moved = (graded[p.name] != omp[p.name]) & (p.kind != "pooler")
            magnitude = p.weight.detach().abs()
            boundary = magnitude[omp[p.name]].min()
            assert float((magnitude[moved] / boundary - 1).abs().max()) < 0.5, p.name
    res = cli("search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "-o", "scores=soft",
              "--dry-run")  # fmt: skip
    assert res.code == 2 and "scores" in res.err and "graded" in res.err


def test_frequency_baseline_is_the_loss_of_a_head_that_ignores_the_encoder(tiny_bert, corpus):
    """A head whose transform outputs zeros and whose bias is the log of the smoothed training
    frequencies scores exactly the frequency baseline, on the same held-out positions."""
    from types import SimpleNamespace

    from rich.console import Console
    from transformers import AutoTokenizer

    from tamt_cli import mlm_head, models, pretraining
    from tamt_cli.corpora import load_blocks
    from tamt_cli.engine import Engine

    ref = models.resolve(str(tiny_bert))
    model = models.load_encoder(ref).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    blocks = load_blocks(str(corpus), tok, 16)
    info = {
        "special_ids": sorted(set(tok.all_special_ids)),
        "mask_id": int(tok.mask_token_id),
        "vocab_size": int(model.config.vocab_size),
    }
    data = pretraining.PretrainingData(blocks.train, blocks.held_out, "c", "f", info)
    head, _ = models.load_mlm_head(ref, model)
    vocab = model.config.vocab_size
    counts = torch.bincount(blocks.train.reshape(-1).long(), minlength=vocab).double()
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.endswith("bias") and p.shape == (vocab,):
                p.copy_(torch.log((counts + 1) / (counts.sum() + vocab)).float())
            elif "transform" in name:
                p.zero_()
    engine = Engine("no", Console(stderr=True))
    n = min(8, blocks.held_out.shape[0])
    weights = masking.prunable_weights(model)
    quality = mlm_head.head_quality(model, weights, head, data, engine, None)
    baseline = mlm_head.frequency_loss(data, n, 16)
    module = objectives.PretrainingLoss(model, weights, "mlm", head)
    spec = SimpleNamespace(eval_blocks=n, batch_size=16)
    assert pretraining.held_out_loss(module, data, "mlm", spec, "cpu") == pytest.approx(baseline)
    assert quality["head_heldout_mlm"] == pytest.approx(quality["frequency_heldout_mlm"], abs=1e-3)
    assert 1.0 < baseline < np.log(vocab)


def test_kd_loss_is_zero_dense_and_teacher_shares_storage(tiny_bert):
    model = loaded_model(tiny_bert)
    n_tensors = len(list(model.parameters()))
    weights = masking.prunable_weights(model)
    ids = torch.randint(5, 120, (2, 10), generator=torch.Generator().manual_seed(1))
    full = {p.name: torch.ones(p.shape, dtype=torch.bool) for p in weights}
    masking.attach_masks(weights, full)
    module = objectives.PretrainingLoss(model, weights, "kd").eval()
    with torch.no_grad():
        assert float(module(input_ids=ids)) == pytest.approx(0.0, abs=1e-6)
    masking.detach_masks(weights)
    masks = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5)
    masking.attach_masks(weights, masks)
    with torch.no_grad():
        assert float(module(input_ids=ids)) > 1e-3
    with masking.masks_disabled(weights):
        for p in weights:
            assert p.module.weight.data_ptr() == p.weight.data_ptr()
    assert len(list(module.parameters())) == n_tensors  # no second copy of the model


def train_scores(folder, pattern, looked_up_rows, steps=6):
    """``steps`` of mlm-kd mask training (head trained, dropout on, thresholds reset) of a tiny
    checkpoint from graded magnitude scores; batches hold padding tokens. Returns the scores, the
    masks they give, the initial masks and how often the embedding mask ran on the whole
    matrix."""
    from tamt_cli import mlm_head, models
    from tamt_cli.methods import _common

    ref = models.resolve(str(folder))
    encoder = models.load_encoder(ref).train()
    head, _ = models.load_mlm_head(ref, encoder)
    for p in encoder.parameters():
        p.requires_grad_(False)
    head_params = mlm_head.train_head(head, encoder, 0.01)
    weights = masking.prunable_weights(encoder)
    vocab, pad = encoder.config.vocab_size, encoder.config.pad_token_id
    with torch.no_grad():  # a padding row that is not zero, so that a gradient would show
        encoder.get_input_embeddings().weight[pad] = torch.linspace(-0.1, 0.1, steps=32)
    ranking = masking.magnitude_scores(weights)
    init = masking.masks_from_scores(ranking, 0.5, pattern=pattern)
    graded = masking.graded_scores(ranking, init, 0.01)
    scores = masking.attach_scores(weights, graded, 0.01, pattern, looked_up_rows=looked_up_rows)
    embedding = next(p for p in weights if p.kind == "embedding")
    whole = []
    scores[embedding.name].register_forward_hook(
        lambda mod, args, out: whole.append(mod.enabled) if mod.enabled else None
    )
    module = objectives.PretrainingLoss(encoder, weights, "mlm-kd", head)
    trained = [m.score for n, m in scores.items() if not n.startswith("pooler")]
    optimizer = _common.optimizer(trained, 0.01, head_params, 0.01)
    # tokens (random replacements included) below vocab/2: the rows above are never looked up
    info = {"special_ids": [0, 1, 2, 3, 4], "mask_id": 4, "vocab_size": vocab // 2}
    for step in range(steps):
        torch.manual_seed(step)  # dropout
        generator = torch.Generator().manual_seed(step)
        blocks = torch.randint(5, vocab // 2, (4, 16), generator=generator)
        blocks[:, 5] = pad
        loss = module(**objectives.batch_for(blocks, "mlm-kd", info, generator))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained + head_params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if pattern is None and step % 3 == 2:
            masking.reset_thresholds(scores, 0.5)
    out = {n: m.score.detach().clone() for n, m in scores.items()}
    keep = {n: m.keep() for n, m in scores.items()}
    masking.detach_masks(weights)
    assert "forward" not in vars(embedding.module)  # detached: the class's forward again
    return out, keep, init, graded, len(whole), embedding.name, pad


@pytest.mark.parametrize(
    ("layout", "pattern"),
    [("bert-mlm", None), ("bert-mlm", (2, 4)), ("roberta-mlm", None), ("distilbert-mlm", None)],
)
def test_embedding_masked_in_looked_up_rows_trains_as_the_whole_matrix(
    tmp_path, one_thread, layout, pattern
):
    """The word-embedding mask computed for the rows a batch looks up only gives the scores,
    and so the masks, that masking the whole matrix gives, step for step (AdamW, clipping,
    threshold resets, N:M patterns, the padding row and the MLM decoder tied to the unmasked
    matrix included)."""
    from tests.tiny import make_mlm_checkpoint

    folder = make_mlm_checkpoint(tmp_path / layout, layout)
    rows, rows_keep, init, graded, rows_whole, name, pad = train_scores(folder, pattern, True)
    full, full_keep, *_, full_whole, _, _ = train_scores(folder, pattern, False)
    assert rows_whole == 0 and full_whole == 6  # the rows path never masks the whole matrix
    for n in full:
        torch.testing.assert_close(rows[n], full[n], rtol=1e-6, atol=1e-9, msg=n)
        assert torch.equal(rows_keep[n], full_keep[n]), n
    flipped = rows_keep[name] != init[name]
    assert int(flipped.any(1).sum()) > 3, "the embedding mask did not move"
    half = full[name].shape[0] // 2
    assert torch.equal(rows[name][half:], graded[name][half:])  # rows never looked up
    assert torch.equal(rows[name][pad], graded[name][pad])  # looked up, but never a gradient
    assert not torch.equal(rows[name][5:half], graded[name][5:half])


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_backward_pass_remakes_masked_matrices_instead_of_keeping_them(tiny_bert, pattern):
    """Between the forward and the backward pass the graph holds no masked copy ``W ⊙ keep``:
    each is remade when the backward pass needs it, and the gradients are those of keeping
    them, bit for bit."""
    import weakref

    model = loaded_model(tiny_bert).train()
    for p in model.parameters():
        p.requires_grad_(False)
    weights = masking.prunable_weights(model)
    ranking = masking.magnitude_scores(weights)
    keep = masking.masks_from_scores(ranking, 0.5, pattern=pattern)
    scores = masking.attach_scores(weights, masking.graded_scores(ranking, keep, 0.01), 0.01,
                                   pattern)  # fmt: skip
    made: list = []
    for name, mod in scores.items():
        if not name.startswith("embeddings"):  # the embeddings: only the rows looked up
            mod.register_forward_hook(  # the student's pass, not the dense teacher's
                lambda m, a, out: made.append(weakref.ref(out)) if m.enabled else None
            )
    remade = []
    masked = masking.ScoreMask.masked
    ids = torch.randint(5, 120, (4, 12), generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (True, False):
        module = objectives.PretrainingLoss(model, weights, "kd", recompute=recompute)
        made.clear()
        torch.manual_seed(0)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(masking.ScoreMask, "masked", lambda m, w: remade.append(1) or masked(m, w))
            loss = module(input_ids=ids, attention_mask=torch.ones_like(ids))
            alive = sum(ref() is not None for ref in made)
            loss.backward()
        assert len(made) == 13  # 12 encoder matrices and the pooler, one forward pass
        # kept: the 12 encoder matrices (the pooler's output, unused by the loss, is freed);
        # remade: the same 12, once each (and not again by the pass that keeps them)
        assert alive == (0 if recompute else 12) and len(remade) == 12
        grads.append(
            {n: m.score.grad.clone() for n, m in scores.items() if m.score.grad is not None}
        )
        for m in scores.values():
            m.score.grad = None
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 13
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
    masking.detach_masks(weights)


def test_a_graph_no_backward_pass_reaches_is_freed(tiny_bert):
    """The pooler's output is not in the `kd` loss, so no backward pass runs through it; with
    the masked matrices remade, its graph (and through it every node of the step) is still
    freed after the step: no step leaves autograd nodes behind."""
    import gc

    model = loaded_model(tiny_bert).train()
    for p in model.parameters():
        p.requires_grad_(False)
    weights = masking.prunable_weights(model)
    assert any(w.name.startswith("pooler") for w in weights)
    ranking = masking.magnitude_scores(weights)
    keep = masking.masks_from_scores(ranking, 0.5)
    masking.attach_scores(weights, masking.graded_scores(ranking, keep, 0.01), 0.01)
    module = objectives.PretrainingLoss(model, weights, "kd", recompute=True)
    ids = torch.randint(5, 120, (4, 12), generator=torch.Generator().manual_seed(0))

    def nodes() -> int:
        gc.collect()
        return sum(type(o).__name__ == "_StraightThroughBackward" for o in gc.get_objects())

    before = nodes()
    for _ in range(3):
        module(input_ids=ids, attention_mask=torch.ones_like(ids)).backward()
    assert nodes() == before  # else every masked matrix's node of every step stays
    masking.detach_masks(weights)


class CountingHead(torch.nn.Module):
    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(hidden, vocab)
        self.rows: list[int] = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.proj(x)


def test_only_masked_positions_are_projected(tiny_bert):
    model = loaded_model(tiny_bert)
    weights = masking.prunable_weights(model)
    head = CountingHead(32, 120)
    module = objectives.PretrainingLoss(model, weights, "mlm", head)
    blocks = torch.randint(5, 120, (4, 32), generator=torch.Generator().manual_seed(2))
    blocks[:, 0], blocks[:, -1] = 2, 3
    info = {"special_ids": [0, 1, 2, 3, 4], "mask_id": 4, "vocab_size": 120}
    batch = objectives.batch_for(blocks, "mlm", info, torch.Generator().manual_seed(3))
    loss = module(**batch)
    chosen = int((batch["labels"] != -100).sum())
    assert head.rows == [chosen]
    assert 0 < chosen < blocks.numel() // 3
    assert torch.isfinite(loss)


def test_mask_tokens_follows_80_10_10():
    ids = torch.randint(10, 1000, (64, 128), generator=torch.Generator().manual_seed(0))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    corrupted, labels = objectives.mask_tokens(
        ids, special, mask_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(1)
    )
    chosen = labels != -100
    assert not chosen[:, 0].any()
    rate = chosen.float().mean().item()
    assert 0.13 < rate < 0.17
    masked = (corrupted == 3) & chosen
    same = (corrupted == ids) & chosen
    assert 0.77 < masked.sum() / chosen.sum() < 0.83
    assert 0.08 < same.sum() / chosen.sum() < 0.125
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])


def test_resume_gives_the_same_mask(cli, tiny_bert, corpus, monkeypatch):
    args = ("--save-every", "4", "--seed", "3")
    assert cli(*train_args(tiny_bert, corpus, "kd", "full", *args)).code == 0

    resume_normally = interrupt_mask_training(monkeypatch, 6)
    res = cli(*train_args(tiny_bert, corpus, "kd", "part", *args))
    assert res.code == 130
    assert json.loads(Path("part/manifest.json").read_text())["status"] == "running"
    assert not Path("part/masks.safetensors").exists()
    resume_normally()
    res = cli("search", "--resume", "part", "-s", "0.6")  # other settings are refused
    assert res.code == 2 and "started with sparsity=0.5" in res.err
    res = cli("search", "--resume", "part")
    assert res.code == 0, res.err
    a = maskfile.load_masks(Path("full/masks.safetensors"))
    b = maskfile.load_masks(Path("part/masks.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(r)["step"] for r in Path("part/metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 8
    # a resume with different settings is refused, and a finished run has nothing to do
    res = cli("search", "--resume", "part", "-s", "0.6")
    assert res.code == 2 and "already complete" in res.err
    assert json.loads(Path("part/manifest.json").read_text())["status"] == "complete"


def test_mlm_fits_a_missing_head_once_and_scores_every_subnetwork_with_it(cli, tiny_bert, corpus):
    res = cli(*train_args(tiny_bert, corpus, "mlm", "run", "--head-warmup-steps", "3"))
    assert res.code == 0, res.err
    assert "has no MLM head" in res.err
    manifest = json.loads(Path("run/manifest.json").read_text())
    head = manifest["notes"]["mlm_head"]
    assert (head["kind"], head["steps"], head["reused"]) == ("fitted", 3, False)
    # three steps fit nothing: the head is no better than the token frequencies, and is told so
    assert head["head_heldout_mlm"] > head["frequency_heldout_mlm"] - 0.5
    assert "predicts masked tokens hardly better than token frequencies" in res.err
    assert manifest["notes"]["head_lr"] == 0.0  # a fitted head is frozen by default
    assert Path("run/head.safetensors").is_file()
    assert Path("run/head_warmup.jsonl").is_file()
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "omp").code == 0
    common = ("--objective", "mlm", "--corpus", corpus, "--max-length", "16", "--batch-size",
              "4", "--head-warmup-steps", "3", "--json")  # fmt: skip
    first = cli("eval", "run", *common)
    assert first.code == 0, first.err
    out = first.json()
    # the same fit settings as the search: the cached head, not a new fit
    assert out["mlm_head"]["kind"] == "fitted" and out["mlm_head"]["reused"] is True
    assert out["mlm_head"]["head_heldout_mlm"] == head["head_heldout_mlm"]  # stored with it
    assert out["mask_sparsity"] == pytest.approx(0.5, abs=1e-3) and out["loss"] > 0
    again = cli("eval", "run", *common).json()
    assert again["loss"] == out["loss"]  # bit for bit
    own = cli("eval", "run", *common, "--head", "own").json()
    assert own["mlm_head"]["kind"] == "own"
    assert own["loss"] == out["loss"]  # the frozen head is the shared one
    omp = cli("eval", "omp", *common).json()
    assert omp["mlm_head"]["reused"] is True and omp["loss"] != out["loss"]
    res = cli("eval", "omp", *common, "--head", "own")
    assert res.code == 2 and "--head own needs a search run that trained" in res.err
    # a head that trains with the mask is the run's own, and scores differently
    res = cli(*train_args(tiny_bert, corpus, "mlm", "trained", "--head-warmup-steps", "3",
                          "--head-lr", "0.05"))  # fmt: skip
    assert res.code == 0, res.err
    shared = cli("eval", "trained", *common).json()
    own = cli("eval", "trained", *common, "--head", "own").json()
    assert shared["loss"] != own["loss"]


@pytest.mark.parametrize("method", ["mlm", "mlm-kd"])
def test_same_seed_same_mask_on_a_headless_model(cli, tiny_bert, corpus, method, monkeypatch,
                                                 tmp_path):  # fmt: skip
    """Every random draw is seeded: the head fit, its data, the training, a resumed run."""
    args = ("--head-warmup-steps", "4", "--save-every", "4", "--seed", "2")
    masks = []
    for i in range(2):  # a fresh cache each time: the head is fitted again, identically
        monkeypatch.setenv("TAMT_CACHE_DIR", str(tmp_path / f"cache{i}"))
        assert cli(*train_args(tiny_bert, corpus, method, f"r{i}", *args)).code == 0
        masks.append(maskfile.load_masks(Path(f"r{i}/masks.safetensors")))
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    init = masking.masks_from_scores(
        masking.magnitude_scores(masking.prunable_weights(loaded_model(tiny_bert))), 0.5
    )
    assert any(not torch.equal(masks[0][k], init[k]) for k in init)  # it did train

    from tamt_cli import search

    monkeypatch.setenv("TAMT_CACHE_DIR", str(tmp_path / "cache-resume"))
    resume_normally = interrupt_mask_training(monkeypatch, 2)  # before the first checkpoint
    # a killed process (kill -9) runs no clean-up: its folder stays, with no checkpoint yet
    stopped = search._stopped
    monkeypatch.setattr(search, "_stopped", lambda *args, **kwargs: None)
    assert cli(*train_args(tiny_bert, corpus, method, "part", *args)).code == 130
    monkeypatch.setattr(search, "_stopped", stopped)
    resume_normally()
    monkeypatch.setenv("TAMT_CACHE_DIR", str(tmp_path / "cache-resume-2"))
    res = cli("search", "--resume", "part")
    assert res.code == 0, res.err
    resumed = maskfile.load_masks(Path("part/masks.safetensors"))
    assert all(torch.equal(masks[0][k], resumed[k]) for k in resumed)


def test_mlm_kd_runs(cli, tiny_bert, corpus):
    res = cli(*train_args(tiny_bert, corpus, "mlm-kd", "run", "--head-warmup-steps", "2",
                          "--max-steps", "4"))  # fmt: skip
    assert res.code == 0, res.err
    assert json.loads(Path("run/manifest.json").read_text())["notes"]["objective"] == "mlm-kd"


def test_eval_objective_ranks_dense_below_masked(cli, tiny_bert, corpus):
    res = cli("search", "-m", "random", "-s", "0.9", "--model", tiny_bert, "--out", "rnd")
    assert res.code == 0
    assert cli("extract", "rnd", "--export", "sub").code == 0
    common = ("--objective", "kd", "--corpus", corpus, "--max-length", "16", "--json")
    dense = cli("eval", tiny_bert, *common)
    run = cli("eval", "rnd", *common)
    sub = cli("eval", "sub", *common)
    assert dense.code == run.code == sub.code == 0, (dense.err, run.err, sub.err)
    assert dense.json()["loss"] == pytest.approx(0.0, abs=1e-6)
    assert dense.json()["mask_sparsity"] is None
    assert run.json()["loss"] > 0.01
    assert sub.json()["loss"] == pytest.approx(run.json()["loss"], rel=1e-6)
    keys = {"checkpoint", "objective", "loss", "split", "examples", "corpus", "mask_sparsity"}
    assert keys <= set(run.json())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--corpus", "nothing/*.txt"], "matches no file"),
        (["--max-length", "100"], "beyond the model's 64 positions"),
        (["-m", "mlm", "--head-warmup-steps", "0"], "--head-warmup-steps is 0"),
        (["-o", "init=zeros"], "init: Input should be 'magnitude' or 'random'"),
        (["--batch-size", "3", "--grad-accum", "2"], "must be a multiple of"),
    ],
)
def test_bad_training_input(cli, tiny_bert, corpus, extra, message):
    args = train_args(tiny_bert, corpus, "kd", "run")
    if "-m" in extra:
        args[args.index("-m") + 1] = extra[1]
        extra = extra[2:]
    res = cli(*args, *extra)
    assert res.code == 2, res.err
    assert message in res.err
    assert res.err.strip().splitlines()[-1].startswith("tamt: error: ")
    assert "Traceback" not in res.err


def test_empty_corpus_is_refused(cli, tiny_bert, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    res = cli(*train_args(tiny_bert, empty, "kd", "run"))
    assert res.code == 2 and "empty" in res.err.lower()


def test_resume_of_a_missing_or_one_shot_run(cli, tiny_bert, tmp_path):
    res = cli("search", "--resume", tmp_path / "nope")
    assert res.code == 2 and "is not a directory" in res.err
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "o").code == 0
    res = cli("search", "--resume", "o")
    assert res.code == 2 and "nothing to resume" in res.err


def test_two_processes_with_torchrun(tmp_path, tiny_bert, corpus):
    env = {**os.environ, "TAMT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(29_500 + os.getpid() % 1000), "-m", "tamt_cli",
        *train_args(tiny_bert, corpus, "kd", str(tmp_path / "ddp"), "--save-every", "4"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.name.startswith("ddp") or p.name.startswith(".ddp")]
    assert [p.name for p in runs] == ["ddp"]
    manifest = json.loads((tmp_path / "ddp/manifest.json").read_text())
    assert manifest["notes"]["processes"] == 2 and manifest["status"] == "complete"
    masks = maskfile.load_masks(tmp_path / "ddp/masks.safetensors")
    assert all(int((~m).sum()) == m.numel() // 2 for m in masks.values())


# -- the paper's budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "sparsity", "lr", "steps", "reset"),
    [("kd", 0.7, 2e-5, 16999, 100), ("mlm", 0.5, 5e-5, 11000, 1000), ("kd", 0.9, 2e-5, 21999, 100)],
)
def test_budget_paper_fills_in_the_papers_protocol(
    cli, tiny_bert, method, sparsity, lr, steps, reset
):
    res = cli(
        "search", "-m", method, "-s", sparsity, "--model", tiny_bert, "--budget", "paper",
        "--dry-run", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    spec = res.json()
    assert (spec["lr"], spec["max_steps"], spec["batch_size"], spec["max_length"]) == (
        lr,
        steps,
        16,
        512,
    )
    kd_data = {"kd_data": "sections"} if method == "kd" else {}  # the reference's KD data
    keys = ("scores", "reset_every", "decay_steps", "kd_data")
    assert {k: spec["options"][k] for k in keys if k in spec["options"]} == {
        "scores": "binary", "reset_every": reset, "decay_steps": 30000, **kd_data
    }  # fmt: skip
    assert spec["resolved"]["decay_steps"] == 30000 and spec["resolved"]["reset_every"] == reset


def test_budget_paper_yields_to_what_is_given(cli, tiny_bert):
    res = cli(
        "search", "-m", "kd", "-s", "0.7", "--model", tiny_bert, "--budget", "paper",
        "--lr", "1e-4", "--max-length", "64", "-o", "scores=graded", "--dry-run", "--json",
    )  # fmt: skip
    spec = res.json()
    assert (spec["lr"], spec["max_length"], spec["max_steps"]) == (1e-4, 64, 16999)
    assert spec["options"]["scores"] == "graded" and spec["options"]["decay_steps"] == 30000
    omp = cli("search", "-m", "omp", "-s", "0.7", "--model", tiny_bert, "--budget", "paper")
    assert omp.code == 2 and "mask-training protocol" in omp.err
    short = cli(
        "search", "-m", "kd", "-s", "0.7", "--model", tiny_bert, "--max-steps", "10",
        "-o", "decay_steps=5", "--dry-run",
    )  # fmt: skip
    assert short.code == 2 and "decay_steps=5 is below --max-steps 10" in short.err


@pytest.mark.usefixtures("one_thread")
def test_decay_steps_sets_where_the_lr_reaches_zero(cli, tiny_bert, corpus):
    """A paper-budget run cut short: the lr falls along the 8-step line, not the 4-step one, and
    the saved spec holds the values (a repeat needs nothing else)."""
    res = cli(
        "search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
        "--budget", "paper", "--max-steps", "4", "--max-length", "16", "--batch-size", "4",
        "-o", "decay_steps=8", "--log-every", "2", "--out", "run",
    )  # fmt: skip
    assert res.code == 0, res.err
    logged = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in logged if "lr" in r}
    assert lrs[2] == pytest.approx(2e-5 * 6 / 8) and lrs[4] == pytest.approx(2e-5 * 4 / 8)
    saved = yaml.safe_load(Path("run/spec.yaml").read_text())
    assert (saved["lr"], saved["budget"], saved["options"]["scores"]) == (2e-5, "paper", "binary")


# -- advice from the budget study -----------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "noted"),
    [
        ([], False),  # the defaults: 2e-4 × 1000
        (["--lr", "1e-3"], True),  # 1e-3 × 1000 = 1.0
        (["--max-steps", "3001"], True),  # 2e-4 × 3001
        (["--max-steps", "3000"], False),  # 2e-4 × 3000 = the limit itself
        (["--lr", "1e-3", "-o", "scores=binary"], False),  # measured for graded scores only
        (["--budget", "paper"], False),  # binary scores
    ],
)
def test_kd_budget_past_the_measured_limit_gets_a_note(cli, tiny_bert, flags, noted):
    from tamt_cli.methods.mask_training import KD_TRAVEL_LIMIT

    assert pytest.approx(2e-4 * 3000) == KD_TRAVEL_LIMIT
    res = cli("search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, *flags, "--dry-run")
    assert res.code == 0, res.err
    said = " ".join(res.err.split())
    assert ("note: lr × steps" in said) is noted
    if noted:
        assert "past 0.6" in said and "How long to train masks" in said


def test_mlm_gets_no_budget_note(cli, tiny_bert):
    res = cli("search", "-m", "mlm", "-s", "0.5", "--model", tiny_bert, "--lr", "1e-3", "--dry-run")
    assert res.code == 0 and "lr × steps" not in res.err


@pytest.mark.usefixtures("one_thread")
def test_budget_note_is_printed_once_by_a_run(cli, tiny_bert, corpus):
    args = ["-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus, "--lr", "0.2"]
    args += ["--max-steps", "4", "--max-length", "16", "--batch-size", "4", "--out", "run"]
    res = cli("search", *args)
    assert res.code == 0, res.err
    assert " ".join(res.err.split()).count("note: lr × steps = 0.2 × 4 = 0.8, past 0.6") == 1


# -- the reference's KD data: -o kd_data=sections ------------------------------------------


def section_corpus(path: Path, documents: int = 40, seed: int = 0) -> dict[str, tuple[int, int]]:
    """Documents of 1-4 lines of 20-30 distinct words (``w<n>``, one token each), blank lines
    between, a heading and a document with a short first line among them; returns where each
    word is: (document, line)."""
    import random

    rng = random.Random(seed)
    lines: list[str] = []
    where: dict[str, tuple[int, int]] = {}
    n = 0
    for d in range(documents):
        if d == 3:
            lines += [" = Heading w5000 = ", ""]
        first = 8 if d == 5 else None  # under 20 tokens: the reference skips the document
        for line in range(rng.randint(1, 4)):
            words = [f"w{n + i}" for i in range(first or rng.randint(20, 30))]
            first = None
            n += len(words)
            where.update({w: (d, line) for w in words})
            lines.append(" ".join(words))
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return where


def test_a_sections_batch_has_the_reference_kd_layout(tmp_path):
    """[CLS] A [SEP] B [SEP] from one document section, A's lines before B's, token type 1 from
    B on, padded to the length with [PAD] and not attended, and every position, the padding's
    too, counted by the KD loss."""
    from tamt_cli import corpora, pretraining
    from tests.tiny import make_word_tokenizer

    tok = make_word_tokenizer(tmp_path / "words")
    where = section_corpus(tmp_path / "t.txt")
    blocks = corpora.load_blocks(str(tmp_path / "t.txt"), tok, 64, sections=True)
    sections = blocks.sections
    assert sections is not None and sections.token_types and sections.pad_id == 0
    batch = pretraining.sections_batch(sections, torch.arange(len(sections)), token_types=True)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "kd_positions"}
    assert all(t.shape == (len(sections), 64) for t in batch.values())
    assert bool((batch["kd_positions"] == 1).all())  # the padding is counted in the loss
    held = {w for w in tok.convert_ids_to_tokens(blocks.held_out.reshape(-1).tolist())}
    held_documents = {where[w][0] for w in held if w in where}
    assert blocks.split["unit"] == "documents" and held_documents
    seen, two, padded = set(), 0, 0
    for row, (ids, attention, types) in enumerate(
        zip(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], strict=True)
    ):
        n, second = int(attention.sum()), int(sections.second[row])
        assert bool((attention[:n] == 1).all()) and bool((ids[n:] == tok.pad_token_id).all())
        padded += n < 64
        assert ids[0] == tok.cls_token_id
        seps = (ids == tok.sep_token_id).nonzero().flatten().tolist()
        if second < n:  # two segments: [CLS] A [SEP] B [SEP]
            two += 1
            assert seps == [second - 1, n - 1]
        else:
            assert seps == [n - 1]
        assert types[:second].tolist() == [0] * second
        assert types[second:n].tolist() == [1] * (n - second) and not types[n:].any()
        words = tok.convert_ids_to_tokens(ids.tolist())
        found = [where.get(w, (-1, -1)) for w in words[1 : n - 1] if w != tok.sep_token]
        document = collections.Counter(d for d, _ in found).most_common(1)[0][0]
        # one document section; one token corrupted as the reference's are ([MASK], a random
        # token or kept)
        assert sum(d != document for d, _ in found) <= 1
        a = [where[w] for w in words[1 : second - 1] if where.get(w, (-1,))[0] == document]
        b = [where[w] for w in words[second : n - 1] if where.get(w, (-1,))[0] == document]
        assert not b or max(line for _, line in a) < min(line for _, line in b)
        assert document not in held_documents and document != 5
        seen.add(document)
    assert two and padded
    kept = {d for d, _ in where.values()} - held_documents - {5}
    assert seen == kept  # every training section, and the heading's text in none
    assert not any("w5000" in tok.convert_ids_to_tokens(ids.tolist()) for ids in batch["input_ids"])
    again = corpora.load_blocks(str(tmp_path / "t.txt"), tok, 64, sections=True)  # cached
    assert again.sections is not None and torch.equal(again.sections.ids, sections.ids)


def test_kd_loss_of_sections_averages_over_padding_as_the_reference(tiny_bert, tmp_path):
    """``CosineLoss`` of train_kd.py: ``(1 - cos).mean()`` over batch, sequence (padding
    included) and, for the loss, the mean over the layers after the embeddings."""
    import random

    from transformers import AutoTokenizer

    from tamt_cli import corpora, pretraining
    from tests.tiny import WORDS

    rng = random.Random(1)
    text = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 26))) for _ in range(30)]
    (tmp_path / "t.txt").write_text("\n".join(text) + "\n")
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    blocks = corpora.load_blocks(str(tmp_path / "t.txt"), tok, 64, sections=True)
    assert blocks.sections is not None
    batch = pretraining.sections_batch(blocks.sections, torch.arange(4), token_types=False)
    assert (batch["attention_mask"] == 0).any()
    model = loaded_model(tiny_bert)
    weights = masking.prunable_weights(model)
    masking.attach_masks(weights, masking.masks_from_scores(masking.random_scores(weights, 0), 0.5))
    module = objectives.PretrainingLoss(model, weights, "kd")
    with torch.no_grad():
        loss = float(module(**batch))
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        student = model(**inputs, output_hidden_states=True).hidden_states[1:]
        with masking.masks_disabled(weights):
            teacher = model(**inputs, output_hidden_states=True).hidden_states[1:]
        per_layer = [
            (1 - torch.cosine_similarity(s, t, dim=-1)).mean()
            for s, t in zip(student, teacher, strict=True)
        ]
        attended = objectives.kd_loss(student, teacher, batch["attention_mask"])
    assert loss == pytest.approx(float(torch.stack(per_layer).mean()), rel=1e-5)
    assert loss != pytest.approx(float(attended), rel=1e-3)  # not only the attended tokens


@pytest.mark.usefixtures("one_thread")
def test_kd_search_on_sections(cli, tiny_bert, tmp_path):
    import random

    from tests.tiny import WORDS

    rng = random.Random(2)
    text = []
    for _ in range(30):
        text += [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 26)))
                 for _ in range(rng.randint(1, 3))] + [""]  # fmt: skip
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(text) + "\n")
    res = cli(*train_args(tiny_bert, corpus, "kd", "run", "-o", "kd_data=sections",
                          "--max-length", "32", "--eval-every", "4"))  # fmt: skip
    assert res.code == 0, res.err
    manifest = json.loads(Path("run/manifest.json").read_text())
    notes = manifest["notes"]
    assert notes["kd_sections"]["sequences"] > 0 and notes["kd_sections"]["padded_to"] == 32
    assert notes["held_out_split"]["unit"] == "documents"
    assert notes["held_out_split"]["corpus"] == str(corpus.resolve())
    refused = cli("search", "-m", "mlm", "-s", "0.5", "--model", tiny_bert, "-o",
                  "kd_data=sections", "--dry-run")  # fmt: skip
    assert refused.code == 2 and "kd_data=sections" in refused.err and "mlm" in refused.err
