"""The device check: what tamt's training, mixed precision and 2:4 paths do on this machine.

One command, one JSON file (``--out``, written atomically) and a table on stdout:

- ``training``: steps/s and tokens/s of dense MLM training (``BertForMaskedLM``, AdamW), of
  ``mlm`` and ``kd`` mask training (tamt's own modules: scores attached by ``masking``,
  ``objectives.PretrainingLoss``, the optimiser of ``methods._common``) and of dense fine-tuning
  (``BertForSequenceClassification``), every one through tamt's training loop
  (``engine.Engine.fit``, Accelerate's mixed precision) at BERT-base and BERT-large shapes
  (random weights from ``BertConfig``), 16 × 128 and 8 × 512 tokens, in fp32, bf16 and fp16; on a
  CUDA device also each one's peak of ``torch.cuda.max_memory_allocated`` (weights, optimiser
  state and activations, reset before each);
- ``p5``: mask training's tokens/s over dense MLM training's, at the same shape and precision;
- ``memory``: each peak against dense fine-tuning's;
- ``p7``: a 2:4 ticket (``tamt search -m omp --pattern 2:4`` of a BERT-base-shaped model):
  forward latency of the dense model, the masked model and the masked model with every masked
  linear weight through ``to_sparse_semi_structured`` (fp16, ``tamt bench``'s own functions) at
  batch 1, 8, 32 and lengths 128, 512, with the largest difference of their outputs; and the
  real ``tamt bench`` command on that ticket;
- ``cli``: ``tamt search --method kd`` and ``tamt finetune`` for 20 steps each with
  ``--mixed-precision bf16`` through the real command line on a small model the script saves
  (no hub needed): exit status, finite losses in ``metrics.jsonl``, and the extracted mask
  exactly at its target sparsity (``tamt extract``).

Every measurement is time-boxed (three warm-up steps, then at most 15 timed steps or 5 s) and
the whole check has a budget (``--budget``, 420 s by default, so that it ends within eight
minutes on one H100): what the budget leaves no time for is recorded as skipped, and a
measurement that fails records its error without stopping the others. The training measurements
of each precision, and the latency ones, run in a process of their own, so that a CUDA error or
a process that runs out of memory cannot end the check.

Run from the repository root; tamt need not be installed (its entry points are then declared
for the commands from ``pyproject.toml``), only torch, transformers and tamt's dependencies::

    PYTHONPATH=. python benchmarks/device_check.py --out device-check.json
    PYTHONPATH=. python benchmarks/device_check.py --smoke --out /tmp/smoke.json   # CPU, < 1 min

``--smoke`` runs tiny shapes for a step or two, fp32 and bf16, and records the CUDA-only parts
(fp16 mixed precision, peak CUDA memory, the 2:4 kernels) as skipped with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tamt_cli from this checkout, installed or not
    sys.path.insert(0, str(ROOT))

PRECISIONS = ("bf16", "fp16", "fp32")  # the order they run in: the most used first
ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
WORKLOADS = ("dense-mlm", "mlm", "kd", "finetune")
SECTIONS = ("cli", "bench", "training")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4 of every tokenizer here
SPARSITY = 0.5
BUDGET = 420.0  # seconds: with the last process's grace, the check ends within eight minutes
GRACE = 20.0  # seconds a process may run past its share before it is stopped
FLOOR = 60.0  # seconds a process is given at least, while the budget lasts
SMOKE_BUDGET = 240.0  # a cap: --smoke takes well under a minute on an idle CPU
BERT_VOCAB = 30_522


@dataclass(frozen=True)
class Plan:
    """Shapes, steps and sizes of one mode (full, or ``--smoke``)."""

    models: dict[str, dict[str, int]]  # name → layers, hidden, heads, ffn
    vocab: int
    positions: int
    shapes: tuple[tuple[int, int], ...]  # (batch, length)
    warmup: int  # untimed steps first
    timed: int  # timed steps at most
    min_timed: int  # timed steps at least, whatever the time box
    box: float  # seconds of timed steps after which a measurement stops
    bench_batches: tuple[int, ...]
    bench_lengths: tuple[int, ...]
    bench_repeats: int
    bench_warmup: int
    bench_model: dict[str, int] | None  # None: the small CLI model is benched
    cli_model: dict[str, int]
    cli_vocab: int
    cli_steps: int
    cli_batch: int
    cli_length: int
    cli_lines: int


FULL = Plan(
    models={
        "bert-base": {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072},
        "bert-large": {"layers": 24, "hidden": 1024, "heads": 16, "ffn": 4096},
    },
    vocab=BERT_VOCAB,
    positions=512,
    shapes=((16, 128), (8, 512)),
    warmup=3,
    timed=15,
    min_timed=3,
    box=5.0,
    bench_batches=(1, 8, 32),
    bench_lengths=(128, 512),
    bench_repeats=10,
    bench_warmup=3,
    bench_model={"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072},
    cli_model={"layers": 4, "hidden": 256, "heads": 4, "ffn": 1024},
    cli_vocab=2_000,
    cli_steps=20,
    cli_batch=16,
    cli_length=128,
    cli_lines=2_000,
)
SMOKE = Plan(
    models={"tiny": {"layers": 2, "hidden": 64, "heads": 2, "ffn": 128}},
    vocab=1_000,
    positions=128,
    shapes=((4, 32), (2, 64)),
    warmup=1,
    timed=2,
    min_timed=1,
    box=2.0,
    bench_batches=(1, 2),
    bench_lengths=(16, 32),
    bench_repeats=2,
    bench_warmup=1,
    bench_model=None,
    cli_model={"layers": 2, "hidden": 64, "heads": 2, "ffn": 128},
    cli_vocab=400,
    cli_steps=3,
    cli_batch=8,
    cli_length=32,
    cli_lines=300,
)


# -- shared helpers ------------------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """One line for the JSON: the exception's type and first line, where it was raised."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {first}{where}"


