"""`tamt finetune` and `tamt eval --task`: transfer a subnetwork to a downstream task with its
mask held fixed, and score fine-tuned checkpoints."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tamt_cli import __version__
from tamt_cli.errors import UserError
from tamt_cli.specs import EvalSpec, FinetuneSpec


def run(spec: FinetuneSpec, console: Console) -> dict[str, Any]:
    raise UserError(f"`tamt finetune` is not implemented in tamt {__version__} yet")


def evaluate(spec: EvalSpec, console: Console) -> dict[str, Any]:
    raise UserError(f"`tamt eval --task` is not implemented in tamt {__version__} yet")


def render(result: dict[str, Any], console: Console) -> None:
    from tamt_cli.display import result_table

    console.print(result_table(result, "Result"))
