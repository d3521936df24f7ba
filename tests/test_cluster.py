"""docs/usage.md's cluster examples, run as written on two local processes: the SLURM array
script (each task a `tamt sweep --shard K/N`) and the `--print-commands` lines handed to GNU
parallel, here to its stand-in `xargs -P 2` (GNU parallel need not be installed). Each ends with
every cell of the sweep done."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny import write_sst2

ROOT = Path(__file__).resolve().parents[1]
#: what the docs say takes GNU parallel's place, with the test's two processes
XARGS = "xargs -d '\\n' -P 4 -I{} bash -c {}"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the examples are bash")


def block(containing: str) -> str:
    """The ```bash block of docs/usage.md that holds ``containing``."""
    text = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    found = [b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if containing in b]
    assert len(found) == 1, f"docs/usage.md has {len(found)} bash blocks with {containing!r}"
    return found[0]


@pytest.fixture
def cluster(tmp_path, tiny_bert, corpus):
    """A folder holding grid.yaml (omp and random at 0.5, held-out kd loss, one SST-2 seed: six
    cells in two groups) and the environment the examples run in: `tamt` on the PATH."""
    sst2 = write_sst2(tmp_path / "SST-2", train=16, dev=8)
    grid = {
        "model": str(tiny_bert),
        "methods": ["omp", "random"],
        "sparsities": [0.5],
        "dense": False,
        "tasks": ["sst2"],
        "seeds": [1],
        "finetune": {"epochs": 1, "batch_size": 8, "max_length": 24},
        "data": {"sst2": str(sst2)},
        "heldout": {"objective": "kd", "corpus": str(corpus), "max_length": 16, "eval_blocks": 4},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tamt"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tamt_cli "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "TAMT_NO_PROGRESS": "1"}  # fmt: skip
    return tmp_path, env


def statuses(folder: Path, env: dict[str, str]) -> list[str]:
    listed = subprocess.run(
        ["tamt", "sweep", "grid.yaml", "--out", "sweeps/grid", "--dry-run", "--json"],
        cwd=folder, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [cell["status"] for cell in json.loads(listed.stdout)]


def index(folder: Path) -> list[str]:
    cells = json.loads((folder / "sweeps/grid/sweep.json").read_text())["cells"]
    return [cell["status"] for cell in cells]


def test_the_slurm_array_script_runs_the_sweep_in_shards(cluster):
    folder, env = cluster
    script = block("#SBATCH --array")
    assert '--shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"' in script
    (folder / "sweep.sbatch").write_text(script)
    tasks = [
        subprocess.Popen(
            ["bash", "sweep.sbatch"],
            cwd=folder,
            env={**env, "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    for k, task in enumerate(tasks, 1):
        out, err = task.communicate(timeout=600)
        assert task.returncode == 0, err
        assert out.startswith(f"sweep complete (shard {k}/2): 3 cells"), out
    assert statuses(folder, env) == ["done"] * 6
    assert index(folder) == ["done"] * 6


def test_the_print_commands_lines_run_through_parallel_or_xargs(cluster):
    folder, env = cluster
    script = block("--print-commands")
    assert "parallel -j 4" in script
    text = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    assert f"`{XARGS}` in place of `parallel -j 4`" in text
    lines = script.strip().splitlines()
    assert lines[-1] == "tamt sweep grid.yaml --out sweeps/grid"
    cells = "\n".join(lines[:-1]).replace("parallel -j 4", XARGS.replace("-P 4", "-P 2"))
    ran = subprocess.run(["bash", "-c", cells], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    lines_run = (folder / "cells.txt").read_text().splitlines()
    assert len(lines_run) == 6 and [line.split()[1] for line in lines_run[:2]] == ["search"] * 2
    assert statuses(folder, env) == ["done"] * 6  # every cell ran from its printed line
    assert json.loads((folder / "sweeps/grid/heldout-omp-s0.5-kd.json").read_text())["loss"] > 0
    last = subprocess.run(["bash", "-c", lines[-1]], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert last.returncode == 0, last.stderr
    assert last.stdout.startswith("sweep complete: 6 cells")
    assert index(folder) == ["done"] * 6
