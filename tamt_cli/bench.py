"""`tamt bench`: what a subnetwork saves on disk and in inference time against its dense model.

Sizes are those of ``model.safetensors`` written dense and in the sparse-bitmask layout
(:mod:`tamt_cli.compressed`). Latency is the encoder's forward pass on the same seeded token ids,
for each way of running it this machine has:

* ``dense``: the pre-trained model; ``masked``: the subnetwork with its zeros, on the same dense
  kernels (the speed a plain export gets);
* on a CPU, ``csr``: every masked linear layer's weight as a ``torch.sparse_csr`` matrix,
  multiplied with ``torch.sparse.mm`` (unstructured masks);
* of a mask of whole FFN neurons (``--structure``), ``sliced``: the smaller model
  ``tamt extract --export`` writes, its pruned neurons taken out; its parameters and its
  ``model.safetensors`` size are given beside the dense model's;
* on a CUDA GPU, with a 2:4 pattern: ``fp16`` (the masked model in half precision) and
  ``2:4 fp16`` (every masked linear weight through ``torch.sparse.to_sparse_semi_structured``).

Each sparse way's outputs are compared with the masked model's in the same precision.

The ways are timed alternately: each is set up and run once (its outputs compared), then every
way makes its ``warmup`` passes, then come ``repeats`` rounds in which every way is timed once,
in the order above. All of them see the same state of the machine (its load, its clock, its
caches), which a way timed after another, all its runs together, does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


def spread(runs: list[float]) -> dict[str, Any]:
    """Median, quartiles, extremes and every one of ``runs`` (milliseconds)."""
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


def check_length(spec: BenchSpec, subject: Any, batch: Any = None, config: Any = None) -> None:
    """The tokens per sequence must fit the model's positions: a one-line error naming where
    the length comes from when ``--max-length`` is not given. With ``--task`` and no
    ``--max-length``, the task's default length only truncates: the encoded ``batch`` is
    checked, once there is one (``config``: the model's)."""
    from tamt_cli import models

    if spec.max_length is not None:
        models.check_positions(subject.ref, spec.max_length)
    elif spec.task is None:
        models.check_positions(subject.ref, DEFAULT_LENGTH, origin="the default")
    elif batch is not None and batch["input_ids"].shape[1] > getattr(
        config, "max_position_embeddings", batch["input_ids"].shape[1]
    ):
        from tamt_cli.registry import create_task

        task = create_task(str(spec.task), spec.task_options)
        origin = f"{task.name}'s default"
        models.check_positions(subject.ref, task.defaults.max_length, config, origin=origin)


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
    """Sizes and latency of ``spec.subnetwork`` against its dense model (see the module docs)."""
    import torch

    from tamt_cli import masking, subjects

    subject = subjects.resolve(spec.subnetwork, model=spec.model)
    if not subject.masks:
        raise UserError(
            f"'{spec.subnetwork}' is a dense model; bench takes a subnetwork (a search run, an "
            "export, or a mask file with --model)"
        )
    check_length(spec, subject)
    dense, masked = _dense_and_masked(spec, subject, console)
    pattern = (subject.manifest or {}).get("pattern")
    sizes = _sizes(masked, list(subject.masks))
    batch, source = _inputs(spec, subject, dense)
    check_length(spec, subject, batch, dense.config)
    threads = torch.get_num_threads()

    latency = Latency(batch, spec.repeats, spec.warmup, console)
    latency.measure("dense", dense, "cpu")
    reference = latency.measure("masked", masked, "cpu")
    latency.measure("csr", _with_linears(masked, subject, _csr_linear), "cpu", reference)
    structured = _time_sliced(latency, masked, subject, sizes, reference)
    available = {k["name"]: k for k in kernels()}
    notes = _time_semi_structured(latency, masked, subject, pattern, available["2:4 fp16"])
    latency.time()
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
        "structure": structured,
        "sizes": sizes,
        "latency": latency.with_speedups(),
        "kernels": list(available.values()),
        "notes": notes,
    }


def _prunable(model: Any, subject: Any) -> list[Any]:
    """The weights ``subject``'s mask covers in ``model``."""
    from tamt_cli import masking

    return masking.prunable_weights(model, embeddings=subject.embeddings, pooler=subject.pooler)


def _dense_and_masked(spec: BenchSpec, subject: Any, console: Console) -> tuple[Any, Any]:
    """The pre-trained encoder (checked against the weights the mask was found on, when they
    are recorded) and a copy with the mask's zeros in its weights."""
    import copy

    from tamt_cli import exports, masking, models

    with console.status(f"loading model {subject.ref.given}"):
        dense = models.load_encoder(subject.ref).eval()
    if subject.weights_sha256 is not None:
        models.check_weights(dense, subject.weights_sha256, subject.ref.given, spec.subnetwork)
        exports.check_against(subject, dense)
    weights = _prunable(dense, subject)
    masking.check_fits(subject.masks, masking.shapes(weights), f"the mask of '{spec.subnetwork}'")
    masked = copy.deepcopy(dense)
    masking.bake_masks(_prunable(masked, subject), subject.masks)
    return dense, masked


def _sizes(masked: Any, names: list[str]) -> dict[str, Any]:
    """Bytes of ``model.safetensors`` written dense and with the weights ``names`` in the
    sparse-bitmask layout."""
    from safetensors.torch import save

    from tamt_cli import compressed, models

    absent = models.absent_keys(masked)
    state = {k: v for k, v in masked.state_dict().items() if k not in absent}
    dense_bytes = len(save({k: v.contiguous() for k, v in state.items()}))
    compressed_bytes = len(save(compressed.compress_state(state, names)))
    return {
        "dense_bytes": dense_bytes,
        "compressed_bytes": compressed_bytes,
        "ratio": compressed_bytes / dense_bytes,
    }


