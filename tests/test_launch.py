"""The `tamt` entry point: glibc's malloc settings for the commands that train, arguments and
exit codes passed through the one ``exec``, and a Ctrl-C during it reported as any other."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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
def test_env_says_the_settings_the_commands_that_train_run_with():
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


@pytest.mark.parametrize(
    "args, pays",
    [
        (["search", "--method", "kd", "--sparsity", "0.5"], True),
        (["-q", "search", "-mkd", "-s", "0.5"], True),
        (["search", "--method=imp"], True),
        (["search", "--method", "movement"], True),  # a plugin's method: trains, or may
        (["search", "--spec", "run.yaml"], True),  # the file names the method
        (["search", "--resume", "runs/kd"], True),
        (["search", "--method", "omp", "--sparsity", "0.5"], False),
        (["-v", "search", "-m", "random", "--like", "mask.npz"], False),
        (["search", "--method=omp", "--spec", "run.yaml"], False),  # the flag wins over the file
        (["search", "-m", "kd", "--method", "omp"], False),  # the last one given wins
        (["search", "--method", "kd", "--dry-run"], False),
        (["search", "--method", "kd", "--help"], False),
        (["finetune", "runs/omp", "--task", "sst2"], True),
        (["finetune", "--spec", "ft.yaml", "--dry-run"], False),
        (["sweep", "grid.yaml"], True),
        (["sweep", "grid.yaml", "--print-commands"], False),
        (["sweep", "grid.yaml", "--dry-run"], False),
        (["eval", "runs/kd", "--objective", "mlm"], True),
        (["eval", "runs/kd", "--objective=kd"], True),
        (["eval", "--spec", "eval.yaml"], True),  # the file may ask for --objective
        (["eval", "--spec", "eval.yaml", "--task", "sst2"], False),
        (["eval", "ft/seed-0", "--task", "sst2"], False),
        (["bench", "runs/omp"], False),
        (["extract", "runs/kd", "--export", "out"], False),
        (["report", "runs"], False),
        (["plugins"], False),
        (["env"], False),
        (["cache", "clear"], False),
        (["--version"], False),
        (["--version", "search", "-m", "kd"], False),
        (["--help"], False),
        (["-q"], False),
        ([], False),
        (["--install-completion"], False),
        (["sweep", "--", "--dry-run"], True),  # after --: a value, not the flag
    ],
)
def test_only_the_commands_that_train_pay_for_the_settings(args, pays):
    assert allocator.pays(args) is pays


def test_the_one_shot_methods_are_the_built_in_ones_that_train_nothing():
    from tamt_cli import registry

    one_shot = {p.name for p in registry.builtin("method") if not getattr(p.obj, "trains", False)}
    assert one_shot == allocator.ONE_SHOT


#: a ``sitecustomize`` that every start of the interpreter runs: it writes the malloc settings the
#: process image starts with to a file, one line each; in the image that runs with tamt's
#: settings, it can send itself a SIGINT at once (a Ctrl-C during the restart's start-up)
SITECUSTOMIZE = """
import os, signal
with open(os.environ["LAUNCH_IMAGES"], "a") as images:
    images.write(os.environ.get("GLIBC_TUNABLES", "-") + "\\n")
if os.environ.get("LAUNCH_SIGINT") and "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
    os.kill(os.getpid(), signal.SIGINT)
"""


def _entry() -> list[str]:
    """The installed `tamt` script where there is one, else ``python -m tamt_cli``."""
    script = Path(sys.executable).with_name("tamt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tamt_cli"]


def _watched_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], Path]:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    images = tmp_path / "images.txt"
    images.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TAMT_MALLOC")}
    path = os.pathsep.join(p for p in (str(hooks), base.get("PYTHONPATH")) if p)
    env = {**base, "PYTHONPATH": path, "LAUNCH_IMAGES": str(images), **extra}
    return env, images


def _images(
    cmd: list[str], tmp_path: Path, **extra: str
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The finished process and the GLIBC_TUNABLES each of its images started with."""
    env, images = _watched_env(tmp_path, **extra)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          preexec_fn=_ctrl_c_as_at_a_terminal)  # fmt: skip
    return proc, images.read_text().splitlines()


