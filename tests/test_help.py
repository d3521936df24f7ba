"""Every default `--help` states is the one the command uses.

For every command and option, the text in the help's ``[default: …]`` is compared with the value
the command ends up with when the option is not given: the spec's (``--dry-run --json``), what
each built-in method or task resolves it to (``--dry-run``'s ``resolved``, the task's defaults),
or what a short real run used. A default that is a rule ("the hub", "the final mask") must be one
the command applies to a value not given."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tamt_cli import registry
from tamt_cli.specs import SearchSpec

DEFAULT = re.compile(r"\\\[default: (.*?)\]( |$)")
#: options whose default is a rule the command applies to a value not given
RULES = {
    ("search", "label"), ("search", "keep_checkpoints"), ("extract", "sparsity"),
    ("extract", "step"),
    ("finetune", "data_dir"), ("finetune", "train_size"), ("finetune", "out"),
    ("eval", "data_dir"), ("eval", "step"), ("bench", "data_dir"), ("sweep", "shard"),
    ("plugins", "name"), ("plugins", "kind"),
}  # fmt: skip


@pytest.fixture(scope="module")
def long_bert(tmp_path_factory) -> Path:
    """A tiny BERT that takes the default lengths (128 tokens and more)."""
    from transformers import BertModel

    from tests.tiny import bert_config, make_tokenizer

    out = tmp_path_factory.mktemp("long-bert")
    config = bert_config(len(make_tokenizer(out)))
    config.max_position_embeddings = 512
    BertModel(config).save_pretrained(str(out))
    return out


def shown_defaults() -> dict[str, dict[str, str]]:
    """Command → option → its shown default (``required`` for ``[required]``), with the
    defaults computed when the help is printed filled in."""
    from tamt_cli.cli.app import app

    found: dict[str, dict[str, str]] = {}

    def walk(command: Any, path: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())
        if not path or hasattr(command, "commands"):
            return
        command.get_help(command.context_class(command, info_name=path))
        texts = found.setdefault(path, {})
        for param in command.params:
            text = param.help or ""
            match = DEFAULT.search(text)
            if "\\[required]" in text:
                texts[param.name] = "required"
            elif match:
                texts[param.name] = match.group(1)
            else:
                assert param.is_flag and not param.secondary_opts, (path, param.name, text)

    walk(typer.main.get_command(app), "")
    return found


@pytest.fixture(scope="module")
def shown():
    return shown_defaults()


def same(text: str, value: Any) -> bool:
    """Whether the help's text names ``value``."""
    if text == "none":
        return value in (None, [], {})
    if isinstance(value, bool):
        if text.startswith("--"):  # --embeddings / --no-embeddings
            return text.startswith("--no-") != value
        return text == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(text) == pytest.approx(value)
        except ValueError:
            return False
    return text == str(value)


def by_name(text: str, names: list[str]) -> dict[str, str]:
    """``the method's: 5e-5 for imp, mlm; 2e-4 for kd`` → ``{imp: 5e-5, mlm: 5e-5, kd: 2e-4}``;
    a single value is every name's."""
    body = re.sub(r"^the (method|task)'s: ", "", text)
    if not re.search(r" for [\w-]+(, [\w-]+)*(;|$)", body):
        return dict.fromkeys(names, body)
    out = {}
    for group in body.split("; "):
        value, _, who = group.rpartition(" for ")
        out.update(dict.fromkeys(who.split(", "), value))
    return out


def check_plain(
    command: str, texts: dict[str, str], dry: dict[str, Any], checked: set, spec: Any = None
) -> None:
    """Options whose default is the spec's (``dry``: the ``--dry-run --json`` spec, where what
    was given there is the spec class's default) or, outside the spec, the parameter's own;
    rules must leave the value unset."""
    from tamt_cli.cli.app import app

    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    for name, text in texts.items():
        if name in checked or text == "required":
            continue
        if spec is not None and name in GIVEN and name in spec.model_fields:
            value = spec.model_fields[name].get_default(call_default_factory=True)
            assert same(text, value), (command, name, text, value)
        elif (command, name) in RULES:
            value = dry.get(name, params[name].default)
            assert value in (None, [], {}), (command, name, value)
        else:
            value = dry[name] if name in dry else params[name].default
            assert same(text, value), (command, name, text, value)


#: options the --dry-run commands below give
GIVEN = {"method", "sparsity", "model"}


def training_methods() -> list[str]:
    return [p.name for p in registry.builtin("method") if getattr(p.obj, "trains", False)]


