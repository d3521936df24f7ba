"""The mask file format, atomic writes, staged run directories and manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tamt_cli import artifacts, files, maskfile
from tamt_cli.errors import UserError

ODD_SHAPES = {
    "a.weight": (3, 5),
    "encoder.layer.0.attention.self.query.weight": (7,),
    "one": (1, 1),
    "odd": (13, 17),
}


def random_masks(shapes: dict[str, tuple[int, ...]], seed: int, p: float = 0.5):
    torch.manual_seed(seed)
    return {name: torch.rand(shape) < p for name, shape in shapes.items()}


def bert_shapes(hidden: int = 256, layers: int = 2, vocab: int = 3000) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {"embeddings.word_embeddings.weight": (vocab, hidden)}
    for i in range(layers):
        prefix = f"encoder.layer.{i}."
        for sub in ("query", "key", "value"):
            shapes[f"{prefix}attention.self.{sub}.weight"] = (hidden, hidden)
        shapes[f"{prefix}attention.output.dense.weight"] = (hidden, hidden)
        shapes[f"{prefix}intermediate.dense.weight"] = (4 * hidden, hidden)
        shapes[f"{prefix}output.dense.weight"] = (hidden, 4 * hidden)
    shapes["pooler.dense.weight"] = (hidden, hidden)
    return shapes


def assert_same_masks(got, want):
    assert set(got) == set(want)
    for name, mask in want.items():
        assert got[name].dtype == torch.bool, name
        assert tuple(got[name].shape) == tuple(mask.shape), name
        assert torch.equal(got[name], torch.as_tensor(mask, dtype=torch.bool)), name


# -- mask files --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_mask_file_round_trip_is_bit_exact(tmp_path, seed, p):
    masks = random_masks(ODD_SHAPES, seed, p)
    path = tmp_path / "masks.safetensors"
    maskfile.save_masks(path, masks)
    loaded = maskfile.load_masks(path)
    assert set(loaded) == set(masks)
    assert_same_masks(loaded, masks)


def test_encode_masks_bytes_load_back_and_accept_numpy(tmp_path):
    masks = random_masks(ODD_SHAPES, 3)
    data = maskfile.encode_masks(masks)
    assert isinstance(data, bytes)
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    assert_same_masks(maskfile.load_masks(path), masks)
    # numpy input encodes the same masks (bytes may differ: safetensors does not fix the order
    # of metadata keys in the header)
    as_numpy = {n: m.numpy() for n, m in masks.items()}
    path_np = tmp_path / "np.safetensors"
    path_np.write_bytes(maskfile.encode_masks(as_numpy))
    assert_same_masks(maskfile.load_masks(path_np), masks)


def test_mask_file_is_readable_with_plain_safetensors_and_numpy(tmp_path):
    from safetensors import safe_open

    masks = random_masks(ODD_SHAPES, 4)
    path = tmp_path / "m.safetensors"
    maskfile.save_masks(path, masks, metadata={"method": "omp"})
    with safe_open(str(path), framework="np") as fh:
        meta = fh.metadata()
        assert meta["format"] == "tamt.masks"
        assert meta["version"] == maskfile.MASK_FORMAT_VERSION
        assert meta["method"] == "omp"
        shapes = json.loads(meta["shapes"])
        for name, mask in masks.items():
            assert shapes[name] == list(mask.shape)
            packed = fh.get_tensor(name)
            assert packed.dtype == np.uint8
            assert packed.size == (mask.numel() + 7) // 8
            bits = np.unpackbits(packed, bitorder="little")[: mask.numel()]
            assert np.array_equal(bits.astype(bool).reshape(mask.shape), mask.numpy())


def test_mask_file_size_is_about_one_bit_per_weight(tmp_path):
    shapes = bert_shapes()
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total >= 1_000_000
    masks = random_masks(shapes, 5, 0.3)
    path = tmp_path / "big.safetensors"
    maskfile.save_masks(path, masks)
    bits_per_weight = path.stat().st_size * 8 / total
    assert bits_per_weight <= 1.05
    assert_same_masks(maskfile.load_masks(path), masks)


def test_load_masks_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist") as e:
        maskfile.load_masks(tmp_path / "nope.safetensors")
    assert "\n" not in str(e.value)


def test_load_masks_directory_is_not_a_file(tmp_path):
    with pytest.raises(UserError):
        maskfile.load_masks(tmp_path)


@pytest.mark.parametrize("size", [0, 3, 8, 100, 4096])
def test_load_masks_random_bytes(tmp_path, size):
    rng = np.random.default_rng(size)
    path = tmp_path / "junk.safetensors"
    path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    with pytest.raises(UserError) as e:
        maskfile.load_masks(path)
    assert "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_load_masks_truncated_file(tmp_path):
    data = maskfile.encode_masks(random_masks(ODD_SHAPES, 6))
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(UserError) as e:
        maskfile.load_masks(path)
    assert "\n" not in str(e.value)


def test_load_masks_plain_safetensors_without_header(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros((2, 3), dtype=np.float32)}, str(path))
    with pytest.raises(UserError, match="not a tamt mask file") as e:
        maskfile.load_masks(path)
    assert "\n" not in str(e.value)

    other = tmp_path / "meta.safetensors"
    save_file({"w": np.zeros(3, dtype=np.uint8)}, str(other), metadata={"format": "pt"})
    with pytest.raises(UserError, match="not a tamt mask file"):
        maskfile.load_masks(other)


@pytest.mark.parametrize("version", ["2", "0", ""])
def test_load_masks_other_version(tmp_path, version):
    path = tmp_path / "v.safetensors"
    maskfile.save_masks(path, random_masks(ODD_SHAPES, 7), metadata={"version": version})
    with pytest.raises(UserError, match="version") as e:
        maskfile.load_masks(path)
    assert "\n" not in str(e.value)


def test_load_masks_without_shapes_metadata(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "noshapes.safetensors"
    save_file(
        {"w": np.zeros(2, dtype=np.uint8)},
        str(path),
        metadata={"format": maskfile.MASK_FORMAT, "version": maskfile.MASK_FORMAT_VERSION},
    )
    with pytest.raises(UserError) as e:
        maskfile.load_masks(path)
    assert "\n" not in str(e.value)


# -- atomic writes -----------------------------------------------------------------------------


def test_write_bytes_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "file.bin"
    files.write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    files.write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_write_bytes_uses_normal_permissions(tmp_path):
    path = tmp_path / "perm.bin"
    files.write_bytes(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


class _FailingReplaceOS:
    """Stands in for the ``os`` module inside tamt_cli.files with a failing os.replace."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        raise OSError("disk on fire")


