"""A model's identity is its content (issue 11): moving it changes nothing, new weights at the same
path change it, and weight files are not re-hashed while their size and mtime stay the same."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from inversion.errors import InputError
from inversion.model import fingerprint
from inversion.model.fingerprint import model_fingerprint


@pytest.fixture
def model(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny"))


def test_the_fingerprint_follows_content_not_path(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    first = model_fingerprint(model, cache_file=cache)
    assert first.startswith("folder:") and len(first) == len("folder:") + 64
    moved = Path(shutil.move(model, tmp_path / "elsewhere"))
    assert model_fingerprint(moved, cache_file=cache) == first
    (moved / "README.md").write_text("not read by the loader")
    assert model_fingerprint(moved, cache_file=cache) == first
    weights = moved / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_fingerprint(moved, cache_file=cache) != first
    config = moved / "scheduler" / "scheduler_config.json"
    before = model_fingerprint(moved, cache_file=cache)
    config.write_text(config.read_text().replace("epsilon", "v_prediction"))
    assert model_fingerprint(moved, cache_file=cache) != before


def test_weight_hashes_are_cached_by_size_and_mtime(model: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache.json"
    expected = model_fingerprint(model, cache_file=cache)
    hashed: list[str] = []
    real = fingerprint._file_sha256
    monkeypatch.setattr(fingerprint, "_file_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    assert model_fingerprint(model, cache_file=cache) == expected
    assert not [name for name in hashed if name.endswith(".safetensors")], hashed
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: hashed again
    hashed.clear()
    assert model_fingerprint(model, cache_file=cache) == expected
    assert [name for name in hashed if name.endswith(".safetensors")] == ["diffusion_pytorch_model.safetensors"]
    cache.write_text("{broken")  # a damaged cache is only a cache
    assert model_fingerprint(model, cache_file=cache) == expected


def test_hub_ids_and_missing_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_fingerprint("org/model") == "hub:org/model"
    ref = tmp_path / "hub" / "models--org--model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123abcd" * 5)
    assert model_fingerprint("org/model") == "hub:org/model@" + "0123abcd" * 5
    with pytest.raises(InputError, match="no model_index.json"):
        model_fingerprint(tmp_path / "empty")
