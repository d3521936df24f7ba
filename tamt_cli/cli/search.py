"""``tamt search``: flags → :class:`~tamt_cli.specs.SearchSpec` → a method's run → the mask's
sparsity table.

Where a value is the method's to choose (lr, steps, intervals, MLM head), ``--help`` states
what each built-in training method resolves it to, read from the method itself when the help
is printed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import typer

from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag
from tamt_cli.errors import UserError
from tamt_cli.specs import Objective, SearchSpec

TRAINING = "Training"

#: method options `tamt search` took as flags of their own, before ``-o name=value``: still
#: read, hidden from the help, each with a note giving its ``-o`` form
ALIASES: dict[str, tuple[str, Any]] = {
    "like": ("--like", Path),
    "init": ("--init", str),
    "reset_every": ("--reset-every", int),
    "objective": ("--objective", Objective),
    "steps_per_round": ("--steps-per-round", int),
    "prune_fraction": ("--prune-fraction", float),
    "rewind_step": ("--rewind-step", int),
    "rewind": ("--rewind/--no-rewind", bool),
    "schedule": ("--schedule", str),
    "task": ("--task", str),
    "data_dir": ("--data-dir", Path),
    "train_size": ("--train-size", int),
    "task_options": ("--task-option", list[str]),
}

#: specs the built-in methods resolve for the help: two sparsities, and a --max-steps no
#: method defaults to, which tells a fixed value from one that follows the sparsity or steps
PROBES: tuple[dict[str, Any], ...] = (
    {"sparsity": 0.5},
    {"sparsity": 0.9},
    {"sparsity": 0.5, "max_steps": 7000},
)


@functools.cache
def _probes() -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Each built-in training method's ``resolved`` values for every probe spec."""
    from tamt_cli import registry

    found = {}
    for plugin in registry.builtin("method"):
        cls = plugin.obj
        if getattr(cls, "trains", False) and hasattr(cls, "resolved"):
            method = cls(cls.Options())
            found[plugin.name] = [
                (probe, method.resolved(SearchSpec(method=plugin.name, **probe)))
                for probe in PROBES
            ]
    return found


