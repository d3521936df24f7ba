"""GLUE tasks: registry entries, local loaders for GLUE's original TSV layouts and generic
files, encoding with a tiny tokenizer, metrics against scikit-learn/scipy, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tamt_cli.errors import UserError
from tamt_cli.registry import tasks
from tamt_cli.tasks.base import (
    GLUE_DEFAULTS,
    MODEL_INPUTS,
    SQUAD_DEFAULTS,
    Task,
    check_task,
    model_inputs,
)
from tamt_cli.tasks.glue import GLUE_TASKS

SST2_SHARED = Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"
ALL_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]


def task(name: str):
    return tasks().get(name)()


def one_line_error(excinfo: pytest.ExceptionInfo[UserError], *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def tsv(*rows: tuple[object, ...]) -> str:
    return "".join("\t".join(str(c) for c in row) + "\n" for row in rows)


# -- registry and protocol ------------------------------------------------------------------


def test_every_task_is_registered_and_follows_the_protocol():
    names = tasks().names()
    for name in [*ALL_TASKS, "squad", "squad_v2"]:
        assert name in names
        cls = tasks().get(name)
        assert check_task(cls)  # a non-empty summary
        instance = cls()
        assert isinstance(instance, Task)
        assert instance.name == name
        assert instance.main_metric in instance.metric_names
        assert tasks().plugin(name).status == "ok"


def test_defaults_follow_the_paper():
    assert (GLUE_DEFAULTS.lr, GLUE_DEFAULTS.batch_size, GLUE_DEFAULTS.epochs) == (2e-5, 32, 3)
    assert GLUE_DEFAULTS.max_length == 128
    assert (SQUAD_DEFAULTS.lr, SQUAD_DEFAULTS.batch_size, SQUAD_DEFAULTS.epochs) == (3e-5, 16, 2)
    assert (SQUAD_DEFAULTS.max_length, SQUAD_DEFAULTS.doc_stride) == (384, 128)
    large = {"mnli", "qqp"}  # the same hyper-parameters, evaluated every 500 steps
    assert all(cls.defaults is GLUE_DEFAULTS for cls in GLUE_TASKS if cls.name not in large)
    for cls in GLUE_TASKS:
        defaults = cls.defaults
        assert (defaults.lr, defaults.batch_size, defaults.epochs) == (2e-5, 32, 3)
        assert defaults.eval_every == (500 if cls.name in large else 50), cls.name
    assert SQUAD_DEFAULTS.eval_every == 1000
    assert task("squad").defaults is SQUAD_DEFAULTS


def test_heads_labels_and_model_config():
    mnli = task("mnli")
    assert mnli.head == "classification" and mnli.num_labels == 3
    assert mnli.labels == ("entailment", "neutral", "contradiction")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert mnli.model_config()["label2id"] == {"entailment": 0, "neutral": 1, "contradiction": 2}
    stsb = task("stsb")
    assert stsb.head == "regression"
    assert stsb.model_config() == {"num_labels": 1, "problem_type": "regression"}
    assert task("squad").head == "span" and task("squad").model_config() == {}
    assert task("wnli").labels == ("not_entailment", "entailment")
    assert task("qnli").labels == task("rte").labels == ("entailment", "not_entailment")
    assert task("mrpc").main_metric == "f1" and task("qqp").main_metric == "accuracy"
    assert task("cola").main_metric == "matthews_correlation"
    assert task("stsb").main_metric == "pearson"


def test_split_names_and_aliases():
    assert task("sst2").splits(None) == ("validation",)
    assert task("sst2").splits("dev") == ("validation",)
    mnli = task("mnli")
    assert mnli.splits("validation") == ("validation_matched", "validation_mismatched")
    assert mnli.splits("dev_mismatched") == ("validation_mismatched",)
    assert mnli.splits("train") == ("train",)
    with pytest.raises(UserError) as err:
        task("sst2").splits("trian")
    one_line_error(err, "no split 'trian'", "did you mean 'train'")


def test_plugins_does_not_import_heavy_libraries():
    code = (
        "import sys; from tamt_cli.cli import main; main(['plugins', '--json']); "
        "print([m for m in ('torch', 'transformers', 'datasets') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_tamt_plugins_lists_tasks(cli):
    result = cli("plugins", "--kind", "task", "--json")
    assert result.code == 0
    rows = {row["name"]: row for row in result.json()}
    for name in [*ALL_TASKS, "squad", "squad_v2"]:
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["kind"] == "task"


# -- metrics ----------------------------------------------------------------------------------


def reference(name: str, preds: np.ndarray, gold: np.ndarray) -> float:
    if name == "accuracy":
        return 100 * accuracy_score(gold, preds)
    if name == "f1":
        return 100 * f1_score(gold, preds)
    if name == "matthews_correlation":
        return 100 * matthews_corrcoef(gold, preds)
    if name == "pearson":
        return 100 * pearsonr(preds, gold)[0]
    return 100 * spearmanr(preds, gold)[0]


@pytest.mark.parametrize("name", ALL_TASKS)
def test_metrics_equal_sklearn_and_scipy(name):
    from datasets import Dataset

    t = task(name)
    rng = np.random.default_rng(1234)
    n = 257
    if t.head == "regression":
        gold = rng.uniform(0, 5, n)
        logits = (gold + rng.normal(0, 1.5, n))[:, None]  # [N, 1]
        preds = logits[:, 0]
    else:
        gold = rng.integers(0, t.num_labels, n)
        logits = rng.normal(size=(n, t.num_labels)).astype(np.float32)
        logits[np.arange(n), gold] += 0.8  # better than chance
        preds = logits.argmax(-1)
    encoded = Dataset.from_dict({"labels": gold.tolist()})
    scores = t.metrics(None, encoded, logits)
    assert set(scores) == set(t.metric_names)
    for metric, value in scores.items():
        assert value == pytest.approx(reference(metric, preds, gold), abs=1e-6), metric
    # the same from raw examples' labels, and from a 1-tuple of logits
    raw = Dataset.from_dict({"label": gold.tolist()})
    assert t.metrics(raw, None, (logits,)) == pytest.approx(scores)


def test_metrics_are_in_percent_and_constant_predictions_score_zero_correlation():
    from datasets import Dataset

    cola = task("cola")
    gold = [0, 1, 1, 0]
    perfect = np.eye(2)[gold]
    assert cola.metrics(None, Dataset.from_dict({"labels": gold}), perfect) == {
        "matthews_correlation": 100.0
    }
    assert task("sst2").metrics(None, Dataset.from_dict({"labels": gold}), perfect) == {
        "accuracy": 100.0
    }
    stsb = task("stsb")
    scores = stsb.metrics(None, Dataset.from_dict({"labels": [1.0, 2.0, 3.0]}), np.ones(3))
    assert scores == {"pearson": 0.0, "spearmanr": 0.0}


def test_metrics_reject_mismatched_predictions():
    from datasets import Dataset

    with pytest.raises(UserError) as err:
        task("mnli").metrics(None, Dataset.from_dict({"labels": [0, 1]}), np.zeros((2, 2)))
    one_line_error(err, "3-label task")
    with pytest.raises(UserError) as err:
        task("sst2").metrics(None, Dataset.from_dict({"labels": [0, 1, 1]}), np.zeros((2, 2)))
    one_line_error(err, "2 predictions for 3 labels")


# -- local loaders: GLUE's original TSV layouts ---------------------------------------------


def test_cola_headerless_tsv(tmp_path):
    write(
        tmp_path / "CoLA/train.tsv",
        tsv(
            ("gj04", 1, "", "Our friends won't buy this analysis, let alone the next one."),
            ("gj04", 0, "*", 'They drank the pub "dry.'),
        ),
    )
    write(tmp_path / "CoLA/dev.tsv", tsv(("bc01", 1, "", "The sailors rode the breeze.")))
    train = task("cola").load("train", tmp_path / "CoLA")
    assert train["sentence"] == [
        "Our friends won't buy this analysis, let alone the next one.",
        'They drank the pub "dry.',  # stray quotes are text (QUOTE_NONE)
    ]
    assert train["label"] == [1, 0] and train["idx"] == [0, 1]
    assert train.features["label"].names == ["unacceptable", "acceptable"]
    assert task("cola").load("validation", tmp_path)["sentence"] == ["The sailors rode the breeze."]


def test_sst2_tsv_and_glue_root_folder(tmp_path):
    rows = tsv(("sentence", "label"), ('it \'s a " charming " film ', 1), ("dull , dull", 0))
    write(tmp_path / "glue_data/SST-2/train.tsv", rows)
    write(tmp_path / "glue_data/SST-2/dev.tsv", tsv(("sentence", "label"), ("fine", 1)))
    sst2 = task("sst2")
    train = sst2.load("train", tmp_path / "glue_data")  # the folder above SST-2
    assert train["sentence"] == ['it \'s a " charming " film ', "dull , dull"]
    assert train["label"] == [1, 0]
    assert len(sst2.load("dev", tmp_path / "glue_data/SST-2")) == 1


def test_mrpc_tsv_with_bom(tmp_path):
    header = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    rows = [
        (1, 702876, 702977, "Amrozi accused his brother.", 'Referring to him as "the witness".'),
        (0, 2108705, 2108831, "Yucaipa owned Dominick's.", "Yucaipa bought Dominick's in 1995."),
    ]
    write(tmp_path / "train.tsv", tsv(header, *rows), bom=True)
    write(tmp_path / "dev.tsv", tsv(header, rows[1]), bom=True)
    train = task("mrpc").load("train", tmp_path)
    assert train.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert train["sentence1"][0] == "Amrozi accused his brother."
    assert train["sentence2"][0] == 'Referring to him as "the witness".'
    assert train["label"] == [1, 0]
    assert train.features["label"].names == ["not_equivalent", "equivalent"]


def test_stsb_tsv_float_labels(tmp_path):
    header = (
        "index",
        "genre",
        "filename",
        "year",
        "old_index",
        "source1",
        "source2",
        "sentence1",
        "sentence2",
        "score",
    )
    meta = ("main-captions", "MSRvid", "2012test", 1, "none", "none")
    rows = [
        (0, *meta, "A plane.", "An air plane.", "5.000"),
        (1, *meta, "A man.", "A dog.", "0.750"),
    ]
    write(tmp_path / "train.tsv", tsv(header, *rows))
    write(tmp_path / "dev.tsv", tsv(header, rows[1]))
    train = task("stsb").load("train", tmp_path)
    assert train["sentence1"] == ["A plane.", "A man."]
    assert train["label"] == pytest.approx([5.0, 0.75])
    assert str(train.features["label"].dtype) == "float32"


def test_qqp_tsv(tmp_path):
    header = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    rows = [
        (133273, 213221, 213222, "How is the life of a math student?", "Which level?", 0),
        (402555, 536040, 536041, "How do I control my horny emotions?", "How do you?", 1),
    ]
    write(tmp_path / "QQP/train.tsv", tsv(header, *rows))
    write(tmp_path / "QQP/dev.tsv", tsv(header, *rows))
    dev = task("qqp").load("validation", tmp_path)
    assert dev.column_names == ["question1", "question2", "label", "idx"]
    assert dev["question2"] == ["Which level?", "How do you?"]
    assert dev["label"] == [0, 1]


MNLI_TRAIN_HEADER = (
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
)
MNLI_DEV_HEADER = (*MNLI_TRAIN_HEADER[:11], "label2", "label3", "label4", "label5", "gold_label")


def mnli_row(i: int, premise: str, hypothesis: str, label: str, dev: bool) -> tuple[object, ...]:
    parses = ("( ( x ) )", "( ( y ) )", "(ROOT (S x))", "(ROOT (S y))")
    votes = (label,) * (5 if dev else 1)
    return (i, 31193, f"{i}n", "government", *parses, premise, hypothesis, *votes, label)


def test_mnli_tsv_train_and_both_dev_sets(tmp_path):
    write(
        tmp_path / "MNLI/train.tsv",
        tsv(
            MNLI_TRAIN_HEADER,
            mnli_row(0, "Conceptually cream skimming.", "Product and geography.", "neutral", False),
            mnli_row(1, 'He said "yes.', "He agreed.", "entailment", False),
            mnli_row(2, "It is raining.", "It is dry.", "contradiction", False),
        ),
    )
    write(
        tmp_path / "MNLI/dev_matched.tsv",
        tsv(MNLI_DEV_HEADER, mnli_row(0, "A cat.", "An animal.", "entailment", True)),
    )
    write(
        tmp_path / "MNLI/dev_mismatched.tsv",
        tsv(
            MNLI_DEV_HEADER,
            mnli_row(0, "A dog.", "A cat.", "contradiction", True),
            mnli_row(1, "A dog.", "A pet.", "neutral", True),
        ),
    )
    mnli = task("mnli")
    train = mnli.load("train", tmp_path)
    assert train.column_names == ["premise", "hypothesis", "label", "idx"]
    assert train["premise"][1] == 'He said "yes.'
    assert train["label"] == [1, 0, 2]  # entailment=0, neutral=1, contradiction=2
    matched = mnli.load("validation_matched", tmp_path)
    mismatched = mnli.load("dev_mismatched", tmp_path)
    assert (matched["hypothesis"], matched["label"]) == (["An animal."], [0])
    assert (mismatched["hypothesis"], mismatched["label"]) == (["A cat.", "A pet."], [2, 1])
    with pytest.raises(UserError) as err:
        mnli.load("validation", tmp_path)
    one_line_error(err, "validation_matched", "validation_mismatched")


QNLI_HEADER = ("index", "question", "sentence", "label")
PAIR_HEADER = ("index", "sentence1", "sentence2", "label")


@pytest.mark.parametrize(
    ("name", "header", "labels", "expected"),
    [
        ("qnli", QNLI_HEADER, ("entailment", "not_entailment"), [0, 1]),
        ("rte", PAIR_HEADER, ("not_entailment", "entailment"), [1, 0]),
        ("wnli", PAIR_HEADER, ("1", "0"), [1, 0]),
    ],
)
def test_string_and_numeric_label_tsvs(tmp_path, name, header, labels, expected):
    rows = [(i, f'first {i} "quoted', f"second {i}", label) for i, label in enumerate(labels)]
    write(tmp_path / "train.tsv", tsv(header, *rows))
    write(tmp_path / "dev.tsv", tsv(header, *rows))
    t = task(name)
    data = t.load("validation", tmp_path)
    assert data.column_names == [*t.text_columns, "label", "idx"]
    assert data[t.text_columns[0]] == ['first 0 "quoted', 'first 1 "quoted']
    assert data[t.text_columns[1]] == ["second 0", "second 1"]
    assert data["label"] == expected


# -- local loaders: generic files -----------------------------------------------------------


def test_generic_jsonl_csv_and_json(tmp_path):
    lines = [
        {"premise": "A cat.", "hypothesis": "An animal.", "label": 0, "idx": 7},
        {"premise": "A dog.", "hypothesis": "A cat.", "label": "contradiction"},
    ]
    write(tmp_path / "mnli/train.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    write(tmp_path / "mnli/validation_matched.json", json.dumps(lines))
    write(tmp_path / "mnli/validation_mismatched.csv", 'premise,hypothesis,label\n"A, b",c,1\n')
    mnli = task("mnli")
    train = mnli.load("train", tmp_path / "mnli")
    assert train["label"] == [0, 2] and train["premise"] == ["A cat.", "A dog."]
    assert mnli.load("validation_matched", tmp_path / "mnli")["label"] == [0, 2]
    mismatched = mnli.load("validation_mismatched", tmp_path / "mnli")
    assert (mismatched["premise"], mismatched["label"]) == (["A, b"], [1])

    write(tmp_path / "stsb/train.csv", "sentence1,sentence2,label\na,b,4.5\nc,d,0\n")
    write(tmp_path / "stsb/validation.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 3}\n')
    assert task("stsb").load("train", tmp_path / "stsb")["label"] == pytest.approx([4.5, 0.0])
    assert task("stsb").load("validation", tmp_path / "stsb")["label"] == [3.0]

    write(tmp_path / "sst2/train.jsonl", '{"sentence": "good", "label": "positive"}\n')
    assert task("sst2").load("train", tmp_path / "sst2")["label"] == [1]


# -- local loaders: through datasets, with the line of every problem ------------------------


@pytest.fixture
def line_by_line(monkeypatch):
    """Records whether a file was read again line by line (after datasets could not, or a row
    failed a check); the reading itself is unchanged."""
    from tamt_cli.tasks import glue, squad

    calls: list[str] = []
    for module, name in ((glue, "read_tsv"), (glue, "read_records"), (squad, "read_records")):
        real = getattr(module, name)

        def spy(path, _real=real):
            calls.append(Path(path).name)
            return _real(path)

        monkeypatch.setattr(module, name, spy)
    return calls


def arrow_files() -> set[Path]:
    import datasets

    return set(Path(datasets.config.HF_DATASETS_CACHE).rglob("*.arrow"))


def test_tsv_through_datasets_keeps_quotes_bom_blank_lines_and_long_fields(tmp_path, line_by_line):
    long = "word " * 40_000  # 200 KB, beyond the csv module's default field limit
    header = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    text = tsv(
        header,
        (1, 1, 2, '"Quoted at the start', 'a " stray quote'),
        ("",),
        (0, 3, 4, "NA", "null"),
        ("   ",),
        (1, 5, 6, long, ""),
    )
    write(tmp_path / "train.tsv", text, bom=True)
    train = task("mrpc").load("train", tmp_path)
    assert train[:] == {
        "sentence1": ['"Quoted at the start', "NA", long],
        "sentence2": ['a " stray quote', "null", ""],
        "label": [1, 0, 1],
        "idx": [0, 1, 2],
    }
    assert line_by_line == []  # datasets read it
    assert all(Path(f["filename"]).suffix == ".arrow" for f in train.cache_files)
    cached = arrow_files()
    assert cached and all(tmp_path not in f.parents for f in cached)  # not next to the data

    again = task("mrpc").load("train", tmp_path)  # from the cache: no file is written
    assert again[:] == train[:] and arrow_files() == cached

    (tmp_path / "train.tsv").write_text(tsv(header, (0, 7, 8, "changed", "file")))
    os.utime(tmp_path / "train.tsv", ns=(1, 1))  # a new time, whatever the clock's resolution
    assert task("mrpc").load("train", tmp_path)["sentence1"] == ["changed"]


def test_headerless_cola_through_datasets(tmp_path, line_by_line):
    write(
        tmp_path / "train.tsv", tsv(("gj04", 1, "", 'He said "hi.'), ("gj04", 0, "*", "Him ran."))
    )
    train = task("cola").load("train", tmp_path)
    assert (train["sentence"], train["label"]) == (['He said "hi.', "Him ran."], [1, 0])
    assert line_by_line == []


def test_record_files_through_datasets(tmp_path, line_by_line):
    write(
        tmp_path / "train.csv",
        'premise,hypothesis,label\n"A, b","She said ""no"".",1\n\n"two\nlines",NA,contradiction\n',
        bom=True,
    )
    train = task("mnli").load("train", tmp_path)
    assert train[:] == {
        "premise": ["A, b", "two\nlines"],
        "hypothesis": ['She said "no".', "NA"],
        "label": [1, 2],
        "idx": [0, 1],
    }
    lines = [{"sentence": 'a "quote', "label": 1}, {"sentence": "", "label": "negative"}]
    write(tmp_path / "sst2/train.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    write(tmp_path / "sst2/validation.json", json.dumps(lines))
    for split in ("train", "validation"):
        data = task("sst2").load(split, tmp_path / "sst2")
        assert (data["sentence"], data["label"]) == (['a "quote', ""], [1, 0])
    assert line_by_line == []


def test_what_datasets_cannot_read_is_read_line_by_line(tmp_path, line_by_line):
    # JSON lines with a blank line and a column of numbers and strings stop datasets' reader
    write(
        tmp_path / "train.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": 0}\n\n'
        '{"premise": "c", "hypothesis": "d", "label": "neutral"}\n',
    )
    train = task("mnli").load("train", tmp_path)
    assert (train["premise"], train["label"]) == (["a", "c"], [0, 1])
    assert line_by_line == ["train.jsonl"]


@pytest.mark.parametrize(
    ("name", "file", "text", "where_", "says"),
    [
        # blank lines before the problem count: the line is the file's, not the row's
        ("sst2", "train.tsv", "sentence\tlabel\nok\t1\n\n\nbad\t7\n", ":5", "label '7'"),
        # a BOM and a long field do not shift the count
        ("mrpc", "train.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
         "1\t1\t2\ta\tb\n2\t1\t2\t" + "x" * 200_000 + "\tb\n", ":3", "label '2'"),
        # a short line: pandas would fill it with an empty '#2 String'
        ("mrpc", "train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
         "1\t1\t2\ta\tb\n0\t1\t2\ta\n", ":3", "expected 5 tab-separated fields"),
        # a long first line: pandas would take its first field for an index
        ("cola", "train.tsv", "s\t1\t\tok\textra\ns\t0\t*\tfine\n", ":1",
         "expected 4 tab-separated fields"),
        ("cola", "train.tsv", "s\t1\t\tok\n\ns\t0\t*\n", ":3", "found 3"),
        # CSV: a record over two lines counts both; a trailing field is not dropped
        ("qnli", "train.csv", 'question,sentence,label\n"two\nlines",s,0\nq,s,2\n', ":4",
         "label '2'"),
        ("qnli", "train.csv", "question,sentence,label\nq,s,0\n\nq,s,1,x\n", ":4",
         "expected 3 comma-separated fields"),
        ("qnli", "train.csv", "question,sentence,label\nq,s,0\nq,s\n", ":3", "found 2"),
        ("qnli", "train.csv", "question,sentence,label\nq,s,0\nq,,1\n", None, None),
        # JSON lines: blank lines count; null and absent columns are told apart
        ("rte", "train.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 0}\n\n'
         '{"sentence1": "a", "sentence2": null, "label": 0}\n', ":3",
         "column 'sentence2' must be text, found NoneType"),
        ("rte", "train.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 0}\n\n\n'
         '{"sentence1": "a", "label": 0}\n', ":4", "missing column(s) sentence2"),
        ("rte", "train.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 0}\n'
         '{"sentence1": "a", "sentence2": "b", "label": 0\n', ":2", "not valid JSON"),
        ("rte", "train.jsonl", '{"sentence1": "a", "sentence2": 5, "label": 0}\n', ":1",
         "must be text, found int"),
        ("rte", "train.json", json.dumps([{"sentence1": "a", "sentence2": "b", "label": 0},
                                          {"sentence1": "a", "sentence2": "b", "label": 9}]),
         " (record 2)", "label 9"),
    ],
)  # fmt: skip
def test_problems_name_their_line(tmp_path, name, file, text, where_, says, line_by_line):
    write(tmp_path / file, text)
    if where_ is None:  # an empty field is text, not a missing one
        assert task(name).load("train", tmp_path)["sentence"] == ["s", ""]
        assert line_by_line == []
        return
    with pytest.raises(UserError) as err:
        task(name).load("train", tmp_path)
    one_line_error(err, f"{tmp_path / file}{where_}: ", says)


def test_a_file_that_failed_loads_once_fixed_and_a_cached_one_fails_once_broken(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nok\t1\nbad\t7\n")
    with pytest.raises(UserError):
        task("sst2").load("train", tmp_path)
    path.write_text("sentence\tlabel\nok\t1\nbad\t0\n")
    os.utime(path, ns=(1, 1))
    assert task("sst2").load("train", tmp_path)["label"] == [1, 0]
    path.write_text("sentence\tlabel\nok\t1\nbad\t0\textra\n")
    os.utime(path, ns=(2, 2))
    with pytest.raises(UserError) as err:
        task("sst2").load("train", tmp_path)
    one_line_error(err, f"{path}:3: expected 2 tab-separated fields")


# -- encoding ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tests.tiny import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_encode_single_sentences_truncates_and_keeps_labels(tmp_path, tokenizer):
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 10)
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("the cat sat", 1), (long, 0)))
    sst2 = task("sst2")
    raw = sst2.load("train", tmp_path)
    encoded = sst2.encode(raw, tokenizer, max_length=16)
    assert len(encoded) == 2
    assert set(encoded.column_names) == {*tokenizer("a").keys(), "labels"}
    assert set(encoded.column_names) <= set(MODEL_INPUTS)
    short_ids, long_ids = encoded["input_ids"]
    assert short_ids == tokenizer("the cat sat")["input_ids"]  # not padded
    assert len(long_ids) == 16  # truncated at max_length
    assert long_ids[0] == tokenizer.cls_token_id and long_ids[-1] == tokenizer.sep_token_id
    assert encoded["attention_mask"][1] == [1] * 16
    assert encoded["labels"] == [1, 0]
    assert str(encoded.features["labels"].dtype) == "int64"
    # the default max_length is the task's (128)
    assert len(tokenizer(long)["input_ids"]) > 128
    assert len(sst2.encode(raw, tokenizer)["input_ids"][1]) == 128


def test_encode_pairs_and_regression(tmp_path, tokenizer):
    from datasets import Dataset

    stsb = task("stsb")
    raw = Dataset.from_list(
        [
            {
                "sentence1": "the cat sat on the mat",
                "sentence2": "a dog barked",
                "label": 2.5,
                "idx": 0,
            },
            {
                "sentence1": "winning tickets " * 20,
                "sentence2": "sparse " * 20,
                "label": 5.0,
                "idx": 1,
            },
        ],
        features=stsb.features(),
    )
    encoded = stsb.encode(raw, tokenizer, max_length=24, train=True)
    pair = tokenizer("the cat sat on the mat", "a dog barked")
    assert encoded["input_ids"][0] == pair["input_ids"]
    assert encoded["input_ids"][0].count(tokenizer.sep_token_id) == 2
    assert len(encoded["input_ids"][1]) == 24
    assert encoded["labels"] == pytest.approx([2.5, 5.0])
    assert str(encoded.features["labels"].dtype) == "float32"
    assert model_inputs(encoded).column_names == encoded.column_names


def test_encode_with_token_type_ids(tmp_path, tokenizer):
    """A BERT tokenizer (token_type_ids among its inputs) keeps them."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    bert = AutoTokenizer.from_pretrained(str(tmp_path))
    bert.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    rte = task("rte")
    raw = Dataset.from_list(
        [{"sentence1": "a cat", "sentence2": "the dog", "label": 0, "idx": 0}],
        features=rte.features(),
    )
    encoded = rte.encode(raw, bert)
    assert "token_type_ids" in encoded.column_names
    ids, types = encoded["input_ids"][0], encoded["token_type_ids"][0]
    first_sep = ids.index(bert.sep_token_id)
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}


