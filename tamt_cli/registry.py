"""Plugin registry: pruning methods and downstream tasks, resolved through entry points.

Built-in methods and tasks are declared in the project's own ``pyproject.toml`` under the
entry-point groups ``tamt.methods`` and ``tamt.tasks`` and go through exactly the same path as a
third-party plugin. Each entry point is imported lazily, on its own, the first time it is needed;
one that fails to import is recorded (shown by ``tamt plugins``) and only raises when it is asked
for, unless ``TAMT_STRICT_PLUGINS=1`` makes every failure fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from tamt_cli import __version__, verbosity
from tamt_cli.errors import UserError, unknown

GROUPS = {"method": "tamt.methods", "task": "tamt.tasks"}
STRICT_ENV = "TAMT_STRICT_PLUGINS"
#: The plugin API this tamt provides (``tamt_cli.api``). A plugin declares the version it was
#: built for as ``tamt_api = N`` on its class; another major version is refused.
API_VERSION = 1


class PluginError(UserError):
    """An installed plugin cannot be used (failed import, bad object, name clash)."""


def strict() -> bool:
    return verbosity.flag(STRICT_ENV)


@dataclass
class Plugin:
    """One entry point of a group, and what became of loading it."""

    name: str
    kind: str
    target: str
    distribution: str | None
    version: str | None
    status: str = "not loaded"  # "ok" | "error" | "incompatible" | "not loaded"
    error: str | None = None
    summary: str = ""
    obj: Any = None

    def as_dict(self) -> dict[str, Any]:
        """Its fields, and of a method that loads the ``--structure`` values it takes (else
        ``structures`` is None)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "summary": self.summary,
            "structures": self.structures(),
        }

    def structures(self) -> list[str] | None:
        """The ``--structure`` values a method that loads takes; None for a task or a method
        that does not load."""
        if self.kind != "method" or self.status != "ok":
            return None
        from tamt_cli.methods.base import structures_of

        return list(structures_of(self.obj))


class Registry:
    """Names of one kind (``method`` or ``task``) mapped to lazily loaded plugin objects."""

    def __init__(self, kind: str, check: Callable[[Any], str] | None = None) -> None:
        self.kind = kind
        self.group = GROUPS[kind]
        self._check = check
        self._plugins: dict[str, Plugin] | None = None

    def _discover(self) -> dict[str, Plugin]:
        if self._plugins is None:
            found: dict[str, Plugin] = {}
            for ep in entry_points(group=self.group):
                plugin = _plugin_from(ep, self.kind)
                other = found.get(ep.name)
                if other is None:
                    found[ep.name] = plugin
                elif other.target != plugin.target:
                    other.status = "error"
                    other.error = (
                        f"name clash: {self.kind} '{ep.name}' is provided by both "
                        f"{other.distribution} ({other.target}) and {plugin.distribution} "
                        f"({plugin.target}); uninstall one"
                    )
            if strict():  # every failure is fatal, on every use, until it is fixed
                for plugin in found.values():
                    self._load_plugin(plugin)
                    self._raise_if_broken(plugin)
            self._plugins = found
        return self._plugins

    def names(self) -> list[str]:
        return sorted(self._discover())

    def _load(self, name: str) -> Plugin:
        return self._load_plugin(self._discover()[name])

    def _load_plugin(self, plugin: Plugin) -> Plugin:
        if plugin.status == "not loaded":
            try:
                obj = _entry_point(self.group, plugin.name, plugin.target).load()
                summary = self._check(obj) if self._check else ""
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a broken plugin (even one calling sys.exit at import)
                plugin.status = "error"  # must not break anything else
                plugin.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            else:
                plugin.status, plugin.obj, plugin.summary = "ok", obj, summary
                wanted = getattr(obj, "tamt_api", None)
                if wanted is not None and not _compatible(wanted):
                    plugin.status = "incompatible"
                    plugin.error = (
                        f"built for tamt plugin API {wanted}; this tamt {__version__} provides "
                        f"API {API_VERSION} (upgrade the plugin or tamt)"
                    )
        return plugin

    def _raise_if_broken(self, plugin: Plugin) -> None:
        if plugin.status in {"error", "incompatible"}:
            source = (
                f" (from {plugin.distribution} {plugin.version})" if plugin.distribution else ""
            )
            raise PluginError(f"{self.kind} '{plugin.name}'{source} cannot be used: {plugin.error}")

    def get(self, name: str) -> Any:
        """The loaded object for ``name``; a one-line error if unknown or broken."""
        if name not in self._discover():
            raise unknown(self.kind, name, self.names())
        plugin = self._load(name)
        self._raise_if_broken(plugin)
        return plugin.obj

    def plugin(self, name: str) -> Plugin:
        """Metadata for ``name`` (loads it, never raises for a broken plugin)."""
        if name not in self._discover():
            raise unknown(self.kind, name, self.names())
        return self._load(name)

    def all(self) -> list[Plugin]:
        """Every plugin of this kind, each loaded so that its status is known."""
        return [self._load(name) for name in self.names()]


