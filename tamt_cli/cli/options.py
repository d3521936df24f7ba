"""Command-line options made from the run specs.

A command declares its options as a table of :class:`Flag`; a flag named after a spec field
takes its type (``Literal`` fields become choices), its help (the field's description), its
default and whether it is required from that field, so that ``--help`` says what the spec does.
Where the default is computed (by the method, the task or the fine-tuning run), ``shown`` says so;
a callable ``shown`` or ``more`` is evaluated only when the command's help is printed, since
it reads the registry.
"""

from __future__ import annotations

import functools
import glob
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.core import TyperCommand, TyperGroup

from tamt_cli import errors, trackers
from tamt_cli.errors import UserError

REQUIRED = "\\[required]"
#: text shown where a computed default is filled in only when the help is printed
LATER = "…"

Text = str | Callable[[], str] | None


def default_text(value: object) -> str:
    """``[default: value]`` for help text (escaped: rich markup takes brackets for styles)."""
    return f"\\[default: {value}]"


def number(value: float) -> str:
    """A number as help shows it: ``5e-5``, ``0.05``, ``1.0``, ``300``."""
    if isinstance(value, bool) or not isinstance(value, float) or value == 0:
        return str(value).lower() if isinstance(value, bool) else str(value)
    if abs(value) < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def shown(value: Any) -> str:
    """A default value as help shows it (``none`` for nothing)."""
    if value is None or value == [] or value == {}:
        return "none"
    if isinstance(value, Path):
        return value.as_posix()
    return number(value) if isinstance(value, int | float) else str(value)


def by_value(values: Mapping[str, str], owner: str) -> str:
    """``'2e-4 for kd; 5e-5 for imp, mlm'``: names grouped by the value they share, after
    ``owner`` (``the method's``); just the value when they all share one."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(value, []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return f"{owner}: " + "; ".join(f"{v} for {', '.join(names)}" for v, names in groups.items())


def choices(values: Iterable[str]) -> Any:
    """A ``Literal`` of ``values``: Typer offers and checks them as choices."""
    return Literal.__getitem__(tuple(values))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Flag:
    """One option or argument of a command. Named after a spec field, it takes that field's
    type, description and default; the other attributes add to or replace them."""

    name: str  # the spec field it sets, or the command's own parameter
    decls: tuple[str, ...] = ()  # names on the command line (default: --name-with-dashes)
    help: str | None = None  # replaces the field's description
    more: Text = None  # added to the help, e.g. the methods that take the option
    shown: Text = None  # the default as help states it, where the field's is not what runs
    type: Any = None  # replaces the field's type (None left out)
    default: Any = None  # the value when not given
    panel: str | None = None
    complete: Callable[[str], list[str]] | None = None
    argument: bool = False
    required: bool = False  # shown as required (a spec field's own requiredness is read)
    switch: bool = False  # a bare --flag, off unless given
    hidden: bool = False

    def field_of(self, spec: type[BaseModel] | None) -> FieldInfo | None:
        return None if spec is None else spec.model_fields.get(self.name)


def _text(value: Text, computed: bool) -> str | None:
    if callable(value):
        return value() if computed else LATER
    return value


def help_text(flag: Flag, field: FieldInfo | None, computed: bool = True) -> str:
    """The help of ``flag``: description, additions, and the default or ``[required]``."""
    parts = [flag.help if flag.help is not None else (field.description if field else "") or ""]
    parts.append(_text(flag.more, computed) or "")
    if flag.switch:
        pass
    elif flag.required or (field is not None and field.is_required()):
        parts.append(REQUIRED)
    elif flag.shown is not None:
        parts.append(default_text(_text(flag.shown, computed)))
    elif field is not None and _bare_type(field.annotation) is bool:
        dashed = flag.name.replace("_", "-")
        parts.append(default_text(f"--{dashed}" if field.default else f"--no-{dashed}"))
    else:
        value = field.get_default(call_default_factory=True) if field else flag.default
        parts.append(default_text(shown(value)))
    return " ".join(part for part in parts if part)


def _bare_type(annotation: Any) -> Any:
    """``annotation`` without ``None``: ``float | None`` → ``float``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return annotation