# -- errors --------------------------------------------------------------------------------


def test_unknown_task_did_you_mean():
    with pytest.raises(UserError) as err:
        tasks().get("sst3")
    one_line_error(err, "unknown task 'sst3'", "did you mean 'sst2'")


def test_missing_data_dir_and_split_file(tmp_path):
    with pytest.raises(UserError) as err:
        task("sst2").load("train", tmp_path / "nowhere")
    one_line_error(err, "does not exist")
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("ok", 1)))
    with pytest.raises(UserError) as err:
        task("sst2").load("validation", tmp_path)
    one_line_error(err, "no validation data", "sst2", "dev.tsv", "validation.jsonl")
    with pytest.raises(UserError) as err:
        task("mnli").load("validation_mismatched", tmp_path)
    one_line_error(err, "dev_mismatched.tsv")


def test_tsv_with_wrong_columns(tmp_path):
    write(tmp_path / "train.tsv", tsv(("text", "label"), ("ok", 1)))
    with pytest.raises(UserError) as err:
        task("sst2").load("train", tmp_path)
    one_line_error(err, f"{tmp_path / 'train.tsv'}:1", "header lacks column(s) sentence")

    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("ok", 1), ("bad\tline", 0)))
    with pytest.raises(UserError) as err:
        task("sst2").load("train", tmp_path)
    one_line_error(err, f"{tmp_path / 'train.tsv'}:3", "expected 2 tab-separated fields", "3")

    write(tmp_path / "cola/train.tsv", tsv(("src", 1, "", "fine"), ("sentence", "label")))
    with pytest.raises(UserError) as err:
        task("cola").load("train", tmp_path / "cola")
    one_line_error(err, "train.tsv:2", "expected 4 tab-separated fields", "no header")

    write(tmp_path / "wnli/train.tsv", tsv(PAIR_HEADER))
    with pytest.raises(UserError) as err:
        task("wnli").load("train", tmp_path / "wnli")
    one_line_error(err, "train.tsv: no examples")

    write(tmp_path / "qnli/train.tsv", tsv(("index", "sentence1", "sentence2", "label")))
    with pytest.raises(UserError) as err:
        task("qnli").load("train", tmp_path / "qnli")
    one_line_error(err, "header lacks column(s) question, sentence")


