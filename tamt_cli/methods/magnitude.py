"""``omp``: one-shot magnitude pruning of the pre-trained weights."""

from __future__ import annotations

from typing import Any

from tamt_cli.methods.base import NoOptions, SearchJob


class OneShotMagnitude:
    """Prune the smallest-magnitude pre-trained weights, per matrix or globally."""

    summary = "one-shot magnitude pruning (OMP) of the pre-trained weights"
    Options = NoOptions
    patterns = True

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def search(self, job: SearchJob) -> dict[str, Any]:
        from tamt_cli import masking

        return masking.magnitude_masks(job.weights, job.sparsity, job.spec.scope, job.pattern)