def _inputs(spec: BenchSpec, subject: Any, dense: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The batch every way is timed on, and where it came from: the task's dev features
    (``--task``), else seeded random token ids."""
    import torch

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
    return batch, source


def _with_linears(model: Any, subject: Any, convert: Callable[[Any], None]) -> Any:
    """A copy of ``model`` with ``convert`` applied to every masked ``nn.Linear``."""
    import copy

    import torch

    converted = copy.deepcopy(model)
    for p in _prunable(converted, subject):
        if isinstance(p.module, torch.nn.Linear):
            convert(p.module)
    return converted


def _time_sliced(
    latency: Latency, masked: Any, subject: Any, sizes: dict[str, Any], reference: Any
) -> str | None:
    """Of a structured mask (its structure is returned, else None): with pruned neurons, the
    ``sliced`` row, and the parameters and ``model.safetensors`` bytes of the sliced model
    against the dense one in ``sizes``."""
    import copy

    from safetensors.torch import save

    from tamt_cli import maskfile, models, units

    found = maskfile.load_units(subject.mask_file) if subject.mask_file is not None else None
    if found is None:
        return None
    sliced = copy.deepcopy(masked)
    if units.slice_model(sliced, _prunable(sliced, subject), found) is None:
        return found.structure  # pruned heads stay zeros in a plain model: nothing to slice
    absent = models.absent_keys(sliced)
    state = {k: v.contiguous() for k, v in sliced.state_dict().items() if k not in absent}
    sizes["sliced_bytes"] = len(save(state))
    sizes["sliced_ratio"] = sizes["sliced_bytes"] / sizes["dense_bytes"]
    sizes["parameters"] = {
        "dense": sum(p.numel() for p in masked.parameters()),
        "sliced": sum(p.numel() for p in sliced.parameters()),
    }
    latency.measure("sliced", sliced, "cpu", reference)
    return found.structure


def _cpu_sync() -> None:
    return None


@dataclass
class Way:
    """One way of running the encoder: its forward pass, what waits for it to finish, its row."""

    forward: Callable[[], Any]
    sync: Callable[[], None]
    row: dict[str, Any]


@dataclass
class Latency:
    """The ways of running the encoder on the same batch, timed alternately (see the module
    docs); a row per way, in the order they were added."""

    batch: dict[str, Any]
    repeats: int
    warmup: int
    console: Console
    ways: list[Way] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def measure(
        self,
        name: str,
        model: Any,
        device: str,
        reference: Any = None,
        sync: Callable[[], None] = _cpu_sync,
    ) -> Any:
        """Add ``model`` on ``device`` to the ways :meth:`time` times, and run it once: its row
        gives the largest difference of its outputs from ``reference`` (if any). Returns the
        outputs."""
        import torch

        inputs = {k: v.to(device) for k, v in self.batch.items()}

        def forward() -> Any:
            with torch.inference_mode():
                return model(**inputs).last_hidden_state

        with self.console.status(f"running {name}"):
            out = forward()
            sync()
        diff = None if reference is None else float((out.float() - reference.float()).abs().max())
        self.ways.append(Way(forward, sync, {"name": name, "device": device, "max_abs_diff": diff}))
        return out

    def time(self) -> list[dict[str, Any]]:
        """The ``warmup`` passes of every way, then ``repeats`` rounds that each time every way
        once, in turn; the rows, with their timings."""
        runs: list[list[float]] = [[] for _ in self.ways]
        with self.console.status(f"timing {len(self.ways)} ways, {self.repeats} rounds"):
            for _ in range(self.warmup):
                for way in self.ways:
                    way.forward()
            for way in self.ways:
                way.sync()
            for _ in range(self.repeats):
                for way, times in zip(self.ways, runs, strict=True):
                    start = time.perf_counter()
                    way.forward()
                    way.sync()
                    times.append((time.perf_counter() - start) * 1000)
        self.rows = [
            {
                "name": way.row["name"],
                "device": way.row["device"],
                **spread(times),
                "max_abs_diff": way.row["max_abs_diff"],
            }
            for way, times in zip(self.ways, runs, strict=True)
        ]
        return self.rows

    def with_speedups(self) -> list[dict[str, Any]]:
        """The rows, each with its speed-up over the dense way on its device (``dense`` on the
        CPU, ``fp16`` on a GPU)."""
        rows = self.rows
        base = {r["device"]: r["median_ms"] for r in rows if r["name"] in {"dense", "fp16"}}
        for row in rows:
            row["speedup"] = base.get(row["device"], rows[0]["median_ms"]) / row["median_ms"]
        return rows


def _time_semi_structured(
    latency: Latency, masked: Any, subject: Any, pattern: str | None, kernel: dict[str, Any]
) -> list[str]:
    """On a CUDA GPU with a 2:4 mask, the ``fp16`` and ``2:4 fp16`` rows; else a note why
    there are none."""
    import copy

    import torch

    if kernel["available"] and pattern == "2:4":
        half = copy.deepcopy(masked).half().cuda().eval()
        sync = torch.cuda.synchronize
        half_out = latency.measure("fp16", half, "cuda", None, sync)
        sparse = _with_linears(half, subject, _semi_structured_linear)
        latency.measure("2:4 fp16", sparse, "cuda", half_out, sync)
        return []
    if pattern != "2:4":
        return ["the 2:4 kernels need a mask searched with --pattern 2:4"]
    return [f"no 2:4 kernel here: {kernel['note']}"]