def _ctrl_c_as_at_a_terminal() -> None:
    """In the child: SIGINT with its default action, as a command typed at a terminal has it.
    A test run started in the background of a non-interactive shell (a CI script's ``&``)
    ignores SIGINT, and every process it starts inherits that, tamt included."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["plugins"],
        ["env", "--no-hub", "--json"],
        ["cache"],
        ["report", "no-such-runs"],
        ["extract", "no-such-run"],
        ["bench", "no-such-run"],
        ["search", "--method", "omp", "--sparsity", "1.5"],
        ["search", "--method", "kd", "--sparsity", "0.5", "--dry-run", "--model", "nowhere"],
    ],
)
def test_commands_that_train_nothing_start_once(args, tmp_path):
    proc, images = _images([*_entry(), *args], tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert images == ["-"], proc.stderr  # one start, with glibc's defaults
    if args[0] in ("--version", "--help", "plugins", "env", "cache"):
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(allocator.glibc() is None, reason="needs glibc")
@pytest.mark.parametrize(
    "entry, args",
    [
        ("script", ["search", "--method", "kd", "--sparsity", "1.5"]),
        ("script", ["finetune", "no-such-run", "--task", "sst2"]),
        ("script", ["eval", "no-such-run", "--objective", "mlm"]),
        ("script", ["sweep", "no-such-grid.yaml"]),
        ("module", ["search", "--sparsity", "1.5"]),
    ],
)
def test_commands_that_train_start_again_with_the_settings(entry, args, tmp_path):
    cmd = _entry() if entry == "script" else [sys.executable, "-m", "tamt_cli"]
    proc, images = _images([*cmd, *args], tmp_path)
    assert proc.returncode == 2, proc.stderr  # each fails on its input, after the restart
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert images == ["-", allocator.TUNABLES]


KD = ["search", "--method", "kd", "--sparsity", "1.5"]  # restarts, then fails on its input


@pytest.mark.skipif(allocator.glibc() is None, reason="needs glibc")
def test_a_ctrl_c_in_the_restarted_start_up_is_reported(tmp_path):
    """The new image sends itself SIGINT while its interpreter starts (``site``), long before
    tamt's code runs: it is held until tamt can report it."""
    proc, images = _images([*_entry(), *KD], tmp_path, LAUNCH_SIGINT="1")
    assert images == ["-", allocator.TUNABLES]
    assert (proc.returncode, proc.stderr) == (130, "tamt: error: interrupted\n")


def _sigint_blocked(pid: int) -> bool | None:
    """Whether the process holds SIGINT (its ``SigBlk``), None once it has ended."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    if re.search(r"^State:\s*[ZX]", text, re.MULTILINE):
        return None
    found = re.search(r"^SigBlk:\s*([0-9a-fA-F]+)", text, re.MULTILINE)
    return found is not None and bool(int(found.group(1), 16) >> (signal.SIGINT - 1) & 1)


@pytest.mark.skipif(
    allocator.glibc() is None or not Path("/proc/self/status").exists(),
    reason="needs glibc and /proc",
)
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.4, 1.5])
def test_ctrl_c_from_outside_during_the_restart(delay, tmp_path, tiny_bert, corpus):
    """SIGINT sent from outside once the process is restarting (SIGINT held, as ``/proc`` shows)
    and ``delay`` seconds later, in the new image's start-up or its command (a search far longer
    than the test): always the usual line and 130, never a traceback or a silent death."""
    env, _ = _watched_env(tmp_path)
    search = ["-q", "search", "-m", "kd", "-s", "0.5", "--model", str(tiny_bert),
              "--corpus", str(corpus), "--max-length", "16", "--max-steps", "1000000"]  # fmt: skip
    for _attempt in range(10):  # the restart lasts tens of milliseconds: rarely missed
        proc = subprocess.Popen(
            [*_entry(), *search, "--out", "run"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ctrl_c_as_at_a_terminal,
        )
        try:
            while (held := _sigint_blocked(proc.pid)) is False:
                pass
            if held:
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
            else:
                proc.kill()
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:  # a search of a million steps never outlives the test
                proc.kill()
                proc.communicate()
        if held:
            break
    else:
        pytest.fail("never saw a restart holding SIGINT")
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("tamt: error: interrupted"), err


def test_a_ctrl_c_during_a_training_step_is_raised_after_it():
    """The autograd engine runs Python hooks from C++, where a KeyboardInterrupt aborts the
    process: a step holds SIGINT and raises it once the step is done."""
    import os

    from tamt_cli.engine import interrupts_held

    finished = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
