"""The one training loop, on Hugging Face Accelerate, used by every training method.

Data order and randomness are functions of (seed, step, process), not of a stateful sampler:
optimiser step ``s`` always consumes the same ``batch_size`` blocks, split over processes and
gradient-accumulation micro-batches, and every random draw of the step (MLM corruption,
dropout) is seeded from (seed, step, process). A run resumed from a checkpoint therefore
continues exactly as the uninterrupted run would have, and the per-step data do not depend on
the number of processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from rich.console import Console
from torch import nn

from tamt_cli import artifacts, files, records, trackers, verbosity
from tamt_cli.errors import UserError, first_line, refused_pickle
from tamt_cli.objectives import eval_mode
from tamt_cli.progress import Progress

#: builds one micro-batch from the indices of its examples and the micro-batch's generator
MakeBatch = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]


@dataclass
class Loop:
    """How long and how a loop runs; ``batch_size`` is blocks per optimiser step, all processes
    and accumulation steps together."""

    max_steps: int
    batch_size: int
    grad_accum: int = 1
    clip: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    save_every: int | None = None
    description: str = "training"

    @classmethod
    def from_spec(cls, spec: Any, max_steps: int, description: str, **overrides: Any) -> Loop:
        """A loop with the common training fields of a run spec (batch size, accumulation,
        clipping, seed, logging, evaluation and checkpoint intervals); ``overrides`` win."""
        fields: dict[str, Any] = {
            "batch_size": spec.batch_size,
            "grad_accum": getattr(spec, "grad_accum", 1),
            "clip": getattr(spec, "clip", 1.0),
            "seed": spec.seed,
            "log_every": getattr(spec, "log_every", 10),
            "eval_every": getattr(spec, "eval_every", None),
            "save_every": getattr(spec, "save_every", None),
        }
        fields.update(overrides)
        return cls(max_steps=max_steps, description=description, **fields)


class StepHooks(Protocol):
    """What the loop calls on every process: after each step, for its figures, at evaluations
    and checkpoints (:class:`Hooks` has every one, doing nothing)."""

    def after_step(self, step: int) -> None: ...
    def status(self, step: int) -> dict[str, Any]: ...
    def evaluate(self, step: int) -> dict[str, float]: ...
    def save(self, step: int) -> None: ...


class Hooks:
    """What a method adds to the loop; every hook is optional (a subclass overrides those it
    needs)."""

    def after_step(self, step: int) -> None:
        """Called on every process after optimiser step ``step`` (1-based)."""

    def status(self, step: int) -> dict[str, Any]:
        """Extra figures for the progress bar and the metrics log (e.g. sparsity)."""
        return {}

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out figures, computed on every process (results must agree)."""
        return {}

    def save(self, step: int) -> None:
        """Write a checkpoint for ``step`` (called on every process; write on the main one)."""


def step_generator(seed: int, step: int, process: int, micro: int = 0) -> torch.Generator:
    """The CPU generator for one micro-batch of one step on one process."""
    mixed = (seed * 1_000_003 + step) * 1_009 + process * 101 + micro
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