def test_write_bytes_is_atomic_when_replace_fails(tmp_path, monkeypatch):
    path = tmp_path / "masks.safetensors"
    path.write_bytes(b"old content")
    monkeypatch.setattr(files, "os", _FailingReplaceOS())
    with pytest.raises(OSError, match="disk on fire"):
        files.write_bytes(path, b"new content that never lands")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["masks.safetensors"]


def test_save_masks_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "masks.safetensors"
    old = random_masks(ODD_SHAPES, 8)
    maskfile.save_masks(path, old)
    before = path.read_bytes()
    monkeypatch.setattr(files, "os", _FailingReplaceOS())
    with pytest.raises(OSError):
        maskfile.save_masks(path, random_masks(ODD_SHAPES, 9))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_same_masks(maskfile.load_masks(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["masks.safetensors"]


def test_write_json_and_text(tmp_path):
    files.write_json(tmp_path / "x.json", {"a": [1, 2], "b": "é"})
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == {
        "a": [1, 2],
        "b": "é",
    }
    files.write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_bytes() == "héllo".encode()


# -- staged directories ------------------------------------------------------------------------


def _leftovers(parent: Path, final_name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != final_name)


def test_staged_dir_success(tmp_path):
    final = tmp_path / "runs" / "run-1"
    with files.staged_dir(final) as stage:
        assert stage != final
        assert stage.parent == final.parent
        assert not final.exists()
        (stage / "a.txt").write_text("hello")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.bin").write_bytes(b"\x00\x01")
    assert final.is_dir()
    assert (final / "a.txt").read_text() == "hello"
    assert (final / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(final.parent, "run-1") == []


def test_staged_dir_failure_leaves_nothing(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"), files.staged_dir(final) as stage:
        (stage / "half.txt").write_text("partial")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))


def test_a_new_stage_is_never_taken_for_a_dead_processs(tmp_path, monkeypatch):
    """Another process cleaning the folder in the instant a stage's lock file exists but is not
    yet held (two fine-tunings of one sweep starting at once) leaves the new stage alone."""
    real = files.try_lock
    cleaned: list = []

    def another_process_cleans_first(path):
        if not cleaned:  # the lock file made, not yet locked: what another process may see
            cleaned.append(None)
            Path(path).touch()
            cleaned[0] = files.clean_stale(tmp_path)
        return real(path)

    monkeypatch.setattr(files, "try_lock", another_process_cleans_first)
    with files.staged_dir(tmp_path / "run") as stage:
        assert stage.is_dir() and stage.name.endswith(files.PARTIAL_SUFFIX)
        (stage / "a.txt").write_text("kept")
    assert cleaned == [[]]
    assert (tmp_path / "run" / "a.txt").read_text() == "kept"
    assert _leftovers(tmp_path, "run") == []


def test_staged_dir_existing_without_overwrite(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "keep.txt").write_text("precious")
    entered = False
    with pytest.raises(UserError, match="already exists"), files.staged_dir(final):
        entered = True
    assert not entered
    assert (final / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in final.iterdir()) == ["keep.txt"]
    assert _leftovers(tmp_path, "run") == []


def test_staged_dir_existing_file_without_overwrite(tmp_path):
    final = tmp_path / "run"
    final.write_text("a file")
    with pytest.raises(UserError), files.staged_dir(final):
        pass
    assert final.read_text() == "a file"


def test_staged_dir_overwrite_replaces(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with files.staged_dir(final, replace=True) as stage:
        assert (final / "old.txt").exists()  # old run untouched while the new one is built
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert (final / "new.txt").read_text() == "new"
    assert _leftovers(tmp_path, "run") == []


def test_staged_dir_overwrite_failure_keeps_old(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with (
        pytest.raises(KeyError),
        files.staged_dir(final, replace=True) as stage,
    ):
        (stage / "new.txt").write_text("new")
        raise KeyError("x")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path, "run") == []


def test_staged_dir_files_get_normal_permissions(tmp_path):
    final = tmp_path / "run"
    with files.staged_dir(final) as stage:
        private = stage / "private.bin"
        private.write_bytes(b"x")
        os.chmod(private, 0o600)
    umask = os.umask(0)
    os.umask(umask)
    assert (final / "private.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask


# -- manifests ---------------------------------------------------------------------------------


def test_read_manifest_ok(tmp_path):
    manifest = {"tamt_version": "0.1.0", "kind": "search", "masks": []}
    files.write_json(tmp_path / artifacts.MANIFEST, manifest)
    assert artifacts.read_manifest(tmp_path) == manifest


def test_read_manifest_not_a_directory(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        artifacts.read_manifest(tmp_path / "missing")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        artifacts.read_manifest(a_file)


def test_read_manifest_without_manifest(tmp_path):
    with pytest.raises(UserError, match=r"no manifest\.json"):
        artifacts.read_manifest(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"tamt_version": "0.1.0"'],
)
def test_read_manifest_corrupt(tmp_path, content):
    (tmp_path / artifacts.MANIFEST).write_bytes(content)
    with pytest.raises(UserError, match="corrupt") as e:
        artifacts.read_manifest(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("obj", [[1, 2], "text", {"kind": "search"}])
def test_read_manifest_not_a_tamt_manifest(tmp_path, obj):
    (tmp_path / artifacts.MANIFEST).write_text(json.dumps(obj))
    with pytest.raises(UserError, match="not a tamt manifest"):
        artifacts.read_manifest(tmp_path)
