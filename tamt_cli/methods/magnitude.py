"""``omp``: one-shot magnitude pruning of the pre-trained weights."""

from __future__ import annotations

from typing import Any

from tamt_cli.methods.base import NoOptions, SearchJob
from tamt_cli.units import STRUCTURES


class OneShotMagnitude:
    """Prune the smallest-magnitude pre-trained weights, per matrix or globally; or whole
    units, those of each layer whose weights together have the smallest L2 norm."""

    summary = "one-shot magnitude pruning (OMP) of the pre-trained weights"
    Options = NoOptions
    patterns = True
    structures = STRUCTURES

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def search(self, job: SearchJob) -> dict[str, Any]:
        from tamt_cli import masking, units

        if job.units:
            scores = units.magnitude_scores(job.units, job.weights)
            return units.keep_units(job.units, scores, job.sparsity)
        return masking.magnitude_masks(job.weights, job.sparsity, job.spec.scope, job.pattern)