def dry_search(cli, tiny_bert, method: str, sparsity: float) -> dict[str, Any]:
    res = cli("search", "-m", method, "-s", str(sparsity), "--model", tiny_bert, "--dry-run",
              "--json")  # fmt: skip
    assert res.code == 0, res.err
    return res.json()


def check_by_method(text: str, key: str, runs: dict[str, list[dict[str, Any]]]) -> None:
    """``key`` as help states it for each training method, against its ``resolved`` values at
    sparsity 0.5 and 0.9."""
    using = [m for m, (low, _) in runs.items() if key in low["resolved"]]
    values = by_name(text, using)
    assert sorted(values) == sorted(using), (key, text)
    for method, value in values.items():
        for sparsity, dry in zip((0.5, 0.9), runs[method], strict=True):
            run = dry["resolved"]
            varying = re.fullmatch(r"(\S+) at sparsity 0\.5, (\S+) at 0\.9", value)
            share = re.fullmatch(r"max-steps(?:/(\d+))?", value)
            if varying:
                assert same(varying.group(1 if sparsity == 0.5 else 2), run[key]), (method, key)
            elif share:
                assert run[key] == max(1, run["max_steps"] // int(share.group(1) or 1)), key
            else:
                assert same(value, run[key]), (method, key, value, run[key])


def test_search_help_states_the_spec_and_method_defaults(cli, tiny_bert, shown):
    texts = shown["search"]
    runs = {m: [dry_search(cli, tiny_bert, m, s) for s in (0.5, 0.9)] for m in training_methods()}
    for key in ("max_steps", "lr", "eval_every", "save_every", "head_lr", "head_warmup_steps",
                "head_warmup_lr"):  # fmt: skip
        check_by_method(texts[key], key, runs)
    options = by_name(texts["option"], [])
    for plugin in registry.builtin("method"):
        fields = plugin.obj.Options.model_fields
        given = dict(pair.split("=") for pair in options.get(plugin.name, "").split(", ") if pair)
        assert list(given) == list(fields), plugin.name
        for name, field in fields.items():
            if field.default is not None:
                assert same(given[name], field.default), (plugin.name, name)
            else:  # left to the method: what it resolves
                resolved = runs[plugin.name][0]["resolved"] if plugin.name in runs else {}
                rule = given[name].replace("max-steps", str(resolved.get("max_steps")))
                assert given[name] == "none" or same(rule, resolved[name]), (plugin.name, name)
    dry = dry_search(cli, tiny_bert, "omp", 0.5)
    assert texts["out"] == "runs/<label or method>-s<sparsity>-<time>"
    assert re.fullmatch(r"runs/omp-s0\.5-[\w-]+", dry["out"]), dry["out"]
    done = {"max_steps", "lr", "eval_every", "save_every", "head_lr", "head_warmup_steps",
            "head_warmup_lr", "option", "out"}  # fmt: skip
    check_plain("search", texts, dry, done, SearchSpec)


def test_finetune_help_states_each_tasks_defaults(cli, shown):
    texts = shown["finetune"]
    tasks = [p.name for p in registry.builtin("task")]
    plans = {}
    for task in tasks:
        res = cli("finetune", "x", "--task", task, "--dry-run", "--json")
        assert res.code == 0, res.err
        plans[task] = res.json()
    for key in ("lr", "batch_size", "epochs", "max_length", "doc_stride"):
        span = [t for t in tasks if plans[t]["resolved"][key] is not None]
        values = by_name(texts[key], span)
        assert sorted(values) == sorted(span), key
        for task, value in values.items():
            assert same(value, plans[task]["resolved"][key]), (task, key)
    cadence, _, rule = texts["eval_every"].partition(" (")
    for task, value in by_name(cadence, tasks).items():
        planned = plans[task]["resolved"]["eval_every"]
        assert planned.startswith(f"{value}, or ⌈steps / 50⌉"), (task, planned)
        assert "⌈steps / 50⌉" in rule
    assert same(texts["seed"], plans["sst2"]["seeds"][0])
    assert texts["seeds"] == "--seed"
    done = {"lr", "batch_size", "epochs", "max_length", "doc_stride", "eval_every", "seed", "seeds"}
    check_plain("finetune", texts, plans["sst2"], done)


def test_eval_help_states_the_task_and_objective_defaults(
    cli, tiny_bert, long_bert, corpus, shown, monkeypatch
):
    from tamt_cli import pretraining

    texts = shown["eval"]
    used: dict[str, Any] = {}
    prepare = pretraining.prepare

    def watched(ref, model, spec, engine, console, **kw):
        used.update(max_length=spec.max_length, batch_size=spec.batch_size, corpus=spec.corpus,
                    held_out=spec.held_out)  # fmt: skip
        return prepare(ref, model, spec, engine, console, **kw)

    monkeypatch.setattr(pretraining, "prepare", watched)
    res = cli("eval", long_bert, "--objective", "kd", "--corpus", corpus, "--eval-blocks", "2",
              "--json")  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["max_length"] == used["max_length"]
    for key in ("max_length", "batch_size", "doc_stride"):
        task_text, _, objective = texts[key].partition("; --objective: ")
        prefix = "--task: the fine-tuning run's, else "
        assert task_text.startswith(prefix), texts[key]
        defaults = {p.name: getattr(p.obj.defaults, key) for p in registry.builtin("task")}
        tasks = [name for name, value in defaults.items() if value is not None]
        for task, value in by_name(task_text.removeprefix(prefix), tasks).items():
            assert same(value, defaults[task]), (key, task)
        if key == "batch_size":
            assert same(objective, used[key]), key
    # --objective: the search run's corpus, length and held-out fraction, else the fixed ones
    run_rule = "a search run's or its export's, else "
    assert texts["max_length"].partition("; --objective: ")[2].startswith(run_rule)
    fixed = {key: (texts["max_length"].partition("; --objective: ")[2] if key == "max_length"
                   else texts[key]).removeprefix(run_rule)
             for key in ("max_length", "corpus", "held_out")}  # fmt: skip
    assert all(texts[k].startswith(run_rule) for k in ("corpus", "held_out"))
    res = cli("eval", long_bert, "--objective", "kd", "--dry-run", "--json")
    assert res.code == 0, res.err
    for key, value in fixed.items():
        assert same(value, res.json()["resolved"][key]), key
    assert cli("search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
               "--max-length", "16", "--held-out", "0.1", "--max-steps", "2", "--batch-size",
               "4", "--out", "kd-run").code == 0  # fmt: skip
    res = cli("eval", "kd-run", "--objective", "kd", "--eval-blocks", "2", "--json")
    assert res.code == 0, res.err
    assert (used["max_length"], used["corpus"], used["held_out"]) == (16, str(corpus), 0.1)
    mlm = dry_search(cli, tiny_bert, "mlm", 0.5)["resolved"]
    for key in ("head_warmup_steps", "head_warmup_lr"):
        assert same(texts[key], mlm[key]), key
    res = cli("eval", "x", "--task", "sst2", "--dry-run", "--json")
    assert res.code == 0, res.err
    done = {"max_length", "batch_size", "doc_stride", "head_warmup_steps", "head_warmup_lr",
            "corpus", "held_out"}  # fmt: skip
    check_plain("eval", texts, res.json(), done)


def test_extract_and_bench_help_state_what_runs(cli, long_bert, shown):
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", long_bert, "--out", "run").code == 0
    res = cli("extract", "run", "--dry-run", "--json")
    assert res.code == 0, res.err
    check_plain("extract", shown["extract"], res.json(), set())
    texts = shown["bench"]
    res = cli("bench", "run", "--repeats", "1", "--warmup", "0", "--json")
    assert res.code == 0, res.err
    length, _, task_text = texts["max_length"].partition("; with --task, ")
    assert same(length, res.json()["max_length"])
    defaults = {p.name: p.obj.defaults.max_length for p in registry.builtin("task")}
    for task, value in by_name(task_text, list(defaults)).items():
        assert same(value, defaults[task]), task
    res = cli("bench", "run", "--dry-run", "--json")
    assert res.code == 0, res.err
    check_plain("bench", texts, res.json(), {"max_length"})


def test_sweep_report_and_admin_help_state_their_defaults(tiny_bert, shown, tmp_path):
    import yaml

    from tamt_cli import sweep

    grid = tmp_path / "grid.yaml"
    data = {"model": str(tiny_bert), "methods": ["omp"], "sparsities": [0.5], "tasks": []}
    grid.write_text(yaml.safe_dump({**data, "heldout": None}))
    assert shown["sweep"]["out"] == "the grid's out, else sweeps/<grid file name>"
    assert sweep.plan(grid).out == Path("sweeps") / "grid"
    check_plain("sweep", shown["sweep"], {}, {"out"})
    for command in ("report", "plugins", "env"):
        check_plain(command, shown[command], {}, set())
    assert shown["cache clear"] == {"corpus": "every corpus"}  # None: every corpus
    assert shown["cache list"] == {}


def test_every_command_is_checked(shown):
    commands = "search extract finetune eval bench sweep report plugins env"
    assert sorted(shown) == sorted([*commands.split(), "cache list", "cache clear"])
