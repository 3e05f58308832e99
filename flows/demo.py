"""``sstar demo``: the main job on embedded defaults — no downloads, a few minutes on 2 CPU cores.

It writes a small sample catalog of generated images, builds a tiny random-weight diffusion model
and a tiny random-weight CLIP, and runs :func:`flows.learn.learn_catalog` on Prefect's local
ephemeral server. Random weights prove the pipeline end to end, not image quality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: (concept id, concept.json, shape, RGB colour)
SAMPLE_CONCEPTS: tuple[tuple[str, dict, str, tuple[int, int, int]], ...] = (
    ("red-ball", {"initializer": "ball", "class": "ball"}, "circle", (220, 40, 40)),
    ("blue-box", {"initializer": "box", "class": "box", "vectors": 2}, "square", (40, 70, 220)),
    ("green-tent", {"initializer": "tent", "class": "tent"}, "triangle", (40, 180, 70)),
    ("stripes-style", {"initializer": "stripes", "property": "style"}, "stripes", (230, 160, 30)),
)


def _draw(shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 128) -> Image.Image:
    background = tuple(int(x) for x in rng.integers(90, 200, size=3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        for x in range(0, size, 16):
            draw.rectangle((x, 0, x + 7, size), fill=colour)
    return image


def write_sample_catalog(folder: Path, images_per_concept: int = 4, seed: int = 0) -> Path:
    """Write the sample catalog: one folder per concept with PNGs and a ``concept.json``."""
    rng = np.random.default_rng(seed)
    for concept_id, meta, shape, colour in SAMPLE_CONCEPTS:
        concept = folder / concept_id
        concept.mkdir(parents=True, exist_ok=True)
        (concept / "concept.json").write_text(json.dumps(meta, indent=2))
        for i in range(images_per_concept):
            _draw(shape, colour, rng).save(concept / f"{i:02d}.png")
    return folder


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def model(self) -> Path:
        return self.root / "models" / "tiny-sd"

    @property
    def clip(self) -> Path:
        return self.root / "models" / "tiny-clip.pt"

    @property
    def out(self) -> Path:
        return self.root / "out"


def prepare_demo(root: Path) -> DemoPaths:
    """Write the sample catalog and the tiny models (kept if already there)."""
    from inversion.clip import write_tiny_clip
    from inversion.models import write_random_model

    paths = DemoPaths(root.resolve())
    if not paths.catalog.is_dir():
        write_sample_catalog(paths.catalog)
    if not (paths.model / "model_index.json").is_file():
        write_random_model("tiny", paths.model)
    if not paths.clip.is_file():
        paths.clip.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_clip(paths.clip)
    return paths
