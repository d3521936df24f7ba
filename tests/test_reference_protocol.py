"""`--budget paper` against the authors' code (github.com/llyx97/TAMT; below, ``MT/`` is its
``mask_training/`` and ``IF/`` its ``imp_and_fine_tune/``): the BertAdam update, the KD
threshold-reset steps, the teacher's dropout, and every value the dry run shows, pinned to the
reference's."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from tamt_cli import maskfile, masking, objectives
from tamt_cli.methods import _common, mask_training
from tests.tiny import interrupt_mask_training

os.environ["TAMT_NO_PROGRESS"] = "1"


# -- BertAdam ---------------------------------------------------------------------------------


def bertadam_by_hand(p, g, lr, decay, eps=1e-6, max_norm=1.0):
    """One step from zero moments, written out: the gradient clipped to ``max_norm`` alone,
    m = 0.1·g, v = 0.001·g², p ← p − lr·(m / (√v + eps) + decay·p) (no bias correction)."""
    norm = math.sqrt(sum(x * x for x in g))
    scale = min(1.0, max_norm / (norm + 1e-6))
    out = []
    for x, gx in zip(p, g, strict=True):
        gx *= scale
        m, v = 0.1 * gx, 0.001 * gx * gx
        out.append(x - lr * (m / (math.sqrt(v) + eps) + decay * x))
    return out


def test_one_bertadam_step_is_the_hand_computed_update():
    matrix = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
    vector = torch.nn.Parameter(torch.tensor([0.3, -0.1]))
    matrix.grad = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norm 5: clipped to 1 on its own
    vector.grad = torch.tensor([1e-7, -2e-7])  # below eps; the global norm (5) must not touch it
    opt = _common.optimizer([matrix, vector], 0.1, [], None, kind="bertadam", clip=1.0)
    assert isinstance(opt, _common.BertAdam)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # matrices decay
    opt.step()
    want_matrix = bertadam_by_hand([1.0, -2.0, 0.5, 0.0], [3.0, 4.0, 0.0, 0.0], 0.1, 0.01)
    want_vector = bertadam_by_hand([0.3, -0.1], [1e-7, -2e-7], 0.1, 0.0)
    assert matrix.detach().flatten().tolist() == pytest.approx(want_matrix, rel=1e-5)
    assert vector.detach().tolist() == pytest.approx(want_vector, rel=1e-5)
    # without bias correction the first step of a large gradient is √1000 ≈ 3.2 lr (AdamW: lr),
    # and a gradient below eps moves its parameter by a small fraction of the lr
    first = 0.1 * (0.1 / math.sqrt(0.001) + 0.01)
    assert 1.0 - float(matrix.detach()[0, 0]) == pytest.approx(first, 1e-4)
    assert abs(0.3 - float(vector.detach()[0])) < 0.01 * 0.1


def test_bertadam_without_decay_or_clip_and_a_second_step():
    p = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
    opt = _common.BertAdam([p], lr=0.01, weight_decay=0.0, max_grad_norm=0.0)
    g1, g2 = [30.0, -40.0], [1.0, 2.0]  # unclipped: the norm 50 goes in whole
    p.grad = torch.tensor(g1)
    opt.step()
    p.grad = torch.tensor(g2)
    opt.step()
    want = []
    for x, a, b in zip([2.0, -1.0], g1, g2, strict=True):
        m, v = 0.1 * a, 0.001 * a * a
        x -= 0.01 * m / (math.sqrt(v) + 1e-6)
        m, v = 0.9 * m + 0.1 * b, 0.999 * v + 0.001 * b * b
        want.append(x - 0.01 * m / (math.sqrt(v) + 1e-6))
    assert p.detach().tolist() == pytest.approx(want, rel=1e-6)


def test_bertadam_follows_the_lr_schedule_and_its_state_reloads():
    from tamt_cli.engine import linear_schedule

    def run(steps, reload_after=None):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(3, 4))
        opt = _common.optimizer([p], 0.1, [], None, kind="bertadam", clip=1.0)
        sched = linear_schedule(opt, 4)
        for step in range(steps):
            if step == reload_after:
                state, sched_state = opt.state_dict(), sched.state_dict()
                opt = _common.optimizer([p], 0.1, [], None, kind="bertadam", clip=1.0)
                sched = linear_schedule(opt, 4)
                opt.load_state_dict(state)
                sched.load_state_dict(sched_state)
            p.grad = torch.sin(torch.arange(12.0).reshape(3, 4) * (step + 1))
            assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (4 - step) / 4)
            opt.step()
            sched.step()
        return p.detach()

    assert torch.equal(run(3), run(3, reload_after=2))


def test_the_optimisers_match_what_the_dry_run_says_they_are():
    shown = mask_training.OPTIMIZERS
    adamw = _common.optimizer([torch.nn.Parameter(torch.ones(2, 2))], 0.1, [], None)
    assert isinstance(adamw, torch.optim.AdamW)
    group = adamw.param_groups[0]
    assert (group["eps"], group["weight_decay"]) == (shown["adamw"]["eps"], 0.0)
    assert shown["adamw"]["weight_decay"] == 0.0 and shown["adamw"]["bias_correction"]
    bert = shown["bertadam"]
    assert bert["eps"] == _common.BertAdam.EPS and _common.BertAdam.WEIGHT_DECAY == 0.01
    assert bert["weight_decay"] == 0.01 and not bert["bias_correction"]
    # the head's parameters: the transform's matrix decays, its biases and LayerNorm do not
    head = [torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))]
    opt = _common.optimizer([torch.nn.Parameter(torch.ones(2, 2))], 0.1, head, 0.5, "bertadam")
    groups = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    assert groups == [(0.1, 0.01, 1), (0.5, 0.01, 1), (0.5, 0.0, 1)]


# -- threshold resets -------------------------------------------------------------------------


def test_reset_steps_of_each_schedule():
    def steps(every, schedule, last):
        return [s for s in range(1, last + 1) if mask_training.resets_after(s, every, schedule)]

    # MT/train_kd.py:1082,1126: after step 1, then where (step + 1) % 100 == 0
    assert steps(100, "reference", 400) == [1, 99, 199, 299, 399]
    assert steps(100, "even", 400) == [100, 200, 300, 400]
    assert steps(4, "reference", 12) == [1, 3, 7, 11]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("schedule", "resets"), [("reference", [1, 3, 7]), ("even", [4, 8])])
def test_a_run_resets_thresholds_after_the_schedules_steps(
    cli, tiny_bert, corpus, monkeypatch, schedule, resets
):
    seen: list[int | None] = []
    step: list[int | None] = [None]
    after = mask_training._Hooks.after_step
    reset = masking.reset_thresholds

    def tracked_after(self, done):
        step[0] = done
        after(self, done)
        step[0] = None

    def tracked_reset(*args, **kwargs):
        seen.append(step[0])
        return reset(*args, **kwargs)

    monkeypatch.setattr(mask_training._Hooks, "after_step", tracked_after)
    monkeypatch.setattr(masking, "reset_thresholds", tracked_reset)
    res = cli(
        "search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
        "--max-length", "16", "--batch-size", "4", "--max-steps", "8", "--out", "run",
        "-o", "reset_every=4", "-o", f"reset_schedule={schedule}",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert seen == [*resets, None]  # None: the reset before the final mask is saved
    notes = json.loads(Path("run/manifest.json").read_text())["notes"]
    assert notes["reset_schedule"] == schedule


# -- the teacher's dropout --------------------------------------------------------------------


@pytest.mark.parametrize("dropout", [False, True])
def test_teacher_dropout(tiny_bert, dropout):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_bert))
    weights = masking.prunable_weights(model)
    masking.attach_masks(weights, masking.masks_from_scores(masking.magnitude_scores(weights), 0.5))
    module = objectives.PretrainingLoss(model, weights, "kd", teacher_dropout=dropout).train()
    ids = torch.randint(5, 120, (2, 10), generator=torch.Generator().manual_seed(1))
    first, second = module.teacher_states(ids, None), module.teacher_states(ids, None)
    same = all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert same is not dropout  # dropout on: two calls on the same input differ
    assert model.training  # the student's mode is left as it was
    module.eval()  # held-out figures: never dropout
    first, second = module.teacher_states(ids, None), module.teacher_states(ids, None)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with masking.masks_disabled(weights), torch.no_grad():
        dense = model.eval()(input_ids=ids, output_hidden_states=True).hidden_states[1:]
    assert all(torch.equal(a, b) for a, b in zip(first, dense, strict=True))


def test_teacher_dropout_needs_a_teacher(cli, tiny_bert):
    res = cli(
        "search", "-m", "mlm", "-s", "0.5", "--model", tiny_bert, "-o", "teacher_dropout=true",
        "--dry-run",
    )  # fmt: skip
    assert res.code == 2 and "teacher_dropout=true is for the objectives with a teacher" in res.err


# -- a run with the reference's optimiser, schedule and teacher -------------------------------


@pytest.mark.usefixtures("one_thread")
def test_reference_options_resume_to_the_same_mask(cli, tiny_bert, corpus, monkeypatch):
    reference = [
        "-o", "optimizer=bertadam", "-o", "reset_schedule=reference", "-o", "teacher_dropout=true",
    ]  # fmt: skip

    def args(out, *options):
        return [
            "search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
            "--max-length", "16", "--batch-size", "4", "--max-steps", "8", "--lr", "0.01",
            "--save-every", "4", "--seed", "3", "--out", out, "-o", "reset_every=3", *options,
        ]  # fmt: skip

    assert cli(*args("full", *reference)).code == 0
    resume_normally = interrupt_mask_training(monkeypatch, 6)
    assert cli(*args("part", *reference)).code == 130
    resume_normally()
    res = cli("search", "--resume", "part")
    assert res.code == 0, res.err
    a = maskfile.load_masks(Path("full/masks.safetensors"))
    b = maskfile.load_masks(Path("part/masks.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    notes = json.loads(Path("full/manifest.json").read_text())["notes"]
    assert (notes["optimizer"], notes["eps"], notes["weight_decay"]) == ("bertadam", 1e-6, 0.01)
    assert (notes["teacher_dropout"], notes["clip"]) == (True, "1 (each tensor on its own)")
    assert cli(*args("adamw")).code == 0
    notes = json.loads(Path("adamw/manifest.json").read_text())["notes"]
    assert (notes["optimizer"], notes["clip"]) == ("adamw", "1 (global norm)")
    c = maskfile.load_masks(Path("adamw/masks.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the optimiser changes the training


# -- `--budget paper` against the reference ---------------------------------------------------

#: The reference's values, each with where it is set (the authors' repository). ``max_steps``
#: per sparsity are the masks its fine-tuning scripts load.
REFERENCE = {
    "kd": {
        "lr": 2e-5,  # MT/train_kd.py:591 (MT/shell_scripts/train_kd/bert/0.7.sh sets none)
        "max_steps": {
            0.5: 10999,  # IF/shell_scripts/run_glue/train_kd/main_result/bert/mnli/0.5.sh:7
            0.7: 16999,  # IF/shell_scripts/run_glue/train_kd/main_result/bert/mnli/0.7.sh:7
            0.9: 21999,  # IF/shell_scripts/run_glue/train_kd/main_result/bert/mnli/0.9.sh:7
        },
        "batch_size": 16,  # MT/shell_scripts/train_kd/bert/0.7.sh:18
        "max_length": 512,  # MT/shell_scripts/train_kd/bert/0.7.sh:4,22
        "init": "magnitude",  # MT/shell_scripts/train_kd/bert/0.7.sh:14
        "scores": "binary",  # MT/masking/maskers.py:175-176 (2τ kept, 0 pruned)
        "tau": 0.01,  # MT/train_kd.py:641
        "reset_every": 100,  # MT/shell_scripts/train_kd/bert/0.7.sh:20 (--eval_step)
        "reset_schedule": "reference",  # MT/train_kd.py:1082,1126
        "reset_steps": "1, 99, 199, ...",  # MT/train_kd.py:1082
        "optimizer": "bertadam",  # MT/train_kd.py:901
        "eps": 1e-6,  # MT/transformer/optimization.py:209 (e=1e-6)
        "weight_decay": 0.01,  # MT/train_kd.py:898 (the flag --weight_decay, :594, is unused)
        "bias_correction": False,  # MT/transformer/optimization.py:335-338
        "clip": "1 (each tensor on its own)",  # MT/transformer/optimization.py:209,308-309
        "teacher_dropout": True,  # MT/train_kd.py:858,943 (never put in eval mode)
        # a document section a sequence, two segments, padded, the padding in the loss:
        # MT/pregenerate_training_data.py:215-299, MT/train_kd.py:70-72 (CosineLoss, plain mean)
        "kd_data": "sections",
        # t_total of the schedule: 2 epochs of the pregenerated data (MT/train_kd.py:828,
        # MT/shell_scripts/train_kd/bert/0.7.sh:19); their size is not in the code: ~30k steps
        "decay_steps": 30000,
    },
    "mlm": {
        "lr": 5e-5,  # MT/hg_transformers/training_args.py:68 (the script sets none)
        "max_steps": {
            0.5: 11000,  # IF/shell_scripts/run_glue/train_mlm/main_result/bert/mnli/0.5.sh:6
            0.7: 17000,  # IF/shell_scripts/run_glue/train_mlm/main_result/bert/mnli/0.7.sh:6
            0.9: 22000,  # IF/shell_scripts/run_glue/train_mlm/main_result/bert/mnli/0.9.sh:6
        },
        "batch_size": 16,  # MT/shell_scripts/train_mlm/bert/0.7.sh:22
        "max_length": 512,  # MT/shell_scripts/train_mlm/bert/0.7.sh:6,29
        "init": "magnitude",  # MT/shell_scripts/train_mlm/bert/0.7.sh:27
        "scores": "binary",  # MT/masking/maskers.py:175-176
        "tau": 0.01,  # MT/train_mlm.py:239
        "reset_every": 1000,  # MT/shell_scripts/train_mlm/bert/0.7.sh:25 (logging_steps)
        "reset_schedule": "even",  # MT/hg_transformers/mask_trainer_mlm.py:595,615
        "reset_steps": "1000, 2000, 3000, ...",  # MT/hg_transformers/mask_trainer_mlm.py:595
        "optimizer": "adamw",  # MT/train_mlm.py:393 (MT/optimization.py:8)
        "eps": 1e-8,  # MT/hg_transformers/training_args.py:70
        "weight_decay": 0.0,  # MT/hg_transformers/training_args.py:69
        "bias_correction": True,  # MT/optimization.py:33 (correct_bias=True), :110-113
        "clip": "1 (global norm)",  # MT/hg_transformers/mask_trainer_mlm.py:580
        "teacher_dropout": False,  # no teacher (MT/train_mlm.py:536)
        "kd_data": "blocks",  # the MLM trainer reads contiguous text (MT/train_mlm.py)
        # 2 epochs of WikiText-103 (MT/train_mlm.py:394-397, train_mlm/bert/0.7.sh:24): ~30k
        "decay_steps": 30000,
    },
}


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("method", ["kd", "mlm"])
def test_budget_paper_is_the_reference(cli, tiny_bert, method, sparsity):
    res = cli(
        "search", "-m", method, "-s", sparsity, "--model", tiny_bert, "--budget", "paper",
        "--dry-run", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    spec = res.json()
    want = dict(REFERENCE[method])
    want["max_steps"] = want["max_steps"][sparsity]
    for key in ("lr", "max_steps", "batch_size", "max_length"):
        assert spec[key] == want.pop(key), key
    resolved = spec["resolved"]
    assert resolved["max_steps"] == spec["max_steps"] and resolved["lr"] == spec["lr"]
    assert {k: resolved[k] for k in want} == want


@pytest.mark.parametrize("method", ["kd", "mlm", "mlm-kd"])
@pytest.mark.parametrize("budget", ["default", "paper"])
def test_the_dry_run_shows_every_option_with_the_value_used(cli, tiny_bert, method, budget):
    res = cli(
        "search", "-m", method, "-s", "0.7", "--model", tiny_bert, "--budget", budget,
        "--dry-run", "--json",
    )  # fmt: skip
    resolved = res.json()["resolved"]
    for name in mask_training.MaskTrainingOptions.model_fields:
        assert resolved.get(name) is not None, name
    assert resolved["reset_every"] == (100 if budget == "default" or method == "kd" else 1000)
    assert resolved["scores"] == ("graded" if budget == "default" else "binary")
    text = cli("search", "-m", method, "-s", "0.7", "--model", tiny_bert, "--dry-run").out
    assert "scores: graded" in text and "optimizer: adamw" in text


def test_plugins_shows_the_defaults_the_method_fills_in(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    doc = cli("plugins", "--kind", "method", "kd", "--json").json()
    options = {o["name"]: o for o in doc["options"]}
    assert options["reset_every"]["default"] is None  # the model's: filled in by the method
    assert options["reset_every"]["effective_default"] == "100"
    assert options["decay_steps"]["effective_default"] == "max-steps"
    assert "effective_default" not in options["tau"]
    table = " ".join(cli("plugins", "kd").out.split())
    assert "int | none, > 0, ≤ 1,000,000,000 100 (the method's)" in table