def test_label_outside_the_label_set(tmp_path):
    header = ("index", "sentence1", "sentence2", "label")
    write(tmp_path / "train.tsv", tsv(header, (0, "a", "b", "entailment"), (1, "a", "b", "maybe")))
    with pytest.raises(UserError) as err:
        task("rte").load("train", tmp_path)
    one_line_error(err, "train.tsv:3", "'maybe'", "0=entailment, 1=not_entailment")

    write(tmp_path / "sst2/train.tsv", tsv(("sentence", "label"), ("ok", 2)))
    with pytest.raises(UserError) as err:
        task("sst2").load("train", tmp_path / "sst2")
    one_line_error(err, "train.tsv:2", "label '2'", "sst2")

    write(tmp_path / "mnli/train.jsonl", '{"premise": "a", "hypothesis": "b", "label": -1}\n')
    with pytest.raises(UserError) as err:
        task("mnli").load("train", tmp_path / "mnli")
    one_line_error(err, "train.jsonl:1", "label -1", "2=contradiction")

    write(tmp_path / "stsb/train.csv", "sentence1,sentence2,label\na,b,6.5\n")
    with pytest.raises(UserError) as err:
        task("stsb").load("train", tmp_path / "stsb")
    one_line_error(err, "train.csv:2", "'6.5'", "from 0 to 5")


