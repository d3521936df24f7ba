"""`tamt finetune` and `tamt eval --task` on a tiny BERT and tiny task files written here."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tamt_cli import maskfile
from tests.tiny import SENTENCES, sentence, write_sst2, write_tsv

os.environ["TAMT_NO_PROGRESS"] = "1"

SST2_SHARED = Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"
Q = "encoder.layer.0.attention.self.query.weight"
MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
              "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
              "sentence2", "label1", "gold_label"]  # fmt: skip
MNLI_DEV = [*MNLI_TRAIN[:-1], "label2", "label3", "label4", "label5", "gold_label"]
STSB = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
        "sentence2", "score"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


# -- tiny data --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sst2(tmp_path_factory) -> Path:
    """SST-2 layout (``sentence<TAB>label``): 48 training and 24 dev sentences."""
    return write_sst2(tmp_path_factory.mktemp("glue") / "SST-2")


@pytest.fixture(scope="session")
def mnli(tmp_path_factory) -> Path:
    """MNLI layout: GLUE's many columns, matched and mismatched dev files."""
    rng = random.Random(1)
    labels = ["entailment", "neutral", "contradiction"]
    folder = tmp_path_factory.mktemp("glue") / "MNLI"
    for name, header, n in (
        ("train.tsv", MNLI_TRAIN, 30),
        ("dev_matched.tsv", MNLI_DEV, 12),
        ("dev_mismatched.tsv", MNLI_DEV, 9),
    ):
        rows = []
        for i in range(n):
            label = labels[i % 3]
            premise, hypothesis = sentence(rng, "cat"), sentence(rng, label[:3])
            extra = [label] * (len(header) - 11)
            rows.append([i, i, f"{i}e", "fiction", "(", "(", "(", "(", premise, hypothesis,
                         *extra, label])  # fmt: skip
        write_tsv(folder / name, header, rows)
    return folder


@pytest.fixture(scope="session")
def stsb(tmp_path_factory) -> Path:
    rng = random.Random(2)
    folder = tmp_path_factory.mktemp("glue") / "STS-B"
    for name, n in (("train.tsv", 24), ("dev.tsv", 12)):
        rows = []
        for i in range(n):
            score = round(rng.uniform(0, 5), 2)
            rows.append([i, "main-news", "x", "2012", i, "none", "none", sentence(rng, "cat"),
                         sentence(rng, "dog"), score])  # fmt: skip
        write_tsv(folder / name, STSB, rows)
    return folder


@pytest.fixture(scope="session")
def squad(tmp_path_factory) -> Path:
    """SQuAD v1.1 JSON: a few questions whose answers are spans of the tiny sentences."""
    folder = tmp_path_factory.mktemp("squad")
    questions = [
        ("what sat on the mat", "the cat"),
        ("where did the dog bark", "in the garden"),
        ("what do researchers prune", "weights"),
        ("what stays frozen", "the weights"),
        ("what jumps over the lazy dog", "the quick brown fox"),
    ]
    contexts = [SENTENCES[0], SENTENCES[1], SENTENCES[2], SENTENCES[4], SENTENCES[7]]
    for name, prefix in (("train-v1.1.json", "t"), ("dev-v1.1.json", "d")):
        paragraphs = [
            {
                "context": context,
                "qas": [
                    {
                        "id": f"{prefix}{i}",
                        "question": question,
                        "answers": [{"text": answer, "answer_start": context.index(answer)}],
                    }
                ],
            }
            for i, (context, (question, answer)) in enumerate(zip(contexts, questions, strict=True))
        ]
        document = {"version": "1.1", "data": [{"title": "tiny", "paragraphs": paragraphs}]}
        (folder / name).write_text(json.dumps(document))
    return folder


# -- helpers ----------------------------------------------------------------------------------


def small(*extra: object) -> list[object]:
    """Flags that keep a fine-tuning run to a few steps of a tiny model."""
    return ["--max-length", "24", "--batch-size", "8", "--epochs", "2", "--lr", "1e-3", *extra]


def state(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(folder)).state_dict()


def pretrained(tiny_bert: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(tiny_bert)).state_dict()


def one_line(res, *parts: str) -> None:
    assert res.code == 2, (res.code, res.err)
    message = res.err.strip()
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