def _rule(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> str | None:
    """How one method resolves ``key``: a value, ``max-steps/10``, or values by sparsity."""
    if key == "max_steps":
        runs = [(probe, run) for probe, run in runs if "max_steps" not in probe]
    values = [run.get(key) for _, run in runs]
    if values[0] is None:
        return None
    if all(value == values[0] for value in values):
        return options.shown(values[0])
    steps = [run["max_steps"] for _, run in runs]
    share = steps[0] // values[0] if key != "max_steps" and values[0] else 0
    if share and all(v == max(1, s // share) for v, s in zip(values, steps, strict=True)):
        return "max-steps" if share == 1 else f"max-steps/{share}"
    low, high = (options.shown(probe["sparsity"]) for probe, _ in runs[:2])
    return f"{options.shown(values[0])} at sparsity {low}, {options.shown(values[1])} at {high}"


def by_method(key: str) -> str:
    """``key`` as each built-in training method resolves it when the spec leaves it open."""
    texts = {name: _rule(runs, key) for name, runs in _probes().items()}
    return options.by_value({n: t for n, t in texts.items() if t is not None}, "the method's")


def effective_default(method: str, option: str) -> str | None:
    """What a built-in training method uses for an option left open (``none`` in its options
    model), e.g. ``reset_every`` → ``100``, ``decay_steps`` → ``max-steps``; None if unknown."""
    runs = _probes().get(method)
    return _rule(runs, option) if runs else None


def method_options() -> str:
    """Every built-in method's options with the values they take when not given."""
    from tamt_cli import registry

    listing = {}
    for plugin in registry.builtin("method"):
        runs = _probes().get(plugin.name)
        parts = []
        for name, field in plugin.obj.Options.model_fields.items():
            value = field.get_default(call_default_factory=True)
            text = _rule(runs, name) if value is None and runs else None
            parts.append(f"{name}={text or options.shown(value)}")
        if parts:
            listing[plugin.name] = ", ".join(parts)
    return options.by_value(listing, "the method's")


def _methods_with(attribute: str, what: str) -> Any:
    def text() -> str:
        from tamt_cli import registry

        return f"({what}: {', '.join(registry.methods_with(attribute))})"

    return text


def _structured() -> str:
    """The methods that prune whole units."""
    from tamt_cli import registry

    able = ", ".join(registry.methods_with_structure("neurons"))
    return f"(weights, neurons, heads, neurons+heads; methods that take units: {able})"


def _instead() -> str:
    """What the methods that need no --sparsity take in its place."""
    from tamt_cli import registry

    found = [
        f"({p.name} takes {p.obj.sparsity_alternative} instead)"
        for p in registry.methods().all()
        if p.status == "ok" and getattr(p.obj, "sparsity_alternative", None)
    ]
    return "; ".join(found)


def _head(key: str) -> Any:
    return lambda: options.shown(options.head_defaults()[key])


def _training(name: str, **settings: Any) -> Flag:
    return Flag(name, panel=TRAINING, **settings)


FLAGS = (
    Flag("method", ("--method", "-m"), complete=options.complete_methods),
    Flag("sparsity", ("--sparsity", "-s"), more=_instead, required=True),
    Flag("pattern", more=_methods_with("patterns", "methods that take it")),
    Flag("structure", type=str, more=_structured),
    Flag("model", complete=options.complete_models),
    Flag("scope"),
    Flag("embeddings"),
    Flag("pooler"),
    Flag("seed"),
    Flag("out", shown="runs/<label or method>-s<sparsity>-<time>"),
    Flag("label", shown="the method's name"),
    Flag("budget", more=_methods_with("paper_budget", "methods that have it")),
    Flag("option", ("--option", "-o"), type=list[str], shown=method_options,
         help="method option name=value, repeatable (`tamt plugins METHOD` describes them)"),
    options.REPORT_TO,
    Flag("resume", type=Path, complete=options.complete_paths,
         help="continue an interrupted run from its last checkpoint"),
    *options.RUN,
    _training("corpus", complete=options.complete_corpora),
    _training("max_length"),
    _training("held_out"),
    _training("max_steps", shown=lambda: by_method("max_steps")),
    _training("batch_size"),
    _training("grad_accum"),
    _training("lr", shown=lambda: by_method("lr")),
    _training("head_lr", shown=_head("head_lr")),
    _training("head_warmup_steps", shown=_head("head_warmup_steps")),
    _training("head_warmup_lr", shown=_head("head_warmup_lr")),
    _training("clip"),
    _training("log_every"),
    _training("eval_every", shown=lambda: by_method("eval_every")),
    _training("eval_blocks"),
    _training("save_every", shown=lambda: by_method("save_every")),
    _training("keep_checkpoints", shown="1, removed when the run completes"),
    _training("mixed_precision"),
    *(
        Flag(name, (decl,), type=kind, hidden=True, shown="none", help=f"= -o {name}=...")
        for name, (decl, kind) in ALIASES.items()
    ),
)  # fmt: skip


def _given_options(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The method options given as ``-o`` and through the old flags, and a note on each old flag
    used; an option given both ways is an error, whatever the two values."""
    given = options.parse_pairs(values["option"]) or {}
    twice = [name for name in ALIASES if values[name] is not None and name in given]
    if twice:
        name = twice[0]
        raise UserError(
            f"method option '{name}' is given twice, as -o {name}=... and as "
            f"{ALIASES[name][0].split('/')[0]}; give it once, as -o {name}=VALUE"
        )
    notes = []
    for name, (decl, _) in ALIASES.items():
        value = values[name]
        if value is None:
            continue
        if name == "task_options":
            value = options.parse_pairs(value, decl) or {}
            shown = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        elif isinstance(value, bool):
            decl = decl.split("/")[0 if value else 1]
            shown = str(value).lower()
        else:
            value = str(value) if isinstance(value, Path) else value
            shown = str(value)
        given[name] = value
        notes.append(f"{decl} is deprecated; use -o {name}={shown}")
    return given, notes


def run(values: dict[str, Any]) -> None:
    """Find a mask (a subnetwork) of a pre-trained model with a pruning method."""
    from tamt_cli import search as searching
    from tamt_cli import specs, verbosity

    given, notes = _given_options(values)
    flags = {**options.spec_values(values, SearchSpec), "options": given or None}
    resume = values["resume"]
    if resume is not None:
        spec = searching.resumed_spec(resume, values["spec"], flags)
    else:
        spec = specs.build(SearchSpec, values["spec"], flags)
    method, spec = searching.resolve(spec)
    console = output.err()
    for note in notes:
        verbosity.note(console, note)
    if values["dry_run"]:
        searching.advise(method, spec, console)
        hook = getattr(method, "resolved", None)
        resolved = hook(spec) if hook is not None else None
        if resolved is not None and spec.mixed_precision == "auto":
            from tamt_cli import precision

            resolved = {**resolved, "mixed_precision": precision.described()}
        output.show_spec(spec, values["as_json"], resolved)
        return
    result = searching.run(spec, method, console, resume=resume is not None)
    if values["as_json"]:
        output.emit_json(result)
    else:
        from tamt_cli.display import sparsity_table

        out = output.out()
        out.print(sparsity_table(result["report"], f"Mask of {result['method']}"))
        out.print(f"run written to [bold]{result['run']}[/bold]")


def register(app: typer.Typer) -> None:
    app.command("search", cls=options.Command)(options.command(run, FLAGS, SearchSpec))
