"""`tamt finetune` at the Hugging Face Trainer's parity: an interrupted run resumes and ends
bit for bit as an uninterrupted one, gradient accumulation, warm-up, per-example predictions."""

# ruff: noqa: F811  (the fixtures of test_finetune, imported, are the tests' parameters)

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tamt_cli import finetune
from tests.test_finetune import one_line, small, squad, sst2, stsb  # noqa: F401

os.environ["TAMT_NO_PROGRESS"] = "1"

pytestmark = pytest.mark.usefixtures("one_thread")

#: 12 steps a seed (2 epochs of 48 / 8), evaluated every 3, a checkpoint every 3 (two kept)
EVERY_3 = ("--eval-every", "3", "--save-every", "3", "--keep-checkpoints", "2")


def args(omp: Path, data: Path, *extra: object) -> list[object]:
    return ["finetune", omp, "--task", "sst2", "--data-dir", data, *small(*EVERY_3),
            "--seeds", "1,2", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, omp_run, sst2) -> Path:
    """The uninterrupted run every resumed one must equal."""
    from tamt_cli.cli import main

    out = tmp_path_factory.mktemp("full") / "full"
    assert main([str(a) for a in args(omp_run, sst2, "--out", out, "--json")]) == 0
    return out


def interrupt_after(monkeypatch, calls: int) -> None:
    """Stop fine-tuning with ``KeyboardInterrupt`` (as Ctrl-C would) after the ``calls``-th
    optimiser step from now, counted over the seeds; :func:`run_normally` undoes it."""
    done = [0]

    def crash(self, step: int) -> None:
        done[0] += 1
        if done[0] == calls:
            raise KeyboardInterrupt

    monkeypatch.setattr(finetune.Tracker, "after_step", crash)


def run_normally(monkeypatch) -> None:
    from tamt_cli.engine import Hooks

    monkeypatch.setattr(finetune.Tracker, "after_step", Hooks.after_step)


def log_rows(folder: Path) -> list[dict]:
    """The metrics log without its wall-clock times (the only figures that differ)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def assert_same_run(run: Path, full: Path, seeds: tuple[int, ...] = (1, 2)) -> None:
    for seed in seeds:
        mine, theirs = run / f"seed-{seed}", full / f"seed-{seed}"
        assert log_rows(mine) == log_rows(theirs), seed
        ours, ref = (json.loads((f / "metrics.json").read_text()) for f in (mine, theirs))
        for key in ("best", "final", "evaluations"):
            assert ours[key] == ref[key], (seed, key)
        assert (mine / "predictions.jsonl").read_bytes() == (
            theirs / "predictions.jsonl"
        ).read_bytes()
        weights, expected = (
            load_file(mine / "model.safetensors"),
            load_file(theirs / "model.safetensors"),
        )
        assert set(weights) == set(expected)
        assert all(torch.equal(weights[k], expected[k]) for k in weights), seed
        assert not (mine / "checkpoints").exists()  # a finished seed drops its checkpoints
    summary, reference = (json.loads((r / "summary.json").read_text()) for r in (run, full))
    assert summary["best"] == reference["best"] and summary["final"] == reference["final"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["members"] == ["seed-1", "seed-2"]
    assert "completed" not in manifest and not (run / ".tamt.lock").exists()


def test_an_interrupted_run_resumes_bit_for_bit(cli, omp_run, sst2, full_run, monkeypatch):
    # interrupted in seed 1 at step 4: its checkpoint of step 3 is kept
    interrupt_after(monkeypatch, 4)
    res = cli(*args(omp_run, sst2, "--out", "part"))
    assert res.code == 130
    assert res.err.strip().splitlines()[-1] == (
        "tamt: error: interrupted; resume with: tamt finetune --resume part"
    )
    assert [p.name for p in Path("part/seed-1/checkpoints").iterdir()] == ["step-000003"]
    manifest = json.loads(Path("part/manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["members"] == []
    one_line(cli(*args(omp_run, sst2, "--out", "part")), "already exists",
             "or continue it with: tamt finetune --resume part")  # fmt: skip
    one_line(cli("eval", "part", "--task", "sst2", "--data-dir", sst2), "is not complete",
             "tamt finetune --resume part")  # fmt: skip
    one_line(cli("finetune", "--resume", "part", "--lr", "0.1"),
             "--resume: the run was started with lr=0.001, not 0.1")  # fmt: skip
    one_line(cli("finetune", "--resume", "part", "--grad-accum", "2"), "grad_accum=1, not 2")
    # resumed, then interrupted again in seed 2 at step 8 (seed 1: steps 4 to 12 = 9 steps)
    interrupt_after(monkeypatch, 9 + 8)
    res = cli("finetune", "--resume", "part")
    assert res.code == 130, res.err
    assert "seed 1: resuming from step 3" in res.err
    assert sorted(p.name for p in Path("part/seed-2/checkpoints").iterdir()) == [
        "step-000003",
        "step-000006",
    ]  # --keep-checkpoints 2
    assert not Path("part/seed-1/checkpoints").exists()
    assert json.loads(Path("part/manifest.json").read_text())["members"] == ["seed-1"]
    run_normally(monkeypatch)
    res = cli("finetune", "--resume", "part", "--json")
    assert res.code == 0, res.err
    assert "seed 1: fine-tuned before; kept" in res.err
    assert "seed 2: resuming from step 6" in res.err
    assert res.json()["best"] == json.loads((full_run / "summary.json").read_text())["best"]
    assert_same_run(Path("part"), full_run)
    one_line(cli("finetune", "--resume", "part"), "already complete", "nothing to resume")
    res = cli("eval", "part/seed-2", "--task", "sst2", "--data-dir", sst2, "--json")
    assert res.code == 0, res.err


def test_a_seed_interrupted_before_its_first_checkpoint_starts_again(
    cli,
    omp_run,
    sst2,
    full_run,
    monkeypatch,
):
    interrupt_after(monkeypatch, 12 + 2)  # seed 1 done, seed 2 at step 2
    res = cli(*args(omp_run, sst2, "--out", "part"))
    assert res.code == 130 and "tamt finetune --resume part" in res.err
    assert not Path("part/seed-2/checkpoints").exists()
    weights = Path("part/seed-1/model.safetensors")
    written = weights.stat().st_mtime_ns
    run_normally(monkeypatch)
    res = cli("finetune", "--resume", "part")
    assert res.code == 0, res.err
    assert weights.stat().st_mtime_ns == written  # the finished seed is not trained again
    assert_same_run(Path("part"), full_run)


KILLED = """
import os, sys
from tamt_cli import finetune
from tamt_cli.cli import main
steps = [0]
def after_step(self, step):
    steps[0] += 1
    if steps[0] == {calls}:
        os._exit(9)  # as kill -9: no handler runs
