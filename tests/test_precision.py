"""`--mixed-precision auto`: what it picks on each kind of machine, that a run records the
precision it used (not the word auto), and that --dry-run says what auto resolves to here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import tamt_cli as tamt
from tamt_cli import environment, precision, specs, sweep
from tamt_cli.errors import UserError
from tamt_cli.specs import SearchSpec
from tests.tiny import write_sst2

os.environ["TAMT_NO_PROGRESS"] = "1"

pytestmark = pytest.mark.usefixtures("one_thread")


def _machine(monkeypatch, *, cuda: bool, cuda_bf16: bool = False, amx=False, avx512_bf16=False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ({"cuda": True, "cuda_bf16": True}, ("bf16", "(a CUDA GPU with bfloat16)")),
        ({"cuda": True, "amx": True}, ("fp16", "(a CUDA GPU without bfloat16)")),
        ({"cuda": False, "amx": True, "avx512_bf16": True}, ("bf16", "(a CPU with AMX)")),
        ({"cuda": False, "avx512_bf16": True}, ("bf16", "(a CPU with AVX-512 BF16)")),
        ({"cuda": False}, ("no", "(a CPU without bfloat16 arithmetic)")),
    ],
)
def test_auto_picks_bf16_where_the_machine_has_bfloat16_arithmetic(monkeypatch, machine, expected):
    _machine(monkeypatch, **machine)
    assert precision.auto_precision() == expected
    assert precision.resolve("auto") == expected[0]
    assert precision.resolve("fp16") == "fp16" and precision.resolve("no") == "no"


def test_a_cpu_whose_probe_is_missing_or_fails_counts_as_without(monkeypatch):
    _machine(monkeypatch, cuda=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)

    def broken() -> bool:
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert precision.auto_precision()[0] == "no"


def test_runs_record_the_precision_auto_chose(tmp_path, monkeypatch, tiny_bert, corpus):
    """A search and a fine-tuning run with auto record the precision they ran with, so that
    their spec reproduces them on another machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(precision, "auto_precision", lambda: ("bf16", "(test)"))
    kd = {"method": "kd", "sparsity": 0.5, "max_length": 16, "batch_size": 4, "max_steps": 2}
    run = tamt.search(model=str(tiny_bert), corpus=corpus, mixed_precision="auto", out="s", **kd)
    assert yaml.safe_load((run.run / "spec.yaml").read_text())["mixed_precision"] == "bf16"

    monkeypatch.setattr(precision, "auto_precision", lambda: ("no", "(test)"))
    sst2 = write_sst2(tmp_path / "SST-2")
    tamt.finetune(
        run, task="sst2", data_dir=sst2, seeds=[1], out="ft", quiet=True, mixed_precision="auto",
        max_length=24, batch_size=8, epochs=1,
    )  # fmt: skip
    saved = json.loads(Path("ft/manifest.json").read_text())
    assert saved["hyperparameters"]["mixed_precision"] == "no"
    assert yaml.safe_load(Path("ft/spec.yaml").read_text())["mixed_precision"] == "no"


def test_dry_run_says_what_auto_resolves_to_here(tmp_path, tiny_bert, corpus):
    here = " ".join(precision.auto_precision())
    for args in (
        ["search", "-m", "kd", "-s", "0.5", "--model", str(tiny_bert), "--corpus", str(corpus)],
        ["finetune", str(tiny_bert), "--task", "sst2", "--train-size", "10"],
    ):
        cmd = [sys.executable, "-m", "tamt_cli", *args, "--mixed-precision", "auto", "--dry-run"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "mixed_precision: auto" in proc.stdout
        assert f"#   mixed_precision: {here}" in proc.stdout


def test_env_says_what_auto_resolves_to(monkeypatch):
    monkeypatch.setattr(precision, "auto_precision", lambda: ("bf16", "(a CPU with AMX)"))
    assert environment.accelerators()["mixed_precision_auto"] == "bf16 (a CPU with AMX)"


def test_resume_and_sweeps_compare_auto_as_what_it_resolves_to(tmp_path, monkeypatch):
    """A run started with auto saved the precision it used: resuming it with auto, or a sweep
    whose grid says auto, agrees with that run as long as auto resolves to the same here."""
    saved = SearchSpec(method="kd", sparsity=0.5, mixed_precision="bf16")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(saved.model_dump(mode="json")))
    asked = SearchSpec(method="kd", sparsity=0.5, mixed_precision="auto")

    monkeypatch.setattr(precision, "auto_precision", lambda: ("bf16", "(test)"))
    resumed = specs.resumed(SearchSpec, tmp_path, path, None, {"mixed_precision": "auto"})
    assert resumed.mixed_precision == "bf16"
    assert sweep.comparable(asked) == sweep.comparable(saved)

    monkeypatch.setattr(precision, "auto_precision", lambda: ("no", "(test)"))
    with pytest.raises(UserError, match="mixed_precision='bf16', not 'no'"):
        specs.resumed(SearchSpec, tmp_path, path, None, {"mixed_precision": "auto"})
    assert sweep.comparable(asked)["mixed_precision"] == "no"
