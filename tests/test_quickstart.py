"""The README's blocks are what runs: CI runs its set-up, test and plugin blocks (checked here to
exist, with the lines CI swaps), and this test runs its quickstart as written, in a shell, on a
tiny model, a tiny corpus and a tiny SST-2 folder given through the variables the block reads."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.readme import block, replace
from tests.tiny import write_sst2

ROOT = Path(__file__).resolve().parents[1]


def tamt_on_path(folder: Path) -> Path:
    """A folder holding a ``tamt`` command that runs this checkout's tamt with this Python
    (what the installed ``tamt`` script does: ``python -m tamt_cli``)."""
    folder.mkdir()
    script = folder / "tamt"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tamt_cli "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def test_the_readme_quickstart_runs_as_written(tmp_path, tiny_bert, corpus):
    text = block("quickstart")
    for default in ("MODEL:-demo", "CORPUS:-demo", "SST2:-SST-2", "STEPS:-200", "TRAIN:-1000"):
        assert "${" + default + "}" in text  # what a user runs when no variable is set
    sst2 = write_sst2(tmp_path / "SST-2", train=40, dev=16)
    bin_dir = tamt_on_path(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MODEL": str(tiny_bert),
        "CORPUS": str(corpus),
        "SST2": str(sst2),
        "STEPS": "4",
        "TRAIN": "32",
        "TAMT_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
    }
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for m in ("kd", "omp"):
        assert (work / "runs" / m / "masks.safetensors").is_file()
        assert (work / "tickets" / m / "config.json").is_file()
        summary = json.loads((work / "ft" / m / "summary.json").read_text())
        assert summary, m
        heldout = json.loads((work / f"heldout-{m}.json").read_text())
        assert heldout["objective"] == "kd" and heldout["loss"] >= 0
    # the last command's output, `tamt report`'s table (boxed or Markdown): a row per ticket
    cells = [line.replace("|", " ").split() for line in proc.stdout.splitlines()]
    methods = {row[1] for row in cells if len(row) > 2 and row[0] == "sst2"}
    assert methods == {"kd", "omp"}, proc.stdout


def test_ci_runs_the_readme_set_up_test_and_plugin_blocks():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for name in ("setup", "test", "plugins"):
        assert block(name).strip() and f"$(readme {name}" in ci
    swapped = (
        "python3 -m venv .venv && . .venv/bin/activate",
        "pip install torch --index-url https://download.pytorch.org/whl/cpu",
    )
    for line in swapped:  # CI swaps each, and the README holds each exactly once
        assert f"'{line}'" in ci
        assert line not in replace(block("setup"), line, "swapped")
    assert "python -m pytest -q" in block("test")
    assert "pip install ./plugins/tamt-movement ./plugins/tamt-textclf" in block("plugins")
