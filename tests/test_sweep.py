"""`tamt sweep` and `tamt report` on a tiny BERT, a tiny corpus and a few dozen SST-2 rows."""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import statistics
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from tamt_cli import artifacts, maskfile
from tests.tiny import SENTENCES

os.environ["TAMT_NO_PROGRESS"] = "1"

WORDS = " ".join(SENTENCES).split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    """SST-2's layout: 32 training and 16 dev sentences, the label given away by one word."""
    rng = random.Random(3)
    folder = tmp_path_factory.mktemp("data") / "SST-2"
    folder.mkdir()
    for name, n in (("train.tsv", 32), ("dev.tsv", 16)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
            words.insert(rng.randint(0, len(words)), "cat" if label else "dog")
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def grid(tiny_bert, corpus, sst2, **changes) -> dict:
    data = {
        "model": str(tiny_bert),
        "methods": ["kd", "omp"],
        "sparsities": [0.5, 0.7],
        "tasks": ["sst2"],
        "seeds": [1, 2],
        "search": {"corpus": str(corpus), "max_length": 16, "batch_size": 4, "eval_blocks": 4},
        "methods_options": {"kd": {"max_steps": 4, "save_every": 2, "lr": 0.05}},
        "finetune": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 32},
        "data": {"sst2": str(sst2)},
        "heldout": {"objective": "kd", "corpus": str(corpus), "max_length": 16, "eval_blocks": 8},
    }
    data.update(changes)
    return data


def write_grid(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_bert, corpus, sst2):
    """A 2 methods × 2 sparsities × 1 task × 2 seeds grid with the dense model, run once."""
    from tamt_cli.cli import main

    root = tmp_path_factory.mktemp("sweep")
    path = write_grid(root / "grid.yaml", grid(tiny_bert, corpus, sst2))
    out = root / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    return path, out


