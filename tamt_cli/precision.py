"""`--mixed-precision auto`: what this machine runs well (bf16 where the GPU or the CPU has
bfloat16 arithmetic, fp16 on another GPU, else none). Runs record the resolved value, and
comparisons with a run's saved spec (``--resume``, a sweep's cells) resolve ``auto`` first.
Nothing here imports torch before it is called."""

from __future__ import annotations


def cpu_bf16() -> str | None:
    """What makes bfloat16 matrix products fast on this CPU (``AMX`` tiles, ``AVX-512 BF16``
    instructions), or None where it has neither and bf16 would be emulated."""
    import torch

    def has(name: str) -> bool:
        probe = getattr(torch.cpu, name, None)  # private probes: absent in some builds
        try:
            return bool(probe()) if probe is not None else False
        except (RuntimeError, OSError):
            return False

    if not torch.backends.mkldnn.is_available():
        return None
    if has("_is_amx_tile_supported"):
        return "AMX"
    return "AVX-512 BF16" if has("_is_avx512_bf16_supported") else None


def auto_precision() -> tuple[str, str]:
    """What ``--mixed-precision auto`` runs with here, and why: bf16 on a CUDA GPU that has it
    and on a CPU with bfloat16 arithmetic (docs/benchmarks.md: "bfloat16 on the CPU"), fp16 on
    another CUDA GPU, else no mixed precision."""
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", "(a CUDA GPU with bfloat16)"
        return "fp16", "(a CUDA GPU without bfloat16)"
    found = cpu_bf16()
    if found is not None:
        return "bf16", f"(a CPU with {found})"
    return "no", "(a CPU without bfloat16 arithmetic)"


def resolve(value: str) -> str:
    """The mixed precision a run of ``--mixed-precision value`` uses (``auto`` resolved)."""
    return auto_precision()[0] if value == "auto" else value


def described() -> str:
    """What ``auto`` resolves to here and why: ``bf16 (a CPU with AMX)``."""
    return " ".join(auto_precision())
