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

    from tamt_cli.artifacts import load_masks

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
