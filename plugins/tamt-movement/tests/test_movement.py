"""The movement plugin: installed from its folder, it searches masks through tamt's engine."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["TAMT_NO_PROGRESS"] = "1"
movement = pytest.importorskip(
    "tamt_movement", reason="tamt-movement is not installed: pip install ./plugins/tamt-movement"
)
pytestmark = pytest.mark.plugins  # `pytest -m plugins` runs the tests that need a plugin

import torch  # noqa: E402

from tamt_cli.api import artifacts, masking  # noqa: E402
from tamt_cli.cli import main  # noqa: E402

SENTENCES = [
    ("a great and moving film", 1),
    ("dull , slow and boring", 0),
    ("the cast is wonderful", 1),
    ("a mess from start to end", 0),
    ("smart , funny and warm", 1),
    ("painfully bad acting", 0),
]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny BERT without dropout (so one step can be recomputed by hand) and SST-2 files."""
    from tests.tiny import bert_config, make_tokenizer

    root = tmp_path_factory.mktemp("movement")
    model_dir = root / "bert"
    tokenizer = make_tokenizer(model_dir)
    config = bert_config(len(tokenizer))
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    from transformers import BertModel

    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(model_dir))
    data = root / "SST-2"
    data.mkdir()
    rows = "".join(f"{s}\t{label}\n" for s, label in SENTENCES)
    (data / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    return model_dir, data


def tamt(*args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return main([str(a) for a in args])
    finally:
        os.chdir(old)


def test_listed_with_its_version():
    from tamt_cli import registry

    plugin = registry.methods().plugin("movement")
    assert (plugin.status, plugin.distribution, plugin.version) == (
        "ok",
        "tamt-movement",
        movement.__version__,
    )


def test_one_step_picks_the_weights_its_definition_picks(setting, tmp_path):
    model_dir, data = setting
    code = tamt("search", "-m", "movement", "-s", "0.5", "--model", model_dir, "--task", "sst2",
                "--data-dir", data, "--max-steps", "1", "--batch-size", "6", "--lr", "0.01",
                "--max-length", "16", "--seed", "4", "--out", "run", cwd=tmp_path)  # fmt: skip
    assert code == 0
    masks = artifacts.load_masks(tmp_path / "run/masks.safetensors")

    # By hand: S = −W ⊙ ∂L/∂W at the pre-trained weights, for the engine's first batch.
    from tamt_cli.api import Batcher, create_task, load_tokenizer
    from tamt_cli.engine import step_indices

    task = create_task("sst2")
    raw = task.load("train", data)
    from tamt_cli.models import resolve

    tokenizer = load_tokenizer(resolve(str(model_dir)))
    features = task.encode(raw, tokenizer, 16, None, train=True)
    torch.manual_seed(4)
    model = task.auto_model_class().from_pretrained(str(model_dir), **task.model_config())
    model.train()
    batch = Batcher(features, tokenizer)(step_indices(6, 0, 6, 4).tolist())
    model(**batch).loss.backward()
    weights = masking.prunable_weights(model)
    scores = {p.name: -(p.weight.detach() * p.weight.grad) for p in weights}
    expected = masking.masks_from_scores(scores, 0.5)
    for name, mask in expected.items():
        assert torch.equal(masks[name], mask), name
        assert int((~masks[name]).sum()) == mask.numel() // 2


def test_masks_are_ordinary_artifacts(setting, tmp_path):
    model_dir, data = setting
    code = tamt("search", "-m", "movement", "-s", "0.7", "--model", model_dir, "--task", "sst2",
                "--data-dir", data, "--max-steps", "3", "--batch-size", "2", "--scope", "global",
                "--out", "run", "--json", cwd=tmp_path)  # fmt: skip
    assert code == 0
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["method_plugin"]["distribution"] == "tamt-movement"
    overall = manifest["sparsity_report"]["overall"]
    assert overall["pruned"] == overall["numel"] * 7 // 10
    assert tamt("extract", "run", "--export", "sub", cwd=tmp_path) == 0
    code = tamt("finetune", "sub", "--task", "sst2", "--data-dir", data, "--epochs", "1",
                "--batch-size", "6", "--max-length", "16", "--out", "ft", cwd=tmp_path)  # fmt: skip
    assert code == 0


def test_unknown_task_is_caught_before_any_compute(setting, tmp_path, capsys):
    model_dir, _ = setting
    code = tamt("search", "-m", "movement", "-s", "0.5", "--model", model_dir, "--task", "sst3",
                "--dry-run", cwd=tmp_path)  # fmt: skip
    assert code == 2
    assert "unknown task 'sst3'; did you mean 'sst2'?" in capsys.readouterr().err
