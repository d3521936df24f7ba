"""Cost of one mask-training step (`mlm`) against one dense MLM training step.

The dense step is Hugging Face ``BertForMaskedLM`` trained with labels (every position goes
through the vocabulary projection, every weight trains); the mask-training step is tamt's: frozen
weights, a score per masked weight with the straight-through estimator, the MLM head's transform
and bias trained, and only the chosen positions projected. Same model, batch, length and
optimiser (AdamW); the steps alternate in one run so that all see the same machine state. A
third step is the floor of mask training: the same encoder and MLM loss on the chosen positions
with no mask, its weights trained (what the scores' gradient costs, without ``S > τ`` and the
masked copies).

    python benchmarks/step_cost.py --model demo --batch-size 16 --max-length 128 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tamt_cli import masking, models, objectives

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = torch.device(args.device)
    ref = models.resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(ref.location)

    dense = AutoModelForMaskedLM.from_pretrained(ref.location, dtype=torch.float32).to(device)
    dense.train()
    dense_opt = torch.optim.AdamW(dense.parameters(), lr=1e-5, weight_decay=0.0)

    encoder = models.load_encoder(ref)
    head, _ = models.load_mlm_head(ref, encoder)
    for p in encoder.parameters():
        p.requires_grad_(False)
    weights = masking.prunable_weights(encoder)
    init = masking.masks_from_scores(masking.magnitude_scores(weights), args.sparsity)
    scores = masking.attach_scores(weights, init)
    for name, mod in scores.items():
        mod.score.requires_grad_(not name.startswith("pooler"))
    head_params = [
        p
        for p in head.parameters()
        if p is not encoder.embeddings.word_embeddings.parametrizations.weight.original
    ]
    module = objectives.PretrainingLoss(encoder, weights, "mlm", head).to(device).train()
    trainable = [m.score for m in scores.values() if m.score.requires_grad] + head_params
    mask_opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)

    floor_encoder = models.load_encoder(ref)
    floor_head, _ = models.load_mlm_head(ref, floor_encoder)
    floor_embeddings = floor_encoder.get_input_embeddings().weight
    floor_params = [p for n, p in floor_encoder.named_parameters() if not n.startswith("pooler")]
    floor_params += [p for p in floor_head.parameters() if p is not floor_embeddings]
    floor_weights = masking.prunable_weights(floor_encoder)
    floor = objectives.PretrainingLoss(floor_encoder, floor_weights, "mlm", floor_head)
    floor = floor.to(device).train()
    floor_opt = torch.optim.AdamW(floor_params, lr=1e-5, weight_decay=0.0)

    info = {
        "special_ids": sorted(set(tokenizer.all_special_ids)),
        "mask_id": tokenizer.mask_token_id,
        "vocab_size": len(tokenizer),
    }
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(1000, len(tokenizer), (args.batch_size, args.max_length), generator=gen)
    blocks[:, 0], blocks[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    batch = {k: v.to(device) for k, v in objectives.batch_for(blocks, "mlm", info, gen).items()}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def dense_step() -> None:
        out = dense(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])  # fmt: skip
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(dense.parameters(), 1.0)
        dense_opt.step()
        dense_opt.zero_grad(set_to_none=True)

    def mask_step() -> None:
        loss = module(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        mask_opt.step()
        mask_opt.zero_grad(set_to_none=True)

    def floor_step() -> None:
        loss = floor(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(floor_params, 1.0)
        floor_opt.step()
        floor_opt.zero_grad(set_to_none=True)

    steps = (("dense", dense_step), ("mask", mask_step), ("floor", floor_step))
    times: dict[str, list[float]] = {name: [] for name, _ in steps}
    peaks: dict[str, int] = dict.fromkeys(times, 0)
    for i in range(args.warmup + args.steps):
        for name, step in steps:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            elapsed = time.perf_counter() - t0
            if i >= args.warmup:
                times[name].append(elapsed)
                if device.type == "cuda":
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() - base)

    d, m = statistics.median(times["dense"]), statistics.median(times["mask"])
    f = statistics.median(times["floor"])
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"model {args.model}  batch {args.batch_size}  length {args.max_length}  "
          f"sparsity {args.sparsity}  device {name}  steps {args.steps} (median)")  # fmt: skip
    print(f"{'step':<28}{'seconds':>10}{'peak step memory':>20}")
    for label, key, t in (
        ("dense BertForMaskedLM", "dense", d),
        ("tamt mlm mask training", "mask", m),
        ("floor: encoder trained", "floor", f),
    ):
        mem = f"{peaks[key] / 2**20:.0f} MiB" if device.type == "cuda" else "n/a on cpu"
        print(f"{label:<28}{t:>10.4f}{mem:>20}")
    print(f"ratio mask/dense: {m / d:.3f}  (target <= 0.5)  floor/dense: {f / d:.3f}  "
          f"mask/floor: {m / f:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
