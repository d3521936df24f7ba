"""Finding and loading models: what --model resolves to, the weight hash and the checks built
on it, the position limit."""

from __future__ import annotations

import shutil

import pytest
import torch

from tamt_cli import models
from tamt_cli.errors import UserError


def test_resolve_local_folders_hub_ids_and_paths_that_do_not_exist(
    tiny_bert, tmp_path, monkeypatch
):
    ref = models.resolve(str(tiny_bert))
    assert ref.local and ref.location == str(tiny_bert.resolve()) and ref.given == str(tiny_bert)
    hub = models.resolve("bert-base-uncased")
    assert (hub.location, hub.local) == ("bert-base-uncased", False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        models.resolve(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="does not exist"):
        models.resolve(str(tmp_path / "nope"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="is not taken for a hub id"):
        models.resolve("runs/x")  # looks like a hub id, but runs/ is a local folder
    assert models.resolve("org/x").location == "org/x"


def test_loading_an_encoder_records_what_the_checkpoint_lacked(tiny_bert, tmp_path):
    """A checkpoint saved without its pooler: the pooler is marked absent and left out of the
    hash, so the hash is that of the weights the checkpoint holds."""
    from safetensors.torch import load_file, save_file

    full = models.load_encoder(models.resolve(str(tiny_bert)))
    assert models.absent_keys(full) == frozenset()
    copy = tmp_path / "no-pooler"
    shutil.copytree(tiny_bert, copy)
    state = load_file(str(copy / "model.safetensors"))
    kept = {k: v for k, v in state.items() if "pooler" not in k}
    assert len(kept) == len(state) - 2
    save_file(kept, str(copy / "model.safetensors"), metadata={"format": "pt"})
    partial = models.load_encoder(models.resolve(str(copy)))
    assert models.absent_keys(partial) == {"pooler.dense.weight", "pooler.dense.bias"}
    again = models.load_encoder(models.resolve(str(copy)))  # absent weights: one fixed seed
    assert torch.equal(partial.pooler.dense.weight, again.pooler.dense.weight)
    assert models.weights_hash(partial) != models.weights_hash(full)
    models.mark_absent(full, ["pooler.dense.weight", "pooler.dense.bias"])
    assert models.weights_hash(partial) == models.weights_hash(full)


def test_check_weights_names_the_change(tiny_bert):
    model = models.load_encoder(models.resolve(str(tiny_bert)))
    sha = models.weights_hash(model)
    assert len(sha) == 64
    models.check_weights(model, sha, "m", "run 'r'")
    models.check_weights(model, None, "m", "run 'r'")  # nothing recorded: nothing to check
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-3
    with pytest.raises(UserError) as err:
        models.check_weights(model, sha, "m", "run 'r'")
    assert str(err.value) == (
        "model 'm' has changed since run 'r' was made from it (different weights); its mask "
        "would not mean the same thing"
    )
    models.check_weights(model, sha, "m", "run 'r'", sha=sha)  # a hash given is trusted


def test_check_positions_against_the_config(tiny_bert):
    ref = models.resolve(str(tiny_bert))
    models.check_positions(ref, 64)  # the tiny model has 64 positions
    with pytest.raises(UserError) as err:
        models.check_positions(ref, 65)
    assert str(err.value) == (
        f"--max-length 65 is beyond the model's 64 positions ('{tiny_bert}'); use at most 64"
    )
    config = models.load_encoder(ref).config
    config.max_position_embeddings = 100
    models.check_positions(ref, 65, config)  # a loaded model's config is used as it is


def test_tokenizer_and_mlm_head_load_through_the_one_loader(tiny_bert, tmp_path):
    ref = models.resolve(str(tiny_bert))
    encoder = models.load_encoder(ref)
    head, pretrained = models.load_mlm_head(ref, encoder)
    assert not pretrained  # the tiny checkpoint is a bare encoder
    assert sum(p.numel() for p in head.parameters()) > 0
    assert models.save_tokenizer(ref, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load an MLM head from"):
        models.load_mlm_head(models.resolve(str(broken)), encoder)
    assert not models.save_tokenizer(models.resolve(str(broken)), tmp_path / "out")
