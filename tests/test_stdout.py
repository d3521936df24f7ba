"""stdout is data: what a command writes there, where it is not a terminal (a file, a pipe), is
whole: no value or table row is wrapped or cut to a width, and ``--dry-run`` writes a spec that
``--spec`` takes back; and the help shows no metavar on flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tamt_cli.cli import output

#: a value of 200 characters, spaces and all
LONG = "runs/" + "a long folder name " * 10 + "x" * 5
assert len(LONG) == 200


def dry_run_args(command: str) -> list[str]:
    return {
        "search": ["search", "-m", "mlm", "-s", "0.7"],
        "extract": ["extract", "run", "--sparsity", "0.6"],
        "finetune": ["finetune", "sub", "--task", "sst2", "--train-size", "640"],
        "eval": ["eval", "sub", "--task", "sst2"],
        "bench": ["bench", "sub"],
    }[command]


@pytest.mark.parametrize("command", ["search", "extract", "finetune", "eval", "bench"])
def test_dry_run_writes_a_spec_that_spec_takes_back(cli, command):
    """`tamt CMD ... --dry-run > s.yaml && tamt CMD --spec s.yaml --dry-run` prints it again; the
    resolved values are comments, and the JSON form holds them under ``resolved``."""
    first = cli(*dry_run_args(command), "--dry-run")
    assert first.code == 0, first.err
    Path("s.yaml").write_text(first.out)
    again = cli(command, "--spec", "s.yaml", "--dry-run")
    assert again.code == 0, again.err
    assert again.out == first.out
    as_json = cli(command, "--spec", "s.yaml", "--dry-run", "--json").json()
    resolved = as_json.pop("resolved", None)
    assert yaml.safe_load(first.out) == as_json
    if resolved is not None:  # the comments hold the same values
        assert first.out.count(output.RESOLVED_HEAD) == 1
        comments = first.out.split(output.RESOLVED_HEAD + "\n")[1]
        assert all(line.startswith("#   ") for line in comments.splitlines())
        shown = yaml.safe_load("\n".join(line[4:] for line in comments.splitlines()))
        assert shown == resolved


def test_a_spec_file_with_resolved_says_where_a_spec_comes_from(cli):
    data = cli("search", "-m", "omp", "-s", "0.7", "--dry-run", "--json").json()
    Path("s.json").write_text(json.dumps({**data, "resolved": {"lr": 1}}))
    res = cli("search", "--spec", "s.json", "--dry-run")
    assert res.code == 2
    assert "'resolved' is not a spec field" in res.err and "without --json" in res.err


def test_a_200_character_value_survives_a_pipe(cli):
    res = cli("search", "-m", "mlm", "-s", "0.7", "--out", LONG, "--dry-run")
    assert res.code == 0, res.err
    assert f"out: {LONG}\n" in res.out  # whole, on one line
    assert yaml.safe_load(res.out)["out"] == LONG
    # the longest resolved value, once cut at 80 columns
    assert "#   head_lr: 5e-05 for a pre-trained head, 0 (frozen) for a head fitted on the dense" \
        " model\n" in res.out  # fmt: skip
    env = {**os.environ, "COLUMNS": "40"}  # a narrow terminal's width does not apply to a pipe
    piped = subprocess.run(
        [sys.executable, "-m", "tamt_cli", "search", "-m", "mlm", "-s", "0.7", "--out", LONG,
         "--dry-run"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert f"out: {LONG}\n" in piped.stdout
    assert yaml.safe_load(piped.stdout) == yaml.safe_load(res.out)


def test_tables_to_a_pipe_keep_every_cell_whole(cli, capsys):
    """A table wider than a terminal: every header and value whole, each row on one line."""
    from tamt_cli import display

    splits = ("validation_matched", "validation_mismatched")
    metrics = {split: {"accuracy": 84.125, "f1_macro_average": 83.5} for split in splits}
    run = {"seed": 1, "seconds": 12.0, "best": {"step": 500, "metrics": metrics},
           "final": {"step": 600, "metrics": metrics}}  # fmt: skip
    stat = {"mean": 84.125, "std": 0.25}
    result = {
        "task": "mnli",
        "subnetwork": LONG,
        "mask_sparsity": 0.7,
        "selected_by": "validation_matched/accuracy",
        "best": {s: {m: stat for m in metrics[s]} for s in splits},
        "final": {s: {m: stat for m in metrics[s]} for s in splits},
        "runs": [run, {**run, "seed": 2}],
        "out": LONG,
    }
    capsys.readouterr()
    display.render_finetune(result, output.out())
    text = capsys.readouterr().out
    assert "…" not in text
    header = next(line for line in text.splitlines() if "seed" in line)
    for split in splits:
        for name in ("accuracy", "f1_macro_average"):
            assert f"{split}/{name} best" in header and f"{split}/{name} final" in header
    assert f"mnli: {LONG} (mask sparsity 70.00%)" in text
    assert text.count("84.12 ± 0.25") == 8  # the mean ± std row, one line
    # a real command's table: every plugin's description whole
    res = cli("plugins")
    assert res.code == 0 and "…" not in res.out
    for row in cli("plugins", "--json").json():
        assert row["summary"] in res.out, row["name"]


def test_report_tables_to_a_pipe_keep_every_cell_whole(capsys):
    from tamt_cli import report

    row = {
        "task": "mnli", "method": "kd-long-variant-name", "sparsity": 0.7, "values": [1, 2, 3],
        "metric": "validation_matched/accuracy", "mean": 84.125, "std": 0.25, "matching": True,
        "heldout": {"kd": 0.123456, "mlm": 2.5, "mlm-kd": 1.25}, "search_seconds": 12345.0,
    }  # fmt: skip
    doc = {"rows": [row], "glue_average": [], "correlations": [], "overlap": [], "notes": []}
    capsys.readouterr()
    report.render(doc, output.out())
    text = capsys.readouterr().out
    assert "…" not in text
    line = next(line for line in text.splitlines() if "kd-long-variant-name" in line)
    for cell in ("mnli", "0.7", "accuracy", "84.12 ± 0.25", "yes", "0.1235", "2.5000", "12345"):
        assert cell in line, cell
    header = next(line for line in text.splitlines() if "method" in line)
    for name in ("held-out kd", "held-out mlm", "held-out mlm-kd", "search s", "matching"):
        assert name in header


def test_flags_show_no_metavar(cli):
    for args in ([], ["search"], ["extract"], ["finetune"], ["cache"], ["report"]):
        res = cli(*args, "--help")
        assert res.code == 0, res.err
        assert "<bool>" not in res.out, args
    assert "--embeddings" in cli("search", "--help").out
