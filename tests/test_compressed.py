"""`tamt extract --export DIR --format compressed`: the sparse-bitmask layout, read back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tamt_cli import compressed

RUNS_DOC = Path(__file__).resolve().parents[1] / "docs" / "runs.md"


@pytest.mark.parametrize("shape", [(4, 8), (5, 13), (1, 1), (7, 64)])
def test_encode_decode_round_trip(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) > 0.6)
    parts = compressed.encode(weight)
    assert parts["shape"].tolist() == list(shape)
    assert parts["bitmask"].dtype == torch.uint8
    assert tuple(parts["bitmask"].shape) == (shape[0], -(-shape[1] // 8))
    assert parts["compressed"].numel() == int((weight != 0).sum())
    counts = (weight != 0).sum(dim=1)
    assert parts["row_offsets"].tolist() == (torch.cumsum(counts, 0) - counts).tolist()
    # bit c % 8 of byte c // 8, least significant first
    r, c = (weight != 0).nonzero()[0].tolist() if bool((weight != 0).any()) else (0, 0)
    if bool(weight[r, c] != 0):
        assert (int(parts["bitmask"][r, c // 8]) >> (c % 8)) & 1 == 1
    assert torch.equal(compressed.decode(parts), weight)


def test_encode_refuses_other_ranks():
    with pytest.raises(ValueError, match="2-D"):
        compressed.encode(torch.zeros(3))


def masked_bytes(path: Path, names: list[str]) -> int:
    """Bytes of the tensors that stand for the weights ``names`` in a safetensors file."""
    total = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            prefix, _, part = key.rpartition(".")
            if key in names or (part in compressed.PARTS and f"{prefix}.weight" in names):
                t = f.get_tensor(key)
                total += t.numel() * t.element_size()
    return total


def test_compressed_export_gives_the_dense_exports_outputs(cli, tiny_bert):
    from transformers import AutoModel

    assert cli("search", "-m", "omp", "-s", "0.7", "--model", tiny_bert, "--out", "run").code == 0
    assert cli("extract", "run", "--export", "dense").code == 0
    res = cli("extract", "run", "--export", "small", "--format", "compressed", "--json")
    assert res.code == 0, res.err
    assert res.json()["format"] == "compressed"
    small = Path("small")
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["format"] == "compressed" and manifest["kind"] == "subnetwork"
    config = json.loads((small / "config.json").read_text())["quantization_config"]
    assert "quant_method" not in config  # transformers refuses it: see the test below
    assert config["sparsity_config"]["format"] == "sparse-bitmask"
    assert config["sparsity_config"]["sparsity_structure"] == "unstructured"
    assert compressed.is_compressed(small) and not compressed.is_compressed(Path("dense"))

    names = [m["name"] for m in manifest["sparsity_report"]["matrices"]]
    with safe_open(str(small / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    for name in names:
        prefix = name.removesuffix(".weight")
        assert name not in keys and {f"{prefix}.{p}" for p in compressed.PARTS} <= keys

    dense = AutoModel.from_pretrained("dense").eval()
    model = compressed.load_model(small)
    dense_state = dense.state_dict()
    for key, value in compressed.dense_state(small).items():
        assert torch.equal(value, dense_state[key]), key
    ids = torch.tensor([[2, 10, 20, 30, 40, 3], [2, 50, 60, 70, 3, 0]])
    with torch.no_grad():
        a = dense(input_ids=ids).last_hidden_state
        b = model(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)

    # a masked R × C float32 matrix takes 4 bytes per kept weight, R·⌈C/8⌉ bitmask bytes and
    # 8 bytes per row offset and shape entry; on this model's 32-wide rows that is about
    # (1 − s) + 1/32 + 1/16 of its dense bytes
    expected = 0
    for m in manifest["sparsity_report"]["matrices"]:
        rows, cols = m["shape"]
        expected += 4 * (m["numel"] - m["pruned"]) + rows * -(-cols // 8) + 8 * rows + 16
    assert masked_bytes(small / "model.safetensors", names) == expected
    ratio = expected / masked_bytes(Path("dense/model.safetensors"), names)
    assert 0.3 < ratio < 0.3 + 1 / 32 + 1 / 16 + 0.01, ratio
    assert compressed.folder_bytes(small) < compressed.folder_bytes(Path("dense"))

    # an export in this layout is still a subnetwork that extract reads
    assert cli("extract", "small", "--json").code == 0


def test_transformers_refuses_it_whatever_is_installed(cli, tiny_bert):
    """transformers refuses the folder instead of loading the masked matrices freshly
    initialised: its quantization config has no ``quant_method``, which transformers checks
    first, before it looks for compressed-tensors, so the refusal is the same with
    compressed-tensors installed (the ``quant_method: compressed-tensors`` of earlier exports
    loaded random matrices then)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    from transformers.quantizers.auto import AutoHfQuantizer

    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    assert cli("extract", "run", "--export", "small", "--format", "compressed").code == 0
    for cls in (AutoModel, AutoModelForSequenceClassification):
        with pytest.raises(ValueError, match="has no `quant_method` attribute"):
            cls.from_pretrained("small")
    config = AutoConfig.from_pretrained("small")  # the config itself still reads
    with pytest.raises(ValueError, match="quant_method"):
        AutoHfQuantizer.supports_quant_method(config.quantization_config)
    assert compressed.load_model(Path("small")) is not None


def test_documented_recipe_loads_a_compressed_export(cli, tiny_bert):
    """docs/runs.md's tamt-free loader gives the dense export's weights."""
    from transformers import AutoModel

    text = RUNS_DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- compressed-loader -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/runs.md has no compressed-loader block"
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    assert cli("extract", "run", "--export", "dense").code == 0
    assert cli("extract", "run", "--export", "subnet", "--format", "compressed").code == 0
    scope: dict = {}
    exec(block.group(1), scope)
    model, dense = scope["model"], AutoModel.from_pretrained("dense")
    for key, value in dense.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert "tamt" not in block.group(1)


def test_format_needs_export(cli, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    res = cli("extract", "run", "--format", "compressed")
    assert res.code == 2 and "--export" in res.err and "Traceback" not in res.err
    res = cli("extract", "run", "--export", "x", "--format", "sparse")
    assert res.code == 2 and "Traceback" not in res.err


def test_a_compressed_export_stands_for_its_model_and_mask(cli, tiny_bert):
    """finetune and eval read a compressed export as the model its manifest names, masked."""
    from tamt_cli import maskfile, subjects

    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    assert cli("extract", "run", "--export", "dense").code == 0
    assert cli("extract", "run", "--export", "small", "--format", "compressed").code == 0
    plain = subjects.resolve("dense", own_weights=True)
    small = subjects.resolve("small", own_weights=True)
    assert plain.ref.given == "dense" and plain.weights_sha256 is None  # the folder itself
    assert small.ref.given == str(tiny_bert) and small.weights_sha256 is not None
    masks = maskfile.load_masks(Path("run/masks.safetensors"))
    assert small.masks is not None
    assert all(torch.equal(small.masks[k], masks[k]) for k in masks)
