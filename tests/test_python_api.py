"""The Python API (`import tamt_cli as tamt; tamt.search(...)`) on a tiny BERT: the same runs,
checks and defaults as the commands, typed results, and loaded models taken where a model id is."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

import tamt_cli as tamt
from tamt_cli import specs
from tamt_cli.errors import UserError
from tests.tiny import write_sst2

os.environ["TAMT_NO_PROGRESS"] = "1"

pytestmark = pytest.mark.usefixtures("one_thread")

#: a mask-training search of a few steps on the tiny corpus
KD = {"method": "kd", "sparsity": 0.5, "max_length": 16, "batch_size": 4, "max_steps": 3}
#: a fine-tuning run of a few steps
SMALL = {"task": "sst2", "max_length": 24, "batch_size": 8, "epochs": 1, "lr": 1e-3}


def one_line(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("glue") / "SST-2")


@pytest.fixture(scope="module")
def omp(tmp_path_factory, tiny_bert) -> tamt.SearchResult:
    out = tmp_path_factory.mktemp("api") / "omp"
    return tamt.search(model=tiny_bert, method="omp", sparsity=0.5, out=out, quiet=True)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- the package ------------------------------------------------------------------------------


def test_importing_tamt_loads_no_heavy_library_and_the_commands_are_callable_modules():
    code = (
        "import inspect, sys\n"
        "import tamt_cli as tamt\n"
        "sig = inspect.signature(tamt.search)\n"
        "assert 'method' in sig.parameters and 'quiet' in sig.parameters, sig\n"
        "assert tamt.SearchResult.__name__ == 'SearchResult'\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        # a command module imported directly stays a module, and callable
        "import tamt_cli.finetune\n"
        "from tamt_cli import evaluate as evaluating\n"
        "for name in ('search', 'extract', 'finetune', 'evaluate'):\n"
        "    module = getattr(tamt, name)\n"
        "    assert callable(module) and inspect.ismodule(module), name\n"
        "assert evaluating.run is tamt.evaluate.run\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_each_function_takes_its_spec_fields_with_the_specs_defaults():
    for function, cls in (
        (tamt.search, specs.SearchSpec),
        (tamt.extract, specs.ExtractSpec),
        (tamt.finetune, specs.FinetuneSpec),
        (tamt.evaluate, specs.EvalSpec),
    ):
        parameters = inspect.signature(function).parameters
        for name, info in cls.model_fields.items():
            assert name in parameters, (function, name)
            default = parameters[name].default
            if name in {"run", "subnetwork", "checkpoint"}:  # the subject: first, positional
                assert next(iter(parameters)) == name and default is None
            elif info.is_required():  # a spec= file may give it
                assert default is inspect.Parameter.empty
            else:
                assert default == info.get_default(call_default_factory=True), (name, default)
        assert parameters["quiet"].default is False


# -- search, extract, finetune, evaluate --------------------------------------------------------


def test_search_writes_the_run_the_command_writes(omp, cli, tiny_bert):
    assert isinstance(omp, tamt.SearchResult)
    assert omp.method == "omp" and omp.model == str(tiny_bert)
    assert omp.sparsity == pytest.approx(0.5, abs=1e-3)
    assert set(omp.by_kind) >= {"Q", "K", "V", "AO", "I", "O"}
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "cli", "--json")
    assert res.code == 0, res.err
    assert res.json()["report"] == omp.report
    assert omp.raw == {**res.json(), "run": str(omp.run)}
    for name in ("spec.yaml", "manifest.json", "masks.safetensors"):
        assert (omp.run / name).is_file()
    ours = (omp.run / "spec.yaml").read_text().replace(f"out: {omp.run}", "out: cli")
    assert ours == Path("cli/spec.yaml").read_text()


def test_kd_search_extract_export_and_evaluate(here, tiny_bert, corpus, capfd):
    run = tamt.search(model=str(tiny_bert), corpus=corpus, **KD)
    err = capfd.readouterr()
    assert err.out == ""  # stdout is the notebook's: progress goes to stderr
    assert "kd mask training" in err.err
    assert run.run.parent == Path("runs") and run.run.name.startswith("kd-s0.5-")
    manifest = json.loads((run.run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["notes"]["steps"] == 3

    sub = tamt.extract(run, export="sub", quiet=True)
    assert isinstance(sub, tamt.ExtractResult)
    assert sub.export == Path("sub") and sub.format == "dense" and sub.step == 3
    assert sub.sparsity == pytest.approx(0.5, abs=1e-3)
    from transformers import AutoModel

    weight = AutoModel.from_pretrained("sub").encoder.layer[0].attention.self.query.weight
    assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)

    scored = tamt.evaluate(sub, objective="kd", corpus=corpus, max_length=16, eval_blocks=4)
    assert isinstance(scored, tamt.EvalResult)
    assert scored.objective == "kd" and scored.task is None
    assert scored.loss == scored.metrics["loss"] > 0
    assert scored.mask_sparsity == pytest.approx(0.5, abs=1e-3)
    assert capfd.readouterr().out == ""


def test_commands_of_one_process_may_each_choose_their_precision(here, tiny_bert, corpus, sst2):
    """Accelerate's state is one per process: a bf16 search followed by an fp32 fine-tuning in
    one notebook runs both, each at its own precision."""
    run = tamt.search(model=str(tiny_bert), corpus=corpus, mixed_precision="bf16", **KD)
    assert json.loads((run.run / "manifest.json").read_text())["status"] == "complete"
    sub = tamt.extract(run, export="sub", quiet=True)
    tuned = tamt.finetune(sub, data_dir=sst2, seeds=[1], out="ft", quiet=True, **SMALL)
    assert 0 <= tuned.seeds[1].best["validation/accuracy"] <= 100
    spec = json.loads(Path("ft/summary.json").read_text())
    assert spec["runs"][0]["seed"] == 1


def test_finetune_and_evaluate_give_scores_per_seed_and_over_seeds(here, omp, sst2):
    tuned = tamt.finetune(omp, data_dir=sst2, seeds=[1, 2], out="ft", quiet=True, **SMALL)
    assert isinstance(tuned, tamt.FinetuneResult)
    assert tuned.run == Path("ft") and tuned.method == "omp" and tuned.task == "sst2"
    assert tuned.selected_by == "validation/accuracy"
    assert set(tuned.seeds) == {1, 2}
    values = [tuned.seeds[seed].best["validation/accuracy"] for seed in (1, 2)]
    score = tuned.best["validation/accuracy"]
    assert score.values == tuple(values)
    assert tuned.mean == pytest.approx(sum(values) / 2) and tuned.std is not None
    summary = json.loads(Path("ft/summary.json").read_text())
    assert summary == json.loads(json.dumps(tuned.raw))

    one = tamt.finetune(omp.run, data_dir=sst2, seeds=3, out="ft3", quiet=True, **SMALL)
    assert list(one.seeds) == [3] and one.std is None

    scored = tamt.evaluate(tuned.seeds[1].folder, task="sst2", data_dir=sst2, quiet=True)
    assert scored.task == "sst2" and scored.examples == 24
    assert scored.metrics["accuracy"] == pytest.approx(tuned.seeds[1].final["validation/accuracy"])
    assert scored.mask_sparsity == pytest.approx(0.5, abs=1e-3)


def test_a_spec_file_is_read_first_and_the_arguments_win(here, tiny_bert):
    Path("s.yaml").write_text(f"method: omp\nsparsity: 0.3\nmodel: {tiny_bert}\n")
    run = tamt.search(spec="s.yaml", sparsity=0.6, out="r", quiet=True)
    assert run.sparsity == pytest.approx(0.6, abs=1e-3) and run.method == "omp"


# -- errors ---------------------------------------------------------------------------------


def test_a_bad_argument_raises_the_commands_one_line_error(here, tiny_bert, cli):
    message = one_line(tamt.search, model=tiny_bert, method="omp", sparsity=1.5)
    res = cli("search", "-m", "omp", "-s", "1.5", "--model", tiny_bert)
    assert res.err.strip() == f"tamt: error: {message}"
    assert "unknown method 'ompp'; did you mean 'omp'?" in one_line(
        tamt.search, model=tiny_bert, method="ompp", sparsity=0.5
    )
    assert one_line(tamt.search, model=tiny_bert, metod="omp", sparsity=0.5).startswith(
        "unknown tamt.search argument 'metod'; did you mean 'method'?"
    )
    assert "did you mean 'quiet'?" in one_line(tamt.search, method="omp", quite=True)
    assert one_line(tamt.search, sparsity=0.5) == (
        "tamt.search needs method= (or a spec= file that gives 'method')"
    )
    assert "needs task=" in one_line(tamt.finetune, tiny_bert)
    assert one_line(tamt.evaluate, tiny_bert) == (
        "tamt.evaluate needs either task=NAME or objective=mlm|kd|mlm-kd"
    )
    assert "seeds" in one_line(tamt.finetune, tiny_bert, task="sst2", seeds=[1, 1])
    assert "model= takes a path or a hub id" in one_line(
        tamt.search, model=object(), method="omp", sparsity=0.5
    )
    assert "tokenizer= goes with a loaded model" in one_line(
        tamt.search, model=tiny_bert, tokenizer=object(), method="omp", sparsity=0.5
    )
    assert not (here / "runs").exists()


def test_an_extract_without_an_export_is_no_subnetwork_to_finetune(here, omp):
    mask = tamt.extract(omp, quiet=True)
    assert mask.export is None and mask.mask == omp.run / "masks.safetensors"
    assert "extract without an export" in one_line(tamt.finetune, mask, task="sst2")


def test_the_callers_warning_filters_and_level_are_left_as_they_were(here, tiny_bert):
    from tamt_cli import verbosity

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        before = list(warnings.filters)
        tamt.search(model=tiny_bert, method="random", sparsity=0.5, out="q", quiet=True)
        assert warnings.filters == before
    assert verbosity.level() == verbosity.NORMAL


# -- loaded models ----------------------------------------------------------------------------


@pytest.fixture
def loaded(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(tiny_bert)), AutoTokenizer.from_pretrained(str(tiny_bert))


def leftovers(root: Path, text: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        readable = path.is_file() and path.suffix in {".json", ".yaml", ".md"}
        if readable and text in path.read_text(encoding="utf-8"):
            found.append(str(path))
    return found


def test_a_loaded_model_is_searched_and_its_run_keeps_a_copy(here, loaded, corpus, monkeypatch):
    temporary = here / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    model, tokenizer = loaded
    assert "tokenizer=" in one_line(tamt.search, model=model, method="omp", sparsity=0.5)
    with monkeypatch.context() as patched:  # the arguments are checked before it is saved
        patched.setattr(model, "save_pretrained", lambda *a, **k: pytest.fail("saved"))
        assert "sparsity" in one_line(
            tamt.search, model=model, tokenizer=tokenizer, method="omp", sparsity=2.0
        )

    run = tamt.search(model=model, tokenizer=tokenizer, corpus=corpus, out="kd", quiet=True, **KD)
    assert list(temporary.iterdir()) == []  # moved into the run
    assert run.model == "kd/model" and Path("kd/model/config.json").is_file()
    manifest = json.loads(Path("kd/manifest.json").read_text())
    assert manifest["model"]["id"] == "kd/model"
    assert manifest["in_memory"]["model"]["class"] == "BertModel"
    assert manifest["in_memory"]["model"]["recorded_as"] == "kd/model"
    assert "model: kd/model" in Path("kd/spec.yaml").read_text()
    assert leftovers(here / "kd", str(temporary)) == []

    from tamt_cli import models

    assert manifest["model"]["weights_sha256"] == models.weights_hash(model)
    sub = tamt.extract(run, export="sub", quiet=True)  # the copy is what extract loads
    assert json.loads((sub.export / "manifest.json").read_text())["model"]["id"] == "kd/model"

    omp = tamt.search(model=model, tokenizer=tokenizer, method="omp", sparsity=0.5, quiet=True)
    assert (omp.run / "model" / "model.safetensors").is_file()
    assert list(temporary.iterdir()) == []


def test_a_loaded_model_is_finetuned_and_scored_as_an_in_memory_model(
    here, loaded, sst2, monkeypatch
):
    temporary = here / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    model, tokenizer = loaded
    tuned = tamt.finetune(
        model, tokenizer=tokenizer, data_dir=sst2, seeds=1, out="ft", quiet=True, **SMALL
    )
    assert tuned.subnetwork == "<in-memory BertModel>" and tuned.method is None
    assert list(temporary.iterdir()) == []
    assert leftovers(here / "ft", str(temporary)) == []
    manifest = json.loads(Path("ft/manifest.json").read_text())
    assert manifest["in_memory"]["subnetwork"]["recorded_as"] == "<in-memory BertModel>"
    assert manifest["subnetwork"]["given"] == "<in-memory BertModel>"

    from transformers import AutoModelForSequenceClassification

    tuned_model = AutoModelForSequenceClassification.from_pretrained("ft/seed-1")
    message = one_line(
        tamt.evaluate, tuned_model, tokenizer=tokenizer, task="sst2", data_dir=sst2, quiet=True
    )  # the tiny model has 64 positions; the error names the model as it was given
    assert "<in-memory BertForSequenceClassification>" in message and str(temporary) not in message
    scored = tamt.evaluate(
        tuned_model, tokenizer=tokenizer, task="sst2", data_dir=sst2, max_length=24, quiet=True
    )
    assert scored.checkpoint == "<in-memory BertForSequenceClassification>"
    assert scored.metrics["accuracy"] == pytest.approx(tuned.seeds[1].final["validation/accuracy"])
    assert list(temporary.iterdir()) == []


def test_an_interrupted_search_of_a_loaded_model_keeps_its_copy_and_resumes(
    here, loaded, corpus, monkeypatch
):
    from tamt_cli import maskfile
    from tamt_cli.errors import Interrupted
    from tests.tiny import interrupt_mask_training

    model, tokenizer = loaded
    settings = {**KD, "max_steps": 4, "save_every": 1, "corpus": corpus, "quiet": True}
    whole = tamt.search(model=model, tokenizer=tokenizer, out="whole", **settings)
    resume_normally = interrupt_mask_training(monkeypatch, 2)
    with pytest.raises(Interrupted, match="resume with: tamt search --resume part"):
        tamt.search(model=model, tokenizer=tokenizer, out="part", **settings)
    resume_normally()
    assert Path("part/model/model.safetensors").is_file()
    assert "model: part/model" in Path("part/spec.yaml").read_text()
    assert "resume= continues a run" in one_line(
        tamt.search, resume="part", model=model, tokenizer=tokenizer
    )
    part = tamt.search(resume=Path("part"), quiet=True)
    assert part.run == Path("part") and part.model == "part/model"
    ours, theirs = (maskfile.load_masks(r.run / "masks.safetensors") for r in (part, whole))
    assert all(bool((ours[k] == theirs[k]).all()) for k in ours)


def test_the_python_in_docs_python_md_parses_and_names_real_arguments():
    import ast
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    calls = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "tamt":
                parameters = inspect.signature(getattr(tamt, func.attr)).parameters
                calls += 1
            elif getattr(func, "id", None) == "dict":  # the fine-tuning settings
                parameters = inspect.signature(tamt.finetune).parameters
            else:
                continue
            for keyword in node.keywords:
                assert keyword.arg is None or keyword.arg in parameters, keyword.arg
    assert calls >= 5
