"""`tamt bench` on the CPU: sizes of the dense and compressed weights, latency, equal outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from tamt_cli import compressed


@pytest.mark.usefixtures("one_thread")
def test_bench_reports_sizes_latency_and_equal_outputs(cli, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.7", "--model", tiny_bert, "--out", "run").code == 0
    assert cli("extract", "run", "--export", "dense").code == 0
    assert cli("extract", "run", "--export", "small", "--format", "compressed").code == 0
    res = cli("bench", "run", "--batch-size", "2", "--max-length", "16", "--repeats", "3", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    sizes = doc["sizes"]
    # the same bytes extract writes (the file's own metadata aside)
    assert abs(sizes["dense_bytes"] - Path("dense/model.safetensors").stat().st_size) < 200
    assert abs(sizes["compressed_bytes"] - Path("small/model.safetensors").stat().st_size) < 200
    assert 0.3 < sizes["ratio"] < 0.6  # the tiny model's biases, norms and positions stay dense
    rows = {r["name"]: r for r in doc["latency"]}
    assert set(rows) == {"dense", "masked", "csr"}
    for row in rows.values():
        assert len(row["runs_ms"]) == 3 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["q1_ms"] <= row["q3_ms"] and row["speedup"] > 0
    assert rows["dense"]["speedup"] == 1.0
    assert rows["csr"]["max_abs_diff"] < 1e-5  # CSR gives the masked model's outputs
    assert doc["sparsity"] == pytest.approx(0.7, abs=1e-3) and doc["pattern"] is None
    kernels = {k["name"]: k for k in doc["kernels"]}
    assert kernels["csr"]["available"] is True
    assert (
        kernels["2:4 fp16"]["available"] is torch.cuda.is_available()
        or not kernels["2:4 fp16"]["available"]
    )
    assert doc["notes"]  # says why no 2:4 row

    table = cli("bench", "small", "--batch-size", "2", "--max-length", "16", "--repeats", "2")
    assert table.code == 0, table.err
    assert "Latency" in table.out and "csr" in table.out and "compressed" in table.out


@pytest.mark.usefixtures("one_thread")
def test_bench_on_task_inputs_times_the_dev_examples(cli, tiny_bert, tmp_path):
    """--task: the first dev sentences, tokenised as fine-tuning does and padded as a batch."""
    from transformers import AutoTokenizer

    from tests.tiny import write_sst2

    data = write_sst2(tmp_path / "SST-2", dev=5)
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    res = cli(
        "bench", "run", "--task", "sst2", "--data-dir", data, "--batch-size", "4",
        "--repeats", "2", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    doc = res.json()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    sentences = [line.split("\t")[0] for line in (data / "dev.tsv").read_text().splitlines()[1:5]]
    lengths = [len(tokenizer(s)["input_ids"]) for s in sentences]
    assert doc["inputs"] == {
        "kind": "task",
        "task": "sst2",
        "split": "validation",
        "features": 4,
        "shape": [4, max(lengths)],
        "tokens": sum(lengths),
    }
    assert doc["max_length"] == max(lengths)
    assert {r["name"] for r in doc["latency"]} == {"dense", "masked", "csr"}
    short = cli(
        "bench", "run", "--task", "sst2", "--data-dir", data, "--batch-size", "4",
        "--max-length", "4", "--repeats", "1", "--json",
    )  # fmt: skip
    assert short.json()["inputs"]["shape"] == [4, 4]  # truncated as fine-tuning truncates
    bad = cli("bench", "run", "--task", "sst3", "--data-dir", data)
    assert bad.code == 2 and "sst3" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_csr_linear_matches_the_dense_product():
    from tamt_cli.bench import _csr_linear

    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight) > 0.6)
    x = torch.randn(3, 5, 16)
    expected = layer(x)
    _csr_linear(layer)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_bench_refuses_a_dense_model(cli, tiny_bert):
    res = cli("bench", str(tiny_bert))
    assert res.code == 2 and "dense model" in res.err and "Traceback" not in res.err


def test_compressed_bytes_are_those_of_the_layout():
    w = torch.zeros(4, 16)
    w[0, 3] = 1.0
    state = {"a.weight": w}
    data = save(compressed.compress_state(state, ["a.weight"]))
    assert len(data) < len(save(state))


@pytest.mark.usefixtures("one_thread")
def test_bench_times_the_ways_alternately(cli, tiny_bert, monkeypatch):
    """Each way runs once for its outputs, then the warm-up passes and the timed ones go round
    the ways in turn, so that a load or a clock that drifts is shared by every way."""
    from tamt_cli import bench

    calls: list[str] = []
    measure = bench.Latency.measure

    def recorded(self, name, model, *args, **kwargs):
        def hook(module, _inputs):  # a copy made of ``model`` later copies its hooks too
            if module is model:
                calls.append(name)

        model.register_forward_pre_hook(hook)
        return measure(self, name, model, *args, **kwargs)

    monkeypatch.setattr(bench.Latency, "measure", recorded)
    assert cli("search", "-m", "omp", "-s", "0.5", "--structure", "neurons", "--model",
               tiny_bert, "--out", "run").code == 0  # fmt: skip
    res = cli("bench", "run", "--batch-size", "1", "--max-length", "8", "--warmup", "2",
              "--repeats", "3", "--json")  # fmt: skip
    assert res.code == 0, res.err
    ways = ["dense", "masked", "csr", "sliced"]
    assert [row["name"] for row in res.json()["latency"]] == ways
    assert calls == ways + ways * 2 + ways * 3  # outputs, warm-up, then 3 timed rounds
    for row in res.json()["latency"]:
        assert len(row["runs_ms"]) == 3 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
