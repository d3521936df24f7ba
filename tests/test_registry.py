"""The plugin registry: entry points, lazy per-plugin loading, failures reported not fatal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tamt_cli import registry


def install_fake_distribution(root: Path, name: str, entry_points: str, modules: dict) -> None:
    """A minimal installed distribution (dist-info with entry points) importable from ``root``;
    ``importlib.metadata`` finds it the same way it finds a pip-installed plugin."""
    info = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from pydantic import BaseModel, ConfigDict

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        keep_first: int = 0

    class FirstRows:
        '''Prune everything but the first rows (a toy plugin method).'''
        summary = "toy: keep the first rows"
        Options = Options

        def __init__(self, options):
            self.options = options

        def search(self, job):
            import torch
            from tamt_cli import masking
            scores = {p.name: torch.arange(p.numel, 0, -1, dtype=torch.float).reshape(p.shape)
                      for p in job.weights}
            return masking.masks_from_scores(scores, job.sparsity, "local")
"""


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """Installs a good and a broken method plugin plus a non-protocol one, for one test."""
    site = tmp_path / "site"
    install_fake_distribution(
        site,
        "tamt-toy",
        """
        [tamt.methods]
        firstrows = toy_good:FirstRows
        broken = toy_broken:Method
        notamethod = toy_good:Options
        exits = toy_exits:Method
        """,
        {
            "toy_good": GOOD,
            "toy_broken": "raise ImportError('needs libfoo, which is missing')\n",
            "toy_exits": "import sys\nsys.exit('toy_exits refuses to load')\n",
        },
    )
    monkeypatch.syspath_prepend(str(site))
    registry.methods.cache_clear()
    registry.tasks.cache_clear()
    yield site
    registry.methods.cache_clear()
    registry.tasks.cache_clear()
    for mod in ("toy_good", "toy_broken", "toy_exits"):
        sys.modules.pop(mod, None)


def test_builtins_register_through_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="tamt.methods")}
    assert names["omp"] == "tamt_cli.methods.magnitude:OneShotMagnitude"
    assert names["random"] == "tamt_cli.methods.random:RandomPruning"
    plugins = {p.name: p for p in registry.methods().all()}
    assert plugins["omp"].status == "ok"
    assert plugins["omp"].distribution == "tamt-cli"


def test_plugins_json_lists_good_and_broken(plugin_env, cli):
    res = cli("plugins", "--json")
    assert res.code == 0, res.err
    rows = {r["name"]: r for r in res.json()}
    assert rows["firstrows"]["status"] == "ok"
    assert rows["firstrows"]["distribution"] == "tamt-toy"
    assert rows["firstrows"]["version"] == "1.2.3"
    assert rows["firstrows"]["summary"] == "toy: keep the first rows"
    assert rows["broken"]["status"] == "error"
    assert "needs libfoo" in rows["broken"]["error"]
    assert rows["notamethod"]["status"] == "error"
    assert "search" in rows["notamethod"]["error"]
    assert rows["omp"]["status"] == "ok"
    assert rows["firstrows"]["structures"] == ["weights"]  # it declares none
    assert rows["broken"]["structures"] is None  # unknown: it does not load


def test_plugins_list_the_structures_each_method_takes(cli):
    res = cli("plugins", "--json")
    assert res.code == 0, res.err
    rows = {(r["kind"], r["name"]): r for r in res.json()}
    units = ["weights", "neurons", "heads", "neurons+heads"]
    assert rows["method", "omp"]["structures"] == rows["method", "kd"]["structures"] == units
    assert rows["method", "imp"]["structures"] == ["weights"]
    assert rows["task", "sst2"]["structures"] is None
    table = cli("plugins", "--kind", "method").out
    assert "structures" in table  # a column
    omp = next(line for line in table.splitlines() if " omp " in line)
    imp = next(line for line in table.splitlines() if " imp " in line)
    assert ", ".join(units) in omp and "neurons" not in imp
    described = cli("plugins", "omp").out
    assert f"--structure: {', '.join(units)}" in described
    assert cli("plugins", "imp", "--json").json()["structures"] == ["weights"]