def finite(value: Any) -> Any:
    """``value`` for JSON: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def bert_config(shape: dict[str, int], vocab: int, positions: int, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        max_position_embeddings=positions,
        **extra,
    )


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- training throughput (a process per precision) ----------------------------------------------


class Measured(nn.Module):
    """A model whose call returns its loss (its output's ``loss`` for Hugging Face models), as
    tamt's loop wants; the losses are kept (on the device: no extra synchronisation)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.losses: list[torch.Tensor] = []

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        out = self.inner(**batch)
        loss = out if isinstance(out, torch.Tensor) else out.loss
        self.losses.append(loss.detach())
        return loss


class _Stop(Exception):
    """Raised from the loop's hook when a measurement's time box is full."""


def clock(plan: Plan, deadline: float) -> Any:
    """Loop hooks that mark the end of every optimiser step (after a device sync) and end the
    loop once ``plan.min_timed`` steps are timed and the time box or the deadline is passed."""
    from tamt_cli.engine import Hooks

    class Clock(Hooks):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def after_step(self, step: int) -> None:
            sync()
            now = time.perf_counter()
            self.marks.append(now)
            timed = len(self.marks) - plan.warmup
            if timed >= plan.min_timed and (
                now - self.marks[plan.warmup - 1] > plan.box or time.time() > deadline
            ):
                raise _Stop

    return Clock()


def token_blocks(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """A pool of random token blocks, [CLS] … [SEP], enough for several steps."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(len(SPECIAL), vocab, (max(4 * batch, 16), length), generator=gen)
    blocks[:, 0], blocks[:, -1] = SPECIAL.index("[CLS]"), SPECIAL.index("[SEP]")
    return blocks


def build(workload: str, config: Any, device: torch.device, steps: int) -> tuple[Any, ...]:
    """(module returning the loss, optimiser, scheduler, batch objective) of one workload, its
    weights made on ``device`` from ``config`` and the seed 0."""
    from transformers import BertForMaskedLM, BertForSequenceClassification

    from tamt_cli.engine import linear_schedule

    torch.manual_seed(0)
    with torch.device(device):
        if workload == "dense-mlm":
            model: nn.Module = BertForMaskedLM(config)
            opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
            return Measured(model), opt, linear_schedule(opt, steps), "mlm"
        if workload == "finetune":
            model = BertForSequenceClassification(config)
            opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
            return Measured(model), opt, linear_schedule(opt, steps), "finetune"
        return mask_training(workload, config, steps)


def mask_training(objective: str, config: Any, steps: int) -> tuple[Any, ...]:
    """tamt's mask training as ``methods.mask_training.TrainingSession`` sets it up: frozen
    encoder, graded scores from the magnitude mask, the MLM head (as ``models.load_mlm_head``
    ties it: decoder = the unmasked word embeddings) trained at the pre-trained head's lr."""
    from transformers import BertForMaskedLM, BertModel

    from tamt_cli import masking, mlm_head, objectives
    from tamt_cli.engine import linear_schedule
    from tamt_cli.methods import _common
    from tamt_cli.methods.mask_training import DEFAULTS

    encoder = BertModel(config)
    head, head_params, head_lr = None, [], None
    if objective == "mlm":
        mlm = BertForMaskedLM(config)
        head = mlm.cls
        mlm.get_output_embeddings().weight = encoder.get_input_embeddings().weight
        del mlm
    for p in encoder.parameters():
        p.requires_grad_(False)
    if head is not None:
        head_lr = mlm_head.head_lr(None, {"kind": "pretrained"})
        head_params = mlm_head.train_head(head, encoder, head_lr)
    weights = masking.prunable_weights(encoder)
    ranking = masking.magnitude_scores(weights)
    keep = masking.masks_from_scores(ranking, SPARSITY, "local", None)
    scores = masking.attach_scores(weights, masking.graded_scores(ranking, keep, 0.01), 0.01)
    kinds = {p.name: p.kind for p in weights}
    for name, mod in scores.items():
        mod.score.requires_grad_(kinds[name] != "pooler")
    module = objectives.PretrainingLoss(encoder, weights, objective, head)
    trained = [m.score for m in scores.values() if m.score.requires_grad]
    opt = _common.optimizer(trained, DEFAULTS[objective]["lr"], head_params, head_lr, clip=1.0)
    return Measured(module), opt, linear_schedule(opt, steps), objective


def measure(
    engine: Any, workload: str, name: str, shape: tuple[int, int], plan: Plan, deadline: float
) -> dict[str, Any]:
    """Train ``workload`` at ``shape`` through tamt's loop; its speed, losses and peak memory."""
    from tamt_cli import objectives
    from tamt_cli.engine import Loop

    batch, length = shape
    device = engine.device
    cuda = device.type == "cuda"
    before = torch.cuda.memory_allocated() if cuda else 0
    config = bert_config(plan.models[name], plan.vocab, plan.positions, num_labels=2)
    steps = plan.warmup + plan.timed
    module, opt, scheduler, objective = build(workload, config, device, steps)
    # A run builds on the CPU and moves the model over: what building here left on the device
    # for a moment (the MLM model the head comes from, initial scores) is not a run's peak.
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    blocks = token_blocks(batch, length, plan.vocab)
    info = {
        "special_ids": list(range(len(SPECIAL))),
        "mask_id": SPECIAL.index("[MASK]"),
        "vocab_size": plan.vocab,
    }

    def make_batch(indices: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if objective == "finetune":
            ids = blocks[indices].long()
            labels = torch.randint(2, (len(indices),), generator=generator)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        return objectives.batch_for(blocks[indices], objective, info, generator)

    hooks = clock(plan, deadline)
    loop = Loop(max_steps=steps, batch_size=batch, log_every=10**9, description=workload)
    with contextlib.suppress(_Stop):
        engine.fit(module, opt, scheduler, len(blocks), make_batch, loop, run_dir=None, hooks=hooks)
    marks = hooks.marks
    timed = len(marks) - plan.warmup
    seconds = marks[-1] - marks[plan.warmup - 1]
    durations = [
        b - a for a, b in zip(marks[plan.warmup - 1 :], marks[plan.warmup :], strict=False)
    ]
    losses = torch.stack(module.losses).float().cpu()
    out = {
        "warmup_steps": plan.warmup,
        "timed_steps": timed,
        "step_seconds_median": statistics.median(durations),
        "steps_per_s": timed / seconds,
        "tokens_per_s": timed * batch * length / seconds,
        "loss_first": finite(float(losses[0])),
        "loss_last": finite(float(losses[-1])),
        "losses_finite": bool(torch.isfinite(losses).all()),
        "peak_bytes": torch.cuda.max_memory_allocated() - before if cuda else None,
    }
    engine.free_memory()
    return out


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def child_training(args: argparse.Namespace, plan: Plan) -> None:
    """Every (model, shape, workload) at one precision, in this process; the result file is
    rewritten after each, so a process stopped from outside leaves what it measured."""
    from rich.console import Console

    from tamt_cli import files
    from tamt_cli.engine import Engine

    quiet_transformers()
    result: dict[str, Any] = {"precision": args.precision, "device": device_name(), "rows": []}
    rows = result["rows"]
    engine, failed = None, None
    try:
        engine = Engine(ACCELERATE[args.precision], console=Console(stderr=True, quiet=True))
    except Exception as exc:
        failed = error_text(exc)
    for name in plan.models:
        for shape in plan.shapes:
            for workload in WORKLOADS:
                row: dict[str, Any] = {
                    "model": name,
                    "batch": shape[0],
                    "length": shape[1],
                    "precision": args.precision,
                    "workload": workload,
                }
                if failed is not None and not torch.cuda.is_available():  # bf16 on some CPUs
                    row.update(status="skipped", reason=f"not available here: {failed}")
                elif failed is not None:
                    row.update(status="error", error=f"mixed precision unavailable: {failed}")
                elif time.time() > args.deadline:
                    row.update(status="skipped", reason="the time budget was spent")
                else:
                    try:
                        row.update(
                            status="ok",
                            **measure(engine, workload, name, shape, plan, args.deadline),
                        )
                    except Exception as exc:
                        row.update(status="error", error=error_text(exc))
                        if engine is not None:
                            engine.free_memory()
                    release()
                rows.append(row)
                files.write_json(args.result, result)
    files.write_json(args.result, result)


# -- 2:4 latency (a process of its own) ----------------------------------------------------------


def child_bench(args: argparse.Namespace, plan: Plan) -> None:
    """Latency of the dense, masked and 2:4 models of a ticket at every batch and length, with
    ``tamt bench``'s own functions (``bench.Latency``, its models and inputs)."""
    from rich.console import Console

    from tamt_cli import bench, files, subjects
    from tamt_cli.specs import BenchSpec

    quiet_transformers()
    console = Console(stderr=True, quiet=True)
    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {"device": device_name(), "rows": []}
    subject = subjects.resolve(str(args.run))
    spec = BenchSpec(subnetwork=str(args.run))
    dense, masked = bench._dense_and_masked(spec, subject, console)
    kernel = {k["name"]: k for k in bench.kernels()}["2:4 fp16"]
    if cuda:  # the 2:4 kernels take fp16: every way in fp16, on the GPU
        dense, masked = dense.half().cuda(), masked.half().cuda()
        result["dtype"] = "float16"
    else:
        result["dtype"] = "float32"
    models = {"dense": dense, "masked": masked}
    sparse_note = None
    if not kernel["available"]:
        sparse_note = f"no 2:4 kernel here: {kernel['note']}"
    else:
        try:
            models["2:4"] = bench._with_linears(masked, subject, bench._semi_structured_linear)
        except Exception as exc:
            sparse_note = f"to_sparse_semi_structured failed: {error_text(exc)}"
    result["sparse_note"] = sparse_note
    files.write_json(args.result, result)
    for length in plan.bench_lengths:
        for batch in plan.bench_batches:
            row: dict[str, Any] = {"batch": batch, "length": length}
            if time.time() > args.deadline:
                row.update(status="skipped", reason="the time budget was spent")
            else:
                try:
                    row.update(
                        status="ok",
                        **latency_row(plan, args.run, subject, models, (batch, length), console),
                    )
                    if sparse_note is not None:
                        row.update(sparse_ms=None, sparse_reason=sparse_note)
                except Exception as exc:
                    row.update(status="error", error=error_text(exc))
                release()
            result["rows"].append(row)
            files.write_json(args.result, result)


def latency_row(
    plan: Plan,
    run: Path,
    subject: Any,
    models: dict[str, Any],
    shape: tuple[int, int],
    console: Any,
) -> dict[str, Any]:
    """One batch × length: ``tamt bench``'s timings of the dense and the masked model and, when
    there is one, the 2:4 model (a failure of which leaves the other two), timed alternately,
    each one's outputs compared with the previous one's."""
    from tamt_cli import bench
    from tamt_cli.specs import BenchSpec

    spec = BenchSpec(subnetwork=str(run), batch_size=shape[0], max_length=shape[1],
                     repeats=plan.bench_repeats, warmup=plan.bench_warmup)  # fmt: skip
    inputs, _ = bench._inputs(spec, subject, models["dense"])
    cuda = torch.cuda.is_available()
    device, wait = ("cuda", torch.cuda.synchronize) if cuda else ("cpu", bench._cpu_sync)
    latency = bench.Latency(inputs, spec.repeats, spec.warmup, console)
    dense = latency.measure("dense", models["dense"], device, None, wait)
    masked = latency.measure("masked", models["masked"], device, dense, wait)
    out: dict[str, Any] = {}
    if "2:4" in models:
        try:
            latency.measure("2:4", models["2:4"], device, masked, wait)
        except Exception as exc:
            out.update(sparse_ms=None, sparse_error=error_text(exc))
    for row in latency.time():
        key = {"2:4": "sparse"}.get(row["name"], row["name"])
        out[f"{key}_ms"] = row["median_ms"]
        out[f"{key}_q1_ms"], out[f"{key}_q3_ms"] = row["q1_ms"], row["q3_ms"]
        if row["name"] == "masked":
            out["masked_vs_dense_max_abs_diff"] = finite(row["max_abs_diff"])
        if row["name"] == "2:4":
            out["sparse_vs_masked_max_abs_diff"] = finite(row["max_abs_diff"])
            out["sparse_speedup_vs_masked"] = out["masked_ms"] / row["median_ms"]
            out["sparse_speedup_vs_dense"] = out["dense_ms"] / row["median_ms"]
    return out


# -- the small model and data for the command-line checks --------------------------------------


def word_tokenizer(out: Path, vocab: int) -> Any:
    """A BERT-style tokenizer of ``vocab`` tokens: the special ones, then words ``w0``, ``w1``,
    … one token each (nothing to train, nothing to download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab - len(SPECIAL))]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIAL + words)}, "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cls, sep = SPECIAL.index("[CLS]"), SPECIAL.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(str(out))
    return fast


def save_model(out: Path, shape: dict[str, int], vocab: int, positions: int) -> Path:
    """A randomly initialised ``BertModel`` (seed 0) and its word tokenizer in ``out``."""
    from transformers import BertModel

    word_tokenizer(out, vocab)
    torch.manual_seed(0)
    BertModel(bert_config(shape, vocab, positions)).save_pretrained(str(out))
    return out


def write_data(work: Path, plan: Plan) -> tuple[Path, Path]:
    """A text corpus of random words and an SST-2 folder (GLUE's TSV layout) whose label is
    told by a cue word (``w0``: 1, ``w1``: 0)."""
    corpus, sst2 = work / "corpus.txt", work / "SST-2"
    if corpus.is_file() and (sst2 / "dev.tsv").is_file():
        return corpus, sst2
    rng = random.Random(0)
    words = plan.cli_vocab - len(SPECIAL)

    def line(n: int) -> list[str]:
        return [f"w{rng.randrange(2, words)}" for _ in range(n)]

    corpus.write_text("\n".join(" ".join(line(rng.randint(20, 40))) for _ in range(plan.cli_lines)))
    sst2.mkdir(parents=True, exist_ok=True)
    train = plan.cli_steps * plan.cli_batch
    for name, n in (("train.tsv", train), ("dev.tsv", max(16, train // 4))):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            sentence = [*line(rng.randint(4, 12)), f"w{1 - label}"]
            rng.shuffle(sentence)
            rows.append(f"{' '.join(sentence)}\t{label}")
        (sst2 / name).write_text("\n".join(rows) + "\n")
    return corpus, sst2


def small_model(work: Path, plan: Plan) -> Path:
    """The small model of the command-line checks, saved once."""
    folder = work / "small-model"
    if not (folder / "config.json").is_file():
        save_model(folder, plan.cli_model, plan.cli_vocab, 512)
    return folder


# -- running tamt and the measuring processes ---------------------------------------------------


def entry_points_installed() -> bool:
    from importlib.metadata import entry_points

    methods = {ep.name for ep in entry_points(group="tamt.methods")}
    tasks = {ep.name for ep in entry_points(group="tamt.tasks")}
    return {"kd", "omp"} <= methods and "sst2" in tasks


def declare_entry_points(site: Path) -> Path:
    """A ``tamt_cli`` distribution record in ``site`` (put on ``PYTHONPATH``) with the entry
    points of ``pyproject.toml``, for a checkout that is not installed: tamt's built-in methods
    and tasks register through entry points only."""
    version, groups, section = "0.0.0", {}, ""
    for raw in (ROOT / "pyproject.toml").read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if "=" not in line or line.startswith("#"):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if section == "project" and key == "version":
            version = value.strip('"')
        elif section.startswith('project.entry-points."tamt.'):
            groups.setdefault(section.split('"')[1], []).append(f"{key} = {value.strip(chr(34))}")
    info = site / f"tamt_cli-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tamt-cli\nVersion: {version}\n")
    text = "".join(f"[{group}]\n" + "\n".join(lines) + "\n\n" for group, lines in groups.items())
    (info / "entry_points.txt").write_text(text)
    return site


def child_env(work: Path, installed: bool) -> dict[str, str]:
    """The environment of every process this check starts: this checkout first on the path,
    no hub, no progress bars, tamt's and the data sets' caches in ``work``."""
    paths = [str(ROOT)]
    if not installed:
        paths.insert(0, str(declare_entry_points(work / "site")))
    old = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])),
        "TAMT_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TAMT_CACHE_DIR": str(work / "tamt-cache"),
        "HF_DATASETS_CACHE": str(work / "hf-datasets"),
    }


def tail(text: str, lines: int = 1) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[-500:]


def tamt(args: list[Any], ctx: Context) -> dict[str, Any]:
    """``python -m tamt_cli ARGS`` (the real command line) in the work folder, stopped at the
    section's limit: exit status, seconds, stdout's JSON (with ``--json``) or the error."""
    argv = [str(a) for a in args]
    out: dict[str, Any] = {"command": "tamt " + " ".join(argv)}
    timeout = ctx.budget.limit(ctx.deadline) - time.time()
    if timeout <= 0:
        return {**out, "status": "skipped", "reason": "the time budget was spent"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tamt_cli", *argv],
            cwd=ctx.work,
            env=ctx.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {**out, "status": "error", "error": f"stopped after {timeout:.0f} s (budget)"}
    out.update(exit_code=proc.returncode, seconds=round(time.perf_counter() - t0, 2))
    if proc.returncode != 0:
        return {
            **out,
            "status": "error",
            "error": f"exit {proc.returncode}: {tail(proc.stderr, 3)}",
        }
    out["status"] = "ok"
    if "--json" in argv:
        try:
            out["json"] = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            return {**out, "status": "error", "error": f"--json printed no JSON: {exc}"}
    return out


def run_child(
    kind: str, extra: list[str], ctx: Context
) -> tuple[dict[str, Any] | None, str | None]:
    """This script as a ``--child`` process; (what its result file holds, a note on how it
    ended when it did not end well)."""
    result = ctx.work / f"child-{kind}-{'-'.join(extra).replace('/', '_')}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--deadline", str(ctx.deadline), "--result", str(result), *extra]  # fmt: skip
    cmd += ["--smoke"] if ctx.smoke else []
    note = None
    timeout = ctx.budget.limit(ctx.deadline) - time.time()
    if timeout <= 0:
        return None, "the time budget was spent"
    try:
        proc = subprocess.run(cmd, env=ctx.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            note = f"the process failed (exit {proc.returncode}): {tail(proc.stderr, 3)}"
    except subprocess.TimeoutExpired:
        note = f"the process ran past its share of the budget and was stopped after {timeout:.0f} s"
    data = json.loads(result.read_text()) if result.is_file() else None
    return data, note


class Budget:
    """The check's time: each section gets its weight's share of what is left when it starts,
    so time one section leaves unused goes to the next."""

    def __init__(self, seconds: float, weights: dict[str, float]) -> None:
        self.start = time.time()
        self.end = self.start + seconds
        self.left = dict(weights)

    def deadline(self, name: str) -> float:
        """When section ``name``, starting now, should stop measuring."""
        weight = self.left.pop(name, 0.0)
        total = weight + sum(self.left.values())
        now = time.time()
        return now + max(0.0, self.end - now) * (weight / total if total else 0.0)

    def limit(self, deadline: float) -> float:
        """When a process started now for a section due at ``deadline`` is stopped: some grace
        after it, at least ``FLOOR`` seconds from now, never past the budget's end and grace."""
        return min(self.end + GRACE, max(deadline + GRACE, time.time() + FLOOR))


@dataclass
class Context:
    """What every section works with; ``deadline``: when the running section should stop."""

    work: Path
    plan: Plan
    env: dict[str, str]
    budget: Budget
    smoke: bool
    deadline: float = 0.0

    def start(self, section: str) -> Context:
        self.deadline = self.budget.deadline(section)
        return self


# -- the sections ---------------------------------------------------------------------------------


def metrics_losses(path: Path) -> tuple[list[float], list[float]]:
    """(training losses, held-out losses) of a ``metrics.jsonl``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r], [
        r["eval_loss"] for r in rows if "eval_loss" in r
    ]


def check(result: dict[str, Any], failures: list[str]) -> dict[str, Any]:
    if result["status"] == "ok" and failures:
        result.update(status="error", error="check failed: " + "; ".join(failures))
    return result


def cli_search(ctx: Context) -> dict[str, Any]:
    """``tamt search --method kd --mixed-precision bf16`` for ``cli_steps`` steps."""
    work, plan = ctx.work, ctx.plan
    model, (corpus, _) = small_model(work, plan), write_data(work, plan)
    run = work / "kd-run"
    args = ["search", "-m", "kd", "-s", SPARSITY, "--model", model, "--corpus", corpus,
            "--max-length", plan.cli_length, "--batch-size", plan.cli_batch,
            "--max-steps", plan.cli_steps, "--log-every", 1, "--eval-every", plan.cli_steps,
            "--eval-blocks", 8, "--mixed-precision", "bf16", "--out", run, "--json"]  # fmt: skip
    out = tamt(args, ctx)
    out.pop("json", None)
    if out["status"] != "ok":
        return out
    losses, held_out = metrics_losses(run / "metrics.jsonl")
    failures = []
    if len(losses) != plan.cli_steps:
        failures.append(f"{len(losses)} logged steps, not {plan.cli_steps}")
    if not all(map(math.isfinite, losses + held_out)):
        failures.append("a loss is not finite")
    out.update(
        steps=len(losses),
        losses_finite=all(map(math.isfinite, losses + held_out)),
        loss_first=finite(losses[0]),
        loss_last=finite(losses[-1]),
        eval_loss=finite(held_out[-1]) if held_out else None,
    )
    return check(out, failures)


def cli_extract(ctx: Context) -> dict[str, Any]:
    """``tamt extract`` of the kd run: every matrix's mask prunes exactly ⌊n·s⌋ weights, in the
    command's report and in the mask file itself."""
    from tamt_cli import maskfile, masking

    run = ctx.work / "kd-run"
    out = tamt(["extract", run, "--json"], ctx)
    if out["status"] != "ok":
        return out
    report = out.pop("json")["report"]
    failures = [
        f"{m['name']}: {m['pruned']} pruned, not {masking.prune_count(m['numel'], SPARSITY)}"
        for m in report["matrices"]
        if m["pruned"] != masking.prune_count(m["numel"], SPARSITY)
    ]
    masks = maskfile.load_masks(run / "masks.safetensors")
    failures += [
        f"{name} in the mask file: {int((~keep).sum())} pruned"
        for name, keep in masks.items()
        if int((~keep).sum()) != masking.prune_count(keep.numel(), SPARSITY)
    ]
    out.update(
        mask_exact=not failures,
        sparsity=report["overall"]["sparsity"],
        target=SPARSITY,
        matrices=len(masks),
    )
    return check(out, failures)


def cli_finetune(ctx: Context) -> dict[str, Any]:
    """``tamt finetune --mixed-precision bf16`` of the kd run for ``cli_steps`` steps."""
    work, plan = ctx.work, ctx.plan
    _, sst2 = write_data(work, plan)
    run = work / "finetune-run"
    args = ["finetune", work / "kd-run", "--task", "sst2", "--data-dir", sst2,
            "--train-size", plan.cli_steps * plan.cli_batch, "--batch-size", plan.cli_batch,
            "--epochs", 1, "--max-length", min(64, plan.cli_length),
            "--mixed-precision", "bf16", "--out", run, "--json"]  # fmt: skip
    out = tamt(args, ctx)
    if out["status"] != "ok":
        return out
    summary = out.pop("json")
    seed = summary["runs"][0]
    losses, _ = metrics_losses(Path(work / seed["folder"]) / "metrics.jsonl")
    failures = []
    if seed["steps"] != plan.cli_steps:
        failures.append(f"{seed['steps']} steps, not {plan.cli_steps}")
    if not losses or not all(map(math.isfinite, losses)):
        failures.append("a loss is not finite")
    if seed["mask_sparsity"] != SPARSITY:
        failures.append(f"mask sparsity {seed['mask_sparsity']}, not {SPARSITY}")
    accuracy = summary["final"]["validation"]["accuracy"]["mean"]
    out.update(
        steps=seed["steps"],
        losses_finite=bool(losses) and all(map(math.isfinite, losses)),
        loss_last=finite(losses[-1]) if losses else None,
        mask_sparsity=seed["mask_sparsity"],
        accuracy=accuracy,
    )
    return check(out, failures)


def guarded(part: Callable[..., Any], *args: Any) -> Any:
    """``part(*args)``, or the error it raised as a failed result."""
    try:
        return part(*args)
    except Exception as exc:
        return {"status": "error", "error": error_text(exc)}


def section_cli(ctx: Context) -> dict[str, Any]:
    """A kd search, its mask extracted and fine-tuned, through the real command line."""
    out: dict[str, Any] = {"search": guarded(cli_search, ctx)}
    if out["search"]["status"] != "ok":
        reason = "the search did not complete"
        out["extract"] = {"status": "skipped", "reason": reason}
        out["finetune"] = {"status": "skipped", "reason": reason}
        return out
    out["extract"] = guarded(cli_extract, ctx)
    out["finetune"] = guarded(cli_finetune, ctx)
    return out


def bench_model(ctx: Context) -> tuple[Path, str]:
    """The model the 2:4 ticket is cut from: BERT-base-shaped (the small model with --smoke)."""
    if ctx.plan.bench_model is None:
        return small_model(ctx.work, ctx.plan), "the small model of the command-line checks"
    folder = ctx.work / "bert-base"
    if not (folder / "config.json").is_file():
        save_model(folder, ctx.plan.bench_model, BERT_VOCAB, 512)
    return folder, "a BERT-base-shaped model (random weights)"


def bench_cli(ticket: Path, ctx: Context) -> dict[str, Any]:
    """The real ``tamt bench`` on the ticket: its rows, and on a CUDA device its 2:4 row."""
    plan = ctx.plan
    repeats = max(2, plan.bench_repeats // 2)  # its CPU rows (dense, masked, csr) are slow
    args = ["bench", ticket, "--batch-size", plan.bench_batches[1],
            "--max-length", plan.bench_lengths[0], "--repeats", repeats, "--warmup", 1,
            "--json"]  # fmt: skip
    out = tamt(args, ctx)
    if out["status"] != "ok":
        return out
    report = out.pop("json")
    keys = ("name", "device", "median_ms", "speedup", "max_abs_diff")
    rows = [{k: finite(r.get(k)) for k in keys} for r in report["latency"]]
    out.update(device=report["device"], notes=report["notes"], rows=rows)
    failures = []
    if torch.cuda.is_available() and not any(r["name"] == "2:4 fp16" for r in rows):
        failures.append(f"no 2:4 fp16 row on a CUDA device: {report['notes']}")
    return check(out, failures)


def section_bench(ctx: Context) -> dict[str, Any]:
    """P7: a 2:4 ticket (``tamt search -m omp --pattern 2:4``), its latency at every batch and
    length (a process of its own) and the real ``tamt bench`` on it."""
    model, name = bench_model(ctx)
    out: dict[str, Any] = {"model": name}
    ticket = ctx.work / "ticket-2-4"
    args = ["search", "-m", "omp", "--pattern", "2:4", "--model", model, "--out", ticket, "--json"]
    out["ticket"] = tamt(args, ctx)
    if out["ticket"].pop("json", None) is None:
        out["grid"] = {"status": "skipped", "reason": "no ticket", "rows": []}
        out["cli"] = {"status": "skipped", "reason": "no ticket"}
        return out
    grid, note = run_child("bench", ["--run", str(ticket)], ctx)
    out["grid"] = {"status": "ok", "rows": [], **(grid or {})}
    if note is not None:
        out["grid"].update(status="error", error=note)
    out["cli"] = guarded(bench_cli, ticket, ctx)
    return out


def section_training(precision: str, ctx: Context) -> list[dict[str, Any]]:
    """The rows of one precision, measured in a process of its own; a row it did not measure
    says why."""
    reason = note = None
    measured: dict[tuple[Any, ...], dict[str, Any]] = {}
    if precision == "fp16" and not torch.cuda.is_available():
        reason = "fp16 mixed precision is measured on CUDA devices only"
    else:
        data, note = run_child("training", ["--precision", precision], ctx)
        for row in (data or {}).get("rows", []):
            measured[(row["model"], row["batch"], row["length"], row["workload"])] = row
    out = []
    for name in ctx.plan.models:
        for batch, length in ctx.plan.shapes:
            for workload in WORKLOADS:
                row = measured.get((name, batch, length, workload))
                if row is None:
                    row = {"model": name, "batch": batch, "length": length,
                           "precision": precision, "workload": workload}  # fmt: skip
                    if reason is not None:
                        row.update(status="skipped", reason=reason)
                    else:
                        row.update(status="error", error=note or "not measured")
                out.append(row)
    return out


# -- what the rows come to --------------------------------------------------------------------


def p5_rows(training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mask training's tokens/s over dense MLM training's, at the same shape and precision."""
    index = {
        (r["model"], r["batch"], r["length"], r["precision"], r["workload"]): r for r in training
    }
    out = []
    for key, dense in index.items():
        if key[-1] != "dense-mlm":
            continue
        for objective in ("mlm", "kd"):
            mask = index.get((*key[:-1], objective))
            row = dict(zip(("model", "batch", "length", "precision"), key[:-1], strict=True))
            row["objective"] = objective
            if mask is None or mask["status"] != "ok" or dense["status"] != "ok":
                row.update(p5=None, reason="not both measured")
            else:
                row.update(
                    mask_tokens_per_s=mask["tokens_per_s"],
                    dense_mlm_tokens_per_s=dense["tokens_per_s"],
                    p5=mask["tokens_per_s"] / dense["tokens_per_s"],
                )
            out.append(row)
    return out


def memory_rows(training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measured peak of CUDA memory against dense fine-tuning's at the same shape and
    precision."""
    finetune = {
        (r["model"], r["batch"], r["length"], r["precision"]): r.get("peak_bytes")
        for r in training
        if r["workload"] == "finetune"
    }
    out = []
    for r in training:
        if r.get("peak_bytes") is None:
            continue
        base = finetune.get((r["model"], r["batch"], r["length"], r["precision"]))
        r["peak_vs_finetune"] = r["peak_bytes"] / base if base else None
        out.append(
            {k: r[k] for k in ("model", "batch", "length", "precision", "workload")}
            | {
                "peak_bytes": r["peak_bytes"],
                "finetune_peak_bytes": base,
                "vs_finetune": r["peak_bytes"] / base if base else None,
            }
        )
    return out


def environment(installed: bool) -> dict[str, Any]:
    import importlib.metadata as md

    import tamt_cli

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        commit = proc.stdout.strip() or None
    cuda = torch.cuda.is_available()
    return {
        "device": device_name(),
        "cuda": torch.version.cuda,
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "memory_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "accelerate": version("accelerate"),
        "tamt": tamt_cli.__version__,
        "tamt_entry_points_installed": installed,
        "git_commit": commit,
    }


# -- the table ------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def why(row: dict[str, Any]) -> str:
    """A row's status for the table: ok, or what kept it from being measured."""
    if row.get("status", "ok") == "ok":
        return "ok"
    return f"{row['status']}: {row.get('reason') or row.get('error') or ''}"[:90]


Column = tuple[str, Callable[[dict[str, Any]], str]]  # header, cell of a row


def lines_of(
    columns: list[Column],
    rows: list[dict[str, Any]],
    indent: str = "",
) -> list[str]:
    """Rows as aligned text columns; ``columns``: (header, cell of a row)."""
    cells = [[h for h, _ in columns], *([cell(r) for _, cell in columns] for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def shape_of(r: dict[str, Any]) -> str:
    return f"{r['batch']}×{r['length']}"


def losses_of(r: dict[str, Any]) -> str:
    if "losses_finite" not in r:
        return "-"
    return "finite" if r["losses_finite"] else "NOT FINITE"


TRAINING_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("batch×len", shape_of),
    ("precision", lambda r: r["precision"]),
    ("workload", lambda r: r["workload"]),
    ("steps/s", lambda r: fmt(r.get("steps_per_s"))),
    ("tokens/s", lambda r: fmt(r.get("tokens_per_s"), ".0f")),
    ("peak MiB", lambda r: fmt(r["peak_bytes"] / 2**20 if r.get("peak_bytes") else None, ".0f")),
    ("×finetune", lambda r: fmt(r.get("peak_vs_finetune"), ".2f")),
    ("losses", losses_of),
    ("status", why),
]
P5_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("batch×len", shape_of),
    ("precision", lambda r: r["precision"]),
    ("objective", lambda r: r["objective"]),
    ("mask tokens/s", lambda r: fmt(r.get("mask_tokens_per_s"), ".0f")),
    ("dense MLM tokens/s", lambda r: fmt(r.get("dense_mlm_tokens_per_s"), ".0f")),
    ("P5", lambda r: fmt(r["p5"])),
]
P7_COLUMNS: list[Column] = [
    ("batch", lambda r: str(r["batch"])),
    ("length", lambda r: str(r["length"])),
    ("dense", lambda r: fmt(r.get("dense_ms"))),
    ("masked", lambda r: fmt(r.get("masked_ms"))),
    ("2:4", lambda r: fmt(r.get("sparse_ms"))),
    ("2:4 speed-up on dense", lambda r: fmt(r.get("sparse_speedup_vs_dense"))),
    ("on masked", lambda r: fmt(r.get("sparse_speedup_vs_masked"))),
    ("max|2:4−masked|", lambda r: fmt(r.get("sparse_vs_masked_max_abs_diff"))),
    ("max|masked−dense|", lambda r: fmt(r.get("masked_vs_dense_max_abs_diff"))),
    (
        "status",
        lambda r: why(r) + (f"; 2:4: {r['sparse_error']}"[:90] if "sparse_error" in r else ""),
    ),
]
BENCH_COLUMNS: list[Column] = [
    ("way", lambda r: r["name"]),
    ("device", lambda r: r["device"]),
    ("median ms", lambda r: fmt(r["median_ms"])),
    ("speed-up", lambda r: fmt(r["speedup"])),
    ("max abs diff", lambda r: fmt(r["max_abs_diff"])),
]
CLI_FACTS = (
    "steps",
    "losses_finite",
    "loss_last",
    "eval_loss",
    "mask_exact",
    "sparsity",
    "matrices",
    "mask_sparsity",
    "accuracy",
    "seconds",
)


def table(report: dict[str, Any]) -> str:
    """The report for people: every section's rows, what failed and why."""
    env, p7 = report["environment"], report["p7"]
    grid, bench_cli = p7.get("grid", {}), p7.get("cli", {})
    out = [
        f"tamt device check ({report['mode']}): {env['device']}; torch {env['torch']}, "
        f"transformers {env['transformers']}, CUDA {env['cuda'] or '-'}; "
        f"{report['seconds']:.0f} s (budget {report['budget_s']:.0f} s)",
        "",
        "Training through tamt's loop (tokens = batch × length; peak: CUDA memory allocated)",
    ]
    out += lines_of(TRAINING_COLUMNS, report["training"])
    out += ["", "P5: mask training tokens/s ÷ dense MLM training tokens/s"]
    out += lines_of(P5_COLUMNS, report["p5"])
    out += [
        "",
        f"P7: the 2:4 ticket of {p7.get('model', '-')} ({why(p7.get('ticket', {}))}); "
        f"forward latency in ms, {grid.get('dtype', '-')} on {grid.get('device', '-')}",
    ]
    out += lines_of(P7_COLUMNS, grid.get("rows", []))
    if grid.get("sparse_note"):
        out.append(f"2:4: {grid['sparse_note']}")
    if grid.get("status", "ok") != "ok":
        out.append(f"latency grid: {why(grid)}")
    if p7.get("status", "ok") != "ok":
        out.append(f"P7: {why(p7)}")
    out.append(f"tamt bench, the command: {why(bench_cli)}")
    out += lines_of(BENCH_COLUMNS, bench_cli.get("rows", []), "  ") if "rows" in bench_cli else []
    out += [f"  note: {note}" for note in bench_cli.get("notes", [])]
    out += ["", "The command line, --mixed-precision bf16"]
    parts = {"all": report["cli"]} if "status" in report["cli"] else report["cli"]
    for name, r in parts.items():
        facts = ", ".join(f"{k} {fmt(r[k])}" for k in CLI_FACTS if k in r)
        out.append(f"  tamt {name}: {why(r)}" + (f" ({facts})" if facts else ""))
    return "\n".join(out)


# -- the check ----------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("device-check.json"),
        help="the JSON report (written atomically) [device-check.json]",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes, a step or two: a check of the check (CPU, < 1 min)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"seconds the measurements may take [{BUDGET:.0f}; --smoke: {SMOKE_BUDGET:.0f}]",
    )
    parser.add_argument(
        "--sections",
        default="cli,bench,training",
        help="which parts run, in this order [cli,bench,training]",
    )
    parser.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help=f"training precisions [{','.join(PRECISIONS)}]",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the models, runs and logs here [a temporary folder]",
    )
    parser.add_argument("--child", choices=("training", "bench"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for given, valid in ((args.sections, SECTIONS), (args.precisions, PRECISIONS)):
        unknown = set(given.split(",")) - set(valid)
        if unknown:
            parser.error(f"unknown {', '.join(sorted(unknown))}; choose from {', '.join(valid)}")
    return args


@contextlib.contextmanager
def work_folder(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="tamt-device-check-") as tmp:
        yield Path(tmp)


def new_report(args: argparse.Namespace, plan: Plan, budget_s: float) -> dict[str, Any]:
    """The report before anything is measured: the machine, the settings, empty sections."""
    report: dict[str, Any] = {
        "schema": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": "smoke" if args.smoke else "full",
        "budget_s": budget_s,
        "seconds": 0.0,
        "environment": environment(entry_points_installed()),
        "settings": {
            "sparsity": SPARSITY,
            "warmup_steps": plan.warmup,
            "timed_steps_max": plan.timed,
            "time_box_s": plan.box,
            "models": plan.models,
            "shapes": plan.shapes,
            "vocab": plan.vocab,
            "bench_batches": plan.bench_batches,
            "bench_lengths": plan.bench_lengths,
            "cli_steps": plan.cli_steps,
        },
        "sections": {},
        "training": [],
        "p5": [],
        "memory": [],
        "p7": {},
        "cli": {},
    }
    if not torch.cuda.is_available():
        report["memory_note"] = "peak CUDA memory is measured on CUDA devices only"
    return report


def check_device(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sections in order, the report rewritten (atomically) after each; returns it."""
    from tamt_cli import files

    plan = SMOKE if args.smoke else FULL
    budget_s = args.budget if args.budget is not None else (SMOKE_BUDGET if args.smoke else BUDGET)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    weights = {s: 1.0 for s in sections if s != "training"}
    if "training" in sections:  # fp32 steps take longest
        weights |= {f"training-{p}": 1.5 if p == "fp32" else 1.0 for p in precisions}
    budget = Budget(budget_s, weights)
    report = new_report(args, plan, budget_s)

    def save() -> None:
        report["seconds"] = round(time.time() - budget.start, 1)
        report["p5"] = p5_rows(report["training"])
        report["memory"] = memory_rows(report["training"])
        files.write_json(args.out, report)

    save()
    with work_folder(args.work) as work:
        env = child_env(work, report["environment"]["tamt_entry_points_installed"])
        if args.smoke:  # tiny models run fastest on one thread, and leave the other cores alone
            env["OMP_NUM_THREADS"] = "1"
        ctx = Context(work, plan, env, budget, args.smoke)
        for section in sections:
            t0 = time.time()
            if section == "cli":
                report["cli"] = guarded(section_cli, ctx.start("cli"))
            elif section == "bench":
                report["p7"] = guarded(section_bench, ctx.start("bench"))
            elif section == "training":
                for precision in precisions:
                    report["training"] += section_training(
                        precision, ctx.start(f"training-{precision}")
                    )
                    save()
            report["sections"][section] = {"seconds": round(time.time() - t0, 1)}
            save()
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    plan = SMOKE if args.smoke else FULL
    if args.child == "training":
        child_training(args, plan)
    elif args.child == "bench":
        child_bench(args, plan)
    else:
        quiet_transformers()
        report = check_device(args)
        print(table(report))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
