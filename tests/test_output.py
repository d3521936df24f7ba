"""What a training run tells: plain progress lines in logs, -q/-v, library verbosity, and
experiment trackers (TensorBoard, read back with its own event reader)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from tamt_cli import engine, progress, trackers, verbosity
from tests.tiny import write_sst2


def search_args(tiny_bert, corpus, *extra):
    return [
        "search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
        "--max-length", "16", "--batch-size", "4", "--max-steps", "6", "--lr", "0.01",
        "--log-every", "2", "--eval-every", "3", *extra,
    ]  # fmt: skip


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def test_training_logs_plain_full_lines_and_tensorboard_events(cli, tiny_bert, corpus):
    """stderr is not a terminal here: one full line per --log-every steps and per evaluation;
    the metrics rows and the spec reach TensorBoard in the run directory."""
    res = cli(*search_args(tiny_bert, corpus, "--out", "run", "--report-to", "tensorboard"))
    assert res.code == 0, res.err
    lines = [line for line in res.err.splitlines() if " step " in line]
    steps = [int(re.search(r" step (\d+)/6 ", line)[1]) for line in lines]  # type: ignore[index]
    assert steps == [2, 3, 4, 6, 6], lines  # logged at 2, 4, 6; evaluated at 3, 6
    logged = [line for line in lines if "  loss " in line]
    assert len(logged) == 3
    for line in logged:
        for part in ("loss ", "sparsity ", "lr ", " s  ETA "):
            assert part in line, line
    assert "eval_loss" in logged[1] and "eval_loss" not in logged[0]
    assert max(len(line) for line in lines) > 80  # never cut to a terminal's width
    assert not any(line.startswith(" ") or "━" in line for line in res.err.splitlines())

    run = Path("run")
    metrics = rows(run / "metrics.jsonl")
    events = scalars(run)
    assert sorted(events["loss"]) == [
        (r["step"], pytest.approx(r["loss"], rel=1e-5)) for r in metrics if "loss" in r
    ]
    assert [s for s, _ in sorted(events["eval_loss"])] == [3, 6]
    assert [s for s, _ in sorted(events["sparsity"])] == [2, 4, 6]
    hparams = next(run.rglob("hparams.yml")).read_text()
    assert "method: kd" in hparams and "max_steps: 6" in hparams


def test_finetune_seeds_are_tracker_runs_of_their_own(cli, tiny_bert, tmp_path):
    sst2 = write_sst2(tmp_path / "SST-2", train=8, dev=4)
    res = cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", sst2, "--max-length", "24",
              "--batch-size", "4", "--epochs", "1", "--seeds", "1,2", "--out", "ft",
              "--report-to", "tensorboard", "--json")  # fmt: skip
    assert res.code == 0, res.err
    for seed in (1, 2):
        folder = Path(f"ft/seed-{seed}")
        events = scalars(folder)
        metrics = rows(folder / "metrics.jsonl")
        accuracy = [
            (r["step"], r["validation/accuracy"]) for r in metrics if "validation/accuracy" in r
        ]
        assert events["validation/accuracy"] == [(s, pytest.approx(v)) for s, v in accuracy]
        assert f"seed: {seed}" in next(folder.rglob("hparams.yml")).read_text()


def test_tracker_choices_are_checked_before_anything_runs(cli, tiny_bert, corpus, monkeypatch):
    res = cli(*search_args(tiny_bert, corpus, "--out", "run", "--report-to", "tensorbord"))
    assert res.code == 2 and "report_to" in res.err and "tensorboard" in res.err
    assert "\n" not in res.err.strip()
    from accelerate import tracking

    monkeypatch.setattr(tracking, "_available_trackers", [])  # as if none were installed
    res = cli(*search_args(tiny_bert, corpus, "--out", "run", "--report-to", "tensorboard"))
    assert res.code == 2, res.err
    assert res.err.strip() == (
        "tamt: error: --report-to tensorboard: the tensorboard package is not installed "
        "(pip install tensorboard)"
    )
    assert not Path("run").exists()
    assert trackers.installed_trackers(["all"]) == []  # all: those installed, here none
    assert trackers.installed_trackers(["none"]) == []


def test_quiet_prints_the_result_only_and_verbose_adds_debug_lines(cli, tiny_bert, tmp_path):
    sst2 = write_sst2(tmp_path / "SST-2", train=8, dev=4)
    small = ["--task", "sst2", "--data-dir", sst2, "--max-length", "24", "--batch-size", "4"]
    res = cli("-q", "finetune", tiny_bert, *small, "--out", "q", "--json")
    assert res.code == 0 and res.err == ""
    assert res.json()["out"] == "q"
    res = cli("--verbose", "finetune", tiny_bert, *small, "--out", "v", "--epochs", "1")
    assert res.code == 0, res.err
    assert "debug: engine: 1 process(es) on cpu" in res.err
    assert " step 2/2 " in res.err
    res = cli("-q", "-v", "plugins")
    assert res.code == 2 and "not both" in res.err


@pytest.mark.parametrize(
    ("value", "terminal", "mode"),
    [("", True, "bar"), ("0", True, "bar"), ("false", True, "bar"), ("1", True, "lines"),
     ("yes", True, "lines"), ("0", False, "lines")],
)  # fmt: skip
def test_tamt_no_progress_is_a_yes_no_variable(monkeypatch, value, terminal, mode):
    monkeypatch.setenv("TAMT_NO_PROGRESS", value)
    console = Console(file=io.StringIO(), force_terminal=terminal)
    loop = engine.Loop(max_steps=4, batch_size=2)
    assert progress.Progress(console, loop, 0, enabled=True).mode == mode
    assert progress.Progress(Console(file=io.StringIO(), quiet=True), loop, 0, True).mode is None


@pytest.mark.parametrize(
    ("value", "yes"),
    [("", False), ("0", False), ("off", False), ("No", False), ("maybe", False), ("1", True),
     ("TRUE", True), (" yes ", True), ("on", True)],
)  # fmt: skip
def test_every_yes_no_variable_is_read_the_same_way(monkeypatch, value, yes):
    from tamt_cli import hub, registry

    for name in ("TAMT_NO_PROGRESS", "TAMT_STRICT_PLUGINS", *hub.OFFLINE_VARS):
        monkeypatch.setenv(name, value)
    assert verbosity.flag("TAMT_NO_PROGRESS") is yes
    assert registry.strict() is yes
    assert hub.offline() is yes


def test_plain_lines_carry_the_time_left():
    out = io.StringIO()
    console = Console(file=out, width=40)
    loop = engine.Loop(max_steps=100, batch_size=2, description="a long description of a loop")
    shown = progress.Progress(console, loop, 50, enabled=True)
    shown.t0 -= 10.0  # 10 s for 25 steps: 10 s for the 25 left
    shown.line(75, {"loss": 0.5, "sparsity": 0.7, "lr": 1e-3, "seconds": 10.0})
    line = out.getvalue()
    assert line.count("\n") == 1, line  # one line, although longer than the console
    assert line.startswith("a long description of a loop  step 75/100  loss 0.5000  sparsity")
    assert "lr 0.0010" in line and line.rstrip().endswith("ETA 0:10")


def test_a_users_transformers_verbosity_is_respected(monkeypatch):
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    try:
        verbosity.set_level(verbosity.NORMAL)
        monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
        hf_logging.set_verbosity_warning()
        with verbosity.quiet_libraries():
            assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert hf_logging.get_verbosity() == hf_logging.WARNING
        monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
        hf_logging.set_verbosity_info()
        with verbosity.quiet_libraries():
            assert hf_logging.get_verbosity() == hf_logging.INFO
        monkeypatch.delenv("TRANSFORMERS_VERBOSITY")
        verbosity.set_level(verbosity.VERBOSE)
        hf_logging.set_verbosity_warning()
        with verbosity.quiet_libraries():  # -v: the libraries' warnings are shown
            assert hf_logging.get_verbosity() == hf_logging.WARNING
    finally:
        verbosity.set_level(verbosity.NORMAL)
        hf_logging.set_verbosity(before)


def test_quiet_silences_the_libraries_progress_bars(cli, tiny_bert):
    """transformers draws a bar as it writes a checkpoint (an export): none under -q, in this
    process (transformers imported already) and in a fresh one (imported after -q); the next
    command of the process finds the bars as they were."""
    import subprocess
    import sys

    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    res = cli("-q", "extract", "run", "--export", "sub")
    assert res.code == 0 and res.err == "", res.err
    assert Path("sub/config.json").is_file()
    assert cli("plugins").code == 0
    assert hf_logging.is_progress_bar_enabled() == before
    assert all(name not in os.environ for name in verbosity.BAR_VARIABLES)
    fresh = subprocess.run(
        [sys.executable, "-m", "tamt_cli", "-q", "extract", "run", "--export", "sub2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert fresh.returncode == 0 and fresh.stderr == "", fresh.stderr
    assert Path("sub2/config.json").is_file()


def test_the_progress_line_says_which_mask_its_loss_is_for():
    """A search's held-out loss is the mask in training's (its sparsity beside it), not the
    final exact-sparsity mask's: the line says so; the metrics log keeps ``eval_loss``."""
    out = io.StringIO()
    loop = engine.Loop(max_steps=10, batch_size=2, description="kd mask training")
    shown = progress.Progress(Console(file=out), loop, 0, enabled=True)
    shown.note(5, eval_loss=0.25)
    shown.line(6, {"loss": 0.5, "sparsity": 0.69, "lr": 1e-3, "seconds": 1.0})
    first, second = out.getvalue().splitlines()
    assert "  eval_loss (training mask) 0.2500  " in first
    assert "sparsity 0.6900" in second and "eval_loss (training mask) 0.2500" in second
