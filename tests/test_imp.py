"""Iterative magnitude pruning with rewinding (`imp`) on a tiny BERT and a tiny corpus."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from tamt_cli import maskfile, masking, objectives
from tamt_cli.methods import imp

os.environ["TAMT_NO_PROGRESS"] = "1"


def imp_args(tiny_bert, corpus, out="run", *extra, sparsity="0.3", objective="kd"):
    return [
        "search", "-m", "imp", "-s", sparsity, "--model", tiny_bert, "--corpus", corpus,
        "--objective", objective, "--max-length", "16", "--batch-size", "4",
        "--steps-per-round", "2", "--lr", "0.01", "--head-warmup-steps", "2", "--eval-blocks", "8",
        "--out", out,
        *extra,
    ]  # fmt: skip


def pretrained(tiny_bert):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(tiny_bert)).eval()


def round_masks(run: Path) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    manifest = json.loads((run / "manifest.json").read_text())
    rounds = [m for m in manifest["masks"] if not m["final"]]
    return [(m, maskfile.load_masks(run / m["file"])) for m in rounds]


def pruned(mask: torch.Tensor) -> int:
    return int((~mask).sum())


# -- exact counts, nesting, extract, KD -----------------------------------------------------------


def test_kd_rounds_prune_exactly_r_tenths_per_matrix(cli, tiny_bert, corpus):
    res = cli(*imp_args(tiny_bert, corpus, "run", "--json"))
    assert res.code == 0, res.err
    assert "IMP round 3/3 at step 4" in res.err
    run = Path("run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    weights = masking.prunable_weights(pretrained(tiny_bert))
    rounds = round_masks(run)
    assert [(e["round"], e["sparsity"], e["step"]) for e, _ in rounds] == [
        (1, 0.1, 0),
        (2, 0.2, 2),
        (3, 0.3, 4),
    ]
    previous = None
    for entry, masks in rounds:
        level = entry["sparsity"]
        for p in weights:  # exactly ⌊n·r·f⌋ of every matrix
            assert pruned(masks[p.name]) == p.numel * entry["round"] // 10, p.name
            if previous is not None:  # nested: once pruned, always pruned
                assert not torch.any(~previous[p.name] & masks[p.name]), p.name
        assert entry["achieved"] == pytest.approx(level, abs=1e-3)
        previous = masks
    final = maskfile.load_masks(run / "masks.safetensors")
    assert all(torch.equal(final[k], rounds[-1][1][k]) for k in final)
    notes = manifest["notes"]
    assert notes["objective"] == "kd" and notes["rounds"] == 3 and notes["steps"] == 4
    assert notes["round_sparsities"] == [0.1, 0.2, 0.3] and notes["lr"] == 0.01
    assert notes["teacher"] == "frozen pre-trained copy" and notes["prune_fraction"] == 0.1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r] + [
        r["eval_loss"] for r in rows if "eval_loss" in r
    ]
    assert losses and all(math.isfinite(x) and x > 0 for x in losses)
    assert [r["round"] for r in rows if "loss" in r] == [1, 2]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    # an intermediate round's mask is a normal mask artifact
    res = cli("extract", "run", "--sparsity", "0.2", "--export", "sub", "--json")
    assert res.code == 0, res.err
    assert res.json()["step"] == 2
    from transformers import AutoModel

    sub = AutoModel.from_pretrained("sub").state_dict()
    dense = pretrained(tiny_bert).state_dict()
    mask2 = rounds[1][1]
    for name, keep in mask2.items():
        assert torch.all(sub[name][~keep] == 0) and torch.equal(sub[name][keep], dense[name][keep])


def test_global_scope_counts_overall(cli, tiny_bert, corpus):
    res = cli(*imp_args(tiny_bert, corpus, "run", "--scope", "global", "--sparsity", "0.4"))
    assert res.code == 0, res.err
    rounds = round_masks(Path("run"))
    assert len(rounds) == 4
    total = sum(m.numel() for m in rounds[0][1].values())
    previous = None
    for entry, masks in rounds:
        assert sum(pruned(m) for m in masks.values()) == total * entry["round"] // 10
        if previous is not None:
            assert all(not torch.any(~previous[k] & masks[k]) for k in masks)
        previous = masks
    per_matrix = {k: pruned(m) / m.numel() for k, m in rounds[-1][1].items()}
    assert max(per_matrix.values()) - min(per_matrix.values()) > 0.01  # uneven, as global is


# -- rewinding and the magnitude criterion --------------------------------------------------------


def test_rewind_restores_pretrained_weights_bit_for_bit(tiny_bert):
    model = pretrained(tiny_bert)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = masking.prunable_weights(model)
    ones = {p.name: torch.ones(p.shape, dtype=torch.bool) for p in weights}
    masking.attach_masks(weights, ones)
    params = {n: p for n, p in model.named_parameters()}
    snapshot = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():  # "training"
        for p in params.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    masks = imp.prune_round(weights, ones, 0.1, "local")
    masks = imp.prune_round(weights, masks, 0.2, "local")
    imp.apply_masks(weights, masks)
    imp.rewind(params, snapshot)
    for p in weights:
        effective = p.module.weight.detach()  # what the forward pass uses
        keep = masks[p.name]
        assert torch.equal(effective[keep], before[p.name][keep]), p.name
        assert torch.all(effective[~keep] == 0), p.name
        assert pruned(keep) == p.numel * 2 // 10
    masking.detach_masks(weights)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_run_rewinds_and_prunes_by_trained_magnitude(cli, tiny_bert, corpus, monkeypatch):
    """Watch a real run (MLM+KD: head and teacher): each pruning ranks the trained weights,
    after it the model is the pre-trained one with the new mask applied, and pruned weights
    get no update."""
    seen: list[dict] = []
    original_prune, original_session_prune = imp.prune_round, imp.IMPSession.prune

    def watch_prune(weights, masks, level, scope, pattern=None):
        out = original_prune(weights, masks, level, scope, pattern)
        current = {p.name: p.weight.detach().clone() for p in weights}
        seen.append({"level": level, "before": masks, "weights": current, "after": out})
        return out

    rewound: list[dict] = []

    def watch_session(self, r, *, step):
        original_session_prune(self, r, step=step)
        state = {n: p.detach().clone() for n, p in self.params.items()}
        effective = {p.name: p.module.weight.detach().clone() for p in self.job.weights}
        rewound.append({"state": state, "effective": effective, "masks": self.masks})

    checks: list[bool] = []
    original_after_step = imp._Hooks.after_step

    def watch_step(self, step):  # pruned weights keep their stored values within a round,
        original_after_step(self, step)  # even the embeddings the MLM decoder reads unmasked
        for p in self.session.job.weights:
            key = "encoder." + p.name.removesuffix("weight") + "parametrizations.weight.original"
            if key in self.session.snapshot:  # the pooler is not trained at all
                keep = self.session.masks[p.name]
                stored = p.weight.detach()[~keep]
                checks.append(torch.equal(stored, self.session.snapshot[key][~keep]))

    monkeypatch.setattr(imp, "prune_round", watch_prune)
    monkeypatch.setattr(imp.IMPSession, "prune", watch_session)
    monkeypatch.setattr(imp._Hooks, "after_step", watch_step)
    res = cli(*imp_args(tiny_bert, corpus, "run", "--head-lr", "0.01", objective="mlm-kd"))
    assert res.code == 0, res.err
    assert checks and all(checks)
    assert "has no MLM head" in res.err
    dense = pretrained(tiny_bert).state_dict()
    assert [s["level"] for s in seen] == [0.1, 0.2, 0.3]

    # round 1 ranks the pre-trained weights; later rounds the trained ones
    assert all(torch.equal(seen[0]["weights"][k], dense[k]) for k in seen[0]["weights"])
    ranking_changed = False
    for s in seen[1:]:
        moved = any(not torch.equal(s["weights"][k], dense[k]) for k in s["weights"])
        assert moved, "no training happened between prunings"
        omp = masking.masks_from_scores(
            {k: dense[k].abs() for k in s["weights"]}, s["level"], "local"
        )
        for name, w in s["weights"].items():
            flat, old = w.abs().reshape(-1).tolist(), s["before"][name].reshape(-1)
            extra = len(flat) * round(s["level"] * 10) // 10 - pruned(old)
            alive = [i for i in range(len(flat)) if old[i]]
            cut = sorted(alive, key=lambda i: (flat[i], i))[:extra]  # the direct computation
            expected = old.clone()
            expected[cut] = False
            assert torch.equal(s["after"][name].reshape(-1), expected), name
            ranking_changed |= not torch.equal(s["after"][name], omp[name])
    assert ranking_changed, "training never changed the magnitude ranking"

    # after every pruning: pre-trained weights, pruned ones zero in the forward pass
    for r in rewound:
        for name, value in r["effective"].items():
            keep = r["masks"][name]
            assert torch.equal(value[keep], dense[name][keep]) and torch.all(value[~keep] == 0)
        for name, value in r["state"].items():  # every trainable encoder tensor rewound
            if name.startswith("encoder."):
                key = name.removeprefix("encoder.").replace(".parametrizations.weight.original",
                                                            ".weight")  # fmt: skip
                assert torch.equal(value, dense[key]), name
    heads = [{k: v for k, v in r["state"].items() if k.startswith("head.")} for r in rewound]
    assert heads[0] and all(torch.equal(heads[0][k], h[k]) for h in heads for k in h)

    # the MLM proxy of an IMP run: the head fitted on the dense model
    res = cli("eval", "run", "--objective", "mlm", "--corpus", corpus, "--max-length", "16",
              "--head-warmup-steps", "2", "--json")  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["mask_sparsity"] == pytest.approx(0.3, abs=1e-3)


def test_teacher_is_a_frozen_copy(tiny_bert):
    import copy

    model = pretrained(tiny_bert)
    teacher = copy.deepcopy(model).requires_grad_(False)
    weights = masking.prunable_weights(model)
    module = objectives.PretrainingLoss(model, weights, "kd", teacher=teacher).eval()
    ids = torch.randint(5, 120, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float(module(input_ids=ids)) == pytest.approx(0.0, abs=1e-6)
        for p in model.parameters():
            p.add_(0.05)
        assert float(module(input_ids=ids)) > 1e-3  # the student moved, the teacher did not
    assert not any(p.requires_grad for p in teacher.parameters())


# -- resume ---------------------------------------------------------------------------------------


def interrupted(cli, monkeypatch, args, crash_at):
    original = imp._Hooks.after_step

    def crash(self, step):
        original(self, step)
        if step == crash_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(imp._Hooks, "after_step", crash)
    try:
        return cli(*args)
    finally:
        monkeypatch.setattr(imp._Hooks, "after_step", original)


def assert_same_run(full: Path, part: Path) -> None:
    for name in ("masks.safetensors", *(e["file"] for e, _ in round_masks(full))):
        a = maskfile.load_masks(full / name)
        b = maskfile.load_masks(part / name)
        assert all(torch.equal(a[k], b[k]) for k in a), (part, name)
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (full, part)]
    assert [m["file"] for m in manifests[1]["masks"]] == [m["file"] for m in manifests[0]["masks"]]
    rows = [
        [json.loads(r) for r in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (full, part)
    ]
    steps = [r["step"] for r in rows[1]]
    assert steps == sorted(steps) and steps[-1] == 6
    assert [r.get("eval_loss") for r in rows[1]] == [r.get("eval_loss") for r in rows[0]]


def test_resume_by_round_and_within_a_round(cli, tiny_bert, corpus, monkeypatch):
    """Rewinding to step 1, 4 rounds of 2 steps: interrupted in round 3 (resumed from the
    checkpoint at step 5, rewind weights included) and in round 2 (resumed from the round-2
    boundary at step 2); both end with the uninterrupted run's masks, bit for bit."""
    common = ("--seed", "3", "--rewind-step", "1")
    assert cli(*imp_args(tiny_bert, corpus, "full", *common, sparsity="0.4")).code == 0
    for out, crash_at, save_every in (("mid", 6, "1"), ("boundary", 3, "100")):
        args = imp_args(tiny_bert, corpus, out, *common, "--save-every", save_every,
                        sparsity="0.4")  # fmt: skip
        res = interrupted(cli, monkeypatch, args, crash_at)
        assert res.code == 130
        assert not Path(out, "masks.safetensors").exists()
        res = cli("search", "--resume", out)
        assert res.code == 0, res.err
        resumed_at = 5 if out == "mid" else 2
        assert f"resuming IMP round {3 if out == 'mid' else 2}/4 from step {resumed_at}" in res.err
        assert_same_run(Path("full"), Path(out))
    res = cli("search", "--resume", "mid")  # a finished run: refused, left complete
    assert res.code == 2 and "already complete" in res.err, res.err
    assert json.loads(Path("mid/manifest.json").read_text())["status"] == "complete"
    assert_same_run(Path("full"), Path("mid"))


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-s", "0.75"], "--sparsity 0.75 is not reachable with --prune-fraction 0.1 (each round "
         "prunes 0.1 of the original weights); reachable: 0.1, 0.2, ..., 0.9"),
        (["-s", "0.5", "--prune-fraction", "0.3"], "reachable: 0.3, 0.6, 0.9"),
        (["--steps-per-round", "0"], "steps_per_round: Input should be greater than 0"),
        (["--rewind-step", "2"], "--rewind-step 2 must be below --steps-per-round 2"),
        (["--prune-fraction", "1"], "prune_fraction: Input should be less than 1"),
        (["--max-steps", "10"], "--max-steps does not apply to imp"),
        (["-o", "reset_every=5"], "reset_every"),
    ],
)  # fmt: skip
def test_bad_imp_input(cli, tiny_bert, corpus, extra, message):
    res = cli(*imp_args(tiny_bert, corpus, "run"), *extra)
    assert res.code == 2, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tamt: error: "), res.err
    assert message in lines[0]
    assert not any(Path(".").iterdir()), "a run directory was left behind"


