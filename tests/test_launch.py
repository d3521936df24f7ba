"""The `tamt` entry point: glibc's malloc settings for the process, arguments and exit codes
passed through the one ``exec``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tamt_cli import allocator

GLIBC = "glibc 2.36"


def test_the_settings_are_added_to_a_plain_environment():
    env = allocator.allocator_env({"PATH": "/bin"}, GLIBC)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": allocator.TUNABLES}


def test_other_tunables_are_kept_and_ours_appended():
    env = allocator.allocator_env({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, GLIBC)
    assert env is not None
    assert env["GLIBC_TUNABLES"] == f"glibc.cpu.hwcaps=-AVX2:{allocator.TUNABLES}"


@pytest.mark.parametrize(
    "environ, libc",
    [
        ({}, None),  # not glibc: musl, macOS, Windows
        ({"TAMT_MALLOC": "system"}, GLIBC),
        ({"TAMT_MALLOC": "SYSTEM"}, GLIBC),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC),  # the user's own malloc settings
        ({"GLIBC_TUNABLES": allocator.TUNABLES}, GLIBC),  # the process already restarted once
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, GLIBC),
        ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, GLIBC),
        ({"_TAMT_COMPLETE": "complete_bash"}, GLIBC),  # shell completion: answer at once
    ],
)
def test_left_alone(environ, libc):
    assert allocator.allocator_env(environ, libc) is None


def _tamt(args: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TAMT_MALLOC")}
    return subprocess.run(
        [sys.executable, "-m", "tamt_cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(allocator.glibc() is None, reason="needs glibc")
def test_the_command_runs_with_the_settings_and_says_so():
    proc = _tamt(["env", "--no-hub", "--json"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["allocator"]["glibc_tunables"] == allocator.TUNABLES
    proc = _tamt(["env", "--no-hub", "--json"], TAMT_MALLOC="system")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["allocator"]["glibc_tunables"] is None


def test_arguments_and_the_exit_code_pass_through(tmp_path):
    out = tmp_path / "run"
    proc = _tamt(["search", "--method", "omp", "--sparsity", "1.5", "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    assert "sparsity" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
