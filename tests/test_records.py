"""The files tamt reads back, checked by their models (tamt_cli.records): what this tamt and
tamt 0.2 wrote reads back unchanged; the wrong shape is one line naming the file and the field.
The bad-input table of tests/test_faults.py runs the same through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tamt_cli import artifacts, records
from tamt_cli.errors import UserError

ENVIRONMENT = {"tamt": "0.2.0", "python": "3.12.3", "torch": "2.9.1", "plugins": {}}
EVALUATION = {"step": 6, "metrics": {"validation": {"accuracy": 0.75}}, "epoch": 1.0}
LINK = {"given": "runs/omp", "path": "/data/runs/omp", "kind": "search", "method": "omp",
        "label": None, "sparsity": 0.5, "scope": "global", "mask_file": "/data/runs/omp/m",
        "source_run": None, "model": {"id": "bert-base-uncased", "location": "bert-base-uncased"},
        "loaded_from": "bert-base-uncased", "mask_sparsity": 0.5}  # fmt: skip
SEED = {"seed": 1, "folder": "runs/ft/seed-1", "steps": 6, "eval_every": 3, "epochs": 1,
        "train_examples": 48, "train_features": 48, "seconds": 1.2, "eval_seconds": 0.4,
        "best": EVALUATION, "final": EVALUATION, "mask_sparsity": 0.5}  # fmt: skip
REPORT = {
    "overall": {"numel": 2048, "pruned": 1024, "sparsity": 0.5},
    "kinds": {"Q": {"matrices": 2, "numel": 2048, "pruned": 1024, "sparsity": 0.5}},
    "matrices": [
        {"name": "encoder.layer.0.attention.self.query.weight", "kind": "Q", "layer": 0,
         "shape": [32, 32], "numel": 1024, "pruned": 512, "sparsity": 0.5, "target": None}
    ],
    "not_prunable": {},
}  # fmt: skip

#: files as tamt 0.2's writers wrote them (its finetune.py, search.py, sweep.py, evaluate.py,
#: engine.py); the fields newer versions added are absent, some they dropped are there
TAMT_0_2: list[tuple[type[records.Record], dict[str, Any]]] = [
    (records.SearchManifest, {
        "tamt_version": "0.2.0", "kind": "search", "created": "2026-12-01T10:00:00+00:00",
        "status": "complete", "method": "kd", "label": None,
        "method_plugin": {"distribution": "tamt-cli", "version": "0.2.0"},
        "model": {"id": "bert-base-uncased", "location": "bert-base-uncased", "local": False,
                  "class": "BertModel", "model_type": "bert", "layers": 12,
                  "hidden_size": 768, "weights_sha256": "ab" * 32},
        "seed": 1, "sparsity": 0.5, "pattern": None, "scope": "global", "embeddings": False,
        "pooler": True, "notes": {"objective": "kd", "steps": 4, "max_length": 16,
                                  "held_out_split": {"corpus": "/data/text.txt",
                                                     "fraction": 0.05}},
        "masks": [{"file": "masks/step-000002.safetensors", "sparsity": 0.5, "achieved": 0.5,
                   "step": 2, "final": False},
                  {"file": "masks.safetensors", "sparsity": 0.5, "achieved": 0.5, "step": 4,
                   "final": True}],
        "sparsity_report": REPORT, "inputs": {"corpus_blocks_sha256": "cd" * 32},
        "seconds": 12, "environment": ENVIRONMENT,
    }),
    (records.SearchManifest, {
        "tamt_version": "0.2.0", "kind": "subnetwork", "source_run": "runs/omp",
        "source_mask": {"file": "masks.safetensors", "sparsity": 0.5, "step": None,
                        "final": True},
        "method": "omp", "model": {"id": "demo", "weights_sha256": "ab" * 32}, "seed": 1,
        "sparsity": 0.5, "masks": [{"file": "masks.safetensors", "final": True}],
        "sparsity_report": REPORT, "format": "dense", "search_corpus": {},
        "search": {"objective": None}, "commands": ["tamt search -m omp -s 0.5"],
    }),
    (records.FinetuneManifest, {
        "tamt_version": "0.2.0", "kind": "finetune", "task": "sst2", "task_options": {},
        "seeds": [1, 2], "members": ["seed-1", "seed-2"], "subnetwork": LINK,
        "hyperparameters": {"lr": 2e-5, "batch_size": 32, "grad_accum": 1, "epochs": 3,
                            "max_length": 128, "doc_stride": None, "train_size": None,
                            "eval_every": None, "eval_batch_size": 32, "clip": 1.0,
                            "mixed_precision": "no", "optimizer": {"name": "AdamW"}},
        "data": {"data_dir": None, "source": "Hugging Face hub"}, "summary": "summary.json",
        "environment": ENVIRONMENT,
    }),
    (records.FinetuneManifest, {
        "tamt_version": "0.2.0", "kind": "finetune", "task": "sst2", "seed": 1,
        "subnetwork": LINK, "model": {"class": "BertForSequenceClassification",
                                      "model_type": "bert", "num_labels": 2},
        "hyperparameters": {"max_length": 128, "steps": 6, "eval_every": 3},
        "best": EVALUATION, "final": EVALUATION, "seconds": 1.2,
        "notes": ["the pooler is not pruned"],
    }),
    (records.Summary, {
        "out": "runs/ft", "task": "sst2", "subnetwork": "runs/omp", "kind": "search",
        "method": "omp", "label": None, "mask_sparsity": 0.5,
        "selected_by": "validation/accuracy", "seeds": [1, 2],
        "best": {"validation": {"accuracy": {"mean": 0.75, "std": 0.0, "values": [0.75, 0.75]}}},
        "final": {"validation": {"accuracy": {"mean": 0.75, "std": None, "values": [0.75]}}},
        "runs": [SEED, {**SEED, "seed": 2, "folder": "runs/ft/seed-2"}], "notes": [],
    }),
    (records.SeedMetrics, {
        "task": "sst2", "seed": 1, "selected_by": "validation/accuracy", "best": EVALUATION,
        "final": EVALUATION, "about": "best: ...", "evaluations": [EVALUATION, EVALUATION],
    }),
    (records.CheckpointState, {
        "step": 2, "scheduler": {"base_lrs": [0.01], "last_epoch": 2, "lr_lambdas": [None]},
    }),
    (records.HeldOut, {
        "checkpoint": "sweeps/grid/search/kd-s0.5", "subject": "kd mask of bert-base-uncased",
        "objective": "kd", "loss": 0.25, "split": "held-out", "examples": 8,
        "corpus": "/data/text.txt", "max_length": 16, "mask_sparsity": 0.5, "mlm_head": None,
    }),
    (records.SweepIndex, {
        "format": "tamt.sweep", "version": 1, "tamt_version": "0.2.0",
        "updated": "20261201-100000", "out": "sweeps/grid", "grid": {"methods": ["omp"]},
        "counts": {"done": 1},
        "cells": [{"id": "search/omp-s0.5", "kind": "search", "method": "omp",
                   "sparsity": 0.5, "task": None, "seed": None, "objective": None,
                   "needs": None, "path": "search/omp-s0.5", "status": "done", "error": None,
                   "seconds": 1.5, "spec": {"method": "omp", "sparsity": 0.5}}],
    }),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "data"), TAMT_0_2, ids=[f"{m.__name__}-{i}" for i, (m, _) in enumerate(TAMT_0_2)]
)
def test_what_tamt_0_2_wrote_reads_back_unchanged(tmp_path, model, data):
    path = tmp_path / "file.json"
    path.write_text(json.dumps(data))
    assert records.as_dict(records.load(path, model)) == data
    if model is not records.Manifest and issubclass(model, records.Manifest):
        assert records.manifest_model(data) is model
        assert artifacts.read_manifest(_as_manifest(tmp_path, data)) == data


def _as_manifest(folder: Path, data: dict[str, Any]) -> Path:
    (folder / artifacts.MANIFEST).write_text(json.dumps(data))
    return folder


def test_what_this_tamt_writes_reads_back_unchanged(omp_run, tmp_path):
    manifest = json.loads((omp_run / artifacts.MANIFEST).read_text())
    assert artifacts.read_manifest(omp_run) == manifest
    spec = records.load(omp_run / artifacts.SPEC_FILE, records.SavedSpec)
    assert records.as_dict(spec)["method"] == "omp"


def test_fields_of_newer_versions_are_kept(tmp_path):
    data = {**TAMT_0_2[4][1], "made_by_a_newer_tamt": {"x": [1, 2]}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    assert records.as_dict(records.load(path, records.Summary)) == data


def test_a_manifest_of_an_unknown_kind_is_read_as_any_manifest(tmp_path):
    data = {"tamt_version": "9.0.0", "kind": "distilled", "masks": "a newer layout"}
    assert records.manifest_model(data) is records.Manifest
    assert artifacts.read_manifest(_as_manifest(tmp_path, data)) == data


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (records.Summary, [], "it should be an object, not a list"),
        (records.Summary, {"runs": ["x", 1]}, "field 'runs.0' should be an object, not a string"),
        (records.Summary, {"runs": [{"seed": "one"}]},
         "field 'runs.0.seed' should be an integer, not a string"),
        (records.SeedMetrics, {"best": {"step": 1}}, "field 'best.metrics' is missing"),
        (records.HeldOut, {"objective": "kd", "loss": True},
         "field 'loss' should be a number, not a boolean"),
        (records.HeldOut, {"objective": ["kd"], "loss": 1.0},
         "field 'objective' should be a string, not a list"),
        (records.CheckpointState, {"step": 2.5, "scheduler": {}},
         "field 'step' should be an integer, not a number"),
        (records.CheckpointState, {"step": 2, "scheduler": {}, "extra": {"running_loss": [1.0]}},
         "field 'extra.running_loss.1' is missing"),
        (records.SweepIndex, {"cells": [{"status": "done"}]}, "field 'cells.0.id' is missing"),
        (records.SearchManifest, {"tamt_version": "0.3.0", "kind": "search",
                                  "masks": [{"file": "masks.safetensors"}]},
         "field 'model' is missing"),
        (records.SearchManifest, {"tamt_version": "0.3.0", "kind": "search",
                                  "model": {"id": "demo"}, "embeddings": None},
         "field 'embeddings' should be true or false, not null"),
    ],
)  # fmt: skip
def test_the_wrong_shape_names_the_file_and_the_field(tmp_path, model, data, message):
    path = tmp_path / "file.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as caught:
        records.load(path, model)
    assert str(caught.value) == f"'{path}' is damaged or not {model.about}: {message}"


def test_a_long_field_path_is_shortened(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"best": {"k" * 5000: []}}))
    with pytest.raises(UserError) as caught:
        records.load(path, records.Summary)
    assert len(str(caught.value).replace(str(path), "")) < 200
    assert "field 'best.kkkk" in str(caught.value) and "k…k" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("state.json", b"", "is damaged: it is empty"),
        ("state.json", b"  \n", "is damaged: it is empty"),
        ("state.json", b'{"step": 2, "sched', "is damaged: it is not readable JSON (Unterminated"),
        ("state.json", b"\xff\xfe{}", "is damaged: it is not UTF-8 text (invalid start byte)"),
        ("spec.yaml", b"method: [omp\n", "is damaged: it is not readable YAML (line 2)"),
    ],
)
def test_what_does_not_parse_names_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        records.load(path, records.CheckpointState)
    assert str(caught.value).startswith(f"'{path}' {message}")
    assert "\n" not in str(caught.value)


def test_a_folder_where_a_file_should_be_is_unreadable(tmp_path):
    (tmp_path / "summary.json").mkdir()
    with pytest.raises(UserError, match=r"summary\.json' cannot be read: Is a directory"):
        records.load(tmp_path / "summary.json", records.Summary)


def test_a_log_line_of_the_wrong_shape_names_its_line(tmp_path):
    path = tmp_path / artifacts.METRICS_LOG
    with pytest.raises(UserError) as caught:
        records.check(path, {"step": "two"}, records.LogRow, line=3)
    assert str(caught.value) == (
        f"line 3 of '{path}' is damaged or not a line of a tamt metrics log: field 'step' "
        "should be an integer, not a string"
    )