def nothing_written(where: Path = Path(".")) -> None:
    leftovers = [p.name for p in where.iterdir() if p.name not in {"cache"}]
    assert leftovers == [], leftovers


# -- fine-tuning with the mask held fixed -----------------------------------------------------


def test_masked_weights_stay_zero_and_the_rest_trains(cli, tiny_bert, omp_run, sst2):
    res = cli("finetune", omp_run, "--task", "sst2", "--data-dir", sst2, "--out", "ft",
              *small("--eval-every", "3"), "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["kind"] == "search" and result["mask_sparsity"] == pytest.approx(0.5)
    assert result["selected_by"] == "validation/accuracy"
    folder = Path("ft/seed-1")
    assert result["runs"][0]["folder"] == str(folder)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json",
                 "metrics.jsonl", "masks.safetensors", "manifest.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    # a plain transformers load: zeros where the mask prunes, trained values elsewhere
    tuned = state(folder)
    before = pretrained(tiny_bert)
    masks = maskfile.load_masks(omp_run / "masks.safetensors")
    assert set(maskfile.load_masks(folder / "masks.safetensors")) == set(masks)
    for name, keep in masks.items():
        weight = tuned[f"bert.{name}"]
        assert torch.all(weight[~keep] == 0), name
        assert not torch.equal(weight[keep], before[name][keep]), name
    assert not torch.equal(tuned["bert.encoder.layer.0.output.LayerNorm.weight"],
                           before["encoder.layer.0.output.LayerNorm.weight"])  # fmt: skip
    bias = "encoder.layer.0.attention.self.query.bias"
    assert not torch.equal(tuned[f"bert.{bias}"], before[bias])
    assert tuned["classifier.weight"].shape == (2, 32)
    # what the run recorded
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["best"]["step"] in {e["step"] for e in metrics["evaluations"]}
    assert metrics["final"]["step"] == result["runs"][0]["steps"] == 12  # 2 epochs of 48 / 8
    assert [e["step"] for e in metrics["evaluations"]] == [3, 6, 9, 12]  # --eval-every 3
    best = metrics["best"]["metrics"]["validation"]["accuracy"]
    assert best == max(e["metrics"]["validation"]["accuracy"] for e in metrics["evaluations"])
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows) and any("validation/accuracy" in r for r in rows)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "finetune" and manifest["seed"] == 1
    assert manifest["subnetwork"]["kind"] == "search"
    assert manifest["subnetwork"]["mask_sparsity"] == pytest.approx(0.5)
    assert manifest["hyperparameters"]["lr"] == 1e-3
    assert manifest["hyperparameters"]["max_length"] == 24
    top = json.loads(Path("ft/manifest.json").read_text())
    assert top["members"] == ["seed-1"] and top["task"] == "sst2"
    assert json.loads(Path("ft/summary.json").read_text())["best"] == result["best"]
    assert Path("ft/spec.yaml").is_file()
    # eval of the saved weights gives the final scores, on the run or on its seed folder
    for target in ("ft", "ft/seed-1"):
        res = cli("eval", target, "--task", "sst2", "--data-dir", sst2, "--json")
        assert res.code == 0, res.err
        out = res.json()
        for key in ("task", "metrics", "split", "examples", "checkpoint", "mask_sparsity"):
            assert key in out, key
        assert out["task"] == "sst2" and out["split"] == "validation" and out["examples"] == 24
        assert out["metrics"] == metrics["final"]["metrics"]["validation"]
        assert out["mask_sparsity"] == pytest.approx(0.5)
    res = cli("eval", "ft", "--task", "sst2", "--data-dir", sst2)
    assert res.code == 0 and "accuracy" in res.out