def step_indices(n: int, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """The ``batch_size`` block indices of optimiser step ``step`` (0-based): consecutive slices
    of a seeded permutation per epoch, epochs following one another."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return torch.tensor(out, dtype=torch.long)


class FilledBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of ``batch_size`` consecutive indices of ``range(n)``; the last is filled up with
    the first indices (cyclically when ``n < batch_size``), so that every batch has the size
    :class:`accelerate.data_loader.BatchSamplerShard` gives the last one on several processes."""

    drop_last = False

    def __init__(self, n: int, batch_size: int) -> None:
        self.n = n
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for first in range(0, self.n, self.batch_size):
            batch = list(range(first, min(first + self.batch_size, self.n)))
            fill = self.batch_size - len(batch)
            yield batch + [i % self.n for i in range(fill)]


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """A Ctrl-C (SIGINT) during the block is held and raised as KeyboardInterrupt after it.
    The autograd engine calls Python hooks (the masked weights recomputed for the backward pass)
    from C++, where an exception raised by the signal aborts the process (SIGABRT) instead of
    reaching tamt. Left as it is outside the main thread or where SIGINT is not Python's."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: came.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        raise KeyboardInterrupt


class Engine:
    """An Accelerate-driven loop: processes, mixed precision, accumulation, clipping, progress,
    metrics and checkpoints. One instance per command run."""

    def __init__(
        self,
        mixed_precision: str = "no",
        console: Console | None = None,
        report_to: Sequence[str] = (),
    ) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # Accelerate keeps one state per process and refuses another precision later; a process
        # that runs several commands (the Python API, a notebook) may choose one per command.
        # The process group (PartialState) is kept.
        if (
            AcceleratorState._shared_state.get("_mixed_precision", mixed_precision)
            != mixed_precision
        ):
            AcceleratorState._reset_state()
        # Accelerate only forms a CPU process group (gloo) when told the run is on the CPU.
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        cpu = several and not torch.cuda.is_available()
        self.report_to = trackers.installed_trackers(report_to)
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision,
            cpu=cpu,
            log_with=self.report_to or None,
            # where trackers that write files (tensorboard) write is set per run by track()
            project_dir="." if self.report_to else None,
        )
        self.console = console or verbosity.console()
        self._tracked: Path | None = None
        #: the loss summed since the last logged step and the count, as :meth:`fit` saves
        self.running_loss: tuple[float, int] = (0.0, 0)
        verbosity.debug(
            self.console,
            f"engine: {self.world} process(es) on {self.device}, mixed precision "
            f"{mixed_precision}, trackers: {', '.join(self.report_to) or 'none'}",
        )

    # -- processes ---------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def broadcast(self, obj: Any) -> Any:
        """The main process's value of ``obj`` on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def micro_batch(self, batch_size: int, grad_accum: int = 1) -> int:
        """Examples per process and micro-batch; the batch must split evenly."""
        micro, rest = divmod(batch_size, self.world * grad_accum)
        if micro == 0 or rest:
            raise UserError(
                f"--batch-size {batch_size} must be a multiple of processes × "
                f"--grad-accum = {self.world} × {grad_accum}"
            )
        return micro

    def reduce(
        self, tensor: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
    ) -> torch.Tensor:
        """The mean (or sum) of ``tensor`` over the processes, on this process's device, on
        every process (one process: a copy of ``tensor``)."""
        return self.accelerator.reduce(tensor.to(self.device), reduction=reduction)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def free_memory(self) -> None:
        """Let go of the models and optimisers the last :meth:`fit` prepared (before the next)."""
        self.accelerator.free_memory()

    def main_first(self) -> contextlib.AbstractContextManager[Any]:
        """The block runs on the main process first, then on the others (which then find what
        it cached)."""
        if self.world == 1:
            return contextlib.nullcontext()
        return self.accelerator.main_process_first()

    def shard_loader(
        self, n: int, batch_size: int, collate: Callable[[Sequence[int]], dict[str, torch.Tensor]]
    ) -> Any:
        """Batches of ``collate(indices)`` over ``range(n)`` in order, for scoring: split over
        the processes in whole batches (process ``r`` takes batches ``r``, ``r + world``, …), on
        this process's device. The last batch is filled up with the first examples, and the
        last round of batches with whole batches of them; ``gather_for_metrics`` drops what was
        filled in. Every example is thus scored in the same batch, whatever the number of
        processes, and the gathered scores are those of one process."""
        from torch.utils.data import DataLoader

        indices: Any = range(n)  # a map-style data set of indices: collate makes the batch
        loader: Any = DataLoader(
            indices, batch_sampler=FilledBatches(n, batch_size), collate_fn=collate
        )
        return self.accelerator.prepare_data_loader(loader)

    def end(self) -> None:
        """Close the trackers and tear the process group down (a distributed run aborts at exit
        otherwise)."""
        self.stop_tracking()
        self.accelerator.end_training()
        if self.world > 1 and torch.distributed.is_initialized():
            if sys.exc_info()[0] is None:  # every process past its last collective first: one
                torch.distributed.barrier()  # torn down mid-exchange aborts its peer (SIGABRT)
            torch.distributed.destroy_process_group()

    # -- experiment trackers -------------------------------------------------------------
    def track(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        """Start the ``--report-to`` trackers for the run written to ``run_dir`` (named ``name``
        there, with ``config`` as its configuration); every row of its metrics log goes to them
        until :meth:`stop_tracking`. File-writing trackers (TensorBoard) write in ``run_dir``."""
        if not self.report_to:
            return
        self.stop_tracking()
        trackers.start(self.accelerator, self.report_to, run_dir, name, config)
        self._tracked = Path(run_dir)

    def stop_tracking(self) -> None:
        """End the trackers' run (files closed), if one is open."""
        if self._tracked is None:
            return
        trackers.stop(self.accelerator)
        self._tracked = None

    # -- the loop ----------------------------------------------------------------------------
    def fit(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        examples: int,
        make_batch: MakeBatch,
        loop: Loop,
        *,
        run_dir: Path | None,
        hooks: StepHooks | None = None,
        start_step: int = 0,
        metrics_name: str = artifacts.METRICS_LOG,
        running_loss: tuple[float, int] = (0.0, 0),
    ) -> nn.Module:
        """Train from ``start_step`` to ``loop.max_steps`` over a data set of ``examples``
        examples (``make_batch`` turns indices into model inputs); returns the unwrapped module.
        ``module(**batch)`` must return the loss. ``running_loss``: the loss summed over the steps
        since the last logged one, and their count, where a resumed run left off (a checkpoint
        that keeps :attr:`running_loss` makes the log of a resumed run the uninterrupted one's)."""
        hooks = hooks or Hooks()
        micro = self.micro_batch(loop.batch_size, loop.grad_accum)
        module.to(self.device)
        model, opt = self.accelerator.prepare(module, optimizer)
        params = [p for p in module.parameters() if p.requires_grad]
        metrics = MetricsLog(
            run_dir / metrics_name if run_dir else None, start_step, enabled=self.is_main
        )
        # rows of another log of the same run (the MLM-head warm-up) go under their own names
        prefix = "" if metrics_name == artifacts.METRICS_LOG else f"{Path(metrics_name).stem}/"

        def record(step: int, row: dict[str, Any]) -> None:
            metrics.write(step=step, **row)
            if self._tracked is not None and run_dir is not None:
                trackers.log(self.accelerator, row, step, prefix)

        model.train()
        with self.progress(loop, start_step) as bar:
            (running, count), t0 = running_loss, time.perf_counter()
            for step in range(start_step, loop.max_steps):
                torch.manual_seed((loop.seed * 1_000_003 + step) * 1_009 + self.rank)
                with interrupts_held():
                    total = self._backward(model, make_batch, loop, step, examples, micro)
                if loop.clip:
                    self.accelerator.clip_grad_norm_(params, loop.clip)
                opt.step()
                scheduler.step()
                opt.zero_grad(set_to_none=True)
                done = step + 1
                hooks.after_step(done)
                running += float(total)
                count += 1
                fields = {"loss": running / count, **hooks.status(done)}
                bar.advance(**fields)
                if done % loop.log_every == 0 or done == loop.max_steps:
                    mean = float(self.reduce(torch.tensor(running / count)))
                    row = {
                        **fields,
                        "loss": mean,
                        "lr": scheduler.get_last_lr()[0],
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                    record(done, row)
                    bar.line(done, row)
                    running, count = 0.0, 0
                if loop.eval_every and (done % loop.eval_every == 0 or done == loop.max_steps):
                    with eval_mode(model):
                        figures = hooks.evaluate(done)
                    if figures:
                        record(done, figures)
                        bar.note(done, **figures)
                        bar.advance(0, **fields)  # show the new figures now
                if loop.save_every and done % loop.save_every == 0 and done != loop.max_steps:
                    self.running_loss = (self._mean_over_processes(running), count)
                    hooks.save(done)
        return self.accelerator.unwrap_model(model)

    def _mean_over_processes(self, value: float) -> float:
        """``value`` (one process: as it is), else its mean over the processes, on every one."""
        return value if self.world == 1 else float(self.reduce(torch.tensor(value)))

    def _backward(
        self, model: Any, make_batch: MakeBatch, loop: Loop, step: int, examples: int, micro: int
    ) -> torch.Tensor:
        """The forward and backward passes of this process's micro-batches of step ``step``
        (gradients synchronised over the processes at the last); returns their summed loss."""
        ids = step_indices(examples, step, loop.batch_size, loop.seed)
        mine = ids[self.rank * micro * loop.grad_accum :][: micro * loop.grad_accum]
        total = torch.zeros((), device=self.device)
        for i in range(loop.grad_accum):
            chunk = mine[i * micro : (i + 1) * micro]
            batch = make_batch(chunk, step_generator(loop.seed, step, self.rank, i))
            batch = {k: v.to(self.device) for k, v in batch.items()}
            sync = i == loop.grad_accum - 1
            quiet = not sync and self.world > 1
            with self.accelerator.no_sync(model) if quiet else contextlib.nullcontext():
                loss = model(**batch) / loop.grad_accum
                self.accelerator.backward(loss)
            total += loss.detach()
        return total

    def progress(self, loop: Loop, start: int) -> Progress:
        return Progress(self.console, loop, start, enabled=self.is_main)

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(
        self,
        run_dir: Path,
        step: int,
        tensors: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        keep: int | None = 1,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """``checkpoints/step-NNNNNN/``: trainable tensors (safetensors), optimiser state
        (torch.save of plain tensors, read back with ``weights_only=True``) and scheduler
        state (JSON, with ``extra``: what else the run needs to go on, as plain values),
        written under a temporary name and renamed; older ones pruned, the last ``keep``
        (None: 1) kept."""
        keep = 1 if keep is None else keep
        self.barrier()
        if self.is_main:
            from safetensors.torch import save as st_save

            folder = artifacts.checkpoint_folder(run_dir, step)
            with files.staged_dir(folder, replace=True) as stage:
                cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
                files.write_bytes(stage / artifacts.CHECKPOINT_TENSORS, st_save(cpu))
                # a full disk raises OSError
                with open(stage / artifacts.CHECKPOINT_OPTIMIZER, "wb") as fh:
                    torch.save(_unwrap_optimizer(optimizer).state_dict(), fh)
                state = {"step": step, "scheduler": scheduler.state_dict()}
                if extra is not None:
                    state["extra"] = dict(extra)
                files.write_json(stage / artifacts.CHECKPOINT_STATE, state)
            for old in artifacts.checkpoints(run_dir)[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()

    def load_checkpoint(
        self, folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """Restore optimiser and scheduler; returns (step, trainable tensors). A damaged
        checkpoint is a one-line error naming the file; the optimiser state is read with
        ``weights_only=True``, so a file holding anything but tensors and plain values is
        refused, never unpickled."""
        from safetensors.torch import load_file

        def damaged(name: str, why: str) -> UserError:
            return UserError(f"checkpoint file '{folder / name}' is damaged: {why}")

        try:
            tensors = load_file(str(folder / artifacts.CHECKPOINT_TENSORS))
        except Exception as exc:
            raise damaged(artifacts.CHECKPOINT_TENSORS, first_line(exc)) from None
        try:
            opt_state = torch.load(
                folder / artifacts.CHECKPOINT_OPTIMIZER, map_location="cpu", weights_only=True
            )
        except pickle.UnpicklingError as exc:
            raise damaged(artifacts.CHECKPOINT_OPTIMIZER, refused_pickle(exc)) from None
        except Exception as exc:
            raise damaged(artifacts.CHECKPOINT_OPTIMIZER, first_line(exc)) from None
        state = records.load(folder / artifacts.CHECKPOINT_STATE, records.CheckpointState)
        step, schedule = state.step, state.scheduler
        try:
            optimizer.load_state_dict(opt_state)
        except Exception as exc:
            raise damaged(
                artifacts.CHECKPOINT_OPTIMIZER, f"it does not fit this run ({first_line(exc)})"
            ) from None
        try:
            scheduler.load_state_dict(schedule)
        except Exception as exc:
            raise damaged(
                artifacts.CHECKPOINT_STATE, f"its schedule does not fit ({first_line(exc)})"
            ) from None
        return step, tensors


def _unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)


def restore_tensors(
    own: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], where: str
) -> None:
    """Copy a checkpoint's ``tensors`` into the run's ``own`` tensors of the same names; a name
    or shape that does not fit is a one-line error naming ``where`` the tensors came from."""
    if set(own) != set(tensors):
        missing = sorted(set(own) - set(tensors))[:1] or sorted(set(tensors) - set(own))[:1]
        raise UserError(f"{where} does not match this run's model ('{missing[0]}')")
    with torch.no_grad():
        for name, value in tensors.items():
            if own[name].shape != value.shape:
                raise UserError(
                    f"{where}: tensor '{name}' has shape {list(value.shape)}; this run's model "
                    f"needs {list(own[name].shape)}"
                )
            own[name].copy_(value)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0) -> Any:
    """Linear warm-up then linear decay to zero (the paper's schedule, no warm-up by default)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


class MetricsLog:
    """``metrics.jsonl``: one JSON object a line. On resume, rows after the resumed step (from
    the interrupted attempt) are dropped so the log reads as one run."""

    def __init__(self, path: Path | None, start_step: int, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled and path is not None
        if self.enabled and path is not None and path.exists():
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if _step_of(r) <= start_step]
            files.write_text(path, "".join(r + "\n" for r in kept))

    def write(self, **row: Any) -> None:
        if self.enabled and self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return 0