def test_plugin_calling_sys_exit_at_import_is_listed_not_fatal(plugin_env, cli):
    res = cli("plugins", "--kind", "method", "--json")
    assert res.code == 0, res.err
    rows = {r["name"]: r for r in res.json()}
    assert rows["exits"]["status"] == "error"
    assert rows["exits"]["error"] == "SystemExit: toy_exits refuses to load"
    assert rows["firstrows"]["status"] == rows["omp"]["status"] == "ok"
    res = cli("search", "-m", "exits", "-s", "0.5", "--dry-run")
    assert res.code == 2 and "method 'exits' (from tamt-toy 1.2.3) cannot be used" in res.err


def test_broken_plugin_breaks_nothing_else(plugin_env, cli, tiny_bert):
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "r")
    assert res.code == 0, res.err
    res = cli("search", "-m", "firstrows", "-s", "0.5", "--model", tiny_bert, "--out", "r2")
    assert res.code == 0, res.err
    manifest = json.loads(Path("r2/manifest.json").read_text())
    assert manifest["method_plugin"] == {"distribution": "tamt-toy", "version": "1.2.3"}
    assert manifest["environment"]["plugins"]["tamt-toy"] == "1.2.3"


def test_using_a_broken_plugin_is_a_one_line_error(plugin_env, cli):
    res = cli("search", "-m", "broken", "-s", "0.5", "--dry-run")
    assert res.code == 2
    assert res.err.count("\n") == 1
    assert "method 'broken' (from tamt-toy 1.2.3) cannot be used" in res.err
    assert "needs libfoo" in res.err
    assert "Traceback" not in res.err


def test_strict_mode_makes_failures_fatal(plugin_env, cli, monkeypatch):
    monkeypatch.setenv("TAMT_STRICT_PLUGINS", "1")
    res = cli("plugins")
    assert res.code == 2
    assert "broken" in res.err
    res = cli("search", "-m", "omp", "-s", "0.5", "--dry-run")
    assert res.code == 2


def test_plugin_options_are_validated(plugin_env, cli):
    res = cli("search", "-m", "firstrows", "-s", "0.5", "-o", "keep_frist=3", "--dry-run")
    assert res.code == 2
    assert "unknown field 'keep_frist'; did you mean 'keep_first'?" in res.err
    res = cli("search", "-m", "firstrows", "-s", "0.5", "-o", "keep_first=3", "--dry-run", "--json")
    assert res.code == 0, res.err
    assert res.json()["options"] == {"keep_first": 3}


def test_name_clash_is_reported(tmp_path, monkeypatch, cli):
    site = tmp_path / "site"
    install_fake_distribution(site, "tamt-clash", "[tamt.methods]\nomp = toy_clash:X\n", {})
    monkeypatch.syspath_prepend(str(site))
    registry.methods.cache_clear()
    try:
        res = cli("plugins", "--json", "--kind", "method")
        rows = {r["name"]: r for r in res.json()}
        assert rows["omp"]["status"] == "error"
        assert "name clash" in rows["omp"]["error"]
    finally:
        registry.methods.cache_clear()


def test_unknown_method_did_you_mean(cli):
    # every installed method is listed (plugins installed beside tamt included)
    available = ", ".join(registry.methods().names())
    assert {"imp", "kd", "mlm", "mlm-kd", "omp", "random"} <= set(registry.methods().names())
    res = cli("search", "-m", "ompp", "-s", "0.7", "--dry-run")
    assert res.code == 2
    assert res.err.strip() == (
        f"tamt: error: unknown method 'ompp'; did you mean 'omp'? available: {available}"
    )
    res = cli("search", "-m", "zzz", "-s", "0.7", "--dry-run")
    assert f"unknown method 'zzz'; available: {available}" in res.err


