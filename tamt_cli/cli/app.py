"""The ``tamt`` Typer app: its commands, the options every command shares (``--version``,
``-q``, ``-v``), and how a failure becomes one line on stderr and an exit code."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from tamt_cli import __version__
from tamt_cli.cli import admin, bench, extract, finetune, options, report, search, sweep
from tamt_cli.cli import eval as evaluate
from tamt_cli.errors import Interrupted, UserError, environment_fault, one_line


class _Stopped(Exception):
    """An interruption on its way out of Typer, which would otherwise end it silently."""


class _Commands(options.Group):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Stopped(str(exc) if isinstance(exc, Interrupted) else "interrupted") from None


app = typer.Typer(
    name="tamt",
    cls=_Commands,
    help="Find winning lottery tickets in BERT: search masks, extract subnetworks, transfer them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tamt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="show the version"),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="errors and the result only")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="also the libraries' warnings and debug lines"),
    ] = False,
) -> None:
    """Find winning lottery tickets in BERT: search masks, extract subnetworks, transfer them."""
    from tamt_cli import verbosity

    if quiet and verbose:
        raise UserError("give -q/--quiet or -v/--verbose, not both")
    verbosity.set_level(verbosity.QUIET if quiet else verbosity.VERBOSE if verbose else 0)


for _module in (search, extract, finetune, evaluate, bench, sweep, report, admin):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one line on stderr and an exit code
    (0 ok, 2 a user error or a fault of the machine such as a full disk, 1 an internal error,
    130 interrupted)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="tamt", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
        return exc.exit_code
    except (KeyboardInterrupt, _Stopped) as exc:
        _fail(str(exc) if isinstance(exc, Interrupted | _Stopped) else "interrupted")
        return 130
    except Exception as exc:
        return _unexpected(exc)
    return result if isinstance(result, int) else 0


def _unexpected(exc: Exception) -> int:
    """The exit code of an exception that is not tamt's own, after its line on stderr."""
    # Typer's parser exceptions (Click's, or Typer's own copy of them), matched by name so
    # that either parser works.
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if "Exit" in kinds:
        return int(getattr(exc, "exit_code", 0))
    if "Abort" in kinds:
        _fail("interrupted")
        return 130
    if "UsageError" in kinds:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "tamt"
        if not exc.format_message():  # type: ignore[attr-defined]
            return 2  # bare `tamt`: the help was printed
        _fail(f"{where}: {exc.format_message()} (see `{where} --help`)")  # type: ignore[attr-defined]
        return 2
    if os.environ.get("TAMT_DEBUG"):
        raise
    fault = environment_fault(exc)  # disk full, no permission: the machine, not tamt
    if fault is not None:
        _fail(fault)
        return 2
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    _fail(f"internal error: {type(exc).__name__}: {first} (TAMT_DEBUG=1 shows the traceback)")
    return 1


def _fail(message: str) -> None:
    """``message`` on stderr as one line, long values shortened (:func:`errors.one_line`)."""
    sys.stderr.write(f"tamt: error: {one_line(message)}\n")
    sys.stderr.flush()