def test_generic_files_with_wrong_columns(tmp_path):
    write(tmp_path / "train.jsonl", '{"sentence": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    with pytest.raises(UserError) as err:
        task("sst2").load("train", tmp_path)
    one_line_error(err, "train.jsonl:2", "missing column(s) sentence")
    write(tmp_path / "qqp/train.csv", "question1,question2,label\na,b\n")
    with pytest.raises(UserError) as err:
        task("qqp").load("train", tmp_path / "qqp")
    one_line_error(err, "train.csv:2", "expected 3 comma-separated fields")
    write(tmp_path / "rte/train.jsonl", '{"sentence1": "a", "sentence2": null, "label": 0}\n')
    with pytest.raises(UserError) as err:
        task("rte").load("train", tmp_path / "rte")
    one_line_error(err, "column 'sentence2' must be text")


def test_hub_loading_fails_fast_offline(monkeypatch, tmp_path):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        task("sst2").load("train", None)
    one_line_error(err, "nyu-mll/glue (sst2)", "--data-dir")


# -- the shared SST-2 folder ----------------------------------------------------------------


@pytest.mark.skipif(not SST2_SHARED.is_dir(), reason="../shared/data/glue/SST-2 is absent")
def test_shared_sst2_folder(tokenizer):
    sst2 = task("sst2")
    train = sst2.load("train", SST2_SHARED)
    dev = sst2.load("validation", SST2_SHARED)
    assert (len(train), len(dev)) == (8572, 1500)
    assert set(train["label"]) == {0, 1}
    encoded = sst2.encode(dev.select(range(64)), tokenizer)
    assert max(len(ids) for ids in encoded["input_ids"]) <= 128
    assert encoded["labels"] == dev["label"][:64]


# -- the contract with the fine-tuning engine -----------------------------------------------


@pytest.mark.parametrize("name", ["mnli", "stsb", "squad"])
def test_encoded_features_feed_the_task_model(tiny_bert, name):
    """What the engine will do: build ``auto_model_class()`` with ``model_config()``, batch
    ``model_inputs(encoded)``, and score the logits with ``metrics``."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding

    t = task(name)
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    model = t.auto_model_class().from_pretrained(str(tiny_bert), **t.model_config())
    if t.head == "span":
        context = "the cat sat on the mat and looked at the dog in the garden"
        rows = [
            {
                "id": f"q{i}",
                "title": "",
                "context": context,
                "question": "where did the cat sit?",
                "answers": {"text": ["the mat"], "answer_start": [context.index("the mat")]},
            }
            for i in range(3)
        ]
    else:
        rows = [
            {c: f"the cat sat {i}" for c in t.text_columns} | {"label": i % 2, "idx": i}
            for i in range(5)
        ]
    raw = Dataset.from_list(rows, features=t.features())
    collate = DataCollatorWithPadding(tok)
    train = model_inputs(t.encode(raw, tok, max_length=32, doc_stride=8, train=True))
    batch = collate([train[i] for i in range(len(train))])
    loss = model(**batch).loss
    assert loss is not None and torch.isfinite(loss)
    encoded = t.encode(raw, tok, max_length=32, doc_stride=8)
    with torch.no_grad():
        out = model(**collate([model_inputs(encoded)[i] for i in range(len(encoded))]))
    if t.head == "span":
        predictions = (out.start_logits.numpy(), out.end_logits.numpy())
    else:
        predictions = out.logits.numpy()
    scores = t.metrics(raw, encoded, predictions)
    assert t.main_metric in scores
