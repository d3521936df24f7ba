"""The commands about tamt itself rather than a run: ``tamt plugins`` (what is installed),
``tamt env`` (what a bug report needs) and ``tamt cache`` (the tokenised data and fitted heads
tamt keeps)."""

from __future__ import annotations

from typing import Any

import typer

from tamt_cli import registry
from tamt_cli.cli import options, output
from tamt_cli.cli.options import Flag

PLUGINS = (
    Flag("name", argument=True, type=str, shown="list every plugin",
         help="one method or task: list its options", complete=options.complete_plugins),
    Flag("kind", type=options.choices(registry.GROUPS), shown="both",
         help="only methods or only tasks"),
    options.JSON,
)  # fmt: skip
ENV = (
    options.JSON,
    Flag("no_hub", ("--no-hub",), switch=True, help="do not try to reach the Hugging Face hub"),
)
CLEAR = (
    Flag("corpus", type=str, shown="every corpus",
         help="only this corpus, as `tamt cache list` names it"),
    Flag("heads", ("--heads",), switch=True,
         help="only the MLM heads fitted on models without one"),
    Flag("features", ("--features",), switch=True,
         help="only the tokenised task data (fine-tuning, eval)"),
    options.JSON,
)  # fmt: skip


def plugins(values: dict[str, Any]) -> None:
    """List installed methods and tasks, where they come from, which failed to load and the
    --structure values each method takes; with a NAME, that method's or task's options (types,
    defaults, descriptions)."""
    name, kind, as_json = values["name"], values["kind"], values["as_json"]
    if name is not None:
        doc = registry.describe(name, kind)
        if doc["kind"] == "method":
            from tamt_cli.cli.search import effective_default

            for option in doc["options"]:
                if option["default"] is None and not option["required"]:
                    used = effective_default(doc["name"], option["name"])
                    if used is not None:
                        option["effective_default"] = used
        output.present(doc, as_json, "plugin_options_table")
        return
    kinds = [kind] if kind else list(registry.GROUPS)
    rows = [p.as_dict() for k in kinds for p in registry.registry(k).all()]
    output.present(rows, as_json, "plugins_table")


def env(values: dict[str, Any]) -> None:
    """Versions, accelerators, plugins, caches and hub access: what a bug report needs."""
    from tamt_cli import environment

    output.present(environment.report(check_hub=not values["no_hub"]), values["as_json"],
                   "env_table")  # fmt: skip


cache_app = typer.Typer(
    cls=options.Group,
    help="tamt's cache of tokenised corpora, of MLM heads fitted on models without one and of "
    "tokenised task data (`TAMT_CACHE_DIR`, else `$XDG_CACHE_HOME/tamt/blocks`, else "
    "`~/.cache/tamt/blocks`).",
    no_args_is_help=False,
    invoke_without_command=True,
)


@cache_app.callback()
def _cache(ctx: typer.Context, as_json: options.JsonOpt = False) -> None:
    """tamt's cache of tokenised corpora, fitted MLM heads and tokenised task data: `tamt cache`
    lists it."""
    if ctx.invoked_subcommand is None:
        cache_list({"as_json": as_json})


def cache_list(values: dict[str, Any]) -> None:
    """The cached token blocks, by corpus, the fitted MLM heads and the tokenised task data, by
    task, with their size."""
    from tamt_cli import environment

    output.present(environment.cache_summary(), values["as_json"], "cache_table")


def cache_clear(values: dict[str, Any]) -> None:
    """Remove cached token blocks, fitted MLM heads and tokenised task data (rebuilt when next
    needed)."""
    from tamt_cli import display, environment

    result = environment.clear_cache(
        values["corpus"], heads=values["heads"], features=values["features"]
    )
    if values["as_json"]:
        output.emit_json(result)
    else:
        size = display.human_bytes(result["bytes"])
        output.out().print(f"removed {result['files']} file(s), {size}, from {result['path']}")


def register(app: typer.Typer) -> None:
    for name, body, flags in (("plugins", plugins, PLUGINS), ("env", env, ENV)):
        app.command(name, cls=options.Command)(options.command(body, flags))
    cache_app.command("list", cls=options.Command)(options.command(cache_list, (options.JSON,)))
    cache_app.command("clear", cls=options.Command)(options.command(cache_clear, CLEAR))
    app.add_typer(cache_app, name="cache")
