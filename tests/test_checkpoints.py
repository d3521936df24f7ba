"""Checkpoints of every common layout (MLM head without pooler, pre-training heads, no pooling
layer, RoBERTa, DistilBERT) go through the whole pipeline: weights a checkpoint lacks are
never masked or hashed, and every load gives the same model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tamt_cli import maskfile, masking, models
from tests.test_finetune import sst2  # noqa: F401  (the tiny SST-2 fixture)
from tests.tiny import interrupt_mask_training, make_mlm_checkpoint

os.environ["TAMT_NO_PROGRESS"] = "1"

#: layout → the prunable weights its checkpoint lacks
LAYOUTS = {
    "bert-mlm": ["pooler.dense.weight"],
    "bert-pretraining": [],
    "bert-nopooler": ["pooler.dense.weight"],  # saved without one; AutoModel builds one
    "roberta-mlm": ["pooler.dense.weight"],
    "distilbert-mlm": [],  # DistilBERT has no pooler at all
}


#: the layouts that also train (the others differ from these only in what loading sees)
TRAINED = ["bert-mlm", "roberta-mlm", "distilbert-mlm"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in made:
            made[layout] = make_mlm_checkpoint(tmp_path_factory.mktemp(layout), layout)
        return made[layout]

    return get


@pytest.fixture(params=list(LAYOUTS))
def checkpoint(request, saved) -> tuple[str, Path]:
    return request.param, saved(request.param)


@pytest.fixture(params=TRAINED)
def mlm_checkpoint(request, saved) -> tuple[str, Path]:
    return request.param, saved(request.param)


def train(model, corpus, method, out, *extra):
    return [
        "search", "-m", method, "-s", "0.5", "--model", model, "--corpus", corpus,
        "--max-length", "16", "--batch-size", "4", "--lr", "0.01", "--out", out, *extra,
    ]  # fmt: skip


def test_loading_is_stable_and_absent_weights_are_known(checkpoint):
    layout, path = checkpoint
    ref = models.resolve(str(path))
    a, b = models.load_encoder(ref), models.load_encoder(ref)
    assert models.weights_hash(a) == models.weights_hash(b)
    assert masking.absent_weights(a) == LAYOUTS[layout]
    names = {p.name for p in masking.prunable_weights(a)}
    assert not names & set(LAYOUTS[layout])
    assert any(n.endswith(".weight") and "layer.1." in n for n in names)
    # the hash ignores what the checkpoint lacked, and sees everything it holds
    if LAYOUTS[layout]:
        with torch.no_grad():
            a.pooler.dense.weight.add_(1.0)
        assert models.weights_hash(a) == models.weights_hash(b)
    with torch.no_grad():
        masking.prunable_weights(a)[0].weight.mul_(0.5)
    assert models.weights_hash(a) != models.weights_hash(b)


def test_no_load_report_reaches_the_user(cli, checkpoint):
    _, path = checkpoint
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", path, "--out", "o")
    assert res.code == 0, res.err
    for word in ("UNEXPECTED", "MISSING", "LOAD REPORT", "newly initialized"):
        assert word not in res.err + res.out


def test_one_shot_pipeline(cli, checkpoint, sst2):  # noqa: F811
    layout, path = checkpoint
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", path, "--out", "o", "--json")
    assert res.code == 0, res.err
    report = res.json()["report"]
    assert sorted(report["not_prunable"]) == LAYOUTS[layout]
    assert report["overall"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    masks = maskfile.load_masks(Path("o/masks.safetensors"))
    assert not set(masks) & set(LAYOUTS[layout])
    assert cli("extract", "o", "--export", "sub").code == 0
    with safe_open("sub/model.safetensors", "pt") as fh:
        saved = set(fh.keys())
    for name in LAYOUTS[layout]:  # what the checkpoint lacked stays out of the export
        assert name not in saved and name.replace(".weight", ".bias") not in saved
    q = next(iter(masks))
    with safe_open("sub/model.safetensors", "pt") as fh:
        assert torch.all(fh.get_tensor(q)[~masks[q]] == 0)
    common = ("--task", "sst2", "--data-dir", sst2, "--epochs", "1", "--batch-size", "8",
              "--max-length", "32")  # fmt: skip
    for subject, out in (("o", "ft-run"), ("sub", "ft-sub")):
        res = cli("finetune", subject, *common, "--out", out, "--json")
        assert res.code == 0, res.err
        assert res.json()["mask_sparsity"] == pytest.approx(0.5, abs=1e-3)
    # the task's cadence (every 50 steps) on a 6-step run: one evaluation, at the end
    seed = json.loads(Path("ft-run/seed-1/manifest.json").read_text())
    assert seed["hyperparameters"]["eval_every"] == 50 and seed["hyperparameters"]["steps"] == 6
    evaluations = json.loads(Path("ft-run/seed-1/metrics.json").read_text())["evaluations"]
    assert [e["step"] for e in evaluations] == [6]
    res = cli("eval", "ft-run", "--task", "sst2", "--data-dir", sst2, "--json")
    assert res.code == 0, res.err
    assert 0.0 <= res.json()["metrics"]["accuracy"] <= 100.0
    assert res.json()["mask_sparsity"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("method", ["kd", "mlm", "imp"])
def test_training_methods_run_and_resume(cli, mlm_checkpoint, corpus, method, monkeypatch):
    layout, path = mlm_checkpoint
    steps = ["--max-steps", "4"] if method != "imp" else ["-o", "steps_per_round=2"]
    args = (*steps, "--save-every", "2", "--head-warmup-steps", "2")
    res = cli(*train(path, corpus, method, "full", *args))
    assert res.code == 0, res.err
    masks = maskfile.load_masks(Path("full/masks.safetensors"))
    assert not set(masks) & set(LAYOUTS[layout])
    assert all(int((~m).sum()) == m.numel() // 2 for m in masks.values())
    if method == "kd":  # an interrupted run resumes on the same model and ends the same
        resume_normally = interrupt_mask_training(monkeypatch, 3)
        assert cli(*train(path, corpus, method, "part", *args)).code == 130
        resume_normally()
        res = cli("search", "--resume", "part")
        assert res.code == 0, res.err
        again = maskfile.load_masks(Path("part/masks.safetensors"))
        assert all(torch.equal(masks[k], again[k]) for k in masks)
    manifest = json.loads(Path("full/manifest.json").read_text())
    assert manifest["status"] == "complete"
    res = cli("extract", "full", "--export", "sub")
    assert res.code == 0, res.err