def _compatible(wanted: Any) -> bool:
    try:
        return int(str(wanted).split(".")[0]) == API_VERSION
    except ValueError:
        return False


def _plugin_from(ep: EntryPoint, kind: str) -> Plugin:
    dist = getattr(ep, "dist", None)
    return Plugin(
        name=ep.name,
        kind=kind,
        target=ep.value,
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
    )


def _entry_point(group: str, name: str, target: str) -> EntryPoint:
    for ep in entry_points(group=group, name=name):
        if ep.value == target:
            return ep
    return EntryPoint(name=name, value=target, group=group)


def _check_method(obj: Any) -> str:
    from tamt_cli.methods.base import check_method

    return check_method(obj)


def _check_task(obj: Any) -> str:
    from tamt_cli.tasks.base import check_task

    return check_task(obj)


@cache
def methods() -> Registry:
    return Registry("method", _check_method)


@cache
def tasks() -> Registry:
    return Registry("task", _check_task)


def registry(kind: str) -> Registry:
    return {"method": methods, "task": tasks}[kind]()


def create_method(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The method registered as ``name``, constructed with its validated options:
    ``cls(cls.Options(**options))``."""
    from tamt_cli import specs

    cls = methods().get(name)
    return cls(specs.validate(cls.Options, dict(options or {}), f"options of method '{name}'"))


def create_task(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The task registered as ``name``, constructed: ``cls()``, or ``cls(validated options)``
    for a task class with an ``Options`` pydantic model."""
    from tamt_cli import specs

    cls = tasks().get(name)
    model = getattr(cls, "Options", None)
    if model is None:
        if options:
            raise UserError(f"task '{name}' takes no options (got {', '.join(options)})")
        return cls()
    return cls(specs.validate(model, dict(options or {}), f"options of task '{name}'"))


def builtin(kind: str) -> list[Plugin]:
    """The methods or tasks tamt itself provides (those that load), in name order."""
    found = registry(kind).all()
    return [p for p in found if p.status == "ok" and p.target.startswith(f"{__package__}.")]


def methods_with(attribute: str) -> list[str]:
    """The installed methods whose class sets ``attribute`` (``patterns``: they take
    ``--pattern``; ``paper_budget``: they have a ``--budget paper``), for help and errors."""
    return [p.name for p in methods().all() if p.status == "ok" and getattr(p.obj, attribute, None)]


def methods_with_structure(structure: str) -> list[str]:
    """The installed methods that take ``--structure structure``."""
    from tamt_cli.methods.base import structures_of

    found = methods().all()
    return [p.name for p in found if p.status == "ok" and structure in structures_of(p.obj)]


def describe(name: str, kind: str | None = None) -> dict[str, Any]:
    """One method or task for ``tamt plugins NAME``: where it comes from, its summary and its
    options (name, type, default, description). ``kind`` is needed only when a method and a
    task share ``name``."""
    from tamt_cli.specs import describe_options

    kinds = [kind] if kind else [k for k in GROUPS if name in registry(k).names()]
    if len(kinds) > 1:
        raise UserError(f"'{name}' is both a method and a task; give --kind method or --kind task")
    if not kinds:
        every = sorted({n for k in GROUPS for n in registry(k).names()})
        raise unknown("method or task", name, every)
    found = registry(kinds[0])
    obj = found.get(name)  # unknown or broken: a one-line error
    doc = found.plugin(name).as_dict()
    model = getattr(obj, "Options", None)
    options = describe_options(model) if model is not None else []
    if kinds[0] == "method":
        given = "-o name=value, or under options: in a spec file"
        for option in options:
            option["flag"] = f"-o {option['name']}=..."
    else:
        given = "--task-option name=value, or under task_options: in a spec file"
    return {**doc, "options": options, "given_as": given}


def installed_distributions() -> dict[str, str]:
    """Distribution name → version of everything that provides methods or tasks (no imports)."""
    out: dict[str, str] = {}
    for group in GROUPS.values():
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if dist is not None:
                out[dist.metadata["Name"]] = dist.version
    return dict(sorted(out.items()))
