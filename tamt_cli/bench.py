"""`tamt bench`: what a subnetwork saves on disk and in inference time against its dense model.

Sizes are those of ``model.safetensors`` written dense and in the sparse-bitmask layout
(:mod:`tamt_cli.compressed`). Latency is the encoder's forward pass on the same seeded token ids,
timed ``repeats`` times after ``warmup`` passes, for each way of running it this machine has:

* ``dense``: the pre-trained model; ``masked``: the subnetwork with its zeros, on the same dense
  kernels (the speed a plain export gets);
* on a CPU, ``csr``: every masked linear layer's weight as a ``torch.sparse_csr`` matrix,
  multiplied with ``torch.sparse.mm`` (unstructured masks);
* on a CUDA GPU, with a 2:4 pattern: ``fp16`` (the masked model in half precision) and
  ``2:4 fp16`` (every masked linear weight through ``torch.sparse.to_sparse_semi_structured``).

Each sparse way's outputs are compared with the masked model's in the same precision.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from tamt_cli.errors import UserError
from tamt_cli.specs import BenchSpec


def kernels() -> list[dict[str, Any]]:
    """The sparse kernels torch offers here, and whether this machine can run them."""
    import torch

    cuda = torch.cuda.is_available()
    capability = torch.cuda.get_device_capability() if cuda else None
    return [
        {
            "name": "csr",
            "what": "torch.sparse_csr weights × dense activations (unstructured masks)",
            "available": True,
            "device": "cpu",
            "note": "MKL sparse BLAS" if torch.backends.mkl.is_available() else "torch's own",
        },
        {
            "name": "2:4 fp16",
            "what": "torch.sparse.to_sparse_semi_structured (2:4 masks, fp16/bf16)",
            "available": bool(cuda and capability is not None and capability >= (8, 0)),
            "device": "cuda",
            "note": "needs a CUDA GPU of compute capability 8.0 or newer"
            if not cuda
            else f"compute capability {capability[0]}.{capability[1]}"
            if capability
            else "",
        },
    ]


def timings(forward: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]):
    """Median, spread and every run of ``forward`` in milliseconds."""
    for _ in range(warmup):
        forward()
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        sync()
        runs.append((time.perf_counter() - start) * 1000)
    quartiles = statistics.quantiles(runs, n=4) if len(runs) > 1 else [runs[0]] * 3
    return {
        "median_ms": statistics.median(runs),
        "q1_ms": quartiles[0],
        "q3_ms": quartiles[2],
        "min_ms": min(runs),
        "max_ms": max(runs),
        "runs_ms": runs,
    }


def _csr_linear(module: Any) -> None:
    """Make an ``nn.Linear`` multiply with its weight as a CSR matrix."""
    import warnings

    import torch

    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        weight = module.weight.detach().to_sparse_csr()
    bias = module.bias

    def forward(x: Any) -> Any:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.sparse.mm(weight, flat.t()).t()
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    module.forward = forward


def _semi_structured_linear(module: Any) -> None:
    import torch
    from torch.sparse import to_sparse_semi_structured

    module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight.detach()))


DEFAULT_LENGTH = 128


def task_inputs(spec: BenchSpec, subject: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first ``batch_size`` features of the task's first dev split, encoded as fine-tuning
    encodes them (truncated at ``max_length``, else the task's length) and padded as a batch."""
    from tamt_cli import task_data, task_model
    from tamt_cli.registry import create_task

    task = create_task(str(spec.task), spec.task_options)
    split = task.eval_splits[0]
    tokenizer = task_model.load_tokenizer(subject.ref)
    (eval_set,) = task_data.eval_sets(
        task, [split], spec.data_dir, tokenizer, spec.max_length, None
    )
    count = min(spec.batch_size, len(eval_set.features))
    batch = eval_set.batcher(range(count))  # the model inputs only (task_data.INPUTS)
    source = {"kind": "task", "task": task.name, "split": split, "features": count}
    return batch, source


