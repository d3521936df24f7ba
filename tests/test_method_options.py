"""Method options: declared once as a pydantic model, listed by `tamt plugins NAME`, given as
`-o name=value` or a spec's `options:` (the flags `tamt search` once had for some are hidden
aliases that say so); the checks every method shares are made once by tamt."""

from __future__ import annotations

import pytest

from tests.test_registry import plugin_env  # noqa: F401  (a fixture)


def by_name(doc: dict) -> dict[str, dict]:
    return {o["name"]: o for o in doc["options"]}


def test_a_builtin_method_lists_its_options_with_types_defaults_and_help(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one option a line
    res = cli("plugins", "--kind", "method", "imp", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert (doc["name"], doc["kind"], doc["status"]) == ("imp", "method", "ok")
    assert doc["distribution"] == "tamt-cli"
    options = by_name(doc)
    assert list(options) == [
        "objective", "steps_per_round", "prune_fraction", "rewind_step", "rewind", "schedule"
    ]  # fmt: skip
    assert options["steps_per_round"] == {
        "name": "steps_per_round",
        "type": "int, > 0, ≤ 1,000,000,000",
        "required": False,
        "default": 100,
        "description": "training steps between two prunings",
        "flag": "-o steps_per_round=...",
    }
    assert options["prune_fraction"]["type"] == "float, > 0, < 1"
    assert options["objective"]["type"] == "mlm|kd|mlm-kd"
    assert options["rewind"]["default"] is True
    assert doc["given_as"].startswith("-o name=value")
    # --kind is needed only when a method and a task share a name
    table = " ".join(cli("plugins", "imp").out.split())
    assert "steps_per_round (-o steps_per_round=...)" in table
    assert "int, > 0, ≤ 1,000,000,000" in table


def test_mask_training_options_are_given_as_o_name_value(cli):
    options = by_name(cli("plugins", "--kind", "method", "kd", "--json").json())
    assert options["tau"]["default"] == 0.01 and options["tau"]["flag"] == "-o tau=..."
    assert options["reset_every"]["type"] == "int | none, > 0, ≤ 1,000,000,000"
    assert options["tau"]["type"] == "float, > 0, ≤ 1e+06"
    assert options["reset_every"]["default"] is None
    assert options["init"]["flag"] == "-o init=..."


def test_a_plugin_method_is_as_discoverable_as_a_builtin(plugin_env, cli):  # noqa: F811
    res = cli("plugins", "--kind", "method", "firstrows", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["distribution"] == "tamt-toy" and doc["version"] == "1.2.3"
    assert doc["options"] == [
        {
            "name": "keep_first",
            "type": "int",
            "required": False,
            "default": 0,
            "description": "",
            "flag": "-o keep_first=...",
        }
    ]
    res = cli("plugins", "broken")
    assert res.code == 2 and "method 'broken' (from tamt-toy 1.2.3) cannot be used" in res.err


def test_the_core_requires_sparsity_for_a_method_without_a_check(plugin_env, cli):  # noqa: F811
    res = cli("search", "-m", "firstrows", "--dry-run")
    assert res.code == 2
    assert "--sparsity is required for method 'firstrows'" in res.err
    res = cli("search", "-m", "random", "--dry-run")
    assert res.code == 2
    assert "--sparsity is required for method 'random' (or --like MASKFILE)" in res.err


def test_task_options_and_unknown_names(cli):
    doc = cli("plugins", "sst2", "--json").json()
    assert doc["kind"] == "task" and doc["options"] == []
    assert doc["given_as"].startswith("--task-option")
    res = cli("plugins", "ompp")
    assert res.code == 2 and "unknown method or task 'ompp'; did you mean 'omp'?" in res.err


def test_every_old_method_flag_of_search_is_a_hidden_alias_of_a_method_option():
    """The flags `tamt search` once had for method options are hidden, and each names an option
    of a built-in method or of the movement plugin in this repository (read from its source, so
    that the test does not need it installed)."""
    import sys
    from pathlib import Path

    import typer.main

    from tamt_cli import registry
    from tamt_cli.cli.app import app
    from tamt_cli.cli.search import ALIASES

    search = typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]
    hidden = {p.opts[0] for p in search.params if getattr(p, "hidden", False)}
    assert hidden == {decl.split("/")[0] for decl, _ in ALIASES.values()}
    src = Path(__file__).resolve().parents[1] / "plugins" / "tamt-movement" / "src"
    sys.path.insert(0, str(src))
    try:
        from tamt_movement import MovementPruning
    finally:
        sys.path.remove(str(src))
    fields = set(MovementPruning.Options.model_fields)
    for plugin in registry.builtin("method"):
        fields |= set(plugin.obj.Options.model_fields)
    assert set(ALIASES) <= fields


def test_an_old_method_flag_still_works_and_says_its_o_form(cli, tiny_bert):
    res = cli("search", "-m", "kd", "-s", "0.5", "--reset-every", "50", "--init", "random",
              "--model", tiny_bert, "--dry-run", "--json")  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["options"] == {"reset_every": 50, "init": "random"}
    assert "note: --reset-every is deprecated; use -o reset_every=50" in res.err
    assert "note: --init is deprecated; use -o init=random" in res.err
    res = cli("search", "-m", "imp", "-s", "0.3", "--no-rewind", "--model", tiny_bert,
              "--dry-run", "--json")  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["options"] == {"rewind": False}
    assert "note: --no-rewind is deprecated; use -o rewind=false" in res.err
    help_text = cli("search", "--help").out
    assert "--reset-every" not in help_text and "--steps-per-round" not in help_text


@pytest.mark.parametrize("same", [True, False])
def test_an_option_given_as_o_and_as_its_old_flag_is_refused(cli, tiny_bert, same):
    other = "5" if same else "10"
    res = cli("search", "-m", "kd", "-s", "0.5", "-o", "reset_every=5", "--reset-every", other,
              "--model", tiny_bert, "--dry-run", "--json")  # fmt: skip
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "'reset_every' is given twice" in lines[0], res.err
    assert "--reset-every" in lines[0] and not res.out