def test_round_levels():
    assert imp.round_levels(0.7, 0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert imp.round_levels(0.9, 0.3) == [0.3, 0.6, 0.9]
    assert imp.round_levels(0.1, 0.1) == [0.1]
    assert imp.reachable_levels(0.25) == [0.25, 0.5, 0.75]
    with pytest.raises(Exception, match=r"reachable: 0\.4, 0\.8"):
        imp.round_levels(0.2, 0.4)


# -- the reference code's settings: one decay over the run, no rewinding ---------------------


@pytest.mark.parametrize(("schedule", "expected"), [("run", [0.75, 0.5, 0.75, 0.5]),
                                                    ("round", [0.5, 0.0, 0.5, 0.0])])  # fmt: skip
def test_schedule_restarts_every_round_with_the_decay_horizon_asked(
    cli, tiny_bert, corpus, schedule, expected
):
    res = cli(*imp_args(tiny_bert, corpus, "run", "--schedule", schedule, "--log-every", "1"))
    assert res.code == 0, res.err
    rows = [json.loads(r) for r in Path("run/metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] / 0.01 for r in rows if "lr" in r]
    assert lrs == pytest.approx(expected)
    notes = json.loads(Path("run/manifest.json").read_text())["notes"]
    assert (notes["schedule"], notes["rewind"]) == (schedule, True)


def test_no_rewind_keeps_training_the_pruned_trained_weights(cli, tiny_bert, corpus, monkeypatch):
    after: dict[str, list[dict]] = {}
    original = imp.IMPSession.prune

    def watch(self, r, *, step):
        original(self, r, step=step)
        state = {p.name: p.weight.detach().clone() for p in self.job.weights}
        after.setdefault(self.job.run.root.name, []).append(state)

    monkeypatch.setattr(imp.IMPSession, "prune", watch)
    for out, extra in (("rewound", []), ("kept", ["--no-rewind"])):
        res = cli(*imp_args(tiny_bert, corpus, out, *extra))
        assert res.code == 0, res.err
    dense = {p.name: p.weight.detach() for p in masking.prunable_weights(pretrained(tiny_bert))}
    trained = [n for n in dense if not n.startswith("pooler.")]  # the pooler is not trained
    for state in after["rewound"]:  # after every pruning: the pre-trained weights again
        assert all(torch.equal(state[n], dense[n]) for n in trained)
    for state in after["kept"][1:]:  # after a trained interval: the trained weights stay
        assert all(not torch.equal(state[n], dense[n]) for n in trained)
    notes = json.loads(Path("kept/manifest.json").read_text())["notes"]
    assert notes["rewind"] is False
    res = cli(*imp_args(tiny_bert, corpus, "bad", "--no-rewind", "--rewind-step", "1"))
    assert res.code == 2 and "--rewind-step needs rewinding" in res.err


# -- IMP that is OMP in all but name --------------------------------------------------------------


def default_budget_args(tiny_bert, corpus, out, *extra, sparsity="0.3"):
    """IMP at its default learning rate with a short round: the mask cannot move far."""
    args = imp_args(tiny_bert, corpus, out, *extra, sparsity=sparsity)
    at = args.index("--lr")
    return args[:at] + args[at + 2 :]


def omp_mask(tiny_bert, sparsity, scope="local", pattern=None, embeddings=True):
    weights = masking.prunable_weights(pretrained(tiny_bert), embeddings=embeddings)
    return masking.magnitude_masks(weights, sparsity, scope, pattern)


def test_imp_that_stays_on_the_magnitude_mask_is_flagged(cli, tiny_bert, corpus):
    """Default lr, 2 steps a round: the final mask is OMP's to ≥ 0.99 (Jaccard of kept weights
    with the magnitude mask of the pre-trained weights), and the run, and the report, say so; a
    kd run whose mask moved is not flagged."""
    res = cli(*default_budget_args(tiny_bert, corpus, "imp"))
    assert res.code == 0, res.err
    said = " ".join(res.err.split())
    assert "IMP ≈ OMP at this budget: 2 steps a round is too few to move the mask" in said
    manifest = json.loads(Path("imp/manifest.json").read_text())
    final = maskfile.load_masks(Path("imp/masks.safetensors"))
    expected = masking.kept_jaccard(final, omp_mask(tiny_bert, 0.3))
    assert manifest["omp_kept_jaccard"] == pytest.approx(expected, abs=1e-6)
    assert expected >= 0.99
    res = cli(
        "search", "-m", "kd", "-s", "0.3", "--model", tiny_bert, "--corpus", corpus,
        "--max-length", "16", "--batch-size", "4", "--max-steps", "4", "--lr", "0.05",
        "--eval-blocks", "8", "--out", "kd",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "≈ OMP" not in res.err
    moved = json.loads(Path("kd/manifest.json").read_text())["omp_kept_jaccard"]
    assert moved < 0.99
    doc = cli("report", "imp", "kd", "--format", "json").json()
    subs = {s["name"]: s for s in doc["subnetworks"]}
    assert subs["imp s0.3"]["omp_jaccard"] == manifest["omp_kept_jaccard"]
    assert subs["kd s0.3"]["omp_jaccard"] == moved
    assert subs["imp s0.3"]["omp_from"] == subs["kd s0.3"]["omp_from"] == "model"
    assert subs["kd s0.3"]["omp_like"] is None
    (flag,) = [n for n in doc["notes"] if "≈ OMP" in n]
    assert flag.startswith("imp s0.3: IMP ≈ OMP at this budget: 2 steps a round is too few")
    md = cli("report", "imp", "kd", "--format", "md").out
    assert "| kept J. vs OMP |" in md and f"| {moved:.4f} |" in md and flag in md


@pytest.mark.parametrize(
    ("extra", "sparsity", "scope", "pattern", "embeddings"),
    [
        (["--scope", "global", "--no-embeddings"], "0.3", "global", None, False),
        (["--pattern", "2:4"], None, "local", (2, 4), True),
    ],
)
def test_the_omp_mask_compared_has_the_runs_settings(
    cli, tiny_bert, corpus, extra, sparsity, scope, pattern, embeddings
):
    args = imp_args(tiny_bert, corpus, "run", *extra, sparsity=sparsity or "0.3")
    if sparsity is None:  # the pattern sets it
        at = args.index("-s")
        args = args[:at] + args[at + 2 :]
    res = cli(*args)
    assert res.code == 0, res.err
    manifest = json.loads(Path("run/manifest.json").read_text())
    final = maskfile.load_masks(Path("run/masks.safetensors"))
    reference = omp_mask(tiny_bert, manifest["sparsity"], scope, pattern, embeddings)
    assert set(reference) == set(final)
    expected = masking.kept_jaccard(final, reference)
    assert manifest["omp_kept_jaccard"] == pytest.approx(expected, abs=1e-6)


def test_report_compares_older_runs_with_an_omp_run_of_the_same_settings(cli, tiny_bert, corpus):
    """A run that recorded no Jaccard (an older tamt) is compared with an OMP run of the report
    that has its model, sparsity and settings; with none, the column is empty and no flag."""
    assert cli(*default_budget_args(tiny_bert, corpus, "imp")).code == 0
    res = cli("search", "-m", "omp", "-s", "0.3", "--model", tiny_bert, "--out", "omp")
    assert res.code == 0, res.err
    res = cli("search", "-m", "omp", "-s", "0.3", "--model", tiny_bert, "--scope", "global",
              "--out", "omp-global")  # fmt: skip
    assert res.code == 0, res.err
    path = Path("imp/manifest.json")
    manifest = json.loads(path.read_text())
    recorded = manifest.pop("omp_kept_jaccard")
    path.write_text(json.dumps(manifest))
    doc = cli("report", "imp", "omp-global", "omp", "--format", "json").json()
    (sub,) = [s for s in doc["subnetworks"] if s["run"].endswith("imp")]
    assert sub["omp_from"] == "omp s0.3 (omp)"  # not the global one: another OMP mask
    assert sub["omp_jaccard"] == pytest.approx(recorded, abs=1e-6)
    assert any(n.startswith("imp s0.3: IMP ≈ OMP") for n in doc["notes"])
    alone = cli("report", "imp", "--format", "json").json()
    assert alone["subnetworks"][0]["omp_jaccard"] is None
    assert not any("≈ OMP" in n for n in alone["notes"])