def index(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


# -- running --------------------------------------------------------------------------------


def test_sweep_runs_every_cell_as_an_ordinary_run(swept):
    _, out = swept
    cells = index(out)["cells"]
    kinds = [c["kind"] for c in cells]
    # 4 searches, 4 + 1 held-out losses, 8 + 2 fine-tuning seeds
    assert (kinds.count("search"), kinds.count("heldout"), kinds.count("finetune")) == (4, 5, 10)
    assert {c["status"] for c in cells} == {"done"}
    for c in cells:
        path = out / c["id"]
        if c["kind"] == "heldout":
            assert json.loads(path.read_text())["objective"] == "kd"
            continue
        manifest = artifacts.read_manifest(path)
        if c["kind"] == "search":
            assert (manifest["kind"], manifest["status"]) == ("search", "complete")
            assert manifest["method"] == c["method"]
            assert manifest["sparsity_report"]["overall"]["sparsity"] == pytest.approx(
                c["sparsity"], abs=0.01
            )
            assert manifest["seconds"] > 0
        else:
            assert manifest["kind"] == "finetune" and manifest["seeds"] == [c["seed"]]
            link = manifest["subnetwork"]
            if c["method"] == "dense":
                assert link["kind"] == "model"
            else:
                assert Path(link["path"]) == (out / c["needs"]).resolve()


def test_every_file_of_a_sweep_reads_back_through_its_model_unchanged(swept):
    from tamt_cli import records

    _, out = swept
    models = {
        "manifest.json": None,  # by its kind
        "summary.json": records.Summary,
        "metrics.json": records.SeedMetrics,
        "sweep.json": records.SweepIndex,
        "spec.yaml": records.SavedSpec,
    }
    read = set()
    for path in sorted(out.rglob("*")):
        model = records.HeldOut if path.name.startswith("heldout-") else models.get(path.name)
        if path.name not in models and model is None:
            continue
        if path.suffix == ".yaml":
            data = yaml.safe_load(path.read_text())
        else:
            data = json.loads(path.read_text())
        model = model or records.manifest_model(data)
        assert records.as_dict(records.load(path, model)) == data, path
        read.add(model)
    assert len(read) == 7  # search and fine-tuning manifests, and each of the others


def test_second_run_is_a_no_op(swept, cli):
    path, out = swept
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/manifest.json")}
    res = cli("sweep", path, "--out", out, "--json")
    assert res.code == 0, res.err
    assert "finetune" not in res.err and "search" not in res.err  # no cell line: nothing ran
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/manifest.json")} == stamps
    assert {c["status"] for c in res.json()["cells"]} == {"done"}


def test_changed_grid_adds_only_new_cells_and_refuses_changed_settings(
    swept, cli, tmp_path, tiny_bert, corpus, sst2
):
    _, out = swept
    more = write_grid(tmp_path / "more.yaml", grid(tiny_bert, corpus, sst2, seeds=[1, 2, 3]))
    res = cli("sweep", more, "--out", out, "--dry-run", "--json")
    assert res.code == 0, res.err
    pending = [c["id"] for c in res.json() if c["status"] != "done"]
    assert sorted(pending) == sorted(
        f"finetune/sst2-{n}-seed3" for n in ("dense", "kd-s0.5", "kd-s0.7", "omp-s0.5", "omp-s0.7")
    )
    index_file = out / "sweep.json"
    saved = index_file.read_text()
    older = json.loads(saved)  # as an older tamt, without one of today's fields, recorded it
    for cell in older["cells"]:
        cell["spec"].pop("held_out", None)
    index_file.write_text(json.dumps(older))
    res = cli("sweep", more, "--out", out, "--dry-run", "--json")
    index_file.write_text(saved)
    assert res.code == 0, res.err
    changed = grid(tiny_bert, corpus, sst2)
    changed["finetune"] = {**changed["finetune"], "lr": 2e-3}
    res = cli("sweep", write_grid(tmp_path / "changed.yaml", changed), "--out", out, "--dry-run")
    assert res.code == 2
    assert "changes lr of finetune sst2" in res.err and len(res.err.strip().splitlines()) == 1


def test_killed_sweep_continues_and_ends_with_the_uninterrupted_mask(
    swept, cli, tmp_path, tiny_bert, corpus, sst2, monkeypatch
):
    """A search killed after its first checkpoint is resumed by the next run of the sweep."""
    from tamt_cli.engine import Engine

    _, full = swept
    small = grid(tiny_bert, corpus, sst2, methods=["kd"], sparsities=[0.7], dense=False)
    path = write_grid(tmp_path / "grid.yaml", {**small, "tasks": [], "data": {}, "heldout": None})
    save = Engine.save_checkpoint

    def killed(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "save_checkpoint", killed)
    assert cli("sweep", path, "--out", "out").code == 130
    run = tmp_path / "out/search/kd-s0.7"
    assert artifacts.read_manifest(run)["status"] == "running"
    listed = cli("sweep", path, "--out", "out", "--dry-run", "--json").json()
    assert [c["status"] for c in listed] == ["partial"]
    assert cli("sweep", path, "--out", "out", "--print-commands").out.strip() == (
        f"tamt search --resume {shlex.quote('out/search/kd-s0.7')}"
    )
    monkeypatch.setattr(Engine, "save_checkpoint", save)
    assert cli("sweep", path, "--out", "out").code == 0
    resumed = maskfile.load_masks(run / "masks.safetensors")
    whole = maskfile.load_masks(full / "search/kd-s0.7/masks.safetensors")
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_shards_split_the_grid_by_search_and_share_the_index(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    """Two processes at once, `--shard 1/2` and `--shard 2/2`: each runs its searches with every
    cell that reads them, the index ends with every cell done, and the sweep is then complete."""
    import subprocess
    import sys

    data = grid(tiny_bert, corpus, sst2, methods=["omp", "random"], seeds=[1], methods_options={})
    path = write_grid(tmp_path / "grid.yaml", data)
    listed = cli("sweep", path, "--out", "out", "--shard", "2/2", "--dry-run", "--json").json()
    # groups in grid order: dense, omp 0.5, omp 0.7, random 0.5, random 0.7; shard 2 has the
    # 2nd and 4th with their held-out losses and fine-tuning
    assert sorted(c["id"] for c in listed) == sorted(
        [
            *(f"search/{n}" for n in ("omp-s0.5", "random-s0.5")),
            *(f"heldout-{n}-kd.json" for n in ("omp-s0.5", "random-s0.5")),
            *(f"finetune/sst2-{n}-seed1" for n in ("omp-s0.5", "random-s0.5")),
        ]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tamt_cli", "sweep", str(path), "--out", "out", "--shard", k],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in ("1/2", "2/2")
    ]
    for k, proc in zip(("1/2", "2/2"), procs, strict=True):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert out.startswith(f"sweep complete (shard {k}): ")
    cells = index(tmp_path / "out")["cells"]
    assert len(cells) == 2 + 4 * 3 and {c["status"] for c in cells} == {"done"}
    res = cli("sweep", path, "--out", "out", "--dry-run", "--json")
    assert {c["status"] for c in res.json()} == {"done"}
    bad = cli("sweep", path, "--out", "out", "--shard", "3/2")
    assert bad.code == 2 and "--shard takes K/N" in bad.err


def one_search(tiny_bert, corpus, sst2, method: str = "omp", heldout: bool = True) -> dict:
    """A grid of one search at 0.5 (with its held-out kd loss): no dense model, no task."""
    data = grid(tiny_bert, corpus, sst2, methods=[method], sparsities=[0.5], dense=False)
    data.update(tasks=[], data={})
    data["methods_options"] = {k: v for k, v in data["methods_options"].items() if k == method}
    if not heldout:
        data["heldout"] = None
    return data


def test_a_second_sweep_on_its_directory_is_refused_naming_the_first(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    """Two `tamt sweep` processes on one directory without --shard: the second, with or without
    --shard, exits 2 naming the first's process id and changes nothing; the lock of a process
    killed with -9 holds nothing back."""
    import subprocess
    import sys
    import time

    data = one_search(tiny_bert, corpus, sst2, method="kd", heldout=False)
    data["methods_options"] = {"kd": {"max_steps": 100_000, "lr": 0.05}}  # runs until killed
    path = write_grid(tmp_path / "grid.yaml", data)
    first = subprocess.Popen(
        [sys.executable, "-m", "tamt_cli", "sweep", str(path), "--out", "out"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    out = tmp_path / "out"
    try:
        for line in first.stderr:  # type: ignore[union-attr]
            if "search kd s0.5" in line:  # its first cell has started
                break
        else:
            raise AssertionError(f"the first sweep ended: {first.wait()}")
        files_before = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}
        for extra in ([], ["--shard", "1/1"], ["--print-commands"]):
            res = cli("sweep", path, "--out", "out", *extra)
            assert res.code == 2, (extra, res.err)
            last = res.err.strip().splitlines()[-1]
            assert f"'out' is in use by another tamt sweep (pid {first.pid} on " in last, last
        assert {p: p.read_bytes() for p in out.iterdir() if p.is_file()} == files_before
        manifest = out / "search/kd-s0.5/manifest.json"
        for _ in range(6000):  # the search writes its run folder, then trains until killed
            if manifest.is_file() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert manifest.is_file() and first.poll() is None
    finally:
        first.kill()
        first.wait(timeout=60)
        first.stderr.close()  # type: ignore[union-attr]
    res = cli("sweep", path, "--out", "out", "--print-commands")
    assert res.code == 0, res.err
    assert res.out.strip() == f"tamt search --resume {shlex.quote('out/search/kd-s0.5')}"


def test_shards_and_a_whole_sweep_exclude_each_other(cli, tmp_path, tiny_bert, corpus, sst2):
    """A shard being run keeps a sweep without --shard out, and the same shard twice."""
    from tamt_cli import sweep

    path = write_grid(tmp_path / "grid.yaml", one_search(tiny_bert, corpus, sst2))
    assert cli("sweep", path, "--out", "out", "--print-commands").code == 0
    lock = sweep.claim(Path("out"), (1, 2))
    try:
        for extra in ([], ["--shard", "1/2"]):
            res = cli("sweep", path, "--out", "out", *extra)
            assert res.code == 2, res.err
            assert f"in use by tamt sweep --shard 1/2 (pid {os.getpid()} on " in res.err
        assert cli("sweep", path, "--out", "out", "--shard", "2/2").code == 0
    finally:
        sweep.release(lock)
    assert cli("sweep", path, "--out", "out").code == 0


def test_an_empty_or_damaged_heldout_result_is_run_again(cli, tmp_path, tiny_bert, corpus, sst2):
    """What a batch job killed while its shell redirected `--json >` into the file leaves (an
    empty or half-written file), or any file that is not a held-out loss, is not done: the
    sweep says so and runs the cell again."""
    path = write_grid(tmp_path / "grid.yaml", one_search(tiny_bert, corpus, sst2))
    assert cli("sweep", path, "--out", "out").code == 0
    result = tmp_path / "out/heldout-omp-s0.5-kd.json"
    whole = json.loads(result.read_text())
    for damage, problem in [
        ("", "is empty or unreadable"),
        ('{"checkpoint": "out/search/omp-s0.5", "lo', "is empty or unreadable"),
        ("[]", "holds no held-out kd loss"),
        ('{"loss": 1}', "holds no held-out kd loss"),
    ]:
        result.write_text(damage)
        listed = cli("sweep", path, "--out", "out", "--dry-run", "--json").json()
        assert [c["status"] for c in listed] == ["done", "pending"], damage
        printed = cli("sweep", path, "--out", "out", "--print-commands")
        lines = printed.out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tamt eval "), lines
        assert f"{problem}; running it again" in printed.err
        res = cli("sweep", path, "--out", "out")
        assert res.code == 0, res.err
        assert f"heldout-omp-s0.5-kd.json {problem}; running it again" in res.err
        assert json.loads(result.read_text()) == whole
    assert cli("report", "out").code == 0


def test_a_printed_heldout_line_writes_its_result_itself(
    cli, tmp_path, tiny_bert, corpus, sst2, monkeypatch
):
    """The held-out line writes its file with --json-out, never through a shell redirection: a
    job killed while it scores leaves no file; one that ends leaves what --json prints."""
    from tamt_cli import evaluate

    path = write_grid(tmp_path / "grid.yaml", one_search(tiny_bert, corpus, sst2))
    search, heldout = cli("sweep", path, "--out", "out", "--print-commands").out.splitlines()
    words = shlex.split(heldout)
    assert ">" not in words and words[words.index("--json-out") + 1] == str(
        Path("out/heldout-omp-s0.5-kd.json")
    )
    assert cli(*shlex.split(search)[1:]).code == 0
    target = tmp_path / "out/heldout-omp-s0.5-kd.json"
    real = evaluate.run_objective

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "run_objective", killed)
    assert cli(*words[1:]).code == 130
    assert not target.exists() and not list(target.parent.glob("*.tmp"))
    monkeypatch.setattr(evaluate, "run_objective", real)
    res = cli(*words[1:], "--json")
    assert res.code == 0, res.err
    assert json.loads(target.read_text()) == res.json()
    listed = cli("sweep", path, "--out", "out", "--dry-run", "--json").json()
    assert [c["status"] for c in listed] == ["done", "done"]


def test_failed_cells_are_recorded_and_do_not_stop_the_others(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    bad = grid(tiny_bert, corpus, sst2, methods=["omp"], sparsities=[0.5], seeds=[1])
    bad["methods_options"] = {}
    bad["finetune"] = {**bad["finetune"], "max_length": 500}  # longer than the model allows
    path = write_grid(tmp_path / "bad.yaml", bad)
    res = cli("sweep", path, "--out", "out", "--json")
    assert res.code == 1, res.err
    last = res.err.strip().splitlines()[-1]  # after one progress line per cell
    assert last.startswith("tamt: error: 2 of 5 cells did not finish")
    cells = {c["id"]: c for c in index(tmp_path / "out")["cells"]}
    assert cells["search/omp-s0.5"]["status"] == "done"
    assert cells["heldout-omp-s0.5-kd.json"]["status"] == "done"
    assert cells["finetune/sst2-omp-s0.5-seed1"]["status"] == "failed"
    assert "positions" in cells["finetune/sst2-omp-s0.5-seed1"]["error"]
    res = cli("sweep", path, "--out", "fast", "--fail-fast")
    assert res.code == 1 and "(--fail-fast;" in res.err.strip().splitlines()[-1]
    assert index(tmp_path / "fast")["counts"]["failed"] == 1
    assert index(tmp_path / "fast")["counts"]["pending"] == 4


def test_printed_commands_are_the_cells_specs(swept, cli, tmp_path, tiny_bert, corpus, sst2):
    """Every printed line, run with --dry-run --json, resolves to the cell's own spec."""
    from tamt_cli import sweep

    path = write_grid(tmp_path / "grid.yaml", grid(tiny_bert, corpus, sst2))
    lines = cli("sweep", path, "--out", "new", "--print-commands").out.strip().splitlines()
    plan = sweep.plan(path, Path("new"))
    assert len(lines) == len(plan.cells) == 19
    assert [line.split()[1] for line in lines[:4]] == ["search"] * 4  # searches first
    seeds = [line.split("--seeds ")[1].split()[0] for line in lines if "--seeds" in line]
    assert seeds == ["1"] * 5 + ["2"] * 5  # every subnetwork's first seed, then the second
    cells = {sweep.command(c, plan.out): c for c in plan.cells}
    assert set(cells) == set(lines)
    for line in lines:
        words = shlex.split(line)
        assert ">" not in words  # every line writes its result itself
        res = cli(*words[1:], "--dry-run", "--json")
        assert res.code == 0, (line, res.err)
        shown = res.json()
        shown.pop("resolved", None)  # what the method or task fills in, shown beside the spec
        assert shown == cells[line].spec.model_dump(mode="json")
        if words[1] == "eval":  # the held-out loss lands where the sweep keeps it
            assert words[words.index("--json-out") + 1] == str(plan.out / cells[line].id)


def test_printed_command_of_a_paper_budget_variant_runs(cli, tmp_path, tiny_bert, corpus, sst2):
    """A variant under --budget paper, with trackers named in the grid: its printed search line
    passes the CLI and resolves to the cell's spec (trackers comma-separated, the fields the
    paper's protocol leaves open not spelled out)."""
    from tamt_cli import sweep

    data = grid(tiny_bert, corpus, sst2, methods=["kd-paper"], sparsities=[0.5])
    data["variants"] = {"kd-paper": {"method": "kd", "budget": "paper"}}
    data["search"]["report_to"] = ["tensorboard"]
    path = write_grid(tmp_path / "grid.yaml", data)
    lines = cli("sweep", path, "--out", "new", "--print-commands").out.strip().splitlines()
    line = next(line for line in lines if line.startswith("tamt search"))
    assert "--report-to tensorboard" in line and "--mixed-precision" not in line
    plan = sweep.plan(path, Path("new"))
    cell = next(c for c in plan.cells if c.kind == "search")
    res = cli(*shlex.split(line)[1:], "--dry-run", "--json")
    assert res.code == 0, (line, res.err)
    shown = res.json()
    shown.pop("resolved", None)
    assert shown == cell.spec.model_dump(mode="json")
    # the grid's kd options (lr 0.05, 4 steps) win; the rest is the paper's
    assert (shown["lr"], shown["max_steps"]) == (0.05, 4)
    assert (shown["options"]["scores"], shown["options"]["decay_steps"]) == ("binary", 30000)


def test_trackers_of_a_grid_watch_the_searches_that_train(cli, tmp_path, tiny_bert, corpus, sst2):
    """The grid's trackers go to the training searches only: a one-shot method logs nothing and
    refuses --report-to, so its cells and printed lines leave them out (and pass the CLI)."""
    from tamt_cli import sweep

    data = grid(tiny_bert, corpus, sst2, sparsities=[0.5])
    data["search"]["report_to"] = ["tensorboard"]
    path = write_grid(tmp_path / "grid.yaml", data)
    plan = sweep.plan(path, Path("new"))
    searches = {c.method: c.spec for c in plan.cells if c.kind == "search"}
    assert searches["kd"].report_to == ["tensorboard"] and searches["omp"].report_to == []
    lines = cli("sweep", path, "--out", "new", "--print-commands").out.strip().splitlines()
    omp = next(line for line in lines if line.startswith("tamt search") and "omp" in line)
    assert "--report-to" not in omp
    res = cli(*shlex.split(omp.partition(" > ")[0])[1:], "--dry-run", "--json")
    assert res.code == 0, (omp, res.err)
    refused = cli(*shlex.split(omp.partition(" > ")[0])[1:], "--report-to", "tensorboard")
    assert refused.code == 2 and "runs in one shot and logs no training" in refused.err


def test_paper_budget_keeps_its_values_over_the_shared_search_fields(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    """The grid's shared `search:` fields yield to --budget paper (length, batch, scores); a
    variant's own settings win over the budget; other methods keep the shared fields."""
    data = grid(
        tiny_bert, corpus, sst2, methods=["kd-paper", "kd-paper-short", "kd"], sparsities=[0.5]
    )
    data["variants"] = {
        "kd-paper": {"method": "kd", "budget": "paper"},
        "kd-paper-short": {"method": "kd", "budget": "paper", "max_length": 32},
    }
    data["search"]["options"] = {"scores": "graded", "tau": 0.02}
    data["methods_options"] = {}
    path = write_grid(tmp_path / "grid.yaml", data)
    lines = cli("sweep", path, "--out", "new", "--print-commands").out.strip().splitlines()
    searches = {}
    for line in lines:
        words = shlex.split(line)
        if words[1] == "search":
            searches[Path(words[words.index("--out") + 1]).name] = line
    paper = searches["kd-paper-s0.5"]
    assert "--max-length 512" in paper and "--batch-size 16" in paper
    assert "-o scores=binary" in paper and "-o tau=0.02" in paper  # tau: not the budget's
    assert f"--corpus {corpus}" in paper and "--eval-blocks 4" in paper
    assert "--max-length 32" in searches["kd-paper-short-s0.5"]
    plain = searches["kd-s0.5"]
    assert "--max-length 16" in plain and "--batch-size 4" in plain and "scores=graded" in plain


def test_committed_base_grid_runs_the_paper_protocol_at_512_tokens(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    """benchmarks/budget-grid-base.yaml (model, corpus and data made local): its kd-paper
    searches run at the paper's 512 tokens, the others at the grid's 128."""
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "budget-grid-base.yaml"
    data = yaml.safe_load(committed.read_text())
    data.update(model=str(tiny_bert), data={"sst2": str(sst2)})
    data["search"]["corpus"] = data["heldout"]["corpus"] = str(corpus)
    path = write_grid(tmp_path / "grid.yaml", data)
    lines = cli("sweep", path, "--out", "new", "--print-commands").out.strip().splitlines()
    searches = [line for line in lines if line.startswith("tamt search")]
    paper = [line for line in searches if "--label kd-paper" in line]
    assert len(paper) == 2 and all("--max-length 512" in line for line in paper)
    assert all("--max-length 128" in line for line in searches if line not in paper)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["kd", "ompp"]}, "unknown method 'ompp'; did you mean 'omp'?"),
        ({"tasks": ["sst3"]}, "unknown task 'sst3'"),
        ({"epochs": 3}, "unknown field 'epochs'"),
        ({"finetune": {"epoch": 1}}, "unknown field 'epoch'"),
        ({"methods_options": {"omp": {"steps_per_round": 3}}}, "options of method 'omp'"),
        ({"search": {"sparsity": 0.3}}, "'search.sparsity' is set by the grid itself"),
        ({"sparsities": [0.5, 1.5]}, "strictly between 0 and 1"),
        ({"data": {}}, "no data dir for task 'sst2' and the Hugging Face hub is unreachable"),
        ({"data": {"sst2": "/nonexistent/SST-2"}}, "does not exist"),
        ({"variants": {"kd-x": {"lr": 0.1}}}, "variant 'kd-x' names no method"),
        ({"variants": {"kd-x": {"method": "kdd"}}}, "did you mean"),
        ({"variants": {"omp": {"method": "kd"}}}, "has the name of a method"),
        ({"variants": {"kd x": {"method": "kd"}}}, "a name is letters, digits"),
        ({"variants": {"kd-x": {"method": "kd"}}}, "variant 'kd-x' is not in methods"),
        ({"search": {"label": "x"}}, "'search.label' is set by the grid itself"),
    ],
)
def test_bad_grid_is_one_line_and_runs_nothing(
    cli, tmp_path, tiny_bert, corpus, sst2, change, message
):
    path = write_grid(tmp_path / "grid.yaml", grid(tiny_bert, corpus, sst2, **change))
    res = cli("sweep", path, "--out", "out")
    assert res.code == 2, res.err
    assert message in res.err and len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_variants_are_runs_of_their_method_named_in_the_report(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    """Two settings of kd side by side: each search runs kd with its variant's settings over the
    method's, and the report's rows, held-out losses and mask overlaps are named by variant."""
    data = grid(
        tiny_bert,
        corpus,
        sst2,
        methods=["kd-short", "kd-long", "omp"],
        sparsities=[0.5],
        seeds=[1],
        dense=False,
        variants={
            "kd-short": {"method": "kd", "max_steps": 2},
            "kd-long": {"method": "kd", "lr": 0.01, "init": "random"},
        },
    )
    out = tmp_path / "out"
    res = cli("sweep", write_grid(tmp_path / "grid.yaml", data), "--out", out)
    assert res.code == 0, res.err
    short = artifacts.read_manifest(out / "search/kd-short-s0.5")
    long = artifacts.read_manifest(out / "search/kd-long-s0.5")
    assert (short["method"], short["label"], long["method"], long["label"]) == (
        "kd",
        "kd-short",
        "kd",
        "kd-long",
    )
    saved = {
        name: yaml.safe_load((out / f"search/{name}-s0.5/spec.yaml").read_text())
        for name in ("kd-short", "kd-long")
    }
    # the variant's fields over methods_options' (kd: max_steps 4, save_every 2, lr 0.05)
    assert (saved["kd-short"]["max_steps"], saved["kd-short"]["lr"]) == (2, 0.05)
    assert (saved["kd-long"]["max_steps"], saved["kd-long"]["lr"]) == (4, 0.01)
    assert saved["kd-long"]["options"] == {"init": "random"}
    assert [m["step"] for m in short["masks"]][-1] == 2
    doc = cli("report", out, "--format", "json").json()
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"kd-short", "kd-long", "omp"}
    for name in rows:
        loss = json.loads((out / f"heldout-{name}-s0.5-kd.json").read_text())["loss"]
        assert rows[name]["heldout"] == {"kd": loss}
    pairs = {(o["a"], o["b"]) for o in doc["overlap"]}
    assert ("kd-short s0.5", "kd-long s0.5") in pairs or ("kd-long s0.5", "kd-short s0.5") in pairs
    # a label outside a sweep: the report names the run after it
    run = tmp_path / "labelled"
    res = cli(
        "search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--label", "omp-again",
        "--out", run,
    )  # fmt: skip
    assert res.code == 0, res.err
    rows = cli("report", run, "--format", "json").json()["subnetworks"]
    assert [r["name"] for r in rows] == ["omp-again s0.5"]
    bad = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--label", "a b")
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1 and "label" in bad.err


def test_missing_grid_file_is_one_line(cli, tmp_path):
    res = cli("sweep", "nope.yaml")
    assert res.code == 2 and res.err.strip() == "tamt: error: grid file 'nope.yaml' does not exist"
    assert not (tmp_path / "sweeps").exists()


def test_a_sweep_directory_is_made_whole_or_continued_by_its_index(
    cli, tmp_path, tiny_bert, corpus, sst2
):
    """--print-commands makes the directory its lines write into, with its grid and index; an
    empty folder becomes a sweep; the grid file the user keeps is never written."""
    path = write_grid(tmp_path / "grid.yaml", one_search(tiny_bert, corpus, sst2, heldout=False))
    mine = path.read_text()
    res = cli("sweep", path, "--out", "out", "--print-commands")
    assert res.code == 0, res.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "grid.yaml",
        "sweep.json",
    ]
    assert [c["status"] for c in index(tmp_path / "out")["cells"]] == ["pending"]
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left beside it
    (tmp_path / "empty").mkdir()
    assert cli("sweep", path, "--out", "empty").code == 0
    assert [c["status"] for c in index(tmp_path / "empty")["cells"]] == ["done"]
    assert path.read_text() == mine


def test_report_refuses_what_is_not_a_run(cli, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.json").write_text('{"a": 1}')
    for path in ("folder", "missing", "notes.json"):
        res = cli("report", path)
        assert res.code == 2, res.err
        assert len(res.err.strip().splitlines()) == 1


# -- the report -----------------------------------------------------------------------------


def best_values(run: Path) -> list[float]:
    summary = json.loads((run / "summary.json").read_text())
    split, metric = summary["selected_by"].split("/")
    return [r["best"]["metrics"][split][metric] for r in summary["runs"]]


def test_report_numbers_are_the_runs_summaries(swept, cli):
    _, out = swept
    res = cli("report", out, "--format", "json")
    assert res.code == 0, res.err
    doc = res.json()
    assert (doc["format"], doc["version"]) == ("tamt.report", 1)
    rows = {(r["method"], r["sparsity"]): r for r in doc["rows"]}
    assert set(rows) == {("dense", None), *((m, s) for m in ("kd", "omp") for s in (0.5, 0.7))}
    for (method, sparsity), row in rows.items():
        name = "dense" if method == "dense" else f"{method}-s{sparsity:g}"
        values = [
            v for seed in (1, 2) for v in best_values(out / f"finetune/sst2-{name}-seed{seed}")
        ]
        assert row["values"] == values
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))
        assert row["metric"] == "validation/accuracy" and row["seeds"] == [1, 2]
        dense = rows[("dense", None)]
        if method != "dense":
            assert row["matching"] == (row["mean"] >= dense["mean"] - dense["std"])
            loss = json.loads((out / f"heldout-{name}-kd.json").read_text())["loss"]
            assert row["heldout"] == {"kd": loss}
            manifest = artifacts.read_manifest(out / f"search/{name}")
            assert row["search_seconds"] == manifest["seconds"]
    (corr,) = doc["correlations"]
    from scipy.stats import spearmanr

    subnets = [r for r in doc["rows"] if r["method"] != "dense"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant scores: ρ is undefined
        expected = spearmanr([r["heldout"]["kd"] for r in subnets], [r["mean"] for r in subnets])
    assert corr["n"] == 4
    if math.isnan(expected.statistic):
        assert corr["rho"] is None
    else:
        assert corr["rho"] == pytest.approx(expected.statistic)


def test_report_over_runs_equals_report_over_the_sweep(swept, cli):
    """A mix of run directories and eval results gives the same rows as their sweep."""
    _, out = swept
    whole = cli("report", out, "--format", "json").json()
    parts = [*sorted(out.glob("search/*")), *sorted(out.glob("finetune/*")), *out.glob("heldout-*")]
    res = cli("report", *parts, "--format", "json")
    assert res.code == 0, res.err
    strip = lambda rows: [{k: v for k, v in r.items() if k != "runs"} for r in rows]  # noqa: E731
    assert strip(res.json()["rows"]) == strip(whole["rows"])


def test_mask_overlap_is_the_jaccard_of_kept_weights(swept, cli):
    _, out = swept
    a, b = out / "search/kd-s0.7/masks.safetensors", out / "search/omp-s0.7/masks.safetensors"
    ma, mb = maskfile.load_masks(a), maskfile.load_masks(b)
    both = sum(int((ma[k] & mb[k]).sum()) for k in ma)
    either = sum(int((ma[k] | mb[k]).sum()) for k in ma)
    res = cli("report", a, b, "--format", "json")
    assert res.code == 0, res.err
    (pair,) = res.json()["overlap"]
    assert pair["kept_jaccard"] == pytest.approx(both / either)
    md = cli("report", a, b, "--format", "md").out
    assert f"| {pair['kept_jaccard']:.4f} |" in md
    doc = cli("report", out, "--format", "json").json()
    (in_sweep,) = [o for o in doc["overlap"] if {o["a"], o["b"]} == {"kd s0.7", "omp s0.7"}]
    assert in_sweep["kept_jaccard"] == pytest.approx(both / either)
    (omp,) = [s for s in doc["subnetworks"] if s["name"] == "omp s0.7"]
    assert set(omp["layers"]) == {"0", "1", "pooler", "embedding"}
    assert omp["achieved"] == pytest.approx(0.7, abs=0.01)


def test_report_shows_every_subnetworks_jaccard_with_omp(swept, cli):
    """The main table's column is what each search recorded (its mask against the OMP mask of
    its model and settings); OMP's own is 1."""
    import csv
    import io

    _, out = swept
    doc = cli("report", out, "--format", "json").json()
    for row in doc["rows"]:
        if row["method"] == "dense":
            assert row["omp_jaccard"] is None
            continue
        name = f"{row['method']}-s{row['sparsity']:g}"
        manifest = artifacts.read_manifest(out / "search" / name)
        assert row["omp_jaccard"] == manifest["omp_kept_jaccard"]
        if row["method"] == "omp":
            assert row["omp_jaccard"] == 1.0
    md = cli("report", out, "--format", "md").out
    assert "| search s | kept J. vs OMP |" in md.splitlines()[0]
    rows = list(csv.DictReader(io.StringIO(cli("report", out, "--format", "csv").out)))
    assert {r["method"]: r["omp_kept_jaccard"] for r in rows}["dense"] == ""


def test_report_formats_and_plots(swept, cli, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = swept
    doc = cli("report", out, "--format", "json").json()
    md = cli("report", out, "--format", "md").out
    assert md.startswith("| task | method | sparsity |")
    dense = next(r for r in doc["rows"] if r["method"] == "dense")
    assert f"{dense['mean']:.2f} ± {dense['std']:.2f}" in md
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(cli("report", out, "--format", "csv").out)))
    assert len(rows) == len(doc["rows"]) == 5
    assert float(rows[0]["mean"]) == pytest.approx(doc["rows"][0]["mean"])
    assert "best/validation/accuracy/mean" in rows[0]
    table = cli("report", out)
    assert table.code == 0 and "Spearman" in table.out
    res = cli("report", out, "--plots", tmp_path / "figs")
    assert res.code == 0, res.err
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == [
        "heldout-kd-sst2.png", "layer-sparsity.png", "mask-overlap.png", "score-sst2.png"
    ]  # fmt: skip
    from matplotlib.image import imread

    for name in names:
        data = (tmp_path / "figs" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        height, width, _ = imread(tmp_path / "figs" / name).shape
        assert width >= 600 and height >= 300


def test_plots_without_matplotlib_say_how_to_install_it(swept, cli, tmp_path, monkeypatch):
    import builtins

    _, out = swept
    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    res = cli("report", out, "--plots", tmp_path / "figs")
    assert res.code == 2
    assert "pip install 'tamt-cli[plots]'" in res.err
    assert not (tmp_path / "figs").exists()


def test_glue_average_needs_every_glue_task():
    from tamt_cli import report

    rows = [
        {"task": t, "method": m, "sparsity": s, "mean": v}
        for t, m, s, v in [
            ("sst2", "omp", 0.5, 80.0), ("rte", "omp", 0.5, 60.0), ("sst2", "kd", 0.5, 82.0),
        ]
    ]  # fmt: skip
    assert report.glue_average(rows) == [
        {"method": "omp", "sparsity": 0.5, "tasks": ["rte", "sst2"], "mean": 70.0}
    ]
