"""SQuAD v1.1 and v2.0: official EM/F1, local loaders, windowed features and answer
post-processing with a tiny tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tamt_cli.errors import UserError
from tamt_cli.registry import tasks
from tamt_cli.tasks.base import model_inputs
from tamt_cli.tasks.metrics import exact_match, f1, normalize_answer, squad_scores
from tamt_cli.tasks.squad import best_answers

CONTEXT = (
    "the cat sat on the mat and looked at the dog. "
    "researchers prune weights of pre-trained language models. "
    "the quick brown fox jumps over the lazy dog. "
    "winning tickets are found early in training."
)
ANSWER = "quick brown fox"
QUESTION = "  what jumps over the dog?"


def squad(name: str = "squad"):
    return tasks().get(name)()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tests.tiny import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tok"))


# -- official answer normalisation, EM and F1 -----------------------------------------------


def test_normalisation_articles_punctuation_whitespace_case():
    assert normalize_answer("The  Cat,  sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory and anatomy") == "theory and anatomy"  # whole words only
    assert normalize_answer("  A\tB\nc ") == "b c"  # "a" is an article; whitespace collapsed
    assert normalize_answer("Denver Broncos.") == normalize_answer("denver broncos")
    assert exact_match("The Denver Broncos!", "denver   broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_partial_overlap_f1_by_hand():
    # pred tokens [big, red, dog], gold [red, dog, barked]: 2 shared, P = R = 2/3
    assert f1("the big red dog", "Red dog barked.") == pytest.approx(2 / 3)
    # pred [red], gold [red, dog, barked]: P = 1, R = 1/3, F1 = 2 * 1/3 / (4/3) = 1/2
    assert f1("red", "red dog barked") == pytest.approx(0.5)
    # repeated tokens count with multiplicity: pred [dog, dog], gold [dog]: P=1/2, R=1
    assert f1("dog dog", "dog") == pytest.approx(2 / 3)
    assert f1("cat", "dog") == 0.0
    assert f1("", "dog") == 0.0 and f1("", "dog", v2=True) == 0.0
    assert f1("", "", v2=True) == 1.0


def test_squad_scores_max_over_golds_in_percent():
    golds = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["red dog barked"], "q3": ["1920s"]}
    preds = {"q1": "Broncos", "q2": "the big red dog", "q3": "in the 1920s"}
    scores = squad_scores(preds, golds)
    # q1: EM 1 via "the Broncos"; q2: EM 0, F1 2/3; q3: EM 0, F1 = 2*(1/2*1)/(3/2) = 2/3
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)
    assert set(scores) == {"exact_match", "f1"}
    # a missing prediction scores as an empty answer
    assert squad_scores({}, {"q": ["x"]}) == {"exact_match": 0.0, "f1": 0.0}


def test_squad_v2_no_answer_breakdown():
    golds = {"has1": ["Paris"], "has2": ["the Seine"], "no1": [], "no2": [], "no3": ["  "]}
    preds = {"has1": "paris", "has2": "", "no1": "", "no2": "London", "no3": ""}
    scores = squad_scores(preds, golds, v2=True)
    assert scores["has_ans_total"] == 2 and scores["no_ans_total"] == 3 and scores["total"] == 5
    assert scores["has_ans_exact_match"] == pytest.approx(50.0)
    assert scores["has_ans_f1"] == pytest.approx(50.0)
    # a gold answer that normalises to nothing is a no-answer question; "" is right there
    assert scores["no_ans_exact_match"] == pytest.approx(200 / 3)
    assert scores["no_ans_f1"] == pytest.approx(200 / 3)
    assert scores["exact_match"] == pytest.approx(60.0)
    assert scores["f1"] == pytest.approx(60.0)
    only_answers = squad_scores({"a": "x"}, {"a": ["x"]}, v2=True)
    assert "no_ans_f1" not in only_answers and only_answers["no_ans_total"] == 0


# -- local loading --------------------------------------------------------------------------


def nested(version: str, *, impossible: bool = False) -> dict:
    qas = [
        {
            "id": "q1",
            "question": QUESTION,
            "answers": [
                {"text": ANSWER, "answer_start": CONTEXT.index(ANSWER)},
                {"text": "brown fox", "answer_start": CONTEXT.index("brown fox")},
            ],
        }
    ]
    if impossible:
        qas.append(
            {
                "id": "q2",
                "question": "who barked?",
                "answers": [],
                "plausible_answers": [{"text": "the dog", "answer_start": 38}],
                "is_impossible": True,
            }
        )
    return {
        "version": version,
        "data": [{"title": "Tiny", "paragraphs": [{"context": CONTEXT, "qas": qas}]}],
    }


def test_official_nested_json(tmp_path):
    (tmp_path / "train-v1.1.json").write_text(json.dumps(nested("1.1")))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(nested("1.1")))
    raw = squad().load("validation", tmp_path)
    assert raw.column_names == ["id", "title", "context", "question", "answers"]
    row = raw[0]
    assert (row["id"], row["title"], row["context"]) == ("q1", "Tiny", CONTEXT)
    assert row["answers"]["text"] == [ANSWER, "brown fox"]
    assert row["answers"]["answer_start"] == [CONTEXT.index(ANSWER), CONTEXT.index("brown fox")]
    assert len(squad().load("train", tmp_path)) == 1


def test_v2_nested_json_and_flat_jsonl(tmp_path):
    (tmp_path / "SQuAD").mkdir()
    (tmp_path / "SQuAD/dev-v2.0.json").write_text(json.dumps(nested("v2.0", impossible=True)))
    raw = squad("squad_v2").load("dev", tmp_path)  # found in the SQuAD sub-folder
    assert raw["id"] == ["q1", "q2"]
    assert raw[1]["answers"] == {"text": [], "answer_start": []}  # plausible answers dropped
    base = {"context": "x y", "question": "q"}
    flat = [
        {"id": "a", **base, "answers": {"text": ["y"], "answer_start": [2]}},
        {"id": "b", **base, "answers": [{"text": "x", "answer_start": 0}]},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in flat))
    train = squad().load("train", tmp_path)
    assert train["answers"] == [
        {"text": ["y"], "answer_start": [2]},
        {"text": ["x"], "answer_start": [0]},
    ]
    assert train["title"] == ["", ""]


def test_squad_bad_files(tmp_path):
    with pytest.raises(UserError) as err:
        squad().load("train", tmp_path)
    assert "train-v1.1.json" in str(err.value) and "\n" not in str(err.value)
    broken = nested("1.1")
    broken["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 10_000
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(broken))
    with pytest.raises(UserError) as err:
        squad().load("validation", tmp_path)
    message = str(err.value)
    assert "dev-v1.1.json (article 1, paragraph 1, question 1)" in message
    assert "outside the" in message and "\n" not in message
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"version": "1.1", "articles": []}))
    with pytest.raises(UserError) as err:
        squad().load("train", tmp_path)
    assert "not SQuAD JSON" in str(err.value)
    (tmp_path / "validation.jsonl").write_text('{"id": "a", "context": "x"}\n')
    with pytest.raises(UserError) as err:
        squad("squad_v2").load("validation", tmp_path)
    assert "validation.jsonl:1" in str(err.value) and "'question'" in str(err.value)


def test_flat_jsonl_through_datasets_and_its_errors(tmp_path, monkeypatch):
    from tamt_cli.tasks import squad as module

    line_by_line: list[str] = []
    real = module.read_records
    monkeypatch.setattr(module, "read_records", lambda p: line_by_line.append(p.name) or real(p))
    context = 'he said "no" twice'
    rows = [
        {"id": "a", "title": "T", "context": context, "question": "what?",
         "answers": {"text": ['"no"'], "answer_start": [8]}},
        {"id": "b", "context": context, "question": "who?",
         "answers": {"text": [], "answer_start": []}},
    ]  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text("\ufeff" + "\n\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    train = squad("squad_v2").load("train", tmp_path)
    assert train[:] == {
        "id": ["a", "b"],
        "title": ["T", ""],
        "context": [context, context],
        "question": ["what?", "who?"],
        "answers": [{"text": ['"no"'], "answer_start": [8]}, {"text": [], "answer_start": []}],
    }
    assert line_by_line == []

    rows[1]["answers"] = {"text": ["twice"], "answer_start": [99]}
    path.write_text("\n\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UserError) as err:
        squad("squad_v2").load("train", tmp_path)
    assert str(err.value).startswith(f"{path}:3: answer 'twice' starts at 99")
    rows[1] = {**rows[0]}
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UserError) as err:
        squad("squad_v2").load("train", tmp_path)
    assert str(err.value) == f"{path}: question id 'a' occurs twice"


# -- features -------------------------------------------------------------------------------


def raw_examples(task, rows):
    from datasets import Dataset

    return Dataset.from_list(rows, features=task.features())


def example(qid="q1", context=CONTEXT, answer=ANSWER, question=QUESTION):
    answers = (
        {"text": [answer], "answer_start": [context.index(answer)]}
        if answer
        else {"text": [], "answer_start": []}
    )
    return {"id": qid, "title": "", "context": context, "question": question, "answers": answers}


def test_features_map_back_to_the_answer_across_windows(tokenizer):
    task = squad()
    raw = raw_examples(task, [example()])
    train = task.encode(raw, tokenizer, max_length=32, doc_stride=8, train=True)
    dev = task.encode(raw, tokenizer, max_length=32, doc_stride=8, train=False)
    assert len(train) == len(dev) > 2  # the context is cut into several windows
    assert set(train.column_names) == {
        *tokenizer("a", "b").keys(),
        "start_positions",
        "end_positions",
        "example_index",  # every window was cut from the one example
    }
    assert train["example_index"] == [0] * len(train)
    assert set(dev.column_names) == {*tokenizer("a", "b").keys(), "example_id", "offset_mapping"}
    assert all(len(ids) == 32 for ids in train["input_ids"])  # padded to max_length
    assert dev["example_id"] == ["q1"] * len(dev)
    holding = 0
    for i in range(len(train)):
        start, end = train["start_positions"][i], train["end_positions"][i]
        offsets = dev["offset_mapping"][i]
        ids = train["input_ids"][i]
        assert dev["input_ids"][i] == ids  # the same windows
        assert offsets[0] is None  # CLS and question tokens carry no offsets
        context_spans = [o for o in offsets if o is not None]
        window = CONTEXT[context_spans[0][0] : context_spans[-1][1]]
        if (start, end) == (0, 0):
            assert ids[0] == tokenizer.cls_token_id
            assert ANSWER not in window  # this window does not hold the whole answer
        else:
            holding += 1
            assert CONTEXT[offsets[start][0] : offsets[end][1]] == ANSWER
    assert holding >= 1 and holding < len(train)
    assert model_inputs(dev).column_names == [
        c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dev.column_names
    ]


def test_features_of_a_no_answer_example_point_to_cls(tokenizer):
    task = squad("squad_v2")
    raw = raw_examples(task, [example(answer=None), example("q2", answer="lazy dog")])
    train = task.encode(raw, tokenizer, max_length=64, doc_stride=16, train=True)
    dev = task.encode(raw, tokenizer, max_length=64, doc_stride=16)
    first = [i for i, qid in enumerate(dev["example_id"]) if qid == "q1"]
    assert first and all(train["start_positions"][i] == 0 for i in first)
    assert all(train["end_positions"][i] == 0 for i in first)
    second = [i for i, qid in enumerate(dev["example_id"]) if qid == "q2"]
    spans = set()
    for i in second:
        start, end = train["start_positions"][i], train["end_positions"][i]
        if start:
            offsets = dev["offset_mapping"][i]
            spans.add(CONTEXT[offsets[start][0] : offsets[end][1]])
    assert spans == {"lazy dog"}


def test_encode_errors(tokenizer):
    task = squad()
    raw = raw_examples(task, [example()])
    with pytest.raises(UserError) as err:
        task.encode(raw, tokenizer, max_length=32, doc_stride=32)
    assert "--doc-stride 32 must be smaller than --max-length 32" in str(err.value)
    with pytest.raises(UserError) as err:
        task.encode(raw, tokenizer, max_length=16, doc_stride=8)
    assert "raise --max-length" in str(err.value) and "\n" not in str(err.value)


# -- post-processing ------------------------------------------------------------------------


def peaked_logits(dev, wanted: dict[int, tuple[int, int]], length: int, cls: float = 0.0):
    """Logits of -5 everywhere, +5 at the wanted start/end of some features, ``cls`` at 0."""
    starts = np.full((len(dev), length), -5.0)
    ends = np.full((len(dev), length), -5.0)
    starts[:, 0] = ends[:, 0] = cls / 2
    for feature, (start, end) in wanted.items():
        starts[feature, start] = 5.0
        ends[feature, end] = 5.0
    return starts, ends


def test_postprocessing_returns_the_span_text(tokenizer):
    task = squad()
    raw = raw_examples(task, [example(), example("q2", answer="winning tickets")])
    train = task.encode(raw, tokenizer, max_length=32, doc_stride=8, train=True)
    dev = task.encode(raw, tokenizer, max_length=32, doc_stride=8)
    # put the peak on the gold span of the last feature holding each answer
    wanted: dict[int, tuple[int, int]] = {}
    for qid in ("q1", "q2"):
        holding = [
            i for i, e in enumerate(dev["example_id"]) if e == qid and train["start_positions"][i]
        ]
        i = holding[-1]
        wanted[i] = (train["start_positions"][i], train["end_positions"][i])
    predictions = peaked_logits(dev, wanted, 32)
    assert task.postprocess(raw, dev, predictions) == {"q1": ANSWER, "q2": "winning tickets"}
    assert task.metrics(raw, dev, predictions) == {"exact_match": 100.0, "f1": 100.0}
    # the span may not be longer than max_answer_length tokens
    (i, (start, end)), *_ = wanted.items()
    task.max_answer_length = end - start
    assert task.postprocess(raw, dev, predictions)["q1"] != ANSWER


def test_best_answers_by_hand():
    context = "alpha beta gamma delta"
    offsets = [None, [0, 5], [6, 10], [11, 16], [17, 22], None]
    start = np.array([[0.0, 1.0, 4.0, 0.5, 0.0, 9.0]])  # 9 at a non-context token: ignored
    end = np.array([[0.0, 0.0, 1.0, 3.0, 2.5, 9.0]])
    answers = best_answers(["q"], [context], ["q"], [offsets], start, end)
    assert answers == {"q": "beta gamma"}  # 4 + 3 beats 4 + 2.5 and 1 + 3
    # end before start is never chosen
    end_before = np.array([[0.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
    start_late = np.array([[0.0, 0.0, 0.0, 0.0, 5.0, 0.0]])
    assert best_answers(["q"], [context], ["q"], [offsets], start_late, end_before) != {
        "q": "alpha"
    }
    assert best_answers(["q"], [context], ["q"], [offsets], start, end, max_answer_length=1) == {
        "q": "beta"  # 4 + 1
    }
    # v2: the null score (CLS) wins when it beats the best span by more than the threshold
    null = np.array([[6.0, 1.0, 4.0, 0.5, 0.0, 0.0]]), np.array([[6.0, 0.0, 1.0, 3.0, 2.5, 0.0]])
    assert best_answers(["q"], [context], ["q"], [offsets], *null, allow_null=True) == {"q": ""}
    assert best_answers(
        ["q"], [context], ["q"], [offsets], *null, allow_null=True, null_threshold=6.0
    ) == {"q": "beta gamma"}
    assert best_answers(["q"], [context], ["q"], [offsets], *null) == {"q": "beta gamma"}


def test_squad_v2_metrics_with_a_null_prediction(tokenizer):
    task = squad("squad_v2")
    raw = raw_examples(task, [example(answer=None), example("q2", answer="lazy dog")])
    train = task.encode(raw, tokenizer, max_length=64, doc_stride=16, train=True)
    dev = task.encode(raw, tokenizer, max_length=64, doc_stride=16)
    wanted = {
        i: (train["start_positions"][i], train["end_positions"][i])
        for i, e in enumerate(dev["example_id"])
        if e == "q2" and train["start_positions"][i]
    }
    starts, ends = peaked_logits(dev, wanted, 64, cls=4.0)  # null 4 < span 10 for q2
    for i, e in enumerate(dev["example_id"]):
        if e == "q1":
            starts[i, 0] = ends[i, 0] = 10.0  # null 20 beats any span of q1
    assert task.postprocess(raw, dev, (starts, ends)) == {"q1": "", "q2": "lazy dog"}
    scores = task.metrics(raw, dev, np.stack([starts, ends]))
    assert scores["exact_match"] == scores["f1"] == 100.0
    assert scores["no_ans_total"] == scores["has_ans_total"] == 1


def test_postprocess_needs_eval_features(tokenizer):
    task = squad()
    raw = raw_examples(task, [example()])
    train = task.encode(raw, tokenizer, max_length=32, doc_stride=8, train=True)
    with pytest.raises(UserError) as err:
        task.metrics(raw, train, (np.zeros((len(train), 32)), np.zeros((len(train), 32))))
    assert "train=False" in str(err.value)


def test_tokenizer_must_be_fast(tmp_path, tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(UserError) as err:
        squad().encode(raw_examples(squad(), [example()]), Slow())
    assert "fast" in str(err.value)


def test_squad_hub_loading_fails_fast_offline(monkeypatch, tmp_path: Path):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(UserError) as err:
        squad("squad_v2").load("validation")
    assert "rajpurkar/squad_v2" in str(err.value) and "--data-dir" in str(err.value)
