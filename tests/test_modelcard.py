"""Model cards (``README.md``) of exports and fine-tuned seeds, and ``--push-to-hub`` against a
local stand-in of the Hub's upload calls (no hub is reachable from the tests)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from tamt_cli import hub, modelcard
from tamt_cli.specs import FinetuneSpec, SearchSpec
from tests.tiny import write_sst2

os.environ["TAMT_NO_PROGRESS"] = "1"

pytestmark = pytest.mark.usefixtures("one_thread")


def card_of(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(Path(folder) / "README.md")


def no_local_paths(text: str, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in text, path
        assert str(Path(path).resolve()) not in text, path
    assert os.getcwd() not in text
    assert str(Path.home()) not in text


def one_line(res, *parts: str) -> None:
    assert res.code == 2, (res.code, res.err)
    # the error is the last line (a library's progress bar may come before it)
    message = res.err.strip().splitlines()[-1]
    assert message.startswith("tamt: error: ") and "Traceback" not in res.err, res.err
    assert res.err.count("tamt: error:") == 1, res.err
    for part in parts:
        assert part in message, message


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("glue") / "SST-2", train=16, dev=8)


@pytest.fixture
def licensed_bert(tiny_bert, tmp_path) -> Path:
    """The tiny BERT with a model card that names a license."""
    folder = tmp_path / "licensed-bert"
    shutil.copytree(tiny_bert, folder)
    (folder / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n\n# A tiny BERT\n")
    return folder


# -- exports ----------------------------------------------------------------------------------


def test_an_export_carries_a_hub_model_card(cli, licensed_bert, tmp_path):
    args = ["search", "-m", "omp", "-s", "0.7", "--model", licensed_bert, "--out", "run"]
    assert cli(*args, "--no-embeddings", "--json").code == 0
    res = cli("extract", "run", "--export", "subnet", "--json")
    assert res.code == 0, res.err
    card = card_of(Path("subnet"))
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["license"] == "mit"  # copied from the base model's card
    assert "base_model" not in data  # a local folder is no hub id
    assert data["pipeline_tag"] == "feature-extraction"
    assert {"pruning", "lottery-ticket", "tamt", "omp", "sparse"} <= set(data["tags"])
    assert "datasets" not in data  # one-shot pruning reads no corpus
    text = card.text
    assert "`omp`: one-shot magnitude pruning" in text
    assert "# licensed-bert subnetwork: omp at sparsity 0.70" in text
    assert "of the masked weights are zero (every masked matrix at 0.7)" in text
    assert "| attention query (Q) |" in text and "word embeddings" not in text.split("## How")[1]
    assert "@inproceedings{liu-etal-2022-learning" in text
    assert 'AutoModel.from_pretrained("path/to/this/folder")' in text
    no_local_paths(card.content, licensed_bert, tmp_path)
    manifest = json.loads(Path("subnet/manifest.json").read_text())
    search, extract = manifest["commands"]
    assert search.startswith("tamt search --method omp --sparsity 0.7 --model …/licensed-bert")
    assert "--no-embeddings" in search and "--out run" in search
    assert extract == "tamt extract run --export subnet"
    assert f"```bash\n{search}\n{extract}\n```" in text

    # the command in the card makes the same spec again
    words = [str(licensed_bert) if w == "…/licensed-bert" else w for w in shlex.split(search)]
    res = cli(*words[1:], "--dry-run", "--json")
    assert res.code == 0, res.err
    again = {k: v for k, v in res.json().items() if k in SearchSpec.model_fields}
    assert again == yaml.safe_load(Path("run/spec.yaml").read_text())

    # an export of the export keeps the commands that made it
    assert cli("extract", "subnet", "--export", "again").code == 0
    commands = json.loads(Path("again/manifest.json").read_text())["commands"]
    assert commands == [search, extract, "tamt extract subnet --export again"]
    assert card_of(Path("again")).data.license == "mit"


def test_a_trained_mask_names_its_objective_corpus_steps_and_held_out_loss(cli, tiny_bert, corpus):
    args = ["search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
            "--max-steps", "2", "--eval-every", "2", "--max-length", "16", "--batch-size", "4",
            "--out", "kd"]  # fmt: skip
    assert cli(*args).code == 0
    assert cli("extract", "kd", "--export", "subnet", "--format", "compressed").code == 0
    card = card_of(Path("subnet"))
    assert {"kd", "sparse", "sparse-bitmask"} <= set(card.data.tags)
    text = card.text
    assert "`kd`: knowledge distillation" in text
    assert "| corpus | `…/text.txt` |" in text and "| steps | 2 |" in text
    assert "| held-out loss | " in text and "logged at step 2" in text
    assert "plain transformers cannot load this folder" in text
    assert "docs/runs.md#compressed-exports" in text and "load_model(folder)" in text
    no_local_paths(card.content, corpus, tiny_bert)


def test_the_base_model_and_the_datasets_a_card_names():
    assert modelcard.base_model({"id": "demo", "local": True}) == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert modelcard.base_model({"id": "bert-base-uncased", "local": False}) == (
        "bert-base-uncased"
    )
    assert modelcard.base_model({"id": "/models/bert", "local": True}) is None
    assert modelcard.hub_datasets("wikitext-103, my/*.txt,wikitext-2") == ["Salesforce/wikitext"]
    assert modelcard.hub_datasets("demo") == []


def test_command_lines_built_from_specs():
    values = SearchSpec(
        method="kd",
        sparsity=0.7,
        model="/tmp/somewhere/bert",
        pooler=False,
        options={"init": "random", "tau": 0.02},
        corpus="wikitext-2,/data/extra.txt",
        report_to=["tensorboard"],
    ).model_dump(mode="json")
    line = modelcard.command_line("search", SearchSpec, values)
    assert line == (
        "tamt search --method kd --sparsity 0.7 --model …/bert --no-pooler -o init=random "
        "-o tau=0.02 --corpus wikitext-2,…/extra.txt --report-to tensorboard"
    )
    values = FinetuneSpec(subnetwork="sub dir", task="sst2", seeds=[1, 2], lr=2e-5,
                          task_options={"x": True}).model_dump(mode="json")  # fmt: skip
    line = modelcard.command_line("finetune", FinetuneSpec, values, ("subnetwork",))
    assert line == (
        "tamt finetune 'sub dir' --task sst2 --seeds 1,2 --lr 2e-05 --task-option x=true"
    )


# -- pushing an export ------------------------------------------------------------------------


class Hub:
    """A local stand-in of the Hub's upload calls: what was asked, and the files of each
    commit."""

    def __init__(self, root: Path, fail: Exception | None = None) -> None:
        self.root, self.fail = root, fail
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, api, repo_id, **kw):
        from huggingface_hub import RepoUrl

        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, api, repo_id, **kw):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def upload_folder(self, api, **kw):
        self.calls.append(("upload_folder", kw))
        if self.fail is not None:
            raise self.fail
        shutil.copytree(kw["folder_path"], self.root / kw["repo_id"])
        from types import SimpleNamespace

        return SimpleNamespace(oid="c0ffee")


@pytest.fixture
def online(monkeypatch):
    """The hub as if reachable, with a token."""
    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: True)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")


def stand_in(monkeypatch, tmp_path, fail: Exception | None = None) -> Hub:
    from huggingface_hub import HfApi

    fake = Hub(tmp_path / "hub", fail)
    for name in ("create_repo", "create_branch", "upload_folder"):
        method = getattr(fake, name)
        monkeypatch.setattr(HfApi, name, lambda api, *a, _m=method, **kw: _m(api, *a, **kw))
    return fake


def test_push_to_hub_uploads_the_export_in_one_commit(cli, omp_run, online, monkeypatch, tmp_path):
    fake = stand_in(monkeypatch, tmp_path)
    res = cli("extract", omp_run, "--export", "subnet", "--push-to-hub", "me/omp-tiny",
              "--private", "--revision", "v1", "--json")  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["hub"] == {
        "repo": "me/omp-tiny",
        "revision": "v1",
        "url": "https://huggingface.co/me/omp-tiny",
        "commit": "c0ffee",
        "folder": "subnet",
    }
    assert [name for name, _ in fake.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert fake.calls[0][1]["private"] is True and fake.calls[0][1]["exist_ok"] is True
    assert fake.calls[1][1] == {"repo_id": "me/omp-tiny", "branch": "v1", "exist_ok": True}
    upload = fake.calls[2][1]
    assert upload["revision"] == "v1" and Path(upload["folder_path"]) == Path("subnet")
    pushed = fake.root / "me/omp-tiny"
    assert sorted(p.name for p in pushed.iterdir()) == sorted(
        p.name for p in Path("subnet").iterdir()
    )
    assert 'AutoModel.from_pretrained("me/omp-tiny")' in card_of(pushed).text


def test_a_failed_upload_is_one_line_and_leaves_the_export(
    cli, omp_run, online, monkeypatch, tmp_path
):
    error = RuntimeError("500 Server Error: upload broke\nat part 3 of 5")
    stand_in(monkeypatch, tmp_path, error)
    res = cli("extract", omp_run, "--export", "subnet", "--push-to-hub", "me/omp-tiny")
    one_line(res, "pushing to me/omp-tiny failed (500 Server Error: upload broke)",
             "no commit was made", "hf upload me/omp-tiny subnet .")  # fmt: skip
    for name in ("README.md", "model.safetensors", "config.json", "masks.safetensors"):
        assert (Path("subnet") / name).is_file(), name
    assert card_of(Path("subnet")).data.library_name == "transformers"
    assert not (tmp_path / "hub").exists()


def test_push_is_refused_before_any_work(cli, omp_run, monkeypatch, online):
    from tamt_cli import models

    def no_loading(*args, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_encoder", no_loading)
    push = ("--export", "subnet", "--push-to-hub", "me/omp-tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line(cli("extract", omp_run, *push), "offline mode is set (HF_HUB_OFFLINE)")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    one_line(cli("extract", omp_run, *push), "the Hugging Face hub", "is unreachable")
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(Path("no-token").resolve()))
    one_line(cli("extract", omp_run, *push), "needs a Hugging Face token", "hf auth login")
    one_line(cli("extract", omp_run, "--export", "subnet", "--push-to-hub", "not a repo"),
             "is not a repository id")  # fmt: skip
    one_line(cli("extract", omp_run, "--push-to-hub", "me/x"), "--export")
    one_line(cli("extract", omp_run, "--export", "subnet", "--private"),
             "--private applies to --push-to-hub")  # fmt: skip
    assert not Path("subnet").exists()
    Path("spec.yaml").write_text(f"run: {omp_run}\npush_to_hub: me/x\n")
    one_line(
        cli("extract", "--spec", "spec.yaml"), "'push_to_hub' is taken only from the command line"
    )


# -- fine-tuned seeds -------------------------------------------------------------------------

FINETUNE = ("--task", "sst2", "--max-length", "24", "--batch-size", "8", "--epochs", "1",
            "--lr", "1e-3")  # fmt: skip


def test_every_fine_tuned_seed_has_a_card_and_one_is_pushed(
    cli, omp_run, sst2, online, monkeypatch, tmp_path
):
    assert cli("extract", omp_run, "--export", "sub").code == 0
    fake = stand_in(monkeypatch, tmp_path)
    res = cli("finetune", "sub", *FINETUNE, "--data-dir", sst2, "--seeds", "1,2", "--out", "ft",
              "--push-to-hub", "me/ft", "--push-seed", "2", "--json")  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["hub"]["folder"] == str(Path("ft/seed-2"))
    assert fake.calls[-1][1]["folder_path"] == str(Path("ft/seed-2"))
    for seed in (1, 2):
        card = card_of(Path(f"ft/seed-{seed}"))
        data = card.data.to_dict()
        assert data["library_name"] == "transformers"
        assert data["pipeline_tag"] == "text-classification"
        assert {"pruning", "lottery-ticket", "tamt", "omp", "sparse", "sst2"} <= set(data["tags"])
        assert "datasets" not in data  # local task files, one-shot mask
        text = card.text
        metrics = json.loads(Path(f"ft/seed-{seed}/metrics.json").read_text())
        accuracy = metrics["best"]["metrics"]["validation"]["accuracy"]
        assert f"| validation | accuracy | {accuracy:.2f} |" in text
        assert "| seed | " + str(seed) + " |" in text
        assert "50.00% of the masked weights are zero" in text
        assert "tamt search --method omp --sparsity 0.5 --model …/" in text
        assert "tamt extract …/omp --export sub\ntamt finetune sub --task sst2" in text
        assert "--seeds 1,2" in text and "push" not in text.split("## Commands")[1].split("##")[0]
        where = "me/ft" if seed == 2 else "path/to/this/folder"
        assert f'AutoModelForSequenceClassification.from_pretrained("{where}")' in text
        no_local_paths(card.content, omp_run, sst2, tmp_path)


def test_a_failed_seed_upload_leaves_the_run(cli, tiny_bert, sst2, online, monkeypatch, tmp_path):
    stand_in(monkeypatch, tmp_path, ConnectionError("connection reset by peer"))
    res = cli("finetune", tiny_bert, *FINETUNE, "--data-dir", sst2, "--out", "ft",
              "--push-to-hub", "me/ft")  # fmt: skip
    one_line(res, "pushing to me/ft failed (connection reset by peer)", "ft/seed-1")
    assert json.loads(Path("ft/summary.json").read_text())["seeds"] == [1]
    card = card_of(Path("ft/seed-1"))
    assert card.data.tags == ["tamt", "sst2"]  # a dense model: no pruning tags
    assert "A dense model, fine-tuned as the baseline." in card.text


def test_finetune_push_is_refused_before_any_work(cli, tiny_bert, sst2, monkeypatch):
    from tamt_cli import registry

    def no_task(*args, **kw):
        raise AssertionError("the task was loaded")

    monkeypatch.setattr(registry, "create_task", no_task)
    base = ("finetune", tiny_bert, *FINETUNE, "--data-dir", sst2, "--out", "ft")
    one_line(cli(*base, "--push-to-hub", "me/ft"), "offline mode is set")
    one_line(cli(*base, "--push-seed", "2"), "--push-seed applies to --push-to-hub")
    one_line(cli(*base, "--revision", "v2"), "--revision applies to --push-to-hub")
    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: True)
    one_line(cli(*base, "--push-to-hub", "me/ft", "--push-seed", "2"),
             "--push-seed 2 is not one of the seeds run (1)")  # fmt: skip
    assert not Path("ft").exists()
