"""benchmarks/device_check.py: the GPU check runs end to end on the CPU (``--smoke``), so that it
works the day a GPU is lent; its report has every section, with figures or the reason there are
none."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The check with --smoke, as a user runs it: (report, stdout)."""
    folder = tmp_path_factory.mktemp("device-check")
    out = folder / "check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--budget", "900"],
        capture_output=True, text=True, cwd=folder, env=env, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_training_rows(smoke, script):
    report, _ = smoke
    rows = report["training"]
    shapes = [tuple(s) for s in report["settings"]["shapes"]]
    expected = {
        (m, b, n, p, w)
        for m in report["settings"]["models"]
        for b, n in shapes
        for p in ("fp32", "bf16", "fp16")
        for w in ("dense-mlm", "mlm", "kd", "finetune")
    }
    assert {(r["model"], r["batch"], r["length"], r["precision"], r["workload"]) for r in rows} == (
        expected
    )
    assert len(rows) == len(expected)
    for r in rows:
        if r["precision"] == "fp16":  # no CUDA here
            assert r["status"] == "skipped" and "CUDA" in r["reason"], r
            continue
        if r["precision"] == "bf16" and r["status"] != "ok":  # a CPU without bf16 autocast
            assert r["status"] == "skipped" and r["reason"], r
            continue
        assert r["status"] == "ok", r
        assert r["losses_finite"] is True
        assert r["timed_steps"] >= 1 and r["warmup_steps"] >= 1
        assert positive(r["steps_per_s"]) and positive(r["step_seconds_median"])
        tokens = r["steps_per_s"] * r["batch"] * r["length"]
        assert r["tokens_per_s"] == pytest.approx(tokens)
        assert r["peak_bytes"] is None  # measured on CUDA only
    assert report["memory"] == [] and "CUDA" in report["memory_note"]


def test_p5(smoke):
    report, _ = smoke
    rows = {(r["model"], r["batch"], r["length"], r["precision"], r["workload"]): r
            for r in report["training"]}  # fmt: skip
    fp32 = [r for r in report["p5"] if r["precision"] == "fp32"]
    assert {r["objective"] for r in fp32} == {"mlm", "kd"}
    assert len(fp32) == 2 * len(report["settings"]["shapes"]) * len(report["settings"]["models"])
    for r in fp32:
        key = (r["model"], r["batch"], r["length"], "fp32")
        mask, dense = rows[(*key, r["objective"])], rows[(*key, "dense-mlm")]
        assert positive(r["p5"])
        assert r["p5"] == pytest.approx(mask["tokens_per_s"] / dense["tokens_per_s"])
    skipped = [r for r in report["p5"] if r["precision"] == "fp16"]
    assert skipped and all(r["p5"] is None and r["reason"] for r in skipped)


def test_p7(smoke):
    report, _ = smoke
    p7 = report["p7"]
    assert p7["ticket"]["status"] == "ok" and p7["ticket"]["exit_code"] == 0
    grid = p7["grid"]
    assert grid["status"] == "ok"
    settings = report["settings"]
    assert {(r["batch"], r["length"]) for r in grid["rows"]} == {
        (b, n) for b in settings["bench_batches"] for n in settings["bench_lengths"]
    }
    for r in grid["rows"]:
        assert r["status"] == "ok", r
        assert positive(r["dense_ms"]) and positive(r["masked_ms"])
        assert r["dense_q1_ms"] <= r["dense_ms"] <= r["dense_q3_ms"]
        assert positive(r["masked_vs_dense_max_abs_diff"])  # half the weights are zeros
        assert r["sparse_ms"] is None and "2:4" in r["sparse_reason"]  # no CUDA here
    cli = p7["cli"]
    assert cli["status"] == "ok" and cli["exit_code"] == 0
    assert [r["name"] for r in cli["rows"]][:2] == ["dense", "masked"]
    assert all(positive(r["median_ms"]) for r in cli["rows"])
    assert any("2:4" in note for note in cli["notes"])


def test_command_line_checks(smoke):
    report, _ = smoke
    steps = report["settings"]["cli_steps"]
    search, extract, finetune = (report["cli"][k] for k in ("search", "extract", "finetune"))
    assert search["status"] == "ok" and search["exit_code"] == 0
    assert "--mixed-precision bf16" in search["command"] and "-m kd" in search["command"]
    assert search["steps"] == steps and search["losses_finite"] is True
    assert positive(search["loss_last"]) and positive(search["eval_loss"])
    assert extract["status"] == "ok" and extract["mask_exact"] is True
    assert extract["sparsity"] == extract["target"] == 0.5 and extract["matrices"] > 0
    assert finetune["status"] == "ok" and "--mixed-precision bf16" in finetune["command"]
    assert finetune["steps"] == steps and finetune["losses_finite"] is True
    assert finetune["mask_sparsity"] == 0.5 and 0 <= finetune["accuracy"] <= 100


def test_report_and_table(smoke):
    report, stdout = smoke
    env = report["environment"]
    assert report["mode"] == "smoke" and report["schema"] == 1
    assert env["device"] and env["torch"] and env["transformers"] and env["tamt"]
    assert set(report["sections"]) == {"cli", "bench", "training"}
    assert 0 < report["seconds"] <= report["budget_s"] + 60
    for title in ("Training through tamt's loop", "P5:", "P7:", "tamt bench, the command: ok",
                  "tamt search: ok", "tamt extract: ok", "tamt finetune: ok"):  # fmt: skip
        assert title in stdout


def test_entry_points_for_a_checkout(tmp_path, script):
    """Run from a checkout that is not installed, the commands find tamt's methods and tasks
    through a distribution record made from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    site = script.declare_entry_points(tmp_path / "site")
    (dist,) = distributions(path=[str(site)])
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert dist.metadata["Name"] == declared["name"] and dist.version == declared["version"]
    found = {(ep.group, ep.name, ep.value) for ep in dist.entry_points}
    expected = {
        (group, name, target)
        for group, table in declared["entry-points"].items()
        for name, target in table.items()
    }
    assert found == expected


def test_bad_arguments(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sections", "cli,gpu", "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown gpu" in proc.stderr
    assert not (tmp_path / "x.json").exists()
