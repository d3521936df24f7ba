"""``random``: a seeded random mask, at a sparsity or copying another mask's per-matrix counts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tamt_cli.errors import UserError
from tamt_cli.methods.base import SearchJob
from tamt_cli.units import STRUCTURES

if TYPE_CHECKING:
    from tamt_cli.specs import SearchSpec


class RandomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    like: Path | None = Field(
        None, description="mask file whose per-matrix pruned counts the random mask copies"
    )


class RandomPruning:
    """Prune weights uniformly at random (seeded by ``--seed``)."""

    summary = "random pruning at the same sparsity (seeded; --like copies a mask's layout)"
    Options = RandomOptions
    sparsity_alternative: ClassVar[str] = "--like MASKFILE"
    patterns: ClassVar[bool] = True
    structures: ClassVar[tuple[str, ...]] = STRUCTURES

    def __init__(self, options: RandomOptions) -> None:
        self.options = options

    def needs_sparsity(self) -> bool:
        return self.options.like is None

    def check(self, spec: SearchSpec) -> None:
        if self.options.like is not None and spec.pattern is not None:
            raise UserError("--like copies another mask's counts; it does not go with --pattern")
        if self.options.like is not None and spec.structure != "weights":
            raise UserError(
                f"--like copies another mask's counts of weights; it does not go with "
                f"--structure {spec.structure} (give --sparsity)"
            )
        if self.options.like is not None and not self.options.like.is_file():
            raise UserError(f"--like mask file '{self.options.like}' does not exist")

    def search(self, job: SearchJob) -> dict[str, Any]:
        from tamt_cli import maskfile, masking, units

        if job.units:
            return units.keep_units(job.units, units.random_scores(job.units, job.spec.seed),
                                    job.sparsity)  # fmt: skip
        scores = masking.random_scores(job.weights, job.spec.seed)
        if self.options.like is None:
            return masking.masks_from_scores(scores, job.sparsity, job.spec.scope, job.pattern)

        like = maskfile.load_masks(self.options.like)
        masking.check_fits(like, masking.shapes(job.weights), f"--like mask '{self.options.like}'")
        counts = {name: int((~mask).sum()) for name, mask in like.items()}
        overall = masking.pruned_fraction(like) or 0.0
        if job.spec.sparsity is not None and abs(job.spec.sparsity - overall) > 1e-3:
            raise UserError(
                f"--sparsity {job.spec.sparsity} contradicts the --like mask, whose sparsity is "
                f"{overall:.4f}; leave --sparsity out to copy it"
            )
        job.notes["like"] = str(self.options.like)
        job.targets = {name: counts[name] / like[name].numel() for name in counts}
        return masking.local_masks(scores, counts)
