"""Fixtures shared by the whole suite: a tiny random-weight diffusion model and small concept folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DREAMBOOTH = REPO_ROOT.parent / "shared" / "datasets" / "dreambooth" / "dataset"


@pytest.fixture(scope="session", autouse=True)
def _quiet_libraries() -> None:
    from inversion.cli import quiet_libraries

    quiet_libraries()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline folder (real CLIP vocabulary), built once."""
    from inversion.models import write_random_model

    return write_random_model("tiny", tmp_path_factory.mktemp("models") / "tiny")


def write_shape_images(folder: Path, count: int = 4, color=(200, 40, 40), size: int = 80, seed: int = 0) -> Path:
    """A concept folder: a coloured square at varying positions on a gray background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = np.full((size, size, 3), 128, dtype=np.uint8)
        x, y = rng.integers(0, size // 2, size=2)
        pixels[y : y + size // 2, x : x + size // 2] = color
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture
def concept_images(tmp_path) -> Path:
    return write_shape_images(tmp_path / "red-square")