def run(spec: BenchSpec, console: Console) -> dict[str, Any]:
    import copy

    import torch
    from safetensors.torch import save

    from tamt_cli import compressed, masking, models, subjects

    subject = subjects.resolve(spec.subnetwork, model=spec.model)
    if not subject.masks:
        raise UserError(
            f"'{spec.subnetwork}' is a dense model; bench takes a subnetwork (a search run, an "
            "export, or a mask file with --model)"
        )
    with console.status(f"loading model {subject.ref.given}"):
        dense = models.load_encoder(subject.ref).eval()
    if subject.weights_sha256 is not None:
        models.check_weights(dense, subject.weights_sha256, subject.ref.given, spec.subnetwork)
    weights = masking.prunable_weights(dense, embeddings=subject.embeddings, pooler=subject.pooler)
    masking.check_fits(subject.masks, masking.shapes(weights), f"the mask of '{spec.subnetwork}'")
    masked = copy.deepcopy(dense)
    masked_weights = masking.prunable_weights(
        masked, embeddings=subject.embeddings, pooler=subject.pooler
    )
    masking.bake_masks(masked_weights, subject.masks)
    pattern = (subject.manifest or {}).get("pattern")

    absent = models.absent_keys(masked)
    state = {k: v for k, v in masked.state_dict().items() if k not in absent}
    names = list(subject.masks)
    dense_bytes = len(save({k: v.contiguous() for k, v in state.items()}))
    compressed_bytes = len(save(compressed.compress_state(state, names)))
    sizes = {
        "dense_bytes": dense_bytes,
        "compressed_bytes": compressed_bytes,
        "ratio": compressed_bytes / dense_bytes,
    }

    if spec.task is not None:
        batch, source = task_inputs(spec, subject)
    else:
        gen = torch.Generator().manual_seed(spec.seed)
        vocab = int(dense.config.vocab_size)
        length = spec.max_length or DEFAULT_LENGTH
        ids = torch.randint(0, vocab, (spec.batch_size, length), generator=gen)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        source = {"kind": "random token ids", "seed": spec.seed}
    source["shape"] = list(batch["input_ids"].shape)
    source["tokens"] = int(batch["attention_mask"].sum())
    threads = torch.get_num_threads()

    def forward_of(model: Any, device: str) -> Callable[[], Any]:
        inputs = {k: v.to(device) for k, v in batch.items()}

        def forward() -> Any:
            with torch.inference_mode():
                return model(**inputs).last_hidden_state

        return forward

    def cpu_sync() -> None:
        return None

    rows: list[dict[str, Any]] = []

    def measure(name: str, model: Any, device: str, reference: Any, sync: Callable) -> Any:
        forward = forward_of(model, device)
        with console.status(f"timing {name}"):
            out = forward()
            row = {
                "name": name,
                "device": device,
                **timings(forward, spec.repeats, spec.warmup, sync),
            }
        row["max_abs_diff"] = (
            None if reference is None else float((out.float() - reference.float()).abs().max())
        )
        rows.append(row)
        return out

    measure("dense", dense, "cpu", None, cpu_sync)
    reference = measure("masked", masked, "cpu", None, cpu_sync)
    csr = copy.deepcopy(masked)
    for p in masking.prunable_weights(csr, embeddings=subject.embeddings, pooler=subject.pooler):
        if isinstance(p.module, torch.nn.Linear):
            _csr_linear(p.module)
    measure("csr", csr, "cpu", reference, cpu_sync)

    notes: list[str] = []
    available = {k["name"]: k for k in kernels()}
    if available["2:4 fp16"]["available"] and pattern == "2:4":
        half = copy.deepcopy(masked).half().cuda().eval()
        sync = torch.cuda.synchronize
        half_out = measure("fp16", half, "cuda", None, sync)
        sparse = copy.deepcopy(half)
        for p in masking.prunable_weights(
            sparse, embeddings=subject.embeddings, pooler=subject.pooler
        ):
            if isinstance(p.module, torch.nn.Linear):
                _semi_structured_linear(p.module)
        measure("2:4 fp16", sparse, "cuda", half_out, sync)
    elif pattern != "2:4":
        notes.append("the 2:4 kernels need a mask searched with --pattern 2:4")
    else:
        notes.append(f"no 2:4 kernel here: {available['2:4 fp16']['note']}")

    base = {r["device"]: r["median_ms"] for r in rows if r["name"] in {"dense", "fp16"}}
    for row in rows:
        row["speedup"] = base.get(row["device"], rows[0]["median_ms"]) / row["median_ms"]
    return {
        "subnetwork": spec.subnetwork,
        "model": subject.ref.given,
        "pattern": pattern,
        "sparsity": masking.pruned_fraction(subject.masks),
        "batch_size": spec.batch_size,
        "max_length": source["shape"][1],
        "inputs": source,
        "repeats": spec.repeats,
        "threads": threads,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "sizes": sizes,
        "latency": rows,
        "kernels": list(available.values()),
        "notes": notes,
    }