def _parameter(flag: Flag, field: FieldInfo | None, text: str) -> inspect.Parameter:
    kind = flag.type if flag.type is not None else _bare_type(field.annotation if field else str)
    settings: dict[str, Any] = {
        "help": text,
        "hidden": flag.hidden,
        "show_default": False,
        "rich_help_panel": flag.panel,
    }
    if flag.complete is not None:
        settings["autocompletion"] = flag.complete
    default: Any = flag.default
    if flag.argument:
        info: Any = typer.Argument(**settings)
    else:
        decls = flag.decls
        if not decls and kind is bool and not flag.switch:
            dashed = flag.name.replace("_", "-")
            decls = (f"--{dashed}/--no-{dashed}",)
        info = typer.Option(*decls, **settings)
    if flag.switch:
        annotation: Any = Annotated[bool, info]
        default = False
    elif flag.default is ...:
        annotation, default = Annotated[kind, info], inspect.Parameter.empty
    else:
        annotation = Annotated[kind | None, info]
    return inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)  # fmt: skip


def command(
    body: Callable[[dict[str, Any]], Any],
    flags: Sequence[Flag],
    spec: type[BaseModel] | None = None,
) -> Callable[..., Any]:
    """A Typer command callback with ``flags`` as its parameters; it calls ``body`` with the
    values given, by flag name. Register it with ``cls=Command``."""
    params, later = [], {}
    for flag in flags:
        field = flag.field_of(spec)
        params.append(_parameter(flag, field, help_text(flag, field, computed=False)))
        if callable(flag.shown) or callable(flag.more):
            later[flag.name] = functools.partial(help_text, flag, field)

    def callback(**values: Any) -> Any:
        with errors.given(_paths_given(flags, values)):
            try:
                return body(values)
            except Exception as exc:  # a fault of the machine, told while the options are known
                fault = None if isinstance(exc, UserError) else errors.environment_fault(exc)
                if fault is None or os.environ.get("TAMT_DEBUG"):
                    raise
                raise UserError(fault) from exc

    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    for attr in ("__name__", "__qualname__", "__module__"):
        setattr(callback, attr, getattr(body, attr))
    callback.__doc__ = reflowed(body.__doc__)
    callback.later_help = later  # type: ignore[attr-defined]
    return callback


def _paths_given(flags: Sequence[Flag], values: Mapping[str, Any]) -> dict[str, str]:
    """Option (``--model``, or an argument's ``RUN``) → the text it was given, for every value
    that may name a file: an error about that file names the option too."""
    given = {}
    for flag in flags:
        value = values.get(flag.name)
        if isinstance(value, str | Path):
            name = flag.name.upper() if flag.argument else (flag.decls or _dashed(flag))[0]
            given[name.split("/")[0]] = str(value)
    return given


def _dashed(flag: Flag) -> tuple[str]:
    return (f"--{flag.name.replace('_', '-')}",)


def without_flag_metavars(params: list[Any]) -> list[Any]:
    """``params`` with no metavar on the flags (``--json``, ``--embeddings/--no-embeddings``):
    they take no value, so the help shows none where Typer would show ``<bool>``."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Group(TyperGroup):
    """A group of commands whose help shows no metavar on its flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return without_flag_metavars(super().get_params(ctx))


