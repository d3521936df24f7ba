"""What a subnetwork keeps of the dense model where a sentence classifier reads it.

Held-out KD loss is measured on corpus text, over every token of every layer. A classifier
fine-tuned from BERT reads one vector: the pooler's output for the [CLS] token. This probe puts
every subnetwork of finished sweep directories (no fine-tuning: the frozen masked encoder) next
to the dense model on a task's own sentences and prints, per subnetwork:

- ``kd``: the KD distance on the task's sentences (mean over layers of the token-mean
  ``1 − cos``, padding excluded), the quantity the ``kd`` objective trains;
- ``cls``: ``1 − cos`` of the last layer's [CLS] state, and ``pooled`` of the pooler's output;
- ``probe``: accuracy of a logistic regression (scikit-learn) fitted on the frozen pooled
  outputs of the training sentences, scored on the dev sentences: how much of the task the
  subnetwork's features give before any weight moves;

and, over every subnetwork with a fine-tuned accuracy, Spearman ρ of each with that accuracy
(scipy).

    python benchmarks/ticket_probe.py sweeps/budget-grid sweeps/nm-grid \\
        --data ../shared/data/glue/SST-2 --train-size 1000
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import torch


def read_tsv(path: Path, limit: int | None) -> tuple[list[str], list[int]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if limit is not None:
        import random

        rows = random.Random(0).sample(rows, min(limit, len(rows)))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


@torch.no_grad()
def features(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch's hidden states of every layer (layers × batch × length × width) and pooled
    outputs."""
    out = model(**batch, output_hidden_states=True)
    return {"hidden": torch.stack(out.hidden_states[1:]), "pooled": out.pooler_output}


@torch.no_grad()
def pooled(model: Any, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([model(**batch).pooler_output for batch in batches])


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/glue/SST-2"))
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression

    from tamt_cli import artifacts, maskfile, masking, models, report
    from tamt_cli.task_model import load_tokenizer

    doc = report.build(report.read(args.sweeps))
    accuracy = {
        (r["method"], r["sparsity"]): r["mean"]
        for r in doc["rows"]
        if r["task"] == args.task and r["mean"] is not None
    }
    runs = {(s["method"], s["sparsity"]): Path(s["run"]) for s in doc["subnetworks"]}
    model_ids = {artifacts.read_manifest(run)["model"]["id"] for run in runs.values()}
    if len(model_ids) != 1:
        raise SystemExit(f"the subnetworks are over {len(model_ids)} models; probe one at a time")
    ref = models.resolve(model_ids.pop())
    tokenizer = load_tokenizer(ref)
    model = models.load_encoder(ref).eval()
    weights = masking.prunable_weights(model)

    def encode(sentences: list[str]) -> list[dict[str, torch.Tensor]]:
        return [
            dict(
                tokenizer(
                    sentences[i : i + args.batch_size],
                    truncation=True,
                    max_length=args.max_length,
                    padding=True,
                    return_tensors="pt",
                )
            )
            for i in range(0, len(sentences), args.batch_size)
        ]

    train_x, train_y = read_tsv(args.data / "train.tsv", args.train_size)
    dev_x, dev_y = read_tsv(args.data / "dev.tsv", None)
    train_batches, dev_batches = encode(train_x), encode(dev_x)
    dense_dev = [features(model, b) for b in dev_batches]  # each batch has its own length

    def probe() -> float:
        fit, test = pooled(model, train_batches).numpy(), pooled(model, dev_batches).numpy()
        clf = LogisticRegression(max_iter=2000).fit(fit, train_y)
        return 100 * float(clf.score(test, dev_y))

    def measure() -> dict[str, float]:
        kd = cls = pool = 0.0
        n = 0
        for batch, dense in zip(dev_batches, dense_dev, strict=True):
            mine = features(model, batch)
            pad = batch["attention_mask"].bool()  # batch × length
            d = distance(mine["hidden"], dense["hidden"])  # layers × batch × length
            per_sentence = (d * pad).sum(-1) / pad.sum(-1)  # layers × batch
            kd += float(per_sentence.mean(0).sum())
            cls += float(d[-1, :, 0].sum())
            pool += float(distance(mine["pooled"], dense["pooled"]).sum())
            n += pad.shape[0]
        return {"kd": kd / n, "cls": cls / n, "pooled": pool / n, "probe": probe()}

    rows: dict[tuple[str, float | None], dict[str, float]] = {
        ("dense", None): {"kd": 0.0, "cls": 0.0, "pooled": 0.0, "probe": probe()}
    }
    for key, run in sorted(runs.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        masks = maskfile.load_masks(run / artifacts.MASK_FILE)
        mine = [p for p in weights if p.name in masks]
        masking.attach_masks(mine, masks)
        try:
            rows[key] = measure()
        finally:
            masking.detach_masks(mine)

    metrics = ["kd", "cls", "pooled", "probe"]
    lines = []
    for (method, sparsity), m in rows.items():
        acc = accuracy.get((method, sparsity))
        lines.append(
            [
                method,
                "-" if sparsity is None else f"{sparsity:g}",
                *(f"{m[k]:.4f}" if k != "probe" else f"{m[k]:.2f}" for k in metrics),
                "-" if acc is None else f"{acc:.2f}",
            ]
        )
    header = ["subnetwork", "sparsity", f"{args.task} KD", "[CLS] 1−cos", "pooled 1−cos"]
    header += ["frozen probe acc", "fine-tuned acc"]
    print(report.markdown(header, lines) + "\n")
    scored = [(m, accuracy[k]) for k, m in rows.items() if k in accuracy and k[0] != "dense"]
    for k in metrics:
        if len(scored) >= 3:
            rho, p = spearmanr([m[k] for m, _ in scored], [a for _, a in scored])
            print(
                f"- {k}: Spearman ρ with fine-tuned accuracy = {rho:.3f} "
                f"(p = {p:.2g}, n = {len(scored)})"
            )


if __name__ == "__main__":
    main()