LIGHT = """
import sys
from tamt_cli.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)
print("HEAVY", heavy)
raise SystemExit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["plugins"],
        ["search", "-m", "omp", "-s", "0.7", "--model", "demo-does-not-matter", "--dry-run"],
        ["extract", "runs/x", "--dry-run"],
    ],
)
def test_light_commands_do_not_import_heavy_libraries(args, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT, *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_incompatible_api_version_is_listed_and_refused(tmp_path, monkeypatch, cli):
    site = tmp_path / "site"
    install_fake_distribution(
        site,
        "tamt-future",
        "[tamt.methods]\nfuture = toy_future:Future\nnow = toy_future:Now\n",
        {
            "toy_future": textwrap.dedent(GOOD)
            + "\n\nclass Future(FirstRows):\n    tamt_api = 2\n"
            + "\n\nclass Now(FirstRows):\n    tamt_api = 1\n"
        },
    )
    monkeypatch.syspath_prepend(str(site))
    registry.methods.cache_clear()
    try:
        rows = {r["name"]: r for r in cli("plugins", "--json").json()}
        assert rows["future"]["status"] == "incompatible"
        assert "built for tamt plugin API 2" in rows["future"]["error"]
        assert rows["now"]["status"] == "ok"
        res = cli("search", "-m", "future", "-s", "0.5", "--dry-run")
        assert res.code == 2
        assert "method 'future' (from tamt-future 1.2.3) cannot be used" in res.err
        assert "API 2" in res.err
    finally:
        registry.methods.cache_clear()
        sys.modules.pop("toy_future", None)


def test_public_api_is_light_and_complete():
    code = (
        "import sys, tamt_cli.api as api; "
        "assert 'torch' not in sys.modules; "
        "assert api.API_VERSION == 1; "
        "names = set(api.__all__); "
        "assert {'Method', 'SearchJob', 'Task', 'TaskBase', 'masks_from_scores', 'Loop'} <= names; "
        "assert not {'masking', 'engine'} & names; "
        "api.masking.prune_count(10, 0.5); "
        "assert 'torch' in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_api_1_module_attributes_keep_resolving():
    """Plugins of API 1 reach whole modules as ``api.<name>``, ``api.transfer`` among them (the
    task model's module under its earlier name)."""
    import tamt_cli.api as api
    from tamt_cli import (
        artifacts,
        engine,
        files,
        finetune,
        maskfile,
        masking,
        objectives,
        pretraining,
        task_model,
    )

    assert api.transfer is task_model
    assert api.transfer.quiet is task_model.quiet
    assert api.transfer.load_tokenizer is api.load_tokenizer
    assert api.transfer.Batcher is api.Batcher
    from tamt_cli.api import transfer  # as a plugin of API 1 may import it

    assert transfer is task_model
    modules = (masking, engine, objectives, finetune)
    for module in modules:
        assert getattr(api, module.__name__.rsplit(".", 1)[1]) is module
    # what artifacts held when API 1 began, now in three modules
    for module in (artifacts, files, maskfile):
        for name in (n for n in vars(module) if not n.startswith("_")):
            assert getattr(api.artifacts, name) is getattr(module, name), name
    assert api.artifacts.load_masks is api.load_masks
    # what pretraining held when API 1 began, now in three modules
    from tamt_cli import mlm_head
    from tamt_cli.methods import _common

    for module in (pretraining, mlm_head, _common):
        for name in (n for n in vars(module) if not n.startswith("_")):
            assert getattr(api.pretraining, name) is getattr(module, name), name
    assert api.pretraining.shared_head is mlm_head.shared_head
    assert "transfer" not in api.__all__
    with pytest.raises(AttributeError):
        api.task_model  # noqa: B018  (not part of the plugin API)


def test_a_task_plugin_is_checked_against_the_protocol_like_a_method(tmp_path, monkeypatch, cli):
    site = tmp_path / "site"
    install_fake_distribution(
        site,
        "tamt-badtask",
        "[tamt.tasks]\nnoload = toy_task:NoLoad\n",
        {"toy_task": "class NoLoad:\n    head = 'classification'\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    registry.tasks.cache_clear()
    try:
        rows = {r["name"]: r for r in cli("plugins", "--kind", "task", "--json").json()}
        assert rows["noload"]["status"] == "error"
        assert rows["noload"]["error"] == "TypeError: NoLoad has no load() method"
        assert rows["sst2"]["status"] == "ok"
        res = cli("finetune", "x", "--task", "noload", "--dry-run")
        assert res.code == 2 and "task 'noload' (from tamt-badtask 1.2.3) cannot be used" in res.err
    finally:
        registry.tasks.cache_clear()
        sys.modules.pop("toy_task", None)