finetune.Tracker.after_step = after_step
sys.exit(main({argv!r}))
"""


def test_a_killed_run_resumes_bit_for_bit(cli, omp_run, sst2, full_run):
    import subprocess
    import sys

    argv = [str(a) for a in args(omp_run, sst2, "--out", "part")]
    code = KILLED.format(calls=12 + 4, argv=argv)  # seed 1 done, seed 2 killed at step 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=600)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    manifest = json.loads(Path("part/manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["members"] == ["seed-1"]
    assert [p.name for p in Path("part/seed-2/checkpoints").iterdir()] == ["step-000003"]
    res = cli("finetune", "--resume", "part")
    assert res.code == 0, res.err
    assert_same_run(Path("part"), full_run)


def test_interrupted_before_any_checkpoint_nothing_is_kept(cli, omp_run, sst2, monkeypatch):
    interrupt_after(monkeypatch, 2)
    res = cli(*args(omp_run, sst2, "--out", "part"))
    assert res.code == 130
    assert "interrupted before the first checkpoint; nothing was kept" in res.err
    assert not Path("part").exists()
    one_line(cli("finetune", "--resume", "part"), "part")


def test_resume_refuses_changed_data(cli, omp_run, sst2, tmp_path, monkeypatch):
    data = tmp_path / "SST-2"
    shutil.copytree(sst2, data)
    interrupt_after(monkeypatch, 4)
    assert cli(*args(omp_run, data, "--out", "part")).code == 130
    run_normally(monkeypatch)
    with (data / "dev.tsv").open("a") as fh:
        fh.write("the cat sat\t1\n")
    one_line(cli("finetune", "--resume", "part"), "the validation data have changed")


def test_resume_refuses_a_changed_subnetwork(cli, tiny_bert, omp_run, sst2, monkeypatch):
    shutil.copy(omp_run / "masks.safetensors", "m.safetensors")
    interrupt_after(monkeypatch, 4)
    ft = ["finetune", "m.safetensors", "--model", tiny_bert, "--task", "sst2", "--data-dir", sst2,
          *small(*EVERY_3), "--out", "part"]  # fmt: skip
    assert cli(*ft).code == 130
    run_normally(monkeypatch)
    recorded = json.loads(Path("part/manifest.json").read_text())["inputs"]["encoder_sha256"]
    assert cli("search", "-m", "random", "-s", "0.5", "--model", tiny_bert, "--out", "r").code == 0
    shutil.copy("r/masks.safetensors", "m.safetensors")
    one_line(cli("finetune", "--resume", "part"), "the subnetwork's weights or mask have changed")
    shutil.copy(omp_run / "masks.safetensors", "m.safetensors")
    res = cli("finetune", "--resume", "part", "--json")
    assert res.code == 0, res.err
    assert (
        json.loads(Path("part/manifest.json").read_text())["inputs"]["encoder_sha256"] == recorded
    )


# -- gradient accumulation and warm-up --------------------------------------------------------


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory, tiny_bert) -> Path:
    """The tiny BERT without dropout: a step's loss depends on its examples only."""
    out = tmp_path_factory.mktemp("no-dropout") / "bert"
    shutil.copytree(tiny_bert, out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


def step_losses(monkeypatch) -> list[float]:
    """The loss of every optimiser step (the mean over its micro-batches) from now on, as it
    trains."""
    from tamt_cli.engine import Engine

    losses: list[float] = []
    backward = _BACKWARD.setdefault("original", Engine._backward)

    def watched(self, *a, **kw):
        total = backward(self, *a, **kw)
        losses.append(float(total))
        return total

    monkeypatch.setattr(Engine, "_backward", watched)
    return losses


_BACKWARD: dict = {}


def test_grad_accum_gives_the_loss_curve_of_whole_batches(cli, no_dropout_bert, sst2, monkeypatch):
    base = ["finetune", no_dropout_bert, "--task", "sst2", "--data-dir", sst2, *small()]
    whole = step_losses(monkeypatch)
    assert cli(*base, "--out", "whole").code == 0
    halves = step_losses(monkeypatch)
    res = cli(*base, "--grad-accum", "2", "--out", "halves", "--json")
    assert res.code == 0, res.err
    assert len(whole) == len(halves) == 12
    assert halves == pytest.approx(whole, rel=1e-5, abs=1e-6)
    assert whole[0] != pytest.approx(whole[-1], rel=1e-3)  # it trains
    one, two = (load_file(Path(run, "seed-1/model.safetensors")) for run in ("whole", "halves"))
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-5), name
    manifest = json.loads(Path("halves/seed-1/manifest.json").read_text())
    assert manifest["hyperparameters"]["grad_accum"] == 2
    assert manifest["hyperparameters"]["eval_batch_size"] == 4  # a micro-batch
    one_line(cli(*base, "--grad-accum", "3", "--out", "bad"), "--batch-size 8",
             "must be a multiple of")  # fmt: skip
    assert not Path("bad").exists()


