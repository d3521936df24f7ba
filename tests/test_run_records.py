"""What runs leave behind: a complete search keeps its masks and metrics but not its resumable
checkpoints (unless --keep-checkpoints says so), and manifests hold paths as they were given,
never made absolute nor naming the user's home folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tamt_cli import artifacts
from tests.tiny import write_sst2

os.environ["TAMT_NO_PROGRESS"] = "1"


def kd_args(tiny_bert, corpus, out, *extra):
    return [
        "search", "-m", "kd", "-s", "0.5", "--model", tiny_bert, "--corpus", corpus,
        "--max-length", "16", "--batch-size", "4", "--max-steps", "8", "--lr", "0.01",
        "--save-every", "2", "--out", out, *extra,
    ]  # fmt: skip


def test_a_complete_search_drops_its_checkpoints_unless_asked_to_keep_them(cli, tiny_bert, corpus):
    res = cli(*kd_args(tiny_bert, corpus, "run"))
    assert res.code == 0, res.err
    run = Path("run")
    manifest = artifacts.read_manifest(run)
    assert manifest["status"] == "complete"
    assert not (run / artifacts.CHECKPOINTS).exists()
    # the mask at every checkpoint, the final mask and the metrics stay
    assert [m["step"] for m in manifest["masks"]] == [2, 4, 6, 8]
    assert all((run / m["file"]).is_file() for m in manifest["masks"])
    assert (run / artifacts.METRICS_LOG).is_file()
    res = cli("search", "--resume", "run")
    assert res.code == 2 and "already complete; there is nothing to resume" in res.err
    res = cli(*kd_args(tiny_bert, corpus, "kept", "--keep-checkpoints", "2"))
    assert res.code == 0, res.err
    kept = [p.name for p in artifacts.checkpoints(Path("kept"))]
    assert kept == ["step-000004", "step-000006"]
    last = artifacts.checkpoints(Path("kept"))[-1]
    assert (last / artifacts.CHECKPOINT_OPTIMIZER).is_file()


def strings(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string in a manifest (but its environment), with where it is."""
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            if key != "environment"
            for found in strings(item, f"{where}.{key}")
        ]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in strings(item, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) else []


def test_manifests_hold_paths_as_given(cli, tiny_bert, tmp_path, monkeypatch):
    """A model, run, subnetwork and data folder given as relative paths stay relative in every
    manifest; one given under the home folder is written ``~/…``."""
    write_sst2(tmp_path / "SST-2", train=8, dev=4)
    model = os.path.relpath(tiny_bert, tmp_path)
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", model, "--out", "run")
    assert res.code == 0, res.err
    assert cli("extract", "run", "--export", "sub").code == 0
    res = cli("finetune", "sub", "--task", "sst2", "--data-dir", "SST-2", "--max-length", "24",
              "--batch-size", "4", "--epochs", "1", "--out", "ft")  # fmt: skip
    assert res.code == 0, res.err
    search = artifacts.read_manifest(Path("run"))
    assert search["model"]["id"] == search["model"]["location"] == model
    export = artifacts.read_manifest(Path("sub"))
    assert export["source_run"] == "run" and export["model"]["location"] == model
    tuned = artifacts.read_manifest(Path("ft"))
    link = tuned["subnetwork"]
    assert (link["given"], link["path"], link["loaded_from"]) == ("sub", "sub", "sub")
    assert link["mask_file"] == "sub/masks.safetensors" and link["source_run"] == "run"
    assert tuned["data"]["data_dir"] == "SST-2"
    manifests = [json.loads(p.read_text()) for p in Path().rglob(artifacts.MANIFEST)]
    assert len(manifests) == 4  # search, export, fine-tuning run and its seed
    for manifest in manifests:
        for where, text in strings(manifest):
            assert str(tmp_path) not in text and not text.startswith("/"), (where, text)
    # under the home folder: ~
    monkeypatch.setenv("HOME", str(Path(tiny_bert).parent))
    res = cli("search", "-m", "omp", "-s", "0.5", "--model", tiny_bert, "--out", "home")
    assert res.code == 0, res.err
    recorded = artifacts.read_manifest(Path("home"))["model"]
    assert recorded["id"] == recorded["location"] == f"~/{Path(tiny_bert).name}"
    assert cli("extract", "home", "--export", "home-sub").code == 0  # ~ is read back
    assert artifacts.recorded_path(Path(tiny_bert).parent) == "~"
    assert artifacts.recorded_path("relative/path") == "relative/path"


def test_a_sweep_made_when_checkpoints_were_kept_is_still_done(cli, tiny_bert, tmp_path):
    """Searches of tamt 0.2 saved keep_checkpoints 1 in their spec; what a run keeps on disk
    is not a setting that changes it, so the sweep does not refuse those cells."""
    import yaml

    grid = {"model": str(tiny_bert), "methods": ["omp"], "sparsities": [0.5], "dense": False,
            "tasks": [], "data": {}, "heldout": None}  # fmt: skip
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert cli("sweep", "grid.yaml", "--out", "out").code == 0
    spec_file = Path("out/search/omp-s0.5") / artifacts.SPEC_FILE
    saved = yaml.safe_load(spec_file.read_text())
    assert saved["keep_checkpoints"] is None
    spec_file.write_text(yaml.safe_dump({**saved, "keep_checkpoints": 1}, sort_keys=False))
    res = cli("sweep", "grid.yaml", "--out", "out", "--dry-run", "--json")
    assert res.code == 0, res.err
    assert [c["status"] for c in res.json()] == ["done"]
