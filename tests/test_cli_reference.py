"""docs/cli.md is every command's --help as it prints today."""

from __future__ import annotations

from pathlib import Path

from tamt_cli.cli import reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_the_command_reference_is_current():
    expected = reference.render()
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/cli.md is stale: run `python -m tamt_cli.cli.reference > docs/cli.md`"
    )


def test_the_reference_has_every_command_and_the_options_it_shows():
    text = reference.render()
    for command in ("search", "extract", "finetune", "eval", "bench", "sweep", "report"):
        assert f"## `tamt {command}`" in text
    section = text.split("## `tamt extract`")[1].split("## `tamt finetune`")[0]
    assert "--export" in section and "--format" in section
    assert "\x1b[" not in text  # no terminal colours in a file
    assert max(len(line) for line in text.splitlines()) <= reference.WIDTH