def test_warmup_ratio_rises_to_the_lr_then_decays(cli, omp_run, sst2):
    from tamt_cli.engine import linear_schedule

    assert [finetune.warmup_steps(r, 10) for r in (0.0, 0.1, 0.25, 0.3)] == [0, 1, 3, 3]
    assert finetune.warmup_steps(0.1, 12) == 2
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    scheduler = linear_schedule(optimizer, 12, finetune.warmup_steps(0.1, 12))
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert lrs[12] == 0.0 and lrs[7] == pytest.approx(1e-3 * 5 / 10)
    # a run: ⌈0.5 × 12⌉ = 6 steps of warm-up; after step 10 the lr is 2/6 of the peak
    res = cli("finetune", omp_run, "--task", "sst2", "--data-dir", sst2, *small(),
              "--warmup-ratio", "0.5", "--out", "ft", "--json")  # fmt: skip
    assert res.code == 0, res.err
    hyper = json.loads(Path("ft/seed-1/manifest.json").read_text())["hyperparameters"]
    assert hyper["warmup_steps"] == 6 and hyper["optimizer"]["warmup_ratio"] == 0.5
    rows = {r["step"]: r for r in log_rows(Path("ft/seed-1")) if "lr" in r}
    assert rows[10]["lr"] == pytest.approx(1e-3 * 2 / 6)
    plan = cli("finetune", omp_run, "--task", "sst2", "--data-dir", sst2, "--train-size", "40",
               "--batch-size", "8", "--warmup-ratio", "0.1", "--dry-run", "--json")  # fmt: skip
    assert plan.json()["resolved"]["warmup_steps"] == 2  # ⌈0.1 × 15⌉
    default = cli("finetune", omp_run, "--task", "sst2", "--dry-run", "--json").json()
    assert default["warmup_ratio"] == 0.0 and default["resolved"]["warmup_steps"] == 0
    one_line(cli("finetune", omp_run, "--task", "sst2", "--warmup-ratio", "1"), "warmup_ratio")


