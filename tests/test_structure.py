"""Structured masks (`--structure neurons|heads|neurons+heads`): the unit mathematics on small
tensors, the mask file that holds unit masks, and the commands on tiny BERT, RoBERTa and
DistilBERT models: search, an export that is a smaller plain checkpoint giving the masked
model's outputs, fine-tuning and evaluation of it, bench and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tamt_cli import maskfile, masking, units
from tamt_cli.errors import UserError
from tests.tiny import make_mlm_checkpoint, write_sst2

pytestmark = pytest.mark.usefixtures("one_thread")


def _groups(model, structure: str):
    weights = masking.prunable_weights(model, embeddings=False, pooler=False)
    return weights, units.unit_groups(model, weights, structure)


@pytest.fixture(scope="module")
def bert_model(tiny_bert):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(tiny_bert))


# -- the unit mathematics --------------------------------------------------------------------


def test_units_are_found_per_layer_with_the_matrices_they_span(bert_model):
    _, groups = _groups(bert_model, "neurons+heads")
    assert [(g.name, g.kind, g.count) for g in groups] == [
        ("encoder.layer.0.neurons", "neurons", 64),
        ("encoder.layer.0.heads", "heads", 2),
        ("encoder.layer.1.neurons", "neurons", 64),
        ("encoder.layer.1.heads", "heads", 2),
    ]
    heads = groups[1]
    assert heads.rows == tuple(
        f"encoder.layer.0.attention.self.{m}.weight" for m in ("query", "key", "value")
    )
    assert heads.columns == ("encoder.layer.0.attention.output.dense.weight",)
    assert groups[0].rows == ("encoder.layer.0.intermediate.dense.weight",)
    assert groups[0].columns == ("encoder.layer.0.output.dense.weight",)


def test_unit_magnitude_is_the_norm_of_all_the_units_weights(bert_model):
    weights, groups = _groups(bert_model, "neurons+heads")
    scores = units.magnitude_scores(groups, weights)
    w = {p.name: p.weight.detach().double() for p in weights}
    layer = "encoder.layer.1."
    inp, out = w[layer + "intermediate.dense.weight"], w[layer + "output.dense.weight"]
    j = 17
    expected = torch.sqrt(inp[j].pow(2).sum() + out[:, j].pow(2).sum())
    assert torch.isclose(scores["encoder.layer.1.neurons"][j], expected)
    h, d = 1, 16  # head 1 of 2, head size 32 / 2
    attn = layer + "attention."
    parts = [w[attn + f"self.{m}.weight"][h * d : (h + 1) * d] for m in ("query", "key", "value")]
    parts.append(w[attn + "output.dense.weight"][:, h * d : (h + 1) * d])
    expected = torch.sqrt(sum(p.pow(2).sum() for p in parts))
    assert torch.isclose(scores["encoder.layer.1.heads"][h], expected)


def test_unit_masks_expand_into_rows_and_columns_and_slice_back(bert_model):
    weights, groups = _groups(bert_model, "neurons+heads")
    scores = units.magnitude_scores(groups, weights)
    kept = units.keep_units(groups, scores, 0.75)
    assert {n: int(k.sum()) for n, k in kept.items()} == {
        "encoder.layer.0.neurons": 16, "encoder.layer.0.heads": 1,
        "encoder.layer.1.neurons": 16, "encoder.layer.1.heads": 1,
    }  # fmt: skip
    # the lowest-scored units are the pruned ones
    s, k = scores["encoder.layer.0.neurons"], kept["encoder.layer.0.neurons"]
    assert s[~k].max() <= s[k].min()
    masks = units.expand(groups, kept, masking.shapes(weights))
    inp = masks["encoder.layer.0.intermediate.dense.weight"]
    out = masks["encoder.layer.0.output.dense.weight"]
    assert torch.equal(inp.all(1), k) and torch.equal(inp.any(1), k)
    assert torch.equal(out.all(0), k) and torch.equal(out.any(0), k)
    q = masks["encoder.layer.0.attention.self.query.weight"]
    ao = masks["encoder.layer.0.attention.output.dense.weight"]
    head = kept["encoder.layer.0.heads"]
    assert torch.equal(q.all(1), head.repeat_interleave(16))
    assert torch.equal(ao.all(0), head.repeat_interleave(16))
    assert units.agrees(groups, kept, masks) == ""
    found = units.UnitMasks("neurons+heads", groups, kept)
    sliced = units.sliced_masks(masks, found)
    assert sliced["encoder.layer.0.intermediate.dense.weight"].shape == (16, 32)
    assert sliced["encoder.layer.0.output.dense.weight"].shape == (32, 16)
    assert bool(sliced["encoder.layer.0.intermediate.dense.weight"].all())
    assert sliced["encoder.layer.0.attention.self.query.weight"].shape == (32, 32)


def test_a_sparsity_must_prune_some_units_of_every_layer_but_not_all(bert_model):
    _, groups = _groups(bert_model, "heads")
    with pytest.raises(UserError, match=r"prunes no head of a layer of 2 heads .*at least 0.5"):
        units.prune_counts(groups, 0.3)
    assert set(units.prune_counts(groups, 0.5).values()) == {1}
    with pytest.raises(UserError, match="prunes 0 of the 2 heads"):
        units.check_unit_masks(
            groups, {g.name: torch.ones(2, dtype=torch.bool) for g in groups}, 0.5, "mask"
        )


# -- the mask file ---------------------------------------------------------------------------


def test_a_structured_mask_file_is_version_2_with_its_units(bert_model, tmp_path):
    from safetensors import safe_open

    weights, groups = _groups(bert_model, "neurons")
    kept = units.keep_units(groups, units.random_scores(groups, 3), 0.5)
    masks = units.expand(groups, kept, masking.shapes(weights))
    path = tmp_path / "m.safetensors"
    maskfile.save_masks(path, masks, units=units.UnitMasks("neurons", groups, kept))
    with safe_open(str(path), framework="np") as fh:
        meta = fh.metadata()
    assert meta["version"] == "2" and meta["structure"] == "neurons"
    assert set(json.loads(meta["units"])) == {g.name for g in groups}
    read = maskfile.load_masks(path)  # the weight masks, as of any mask
    assert set(read) == set(masks) and all(torch.equal(read[n], masks[n]) for n in masks)
    found = maskfile.load_units(path)
    assert found is not None and found.structure == "neurons" and found.groups == groups
    assert all(torch.equal(found.masks[g.name], kept[g.name]) for g in groups)
    # weight masks are still version 1, and carry no units
    plain = tmp_path / "w.safetensors"
    maskfile.save_masks(plain, masks)
    with safe_open(str(plain), framework="np") as fh:
        assert fh.metadata()["version"] == "1"
    assert maskfile.load_units(plain) is None


def test_a_structured_mask_file_whose_weights_contradict_its_units_is_refused(bert_model, tmp_path):
    weights, groups = _groups(bert_model, "neurons")
    kept = units.keep_units(groups, units.random_scores(groups, 3), 0.5)
    masks = units.expand(groups, kept, masking.shapes(weights))
    name = "encoder.layer.1.output.dense.weight"
    masks[name] = torch.ones_like(masks[name])
    path = tmp_path / "m.safetensors"
    maskfile.save_masks(path, masks, units=units.UnitMasks("neurons", groups, kept))
    with pytest.raises(UserError, match=f"is damaged: '{name}' keeps weights of units"):
        maskfile.load_masks(path)


def test_a_reader_of_version_1_only_refuses_a_structured_file(bert_model, tmp_path, monkeypatch):
    """tamt 0.2 reads version 1 only: a structured file is refused, not misread."""
    weights, groups = _groups(bert_model, "heads")
    kept = units.keep_units(groups, units.random_scores(groups, 0), 0.5)
    path = tmp_path / "m.safetensors"
    masks = units.expand(groups, kept, masking.shapes(weights))
    maskfile.save_masks(path, masks, units=units.UnitMasks("heads", groups, kept))
    monkeypatch.setattr(maskfile, "VERSIONS", ("1",))
    with pytest.raises(UserError, match="has format version '2'; this tamt reads versions 1"):
        maskfile.load_masks(path)


# -- the commands ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {
        "bert": tiny_bert,
        "roberta": make_mlm_checkpoint(root / "roberta", "roberta-mlm"),
        "distilbert": make_mlm_checkpoint(root / "distilbert", "distilbert-mlm"),
    }


def _masked_and_exported(run: Path, export: Path, model: Path):
    """The pre-trained encoder with the run's mask attached, and the export loaded by plain
    transformers."""
    from transformers import AutoModel

    dense = AutoModel.from_pretrained(str(model)).eval()
    weights = masking.prunable_weights(dense, embeddings=False, pooler=False)
    masking.attach_masks(weights, maskfile.load_masks(run / "masks.safetensors"))
    return dense, AutoModel.from_pretrained(str(export)).eval()


def _outputs(model, vocab: int = 100):
    ids = torch.randint(5, vocab, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


@pytest.mark.parametrize("layout", ["bert", "roberta", "distilbert"])
def test_a_neuron_export_is_a_smaller_plain_checkpoint_with_the_same_outputs(cli, layouts, layout):
    model = layouts[layout]
    res = cli("search", "-m", "omp", "-s", "0.75", "--structure", "neurons", "--model", model,
              "--out", "run", "--json")  # fmt: skip
    assert res.code == 0, res.err
    manifest = json.loads(Path("run/manifest.json").read_text())
    assert manifest["structure"] == "neurons" and manifest["embeddings"] is False
    assert manifest["sparsity_report"]["units"]["kept"] == {"neurons": [16, 16]}
    kinds = manifest["sparsity_report"]["kinds"]
    assert kinds["I"]["sparsity"] == 0.75 and kinds["O"]["sparsity"] == 0.75
    assert kinds["Q"]["sparsity"] == 0.0 and "embedding" not in kinds
    res = cli("extract", "run", "--export", "sub")
    assert res.code == 0, res.err
    assert "units kept (neurons): neurons 16 of 64 in every layer" in res.out
    config = json.loads(Path("sub/config.json").read_text())
    assert config["hidden_dim" if layout == "distilbert" else "intermediate_size"] == 16
    masked, exported = _masked_and_exported(Path("run"), Path("sub"), model)
    assert type(exported) is type(masked)
    dense_params = sum(p.numel() for p in masked.parameters())
    params = sum(p.numel() for p in exported.parameters())
    # per layer 48 of 64 neurons go: 48·(32 + 1) FFN-in weights and biases, 48·32 FFN-out
    assert dense_params - params == 2 * 48 * (32 + 1 + 32)
    assert torch.allclose(_outputs(masked), _outputs(exported), atol=1e-5)
    assert json.loads(Path("sub/manifest.json").read_text())["ffn_width"] == 16
    assert maskfile.load_units(Path("sub/masks.safetensors")) is not None


def test_heads_are_exported_as_zeros(cli, tiny_bert):
    res = cli("search", "-m", "random", "-s", "0.5", "--structure", "neurons+heads",
              "--model", tiny_bert, "--seed", "4", "--out", "run")  # fmt: skip
    assert res.code == 0, res.err
    assert cli("extract", "run", "--export", "sub").code == 0
    found = maskfile.load_units(Path("run/masks.safetensors"))
    assert found is not None and found.kept() == {"neurons": [32, 32], "heads": [1, 1]}
    masked, exported = _masked_and_exported(Path("run"), Path("sub"), tiny_bert)
    assert exported.config.num_attention_heads == 2 and exported.config.intermediate_size == 32
    pruned = int(torch.nonzero(~found.masks["encoder.layer.0.heads"])[0])
    rows = slice(pruned * 16, (pruned + 1) * 16)
    attention = exported.encoder.layer[0].attention
    for linear in (attention.self.query, attention.self.key, attention.self.value):
        assert not linear.weight[rows].any() and not linear.bias[rows].any()
    assert not attention.output.dense.weight[:, rows].any()
    assert torch.allclose(_outputs(masked), _outputs(exported), atol=1e-5)
    # the same seed gives the same units; another seed others
    again = cli("search", "-m", "random", "-s", "0.5", "--structure", "neurons+heads",
                "--model", tiny_bert, "--seed", "4", "--out", "again")  # fmt: skip
    assert again.code == 0
    same = maskfile.load_units(Path("again/masks.safetensors"))
    assert same is not None and all(torch.equal(same.masks[n], found.masks[n]) for n in same.masks)


def test_a_structured_export_passes_its_own_weight_checks_and_a_damaged_one_is_refused(
    cli, tiny_bert, corpus
):
    """A dense export of neurons and heads lost the pruned neurons and the pruned heads' biases:
    every command that reads it checks it as it is (also against the pre-trained model), and a
    kept FFN weight changed in it is refused naming the tensor."""
    from safetensors.torch import load_file, save_file

    res = cli("search", "-m", "omp", "-s", "0.5", "--structure", "neurons+heads",
              "--model", tiny_bert, "--out", "run")  # fmt: skip
    assert res.code == 0, res.err
    for fmt in ("dense", "compressed"):
        assert cli("extract", "run", "--export", fmt, "--format", fmt).code == 0
        res = cli("eval", fmt, "--objective", "kd", "--corpus", corpus, "--max-length", "16",
                  "--eval-blocks", "2", "--json")  # fmt: skip
        assert res.code == 0, res.err
        assert cli("extract", fmt, "--export", f"{fmt}-again").code == 0
    weights = Path("dense/model.safetensors")
    state = load_file(str(weights))
    name = "encoder.layer.0.intermediate.dense.weight"
    assert state[name].shape == (32, 32)
    kept = torch.nonzero(state[name])[0]
    state[name][tuple(kept)] += 1.0
    save_file(state, str(weights), metadata={"format": "pt"})
    res = cli("eval", "dense", "--objective", "kd", "--corpus", corpus, "--max-length", "16",
              "--eval-blocks", "2")  # fmt: skip
    assert res.code == 2 and f"'{name}' is not the weights of" in res.err, res.err


@pytest.fixture(scope="module")
def neuron_run(tmp_path_factory, tiny_bert) -> Path:
    from tamt_cli.cli import main

    root = tmp_path_factory.mktemp("neurons")
    assert main(["search", "-m", "omp", "-s", "0.5", "--structure", "neurons", "--model",
                 str(tiny_bert), "--out", str(root / "run")]) == 0  # fmt: skip
    assert main(["extract", str(root / "run"), "--export", str(root / "sub")]) == 0
    return root


def test_the_export_fine_tunes_and_evaluates_as_its_own_smaller_model(cli, neuron_run, tmp_path):
    sst2 = write_sst2(tmp_path / "SST-2")
    res = cli("finetune", neuron_run / "sub", "--task", "sst2", "--data-dir", sst2,
              "--max-length", "24", "--batch-size", "8", "--epochs", "1", "--lr", "1e-3",
              "--out", "ft", "--json")  # fmt: skip
    assert res.code == 0, res.err
    seed = Path("ft/seed-1")
    assert json.loads((seed / "config.json").read_text())["intermediate_size"] == 32
    masks = maskfile.load_masks(seed / "masks.safetensors")
    assert masks["encoder.layer.0.intermediate.dense.weight"].shape == (32, 32)
    report = json.loads(Path("ft/manifest.json").read_text())["subnetwork"]
    assert report["structure"] == "neurons"
    res = cli("eval", seed, "--task", "sst2", "--data-dir", sst2, "--json")
    assert res.code == 0, res.err
    assert 0.0 <= res.json()["metrics"]["accuracy"] <= 100.0


def test_the_run_is_scored_on_a_pre_training_loss(cli, neuron_run, corpus):
    res = cli("eval", neuron_run / "run", "--objective", "kd", "--corpus", corpus,
              "--max-length", "16", "--eval-blocks", "4", "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["loss"] > 0 and result["mask_sparsity"] == 0.25  # half the FFN, half the weights


def test_bench_of_a_neuron_export_times_the_smaller_model(cli, neuron_run):
    res = cli("bench", neuron_run / "sub", "--batch-size", "2", "--max-length", "16",
              "--repeats", "2", "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["structure"] == "neurons"
    sizes = result["sizes"]
    assert sizes["parameters"]["dense"] - sizes["parameters"]["sliced"] == 2 * 32 * 65
    assert sizes["sliced_bytes"] < sizes["dense_bytes"]
    rows = {row["name"]: row for row in result["latency"]}
    assert rows["sliced"]["max_abs_diff"] < 1e-5 and rows["sliced"]["speedup"] > 0
    table = cli("bench", neuron_run / "sub", "--batch-size", "1", "--max-length", "8",
                "--repeats", "1")  # fmt: skip
    assert "sliced (neurons)" in table.out and "parameters: dense" in table.out


def test_the_latency_script_times_the_export_against_its_dense_model(neuron_run):
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "structured_latency.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(neuron_run / "sub"), "--batches", "1,2",
         "--rounds", "2,1", "--length", "8"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "parameters: dense 24,160, export 20,000 (0.828)"
    assert lines[1].startswith("batch 1 × 8: dense ") and lines[2].startswith("batch 2 × 8:")


def test_report_names_structured_runs_apart_and_shows_their_units(cli, neuron_run, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "w").code == 0
    res = cli("report", neuron_run / "run", "w", "--format", "json")
    assert res.code == 0, res.err
    doc = res.json()
    subnetworks = {s["name"]: s for s in doc["subnetworks"]}
    assert set(subnetworks) == {"omp-neurons s0.5", "omp s0.5"}
    units_of = subnetworks["omp-neurons s0.5"]["units"]
    assert units_of["kept"] == {"neurons": [32, 32]} and units_of["layers"] == [0, 1]
    assert subnetworks["omp s0.5"]["units"] is None
    from tamt_cli import plots

    assert plots._units_kept(units_of) == {"0": "\n32n", "1": "\n32n"}
    res = cli("report", neuron_run / "run", "w", "--plots", "figs")
    assert res.code == 0, res.err
    assert Path("figs/layer-sparsity.png").read_bytes().startswith(b"\x89PNG")


# -- mask training over units ----------------------------------------------------------------


def test_a_unit_score_gets_the_summed_straight_through_gradient_of_its_weights():
    """A unit's score moves as the sum of the per-weight scores of its rows or columns would:
    the gradient of ``W ⊙ keep`` with ``keep`` spread over them, taken as the identity."""
    torch.manual_seed(0)
    for axis in (0, 1):
        weight = torch.randn(8, 6) if axis == 0 else torch.randn(6, 8)
        count = 4  # blocks of 2 rows (columns)
        score = torch.tensor([0.5, -0.1, 0.3, -0.2], requires_grad=True)
        keep = score.detach() > 0
        out = masking._UnitStraightThrough.apply(weight, score, keep, axis, count)
        x = torch.randn(6 if axis == 0 else 8, 3)
        (out @ x).square().sum().backward()
        spread = score.detach().repeat_interleave(2).clone().requires_grad_(True)
        shaped = spread[:, None] if axis == 0 else spread[None, :]
        keep_w = (shaped > 0).expand_as(weight)
        w_score = shaped.expand_as(weight)
        masked = masking._StraightThrough.apply(weight, w_score, keep_w)
        assert torch.equal(masked, out.detach())
        (masked @ x).square().sum().backward()
        assert torch.allclose(score.grad, spread.grad.reshape(count, 2).sum(1), atol=1e-5)


def kd_args(model, corpus, out, *extra):
    return ["search", "-m", "kd", "-s", "0.5", "--structure", "neurons+heads", "--model", model,
            "--corpus", corpus, "--max-length", "16", "--batch-size", "4", "--max-steps", "8",
            "--lr", "0.01", "--seed", "3", "--out", out, *extra]  # fmt: skip


def test_kd_trains_unit_scores_saves_exact_unit_masks_and_resumes(
    cli, tiny_bert, corpus, monkeypatch
):
    from tests.tiny import interrupt_mask_training

    res = cli(*kd_args(tiny_bert, corpus, "full", "--save-every", "4"), "--json")
    assert res.code == 0, res.err
    manifest = json.loads(Path("full/manifest.json").read_text())
    assert manifest["structure"] == "neurons+heads"
    assert manifest["sparsity_report"]["units"]["kept"] == {"neurons": [32, 32], "heads": [1, 1]}
    for file in ("masks/step-000004.safetensors", "masks.safetensors"):
        found = maskfile.load_units(Path("full") / file)
        assert found is not None and found.kept() == {"neurons": [32, 32], "heads": [1, 1]}
    # the scores moved the units off the unit magnitude's (lr 0.01 over 8 steps)
    assert manifest["omp_kept_jaccard"] < 1.0
    # checkpoints hold one score a unit, shared by the matrices the units span
    resume_normally = interrupt_mask_training(monkeypatch, 6)
    assert cli(*kd_args(tiny_bert, corpus, "part", "--save-every", "4")).code == 130
    from safetensors.torch import load_file

    saved = load_file("part/checkpoints/step-000004/trainable.safetensors")
    scores = {k: v for k, v in saved.items() if k.endswith(".score")}
    assert sorted(v.numel() for v in scores.values()) == [2, 2, 64, 64]
    resume_normally()
    res = cli("search", "--resume", "part")
    assert res.code == 0, res.err
    a = maskfile.load_units(Path("full/masks.safetensors"))
    b = maskfile.load_units(Path("part/masks.safetensors"))
    assert a is not None and b is not None
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


def test_kd_starts_from_the_unit_magnitude_mask(cli, tiny_bert, corpus):
    """With a learning rate too small to move a score across τ, the trained mask is the unit
    magnitude (omp) mask it starts from."""
    res = cli(*kd_args(tiny_bert, corpus, "kd", "--max-steps", "2", "--lr", "1e-9"))
    assert res.code == 0, res.err
    res = cli("search", "-m", "omp", "-s", "0.5", "--structure", "neurons+heads", "--model",
              tiny_bert, "--out", "omp")  # fmt: skip
    assert res.code == 0, res.err
    a = maskfile.load_units(Path("kd/masks.safetensors"))
    b = maskfile.load_units(Path("omp/masks.safetensors"))
    assert a is not None and b is not None
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert json.loads(Path("kd/manifest.json").read_text())["omp_kept_jaccard"] == 1.0


# -- sweeps ----------------------------------------------------------------------------------


def test_a_sweep_searches_every_method_with_every_structure(cli, tmp_path, tiny_bert, corpus):
    import yaml

    sst2 = write_sst2(tmp_path / "SST-2", train=16, dev=8)
    data = {
        "model": str(tiny_bert),
        "methods": ["kd", "omp"],
        "structures": ["weights", "neurons"],
        "sparsities": [0.5],
        "tasks": ["sst2"],
        "seeds": [1],
        "dense": False,
        "search": {"corpus": str(corpus), "max_length": 16, "batch_size": 4, "eval_blocks": 4},
        "methods_options": {"kd": {"max_steps": 2, "lr": 0.05}},
        "finetune": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "max_length": 24},
        "data": {"sst2": str(sst2)},
        "heldout": {"objective": "kd", "corpus": str(corpus), "max_length": 16, "eval_blocks": 4},
    }
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    res = cli("sweep", grid, "--out", "out")
    assert res.code == 0, res.err
    runs = sorted(p.name for p in Path("out/search").iterdir())
    assert runs == ["kd-neurons-s0.5", "kd-s0.5", "omp-neurons-s0.5", "omp-s0.5"]
    manifest = json.loads(Path("out/search/kd-neurons-s0.5/manifest.json").read_text())
    assert (manifest["method"], manifest["structure"], manifest["label"]) == (
        "kd", "neurons", "kd-neurons"
    )  # fmt: skip
    assert json.loads(Path("out/search/kd-s0.5/manifest.json").read_text())["label"] is None
    assert Path("out/heldout-omp-neurons-s0.5-kd.json").is_file()
    assert Path("out/finetune/sst2-omp-neurons-s0.5-seed1").is_dir()
    doc = cli("report", "out", "--format", "json").json()
    assert {r["method"] for r in doc["rows"]} == {"kd", "kd-neurons", "omp", "omp-neurons"}
    assert all(r["heldout"].get("kd") is not None for r in doc["rows"])
    # a structure of a method's own beside the grid's structures is refused
    data["methods_options"]["omp"] = {"structure": "heads"}
    grid.write_text(yaml.safe_dump(data))
    res = cli("sweep", grid, "--out", "out2")
    assert res.code == 2 and "'omp' sets structure, which structures sets" in res.err
    # a method that prunes no units is refused before anything runs
    grid.write_text(yaml.safe_dump({**data, "methods": ["imp"], "methods_options": {}}))
    res = cli("sweep", grid, "--out", "out3")
    assert res.code == 2 and "does not take --structure neurons" in res.err
    assert not Path("out3").exists()


def test_the_committed_structured_grid_searches_each_method_and_structure(
    cli, tmp_path, tiny_bert, corpus
):
    """benchmarks/structured-grid.yaml (model, corpus and data made local)."""
    import yaml

    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "structured-grid.yaml"
    data = yaml.safe_load(committed.read_text())
    data.update(model=str(tiny_bert), data={"sst2": str(write_sst2(tmp_path / "SST-2"))})
    data["search"]["corpus"] = data["heldout"]["corpus"] = str(corpus)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    res = cli("sweep", path, "--out", "new", "--print-commands")
    assert res.code == 0, res.err
    searches = [line for line in res.out.splitlines() if line.startswith("tamt search")]
    assert len(searches) == 12
    for method in ("kd", "omp", "random"):
        for structure in ("neurons", "neurons+heads"):
            label = f"--label {method}-{structure} "
            mine = [line for line in searches if label in line]
            assert len(mine) == 2 and all(f"--structure {structure}" in x for x in mine)
