"""The textclf task plugin: installed, it reads CSV and JSONL with user-named columns."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
textclf = pytest.importorskip(
    "tamt_textclf", reason="tamt-textclf is not installed: pip install ./plugins/tamt-textclf"
)
pytestmark = pytest.mark.plugins  # `pytest -m plugins` runs the tests that need a plugin

from tamt_cli.api import UserError, create_task  # noqa: E402


def write_csv(path, rows, header=("review", "stars")):
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def reviews(tmp_path):
    data = tmp_path / "reviews"
    data.mkdir()
    write_csv(data / "train.csv", [("great film", "good"), ("dull plot", "bad"), ("fine", "ok")])
    records = [{"review": "loved it", "stars": "good"}, {"review": "awful", "stars": "bad"}]
    (data / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return data


def task(**options):
    return create_task("textclf", {"text_column": "review", "label_column": "stars", **options})


def test_registered_through_its_entry_point():
    from tamt_cli import registry

    plugin = registry.tasks().plugin("textclf")
    assert plugin.status == "ok"
    assert plugin.distribution == "tamt-textclf"
    assert plugin.version == textclf.__version__


def test_reads_csv_and_jsonl_with_named_columns(reviews):
    t = task()
    train = t.load("train", reviews)
    assert t.labels == ("bad", "good", "ok") and t.num_labels == 3
    assert train["text"] == ["great film", "dull plot", "fine"]
    assert train["label"] == [1, 0, 2]
    dev = t.load("validation", reviews)
    assert dev["text"] == ["loved it", "awful"] and dev["label"] == [1, 0]
    assert t.model_config()["num_labels"] == 3


def test_labels_given_fix_the_order(reviews):
    t = task(labels="ok,good,bad")
    assert t.load("train", reviews)["label"] == [1, 2, 0]


def test_missing_column_is_a_one_line_error_naming_it(reviews):
    t = create_task("textclf", {"text_column": "review", "label_column": "rating"})
    with pytest.raises(UserError) as err:
        t.load("train", reviews)
    message = str(err.value)
    assert "no column 'rating'" in message and "review, stars" in message
    assert "\n" not in message


def test_label_outside_the_set_and_missing_options(reviews):
    (reviews / "dev.jsonl").write_text(json.dumps({"review": "meh", "stars": "awful"}) + "\n")
    t = task()
    t.load("train", reviews)
    with pytest.raises(UserError, match="label 'awful', not one of bad, good, ok"):
        t.load("validation", reviews)
    with pytest.raises(UserError, match="text_column"):
        create_task("textclf", {})
    with pytest.raises(UserError, match="takes no options"):
        create_task("sst2", {"text_column": "x"})


def test_encode_and_metrics(reviews, tmp_path):
    import numpy as np

    from tests.tiny import make_tokenizer

    tokenizer = make_tokenizer(tmp_path / "tok")
    t = task()
    raw = t.load("train", reviews)
    enc = t.encode(raw, tokenizer, max_length=8)
    assert enc["labels"] == [1, 0, 2]
    assert all(len(ids) <= 8 for ids in enc["input_ids"])
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.9, 0.0, 0.1]])
    scores = t.metrics(raw, enc, logits)
    assert scores["accuracy"] == pytest.approx(100 * 2 / 3)
    assert 0 <= scores["f1_macro"] <= 100
