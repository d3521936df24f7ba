"""tamt eval's functions called directly on a tiny BERT: the held-out pre-training loss of a
subnetwork and what a checkpoint resolves to."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from tamt_cli import artifacts, evaluate, files, maskfile, masking, subjects
from tamt_cli.errors import UserError
from tamt_cli.specs import EvalSpec


def held_out(checkpoint, corpus, objective="kd", **kw) -> dict:
    spec = EvalSpec(
        checkpoint=str(checkpoint),
        objective=objective,
        corpus=str(corpus),
        max_length=32,
        batch_size=4,
        eval_blocks=8,
        held_out=0.2,
        **kw,
    )
    return evaluate.run(spec, Console(quiet=True))


def test_kd_loss_is_zero_for_the_dense_model_and_grows_with_pruning(cli, tiny_bert, corpus):
    dense = held_out(tiny_bert, corpus)
    assert dense["loss"] == pytest.approx(0.0, abs=1e-6)  # the model is its own teacher
    assert dense["mask_sparsity"] is None and dense["mlm_head"] is None
    assert dense["examples"] == 8 and dense["max_length"] == 32
    assert dense["subject"] == f"dense {tiny_bert}"
    losses = []
    for sparsity in ("0.3", "0.7"):
        out = f"omp-{sparsity}"
        assert (
            cli("search", "-m", "omp", "-s", sparsity, "--model", tiny_bert, "--out", out).code == 0
        )
        result = held_out(out, corpus)
        assert result["subject"] == f"omp mask of {tiny_bert}"
        masks = maskfile.load_masks(Path(out) / artifacts.MASK_FILE)
        assert result["mask_sparsity"] == masking.pruned_fraction(masks)
        assert result["mask_sparsity"] == pytest.approx(float(sparsity), abs=1e-2)
        losses.append(result["loss"])
    assert 0 < losses[0] < losses[1] <= 2  # 1 − cosine: more pruning, further from the teacher
    with pytest.raises(UserError, match="--head own needs a search run that trained an MLM"):
        held_out("omp-0.3", corpus, objective="mlm", head="own")
    with pytest.raises(UserError, match=r"mask file '.*' needs --model"):
        held_out(Path("omp-0.3") / artifacts.MASK_FILE, corpus)


def test_fine_tuned_names_the_model_folder_of_a_one_seed_run(tmp_path):
    run = tmp_path / "ft"
    (run / "seed-3").mkdir(parents=True)
    plugins: dict[str, str] = {}
    files.write_json(
        run / artifacts.MANIFEST,
        artifacts.new_manifest("finetune", plugins, task="sst2", members=["seed-3"]),
    )
    files.write_json(
        run / "seed-3" / artifacts.MANIFEST,
        artifacts.new_manifest("finetune", plugins, task="sst2", seed=3),
    )
    location, manifest = subjects.fine_tuned(str(run))
    assert location == str(run / "seed-3")
    assert manifest is not None and manifest["seed"] == 3
    assert subjects.fine_tuned(str(tmp_path / "plain")) == (str(tmp_path / "plain"), None)
    files.write_json(
        run / artifacts.MANIFEST,
        artifacts.new_manifest("finetune", plugins, task="sst2", members=["seed-1", "seed-2"]),
    )
    with pytest.raises(UserError, match="holds 2 fine-tuned models; evaluate one of"):
        subjects.fine_tuned(str(run))


def test_eval_task_scores_a_checkpoint_it_did_not_train(cli, tiny_bert, tmp_path):
    """A bare encoder has no trained task head: a one-line error, not a silent random head."""
    from tests.tiny import write_sst2

    data = write_sst2(tmp_path / "SST-2", train=8, dev=8)
    spec = EvalSpec(checkpoint=str(tiny_bert), task="sst2", data_dir=data, max_length=32)
    with pytest.raises(UserError, match="has no trained sst2 head"):
        evaluate.run(spec, Console(quiet=True))


def test_objective_reads_the_search_runs_corpus_and_length(cli, tiny_bert, corpus, tmp_path):
    """--objective on a search run, or on its export, scores the held-out part of the run's own
    corpus at the run's length and held-out fraction: the text the run held out. Flags given
    still win; a plain model gets the fixed defaults."""
    import shutil

    text = tmp_path / "text.txt"
    shutil.copy(corpus, text)
    search = ("search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", "text.txt",
              "--max-length", "24", "--held-out", "0.1", "--max-steps", "2", "--batch-size", "4",
              "--out", "run")  # fmt: skip
    assert cli(*search).code == 0
    run_split = artifacts.read_manifest(Path("run"))["notes"]["held_out_split"]
    assert run_split["corpus"] == str(text.resolve())  # found again from any folder
    assert run_split["fraction"] == 0.1 and run_split["seed"] == 0
    assert cli("extract", "run", "--export", "sub").code == 0
    res = cli("eval", "run", "--objective", "kd", "--dry-run", "--json")
    assert res.code == 0, res.err
    resolved = res.json()["resolved"]
    assert (resolved["corpus"], resolved["max_length"], resolved["held_out"]) == (
        str(text.resolve()), 24, 0.1
    )  # fmt: skip
    for subject in ("run", "sub"):
        result = cli("eval", subject, "--objective", "kd", "--eval-blocks", "4", "--json").json()
        assert result["max_length"] == 24 and result["corpus"] == "text.txt"
        assert result["held_out_split"] == run_split  # the very text the run held out
    given = cli("eval", "run", "--objective", "kd", "--eval-blocks", "4", "--max-length", "16",
                "--held-out", "0.2", "--json").json()  # fmt: skip
    assert given["max_length"] == 16 and given["held_out_split"]["fraction"] == 0.2
    plain = cli("eval", tiny_bert, "--objective", "kd", "--dry-run", "--json").json()["resolved"]
    assert (plain["corpus"], plain["max_length"], plain["held_out"]) == ("wikitext-103", 128, 0.05)
    # the run's text changed since: scored, with a note that it is not what was held out
    text.write_text(text.read_text().replace("cat", "dog"))
    res = cli("eval", "run", "--objective", "kd", "--eval-blocks", "4", "--json")
    assert res.code == 0, res.err
    assert "differs from what the search run held out" in " ".join(res.err.split())
