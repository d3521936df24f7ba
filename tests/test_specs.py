"""Run specs: files in three formats, flags win, unknown fields named, errors one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("run.yaml", "method: random\nsparsity: 0.6\nseed: 7\nscope: global\n"),
        ("run.json", '{"method": "random", "sparsity": 0.6, "seed": 7, "scope": "global"}'),
        ("run.toml", 'method = "random"\nsparsity = 0.6\nseed = 7\nscope = "global"\n'),
    ],
)
def test_spec_file_formats_and_flags_win(cli, tmp_path, name, text):
    spec = tmp_path / name
    spec.write_text(text)
    res = cli("search", "--spec", spec, "--dry-run", "--json")
    assert res.code == 0, res.err
    got = res.json()
    assert (got["method"], got["sparsity"], got["seed"], got["scope"]) == (
        "random",
        0.6,
        7,
        "global",
    )
    res = cli("search", "--spec", spec, "--seed", "9", "-s", "0.8", "--dry-run", "--json")
    got = res.json()
    assert (got["sparsity"], got["seed"], got["scope"]) == (0.8, 9, "global")


def test_dry_run_prints_resolved_yaml_and_writes_nothing(cli, tmp_path):
    res = cli("search", "-m", "omp", "-s", "0.7", "--dry-run")
    assert res.code == 0, res.err
    spec = yaml.safe_load(res.out)
    assert spec["method"] == "omp"
    assert spec["model"] == "bert-base-uncased"
    assert spec["out"].startswith("runs/omp-s0.7-")
    assert not (tmp_path / "runs").exists()


def test_saved_spec_repeats_the_run(cli, tiny_bert, tmp_path):
    res = cli(
        "search", "-m", "random", "-s", "0.4", "--seed", "5", "--model", tiny_bert, "--out", "a"
    )
    assert res.code == 0, res.err
    res = cli("search", "--spec", "a/spec.yaml", "--out", "b")
    assert res.code == 0, res.err
    import torch

    from tamt_cli.maskfile import load_masks

    a, b = load_masks(Path("a/masks.safetensors")), load_masks(Path("b/masks.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: omp\nsparsty: 0.7\n", "unknown field 'sparsty'; did you mean 'sparsity'?"),
        ("method: omp\nsparsity: abc\n", "sparsity: Input should be a valid number"),
        ("method: omp\nsparsity: 2\n", "sparsity: must be strictly between 0 and 1"),
        ("method: omp\nscope: everywhere\n", "scope: Input should be 'local' or 'global'"),
        ("- a\n- b\n", "must hold a mapping"),
        ("method: [omp\n", "is not valid YAML"),
    ],
)
def test_bad_spec_files(cli, tmp_path, text, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    res = cli("search", "--spec", spec, "--dry-run")
    assert res.code == 2
    assert message in res.err
    assert res.err.count("\n") == 1
    assert "Traceback" not in res.err


def test_missing_and_unsupported_spec_files(cli, tmp_path):
    res = cli("search", "--spec", tmp_path / "nope.yaml", "--dry-run")
    assert res.code == 2
    assert "spec file" in res.err and "does not exist" in res.err
    other = tmp_path / "run.ini"
    other.write_text("[x]\n")
    res = cli("search", "--spec", other, "--dry-run")
    assert res.code == 2
    assert ".yaml, .yml, .json or .toml" in res.err
    bad_json = tmp_path / "run.json"
    bad_json.write_text("{method: omp")
    res = cli("search", "--spec", bad_json, "--dry-run")
    assert res.code == 2 and "is not valid JSON" in res.err


def test_every_command_has_a_spec(cli, tmp_path):
    spec = tmp_path / "ft.yaml"
    spec.write_text(json.dumps({"subnetwork": "subnet", "task": "sst2", "seeds": [1, 2, 3]}))
    res = cli("finetune", "--spec", spec, "--lr", "3e-5", "--dry-run", "--json")
    assert res.code == 0, res.err
    assert res.json()["seeds"] == [1, 2, 3] and res.json()["lr"] == 3e-5
    res = cli("finetune", "subnet", "--task", "sst2", "--seeds", "1,x", "--dry-run")
    assert res.code == 2 and "--seeds" in res.err
    res = cli("eval", "ckpt", "--objective", "kd", "--dry-run", "--json")
    assert res.code == 0 and res.json()["objective"] == "kd"
    res = cli("eval", "ckpt", "--dry-run")
    assert res.code == 2 and "--task" in res.err


# -- --dry-run shows the values a method or task resolves, not null ------------------------------


def test_dry_run_resolves_mask_training_values(cli):
    res = cli("search", "-m", "mlm", "-s", "0.7", "--max-steps", "300", "--dry-run", "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["lr"] is None and out["head_warmup_steps"] is None  # the spec stays as given
    resolved = out["resolved"]
    assert resolved["max_steps"] == 300 and resolved["lr"] == 5e-5
    intervals = (resolved["reset_every"], resolved["eval_every"], resolved["save_every"])
    assert intervals == (100, 30, 30)
    assert resolved["head_warmup_steps"] == 300 and resolved["head_warmup_lr"] == 1e-3
    assert "5e-05 for a pre-trained head" in resolved["head_lr"]
    res = cli("search", "-m", "kd", "-s", "0.7", "--head-lr", "0", "--dry-run", "--json")
    resolved = res.json()["resolved"]
    assert resolved["lr"] == 2e-4 and resolved["max_steps"] == 1000 and "head_lr" not in resolved
    res = cli("search", "-m", "kd", "-s", "0.7", "--lr", "3e-4", "--dry-run", "--json")
    assert res.json()["resolved"]["lr"] == 3e-4
    res = cli("search", "-m", "mlm", "-s", "0.7", "--dry-run")
    assert "resolved:" in res.out and "reset_every: 100" in res.out


def test_dry_run_resolves_imp_rounds(cli):
    res = cli("search", "-m", "imp", "-s", "0.3", "--steps-per-round", "40", "--schedule",
              "round", "--no-rewind", "--dry-run", "--json")  # fmt: skip
    assert res.code == 0, res.err
    resolved = res.json()["resolved"]
    assert resolved["round_sparsities"] == [0.1, 0.2, 0.3] and resolved["max_steps"] == 80
    assert (resolved["lr"], resolved["schedule"], resolved["rewind"]) == (5e-5, "round", False)
    assert (resolved["eval_every"], resolved["save_every"]) == (40, 8)


@pytest.mark.parametrize(
    ("task", "train_size", "eval_every", "steps"),
    [("sst2", 640, 50, 60), ("sst2", 64_000, 120, 6000), ("mnli", 64_000, 500, 6000)],
)
def test_dry_run_resolves_the_evaluation_cadence(cli, task, train_size, eval_every, steps):
    res = cli("finetune", "sub", "--task", task, "--train-size", train_size, "--dry-run", "--json")
    assert res.code == 0, res.err
    resolved = res.json()["resolved"]
    assert (resolved["eval_every"], resolved["steps"]) == (eval_every, steps)
    assert resolved["lr"] == 2e-5 and resolved["batch_size"] == 32
    res = cli("finetune", "sub", "--task", "squad", "--dry-run", "--json")
    assert res.json()["resolved"]["eval_every"].startswith("1000, or ⌈steps / 50⌉")


def test_eval_interval_follows_the_task_and_caps_the_count():
    from tamt_cli.tasks.base import eval_interval

    assert eval_interval(None, 50, 100) == 50
    assert eval_interval(None, 50, 2500) == 50  # exactly 50 evaluations
    assert eval_interval(None, 50, 2501) == 51
    assert eval_interval(7, 50, 10_000) == 7  # given: used as it is