def test_same_seed_same_result_and_several_seeds_summarised(cli, omp_run, sst2):
    args = ["finetune", omp_run, "--task", "sst2", "--data-dir", sst2, *small(), "--json"]
    first = cli(*args, "--out", "a", "--seed", "3")
    again = cli(*args, "--out", "b", "--seed", "3")
    assert first.code == 0 and again.code == 0, first.err + again.err
    for key in ("best", "final"):
        assert first.json()[key] == again.json()[key]
    assert torch.equal(state(Path("a/seed-3"))[f"bert.{Q}"], state(Path("b/seed-3"))[f"bert.{Q}"])
    res = cli(*args, "--out", "c", "--seeds", "3,4")
    assert res.code == 0, res.err
    result = res.json()
    assert result["seeds"] == [3, 4] and [r["seed"] for r in result["runs"]] == [3, 4]
    assert result["runs"][0]["best"] == first.json()["runs"][0]["best"]  # seeds are independent
    stat = result["best"]["validation"]["accuracy"]
    values = [r["best"]["metrics"]["validation"]["accuracy"] for r in result["runs"]]
    assert stat["values"] == values
    assert stat["mean"] == pytest.approx(sum(values) / 2)
    assert stat["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert "mean" in result["final"]["validation"]["accuracy"]
    # another seed starts from another head
    assert not torch.equal(state(Path("c/seed-4"))["classifier.weight"],
                           state(Path("c/seed-3"))["classifier.weight"])  # fmt: skip
    one_line(cli("eval", "c", "--task", "sst2", "--data-dir", sst2), "2 fine-tuned models",
             "c/seed-3")  # fmt: skip
    res = cli("finetune", omp_run, "--task", "sst2", "--data-dir", sst2, *small(), "--out", "d",
              "--seeds", "3,4")  # fmt: skip
    assert res.code == 0 and "mean ± std" in res.out, res.err  # the table for people
    one_line(cli("finetune", omp_run, "--task", "sst2", "--data-dir", sst2, "--out", "c"),
             "already exists")  # fmt: skip


def test_mnli_mask_file_reports_matched_and_mismatched(cli, tiny_bert, omp_run, mnli):
    mask = omp_run / "masks.safetensors"
    res = cli("finetune", mask, "--model", tiny_bert, "--task", "mnli", "--data-dir", mnli.parent,
              "--train-size", "24", "--out", "ft", *small(), "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["kind"] == "mask" and result["runs"][0]["train_examples"] == 24
    assert set(result["best"]) == {"validation_matched", "validation_mismatched"}
    assert result["selected_by"] == "validation_matched/accuracy"
    tuned = state(Path("ft/seed-1"))
    keep = maskfile.load_masks(omp_run / "masks.safetensors")[Q]
    assert torch.all(tuned[f"bert.{Q}"][~keep] == 0) and tuned["classifier.weight"].shape[0] == 3
    out = cli("eval", "ft", "--task", "mnli", "--data-dir", mnli, "--json").json()
    assert out["split"] == "validation_matched,validation_mismatched" and out["examples"] == 21
    assert set(out["metrics"]) == {"validation_matched/accuracy", "validation_mismatched/accuracy"}
    final = result["runs"][0]["final"]["metrics"]
    assert out["splits"]["validation_mismatched"]["metrics"] == final["validation_mismatched"]
    assert out["splits"]["validation_mismatched"]["examples"] == 9
    matched = cli("eval", "ft", "--task", "mnli", "--data-dir", mnli, "--split", "matched",
                  "--json").json()  # fmt: skip
    assert matched["split"] == "validation_matched" and set(matched["metrics"]) == {"accuracy"}


def test_dense_baseline_on_a_regression_task(cli, tiny_bert, stsb):
    res = cli("finetune", tiny_bert, "--task", "stsb", "--data-dir", stsb, "--out", "ft",
              *small(), "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["kind"] == "model" and result["mask_sparsity"] is None
    assert set(result["final"]["validation"]) == {"pearson", "spearmanr"}
    assert not Path("ft/seed-1/masks.safetensors").exists()
    manifest = json.loads(Path("ft/seed-1/manifest.json").read_text())
    assert manifest["subnetwork"]["kind"] == "model" and manifest["model"]["num_labels"] == 1
    out = cli("eval", "ft", "--task", "stsb", "--data-dir", stsb, "--json").json()
    assert out["mask_sparsity"] is None
    assert out["metrics"] == result["runs"][0]["final"]["metrics"]["validation"]


def test_exported_subnetwork_is_its_own_model(cli, omp_run, sst2):
    assert cli("extract", omp_run, "--export", "sub").code == 0
    res = cli("finetune", "sub", "--task", "sst2", "--data-dir", sst2, "--out", "ft",
              "--train-size", "16", *small(), "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["kind"] == "subnetwork" and result["mask_sparsity"] == pytest.approx(0.5)
    keep = maskfile.load_masks(Path("sub/masks.safetensors"))
    tuned = state(Path("ft/seed-1"))
    for name, mask in keep.items():
        assert torch.all(tuned[f"bert.{name}"][~mask] == 0), name
    manifest = json.loads(Path("ft/seed-1/manifest.json").read_text())
    assert manifest["subnetwork"]["loaded_from"] == "sub"  # as given, never made absolute
    assert manifest["subnetwork"]["method"] == "omp"
    # eval reads the mask sparsity a plain folder's zeros show, when no manifest says it
    for extra in ("manifest.json", "masks.safetensors", "metrics.json"):
        Path("ft/seed-1", extra).unlink()
    out = cli("eval", "ft/seed-1", "--task", "sst2", "--data-dir", sst2, "--max-length", "24",
              "--json").json()  # fmt: skip
    assert out["mask_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_squad_fine_tunes_and_reports_em_and_f1(cli, omp_run, squad):
    res = cli("finetune", omp_run, "--task", "squad", "--data-dir", squad, "--out", "ft",
              "--max-length", "32", "--doc-stride", "8", "--batch-size", "4", "--epochs", "2",
              "--lr", "1e-3", "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    scores = result["final"]["validation"]
    assert set(scores) == {"exact_match", "f1"}
    assert all(0 <= s["mean"] <= 100 for s in scores.values())
    assert any("pooler" in note for note in result["notes"])  # a QA model has no pooler
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained("ft/seed-1")
    keep = maskfile.load_masks(omp_run / "masks.safetensors")[Q]
    assert torch.all(model.state_dict()[f"bert.{Q}"][~keep] == 0)
    out = cli("eval", "ft", "--task", "squad", "--data-dir", squad, "--json").json()
    assert out["metrics"] == result["runs"][0]["final"]["metrics"]["validation"]
    assert out["examples"] == 5


@pytest.mark.plugins
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tamt_textclf") is None,
    reason="the textclf task plugin is not installed: pip install ./plugins/tamt-textclf",
)
def test_task_options_from_a_spec_file_reach_a_plugin_task(cli, tiny_bert, tmp_path):
    data = tmp_path / "reviews"
    data.mkdir()
    (data / "train.csv").write_text("review,stars\ngreat cat,good\ndull dog,bad\nfine cat,good\n")
    (data / "dev.csv").write_text("review,stars\nlovely cat,good\nawful dog,bad\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"subnetwork: {tiny_bert}\ntask: textclf\ndata_dir: {data}\nmax_length: 16\n"
        "batch_size: 2\nout: ft\ntask_options: {text_column: review, label_column: stars}\n"
    )
    res = cli("finetune", "--spec", spec, "--json")
    assert res.code == 0, res.err
    assert set(res.json()["final"]["validation"]) == {"accuracy", "f1_macro"}
    out = cli("eval", "ft", "--task", "textclf", "--data-dir", data, "--json")  # options: the run's
    assert out.code == 0, out.err
    assert out.json()["metrics"] == res.json()["runs"][0]["final"]["metrics"]["validation"]


# -- several processes ------------------------------------------------------------------------


def two_processes(*args: object, port: int) -> subprocess.CompletedProcess:
    """``tamt -v ARGS`` on two CPU processes under torchrun, in the current folder (the test's
    tamt and datasets caches, as the environment names them)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(port + os.getpid() % 1000), "-m", "tamt_cli", "-v",
        *(str(a) for a in args),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def scored_shares(stderr: str, split: str, features: int, batch: int) -> None:
    """Each of the two processes scored its own batches of ``split``: half the rounds."""
    rounds = -(-features // (2 * batch))
    for rank in (0, 1):
        line = f"{split}: process {rank} of 2 scored {rounds * batch} features ({rounds} × {batch}"
        assert line in stderr and f"round) of {features}\n" in stderr, stderr[-3000:]


def test_eval_on_two_processes_gives_the_scores_of_one(cli, tiny_bert, mnli):
    """Each process scores its share of each dev set; the gathered predictions (the repeats
    that fill the last round dropped) score as one process's. The model: the tiny BERT with a
    seeded random head, whose predictions differ from sentence to sentence."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tamt_cli import task_data, task_model
    from tamt_cli.registry import create_task

    task = create_task("mnli")
    raw = task.load("validation_matched", mnli)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3)
    model.eval()
    with torch.no_grad():  # a head that tells the sentences' (close) pooled outputs apart
        pairs = list(raw["premise"]), list(raw["hypothesis"])
        inputs = tokenizer(*pairs, padding=True, return_tensors="pt")
        pooled = model.bert(**inputs).pooler_output
        model.classifier.weight.normal_(0.0, 100.0)
        model.classifier.bias.copy_(-pooled.mean(0) @ model.classifier.weight.T)
    model.save_pretrained("clf")
    tokenizer.save_pretrained("clf")
    sets = task_data.eval_sets(task, task.eval_splits, mnli, tokenizer, 24, None)
    for data in sets:  # not one answer for all: the order of the predictions matters
        assert len(set(task_model.predict(model, data, 5, False).argmax(-1).tolist())) > 1
    args = ["eval", "clf", "--task", "mnli", "--data-dir", mnli, "--max-length", "24",
            "--batch-size", "5", "--json"]  # fmt: skip
    one = cli(*args)
    assert one.code == 0, one.err
    proc = two_processes(*args, port=31_500)
    outputs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(outputs) == 2  # every process has the scores of all
    for out in outputs:
        assert out["splits"] == one.json()["splits"]
        assert out["metrics"] == one.json()["metrics"]
    assert {s: v["examples"] for s, v in one.json()["splits"].items()} == {
        "validation_matched": 12,
        "validation_mismatched": 9,
    }
    # 12 = 5 + 5 in one round, then 2 (filled up to 5) + 5 repeats; 9 = 5 + 4 (filled up)
    scored_shares(proc.stderr, "validation_matched", 12, 5)
    scored_shares(proc.stderr, "validation_mismatched", 9, 5)


def test_finetune_on_two_processes_scores_squad_in_shares(cli, omp_run, squad):
    """SQuAD's answers are found from all the windows of a question: the windows' logits are
    gathered from both processes before post-processing, and score as one process scores the
    same weights."""
    args = ["finetune", omp_run, "--task", "squad", "--data-dir", squad, "--out", "ft",
            "--max-length", "32", "--doc-stride", "8", "--batch-size", "4", "--epochs", "2",
            "--lr", "1e-3", "--eval-every", "2", "--json"]  # fmt: skip
    proc = two_processes(*args, port=32_500)
    result = json.loads(Path("ft/summary.json").read_text())
    history = json.loads(Path("ft/seed-1/metrics.json").read_text())["evaluations"]
    final = result["runs"][0]["final"]
    assert len(history) == 2 and {k: final[k] for k in ("step", "metrics")} == history[-1]
    features = json.loads(Path("ft/manifest.json").read_text())["data"]["tokenised"]
    scored_shares(proc.stderr, "validation", features["validation"]["features"], 4)
    one = cli("eval", "ft", "--task", "squad", "--data-dir", squad, "--json")
    assert one.code == 0, one.err
    assert one.json()["metrics"] == history[-1]["metrics"]["validation"]
    assert 0 < one.json()["metrics"]["f1"] < 100


# -- bad inputs -------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors_and_leave_nothing(
    cli, tiny_bert, other_bert, omp_run, sst2, tmp_path_factory
):
    base = ["--out", "ft", *small()]
    one_line(cli("finetune", tiny_bert, "--task", "sst3", *base), "unknown task 'sst3'",
             "did you mean 'sst2'")  # fmt: skip
    empty = tmp_path_factory.mktemp("empty")
    write_tsv(empty / "train.tsv", ["sentence", "label"], [["a cat", 1]])
    one_line(cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", empty, *base),
             "dev.tsv")  # fmt: skip
    wrong = tmp_path_factory.mktemp("wrong")
    write_tsv(wrong / "train.tsv", ["text", "label"], [["a cat", 1]])
    write_tsv(wrong / "dev.tsv", ["text", "label"], [["a cat", 1]])
    one_line(cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", wrong, *base),
             "sentence")  # fmt: skip
    labels = tmp_path_factory.mktemp("labels")
    write_tsv(labels / "train.tsv", ["sentence", "label"], [["a cat", 1], ["a dog", 7]])
    write_tsv(labels / "dev.tsv", ["sentence", "label"], [["a cat", 1]])
    one_line(cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", labels, *base),
             "label '7'")  # fmt: skip
    one_line(cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", sst2, "--train-size",
                 "1000", *base), "--train-size 1000", "48 training examples")  # fmt: skip
    other = tmp_path_factory.mktemp("other") / "omp"
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", other_bert, "--out", other).code == 0
    one_line(cli("finetune", other / "masks.safetensors", "--model", tiny_bert, "--task", "sst2",
                 "--data-dir", sst2, *base), "does not fit the model")  # fmt: skip
    one_line(cli("finetune", omp_run / "masks.safetensors", "--task", "sst2", "--data-dir", sst2,
                 *base), "needs --model")  # fmt: skip
    one_line(cli("finetune", "no/such/subnet/", "--task", "sst2", "--data-dir", sst2, *base),
             "does not exist")  # fmt: skip
    one_line(cli("finetune", "no-such-model", "--task", "sst2", "--data-dir", sst2, *base),
             "no-such-model")  # fmt: skip
    one_line(cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", sst2, "--out", "ft",
                 "--max-length", "128"), "--max-length 128", "64 positions")  # fmt: skip
    nothing_written()
    one_line(cli("eval", omp_run, "--task", "sst2", "--data-dir", sst2), "not a fine-tuned model")
    one_line(cli("eval", tiny_bert, "--task", "sst2", "--data-dir", sst2, "--max-length", "24"),
             "no trained sst2 head")  # fmt: skip
    one_line(cli("eval", tiny_bert, "--task", "sst2", "--data-dir", sst2, "--split", "test"),
             "no split 'test'")  # fmt: skip


# -- the real files ---------------------------------------------------------------------------


@pytest.mark.skipif(not SST2_SHARED.is_dir(), reason="../shared/data/glue/SST-2 is absent")
def test_real_sst2_files_go_through(cli, tiny_bert):
    res = cli("finetune", tiny_bert, "--task", "sst2", "--data-dir", SST2_SHARED, "--train-size",
              "64", "--max-length", "32", "--epochs", "1", "--out", "ft", "--json")  # fmt: skip
    assert res.code == 0, res.err
    result = res.json()
    assert result["runs"][0]["train_examples"] == 64
    assert 0 <= result["final"]["validation"]["accuracy"]["mean"] <= 100
    manifest = json.loads(Path("ft/seed-1/manifest.json").read_text())
    assert manifest["data"]["eval"] == {"validation": 1500}


def test_batches_are_padded_per_batch_as_before(tiny_bert):
    """Padding through DataCollatorWithPadding: the pad id, token type 0 and attention 0 after
    (or, for a left-padding tokenizer, before) each row; labels stacked; a multiple of 8 on
    request (mixed precision)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from tamt_cli import task_data

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    pad = tokenizer.pad_token_id
    features = Dataset.from_dict(
        {
            "input_ids": [[2, 7, 8, 3], [2, 9, 3], [2, 5, 6, 7, 8, 3]],
            "token_type_ids": [[0, 0, 1, 1], [0, 1, 1], [0, 0, 0, 1, 1, 1]],
            "attention_mask": [[1, 1, 1, 1], [1, 1, 1], [1, 1, 1, 1, 1, 1]],
            "labels": [1, 0, 1],
            "sentence": ["a", "b", "c"],  # not a model input: left out
        }
    )
    batch = task_data.Batcher(features, tokenizer)([1, 0])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[2, 9, 3, pad], [2, 7, 8, 3]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.long
    eights = task_data.Batcher(features, tokenizer, pad_to_multiple_of=8)([0, 2])
    assert eights["input_ids"].shape == (2, 8)
    assert eights["input_ids"][0].tolist() == [2, 7, 8, 3] + [pad] * 4
    tokenizer.padding_side = "left"
    left = task_data.Batcher(features, tokenizer)([1, 2])
    assert left["input_ids"].tolist() == [[pad, pad, pad, 2, 9, 3], [2, 5, 6, 7, 8, 3]]
    assert left["attention_mask"][0].tolist() == [0, 0, 0, 1, 1, 1]
