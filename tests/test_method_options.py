"""Method options: declared once as a pydantic model, listed by `tamt plugins NAME`, given as
`-o name=value`, a spec's `options:` or one of the flags `tamt search` keeps for them; the checks
every method shares are made once by tamt."""

from __future__ import annotations

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
        "type": "int, > 0",
        "required": False,
        "default": 100,
        "description": "training steps between two prunings",
        "flag": "--steps-per-round",
    }
    assert options["prune_fraction"]["type"] == "float, > 0, < 1"
    assert options["objective"]["type"] == "mlm|kd|mlm-kd"
    assert options["rewind"]["default"] is True
    assert doc["given_as"].startswith("-o name=value")
    # --kind is needed only when a method and a task share a name
    table = " ".join(cli("plugins", "imp").out.split())
    assert "steps_per_round (--steps-per-round)" in table and "int, > 0" in table


def test_mask_training_options_and_an_option_without_a_flag(cli):
    options = by_name(cli("plugins", "--kind", "method", "kd", "--json").json())
    assert options["tau"]["default"] == 0.01 and "flag" not in options["tau"]
    assert options["reset_every"]["type"] == "int | none, > 0"
    assert options["reset_every"]["default"] is None
    assert options["init"]["flag"] == "--init"


def test_a_plugin_method_is_as_discoverable_as_a_builtin(plugin_env, cli):  # noqa: F811
    res = cli("plugins", "--kind", "method", "firstrows", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["distribution"] == "tamt-toy" and doc["version"] == "1.2.3"
    assert doc["options"] == [
        {"name": "keep_first", "type": "int", "required": False, "default": 0, "description": ""}
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


def test_every_option_flag_of_search_is_an_alias_of_a_method_option():
    """The flags kept for method options sit in one help panel, and each is the option of that
    name of some installed method."""
    import typer.main

    from tamt_cli import registry
    from tamt_cli.cli import METHOD_PANEL, app
    from tamt_cli.specs import METHOD_OPTION_FLAGS

    search = typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]
    panel = {
        p.opts[0] for p in search.params if getattr(p, "rich_help_panel", None) == METHOD_PANEL
    }
    assert panel == set(METHOD_OPTION_FLAGS.values())
    fields = {
        field
        for plugin in registry.methods().all()
        if plugin.status == "ok"
        for field in plugin.obj.Options.model_fields
    }
    assert set(METHOD_OPTION_FLAGS) <= fields | {"like"}