def reflowed(doc: str | None) -> str | None:
    """A docstring's paragraphs each on one line, so that help wraps them to the terminal
    rather than at the source's line breaks."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


class Command(TyperCommand):
    """A command whose help fills in, when printed, the defaults only the registry knows, and
    shows no metavar on its flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return without_flag_metavars(super().get_params(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        later = getattr(self.callback, "later_help", {})
        for param in self.params:
            if param.name in later:
                param.help = later[param.name]()  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def spec_values(values: Mapping[str, Any], spec: type[BaseModel]) -> dict[str, Any]:
    """The values of ``spec``'s fields among a command's values."""
    return {name: value for name, value in values.items() if name in spec.model_fields}


def parse_pairs(pairs: list[str] | None, flag: str = "--option") -> dict[str, Any] | None:
    """``-o name=value`` pairs as a dict, values read as YAML scalars (5 → int, true → bool)."""
    if not pairs:
        return None
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{flag} takes name=value, got '{pair}'")
        try:
            options[name.strip()] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError):  # ValueError: an integer too long to read
            options[name.strip()] = value
    return options


# -- defaults the registry knows ------------------------------------------------------------------


def task_defaults(attribute: str) -> str:
    """``the task's: 2e-5 for cola, …; 3e-5 for squad, …``: a fine-tuning default of every
    built-in task (``Defaults.<attribute>``), as the tasks declare it."""
    from tamt_cli import registry

    values = {p.name: getattr(p.obj.defaults, attribute) for p in registry.builtin("task")}
    return by_value({n: shown(v) for n, v in values.items() if v is not None}, "the task's")


def head_defaults() -> dict[str, Any]:
    """The MLM-head values a search or eval uses where the spec gives none."""
    from types import SimpleNamespace

    unset = SimpleNamespace(head_lr=None, head_warmup_steps=None, head_warmup_lr=None)
    from tamt_cli import specs

    return specs.head_settings(unset)


# -- shell completion (`tamt --install-completion`) -----------------------------------------------


def complete_paths(incomplete: str) -> list[str]:
    """Files and folders whose path starts with ``incomplete`` (folders end in ``/``)."""
    found = sorted(glob.glob(glob.escape(os.path.expanduser(incomplete)) + "*"))
    return [f + os.sep if os.path.isdir(f) else f for f in found]


def complete_models(incomplete: str) -> list[str]:
    return [name for name in ("demo",) if name.startswith(incomplete)] + complete_paths(incomplete)


def complete_corpora(incomplete: str) -> list[str]:
    names = ("wikitext-103", "wikitext-2", "demo")
    return [n for n in names if n.startswith(incomplete)] + complete_paths(incomplete)


def _registered(kind: str, incomplete: str) -> list[str]:
    """Names of the installed methods or tasks, plugins included (entry points only: nothing is
    imported, so completion stays fast)."""
    from tamt_cli import registry

    return [name for name in registry.registry(kind).names() if name.startswith(incomplete)]


def complete_methods(incomplete: str) -> list[str]:
    return _registered("method", incomplete)


def complete_tasks(incomplete: str) -> list[str]:
    return _registered("task", incomplete)


def complete_plugins(incomplete: str) -> list[str]:
    return sorted(set(complete_methods(incomplete)) | set(complete_tasks(incomplete)))


def complete_trackers(incomplete: str) -> list[str]:
    done, _, last = incomplete.rpartition(",")
    return [f"{done},{t}" if done else t for t in trackers.CHOICES if t.startswith(last)]


# -- flags several commands share -----------------------------------------------------------------

SPEC = Flag(
    "spec",
    type=Path,
    help="spec file (YAML, JSON or TOML) with this command's fields, required ones included; "
    "flags given here win",
    complete=complete_paths,
)
DRY_RUN = Flag(
    "dry_run", ("--dry-run",), "print the resolved, validated spec and stop", switch=True
)
JSON = Flag("as_json", ("--json",), "print one JSON document on stdout", switch=True)
#: the last three flags of every command that runs a spec
RUN = (SPEC, DRY_RUN, JSON)
TASK_OPTION = Flag("task_option", ("--task-option",), type=list[str], shown="none",
                   help="an option of the task, name=value (repeatable)")  # fmt: skip
REPORT_TO = Flag(
    "report_to",
    type=str,
    more=f"({', '.join(trackers.CHOICES)})",
    complete=complete_trackers,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]

HUB = "Hugging Face Hub"


def push_flags(what: str) -> tuple[Flag, ...]:
    """--push-to-hub (uploading ``what``) and its settings: command line only, so that a saved
    spec, repeated, never uploads."""
    return (
        Flag("push_to_hub", ("--push-to-hub",), type=str, shown="none", panel=HUB,
             help=f"upload {what}, model card included, to this Hub model repository "
             "(user/name or org/name; made if missing) in one commit; checked before any work"),
        Flag("private", ("--private",), switch=True, panel=HUB,
             help="--push-to-hub: make the repository private when it is created"),
        Flag("revision", ("--revision",), type=str, shown="none", panel=HUB,
             help="--push-to-hub: the branch to commit to, made if missing (none: the default "
             "one)"),
    )  # fmt: skip


def push_target(values: Mapping[str, Any], seed: int | None = None) -> Any:
    """The :class:`tamt_cli.hub.Push` of ``--push-to-hub`` (None without it); ``--private`` and
    ``--revision`` alone are refused."""
    if values["push_to_hub"] is None:
        for name, flag in (("private", "--private"), ("revision", "--revision")):
            if values[name]:
                raise UserError(f"{flag} applies to --push-to-hub REPO_ID, which was not given")
        return None
    from tamt_cli.hub import Push

    return Push(values["push_to_hub"], values["private"], values["revision"], seed)
