"""The task model with a subnetwork's mask held fixed, task data, and scores
(tamt_cli.task_model) on a tiny BERT."""

from __future__ import annotations

import pytest
import torch

from tamt_cli import maskfile, masking, models, subjects, task_data, task_model
from tamt_cli.errors import UserError
from tamt_cli.registry import create_task


@pytest.fixture
def mask_file(tiny_bert, tmp_path):
    """An OMP mask at sparsity 0.5 over the tiny BERT, as a mask file."""
    encoder = models.load_encoder(models.resolve(str(tiny_bert)))
    weights = masking.prunable_weights(encoder)
    masks = masking.masks_from_scores(masking.magnitude_scores(weights), 0.5)
    path = tmp_path / "omp.safetensors"
    maskfile.save_masks(path, masks)
    return path, masks


def test_the_task_model_holds_the_mask_fixed(tiny_bert, mask_file):
    path, masks = mask_file
    subject = subjects.resolve(str(path), model=str(tiny_bert))
    assert subject.kind == "mask" and subject.embeddings and subject.pooler
    built = task_model.build(create_task("sst2"), subject, seed=1)
    assert built.sparsity == pytest.approx(0.5, abs=1e-2)
    assert built.sparsity == masking.pruned_fraction(masks)
    assert built.notes == []
    assert type(built.model).__name__ == "BertForSequenceClassification"
    query = "encoder.layer.0.attention.self.query.weight"
    kept = masks[query]
    weight = dict(built.model.base_model.named_modules())[query.removesuffix(".weight")].weight
    assert torch.count_nonzero(weight[~kept]) == 0  # exactly zero in the forward pass
    batch = {
        "input_ids": torch.tensor([[2, 7, 8, 3]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "labels": torch.tensor([1]),
    }
    loss = task_model.TaskLoss(built.model)(**batch)
    loss.backward()
    grads = {p.name: p.weight.grad for p in built.weights}
    assert torch.count_nonzero(grads[query][~kept]) == 0  # no update reaches a pruned weight
    assert torch.count_nonzero(grads[query][kept]) > 0
    # the same seed gives the same head
    again = task_model.build(create_task("sst2"), subject, seed=1)
    assert torch.equal(again.model.classifier.weight, built.model.classifier.weight)
    other = task_model.build(create_task("sst2"), subject, seed=2)
    assert not torch.equal(other.model.classifier.weight, built.model.classifier.weight)


def test_a_dense_subject_and_a_qa_model_without_a_pooler(tiny_bert, mask_file):
    dense = task_model.build(create_task("sst2"), subjects.resolve(str(tiny_bert)), seed=0)
    assert dense.masks is None and dense.sparsity is None and dense.weights == []
    _, masks = mask_file
    from transformers import AutoModelForQuestionAnswering

    qa = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert))
    weights, kept, dropped = task_model.fit_masks(qa, masks, "the mask")
    assert dropped == ["pooler.dense.weight"]
    assert set(kept) == {p.name for p in weights} == set(masks) - {"pooler.dense.weight"}
    wrong = {**masks, "encoder.layer.0.output.dense.weight": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(UserError, match="the mask"):
        task_model.fit_masks(qa, wrong, "the mask")


def test_measured_sparsity_counts_exact_zeros(tiny_bert, mask_file):
    _, masks = mask_file
    model = models.load_encoder(models.resolve(str(tiny_bert)))
    weights = masking.prunable_weights(model)
    total = sum(p.numel for p in weights)
    # the tiny model's padding embedding row (32 zeros) is above the 0.1% "dense" line
    assert task_model.measured_sparsity(model) == 32 / total
    without_padding = models.load_encoder(models.resolve(str(tiny_bert)))
    with torch.no_grad():
        without_padding.embeddings.word_embeddings.weight[0] = 1.0
    assert task_model.measured_sparsity(without_padding) is None  # dense
    masking.bake_masks(weights, masks)
    pruned = masking.pruned_fraction(masks)
    assert pruned is not None
    assert pruned <= task_model.measured_sparsity(model) <= pruned + 32 / total


def test_subset_is_seeded_and_keeps_file_order():
    from datasets import Dataset

    raw = Dataset.from_dict({"x": list(range(20))})
    assert task_data.subset(raw, None, 0, "t") is raw
    five = task_data.subset(raw, 5, 1, "t")["x"]
    assert len(five) == 5 and five == sorted(five)
    assert five == task_data.subset(raw, 5, 1, "t")["x"]
    assert five != task_data.subset(raw, 5, 2, "t")["x"]
    with pytest.raises(UserError, match="--train-size 21 is larger than the 20 training"):
        task_data.subset(raw, 21, 0, "t")


def test_flat_names_split_and_metric():
    scores = {"validation": {"accuracy": 80.0, "f1": 75.5}}
    assert task_model.flat(scores) == {"validation/accuracy": 80.0, "validation/f1": 75.5}
    assert task_model.flat(scores, prefix_always=False) == {"accuracy": 80.0, "f1": 75.5}
    two = {"validation_matched": {"accuracy": 1.0}, "validation_mismatched": {"accuracy": 2.0}}
    assert task_model.flat(two, prefix_always=False) == {
        "validation_matched/accuracy": 1.0,
        "validation_mismatched/accuracy": 2.0,
    }


def test_scores_of_a_model_on_an_eval_set(tiny_bert, tmp_path):
    """A classifier whose bias always says 'positive' scores exactly the positive share."""
    from tests.tiny import write_sst2

    task = create_task("sst2")
    data = write_sst2(tmp_path / "SST-2", train=8, dev=12)
    tokenizer = task_model.load_tokenizer(models.resolve(str(tiny_bert)))
    sets = task_data.eval_sets(task, ["validation"], data, tokenizer, 32, None)
    assert [s.examples for s in sets] == [12]
    built = task_model.build(task, subjects.resolve(str(tiny_bert)), seed=0)
    with torch.no_grad():
        built.model.classifier.weight.zero_()
        built.model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    positive = 100.0 * sum(sets[0].raw["label"]) / 12
    advanced: list[tuple[str, int]] = []
    scores = task_model.score(task, built.model, sets, 5, lambda s, n: advanced.append((s, n)))
    assert scores == {"validation": {"accuracy": pytest.approx(positive)}}
    assert advanced == [("validation", 5), ("validation", 5), ("validation", 2)]


def test_predictions_in_length_order_come_back_in_feature_order(tiny_bert, tmp_path):
    """Scored in batches of similar length, every feature's logits equal those of the feature
    scored alone (no padding at all), in the features' own order."""
    from tests.tiny import write_sst2

    task = create_task("sst2")
    data = write_sst2(tmp_path / "SST-2", train=8, dev=13, seed=4)
    tokenizer = task_model.load_tokenizer(models.resolve(str(tiny_bert)))
    (dev,) = task_data.eval_sets(task, ["validation"], data, tokenizer, 32, None)
    lengths = [len(ids) for ids in dev.features["input_ids"]]
    assert len(set(lengths)) > 3 and lengths != sorted(lengths)  # an order to undo
    assert [lengths[i] for i in dev.by_length] == sorted(lengths)
    built = task_model.build(task, subjects.resolve(str(tiny_bert)), seed=3)
    built.model.eval()
    with torch.no_grad():  # a classifier that tells the sentences apart
        weight = built.model.classifier.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 5)
    logits = task_model.predict(built.model, dev, 4, span=False)
    with torch.no_grad():
        alone = torch.cat([built.model(**dev.batcher([i])).logits for i in range(13)])
    assert (
        logits.shape == (13, 2) and alone.std(0).min() > 1e-3
    )  # the rows differ (by far more than the tolerance)
    torch.testing.assert_close(torch.from_numpy(logits), alone, rtol=1e-4, atol=1e-5)