# -- predictions ----------------------------------------------------------------------------


def test_predictions_of_a_classification_task(full_run, sst2):
    with (sst2 / "dev.tsv").open() as fh:
        gold = [int(row["label"]) for row in csv.DictReader(fh, delimiter="\t")]
    for seed in (1, 2):
        folder = full_run / f"seed-{seed}"
        rows = [
            json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()
        ]
        assert [r["id"] for r in rows] == list(range(24))
        assert [r["label"] for r in rows] == gold
        assert all(
            set(r) == {"id", "label", "prediction"} and r["prediction"] in (0, 1) for r in rows
        )
        final = json.loads((folder / "metrics.json").read_text())["final"]
        right = sum(r["label"] == r["prediction"] for r in rows)
        assert final["metrics"]["validation"]["accuracy"] == pytest.approx(100 * right / 24)


def test_predictions_of_a_regression_task(cli, tiny_bert, stsb):
    from scipy.stats import pearsonr

    res = cli("finetune", tiny_bert, "--task", "stsb", "--data-dir", stsb, "--out", "ft",
              *small(), "--json")  # fmt: skip
    assert res.code == 0, res.err
    rows = [
        json.loads(line) for line in Path("ft/seed-1/predictions.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 12 and all(isinstance(r["prediction"], float) for r in rows)
    pearson = 100 * pearsonr([r["label"] for r in rows], [r["prediction"] for r in rows])[0]
    final = res.json()["runs"][0]["final"]["metrics"]["validation"]["pearson"]
    assert pearson == pytest.approx(final, abs=1e-3)


def test_predictions_of_squad_are_answer_texts(cli, omp_run, squad):
    res = cli("finetune", omp_run, "--task", "squad", "--data-dir", squad, "--out", "ft",
              "--max-length", "32", "--doc-stride", "8", "--batch-size", "4", "--epochs", "1",
              "--lr", "1e-3", "--json")  # fmt: skip
    assert res.code == 0, res.err
    rows = [
        json.loads(line) for line in Path("ft/seed-1/predictions.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(5)]
    assert rows[0]["answers"] == ["the cat"]
    assert all(set(r) == {"id", "answers", "prediction"} and isinstance(r["prediction"], str)
               for r in rows)  # fmt: skip
    from tamt_cli.tasks.metrics import exact_match

    em = 100 * sum(exact_match(r["prediction"], r["answers"][0]) for r in rows) / 5
    assert em == pytest.approx(res.json()["final"]["validation"]["exact_match"]["mean"])


def test_a_sweep_resumes_its_interrupted_fine_tuning(cli, tmp_path, tiny_bert, sst2, monkeypatch):
    import yaml

    grid = {
        "model": str(tiny_bert),
        "methods": ["omp"],
        "sparsities": [0.5],
        "tasks": ["sst2"],
        "seeds": [1],
        "dense": False,
        "heldout": None,
        "finetune": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "max_length": 24, "save_every": 2},
        "data": {"sst2": str(sst2)},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    interrupt_after(monkeypatch, 3)  # 6 steps; a checkpoint at step 2
    assert cli("sweep", path, "--out", "out").code == 130
    run = "out/finetune/sst2-omp-s0.5-seed1"
    assert json.loads(Path(run, "manifest.json").read_text())["status"] == "running"
    listed = cli("sweep", path, "--out", "out", "--dry-run", "--json").json()
    assert [(c["kind"], c["status"]) for c in listed] == [
        ("search", "done"),
        ("finetune", "partial"),
    ]
    assert cli("sweep", path, "--out", "out", "--print-commands").out.strip() == (
        f"tamt finetune --resume {run}"
    )
    run_normally(monkeypatch)
    assert cli("sweep", path, "--out", "out").code == 0
    assert json.loads(Path(run, "manifest.json").read_text())["status"] == "complete"
    assert not Path(run, "seed-1/checkpoints").exists()
    assert [r["step"] for r in log_rows(Path(run, "seed-1")) if "loss" in r] == [6]
