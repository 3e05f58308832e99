"""``sstar demo``: the main job on embedded defaults — no downloads, a few minutes on 2 CPU cores.

By default the demo shows the method working. Its catalog is the toy world's held-out concepts
(:mod:`toyworld.scenes`): shapes whose hue lies half-way between two of the world's hue words, so
the best caption (``a photo of a large orange circle on a white background``) can only name a
neighbouring hue, while a learned word can draw the right one. The model and the scoring CLIP are
the world's (:mod:`toyworld`), and each concept's best caption is its words-only baseline: the
report's lifts are positive because the learned word draws the right hue and the caption does not.

``--random-models`` is the plumbing-only demo: generated shapes on a tiny random-weight diffusion
model and CLIP, built locally. It proves the pipeline end to end, not image quality (lift ≈ 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from inversion.errors import InputError
from tasks.settings import EvalSettings, LearnSettings, RunSettings

__all__ = ["Demo", "prepare_demo", "write_sample_catalog", "write_world_catalog"]

#: The toy world's settings, chosen by measurement (README "The demo"): enough steps for every
#: concept's hue to settle (the world's time to quality is 50–150 steps at lr 5e-3), few enough for the
#: whole demo to stay well under 5 minutes on 2 CPU cores. Only "a photo of a {}" is evaluated: the
#: world's grammar has no restyling or scenes, so other prompts would measure the world, not the word.
WORLD_STEPS = 200
WORLD_PROMPTS = ("a photo of a {}",)
WORLD_SAMPLES = 6
WORLD_RENDER_STEPS = 15
WORLD_GUIDANCE = 3.0
WORLD_IMAGES_PER_CONCEPT = 4
#: torch intra-op threads for the world demo: its tensors are tiny (8×8 latents), so a second thread
#: buys little on a quiet machine and costs several times over on a busy one (threads spin-wait
#: for a preempted partner; measured in README "The demo")
WORLD_TORCH_THREADS = 1
RANDOM_STEPS = 60

#: (concept id, concept.json, shape, RGB colour) of the plumbing-only demo
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
    """Write the plumbing demo's catalog: one folder per concept with PNGs and a ``concept.json``."""
    rng = np.random.default_rng(seed)
    for concept_id, meta, shape, colour in SAMPLE_CONCEPTS:
        concept = folder / concept_id
        concept.mkdir(parents=True, exist_ok=True)
        (concept / "concept.json").write_text(json.dumps(meta, indent=2))
        for i in range(images_per_concept):
            _draw(shape, colour, rng).save(concept / f"{i:02d}.png")
    return folder


def write_world_catalog(
    folder: Path, images_per_concept: int = WORLD_IMAGES_PER_CONCEPT, concepts: tuple | None = None
) -> Path:
    """Write the toy world's held-out concepts (or ``concepts``, :class:`toyworld.scenes.HeldOutConcept`)
    as a catalog: per concept, seeded PNGs at the world's resolution and a ``concept.json`` whose
    initializer and class are the shape word (it says nothing about hue) and whose only caption is the
    best one the world's grammar allows."""
    from toyworld.scenes import HELD_OUT, concept_images

    for i, concept in enumerate(HELD_OUT if concepts is None else concepts):
        target = folder / concept.name
        target.mkdir(parents=True, exist_ok=True)
        meta = {
            "token": f"<{concept.name}>",
            "initializer": concept.shape,
            "class": concept.shape,
            "captions": [concept.best_caption()],
        }
        (target / "concept.json").write_text(json.dumps(meta, indent=2))
        for j, pixels in enumerate(concept_images(concept, images_per_concept, seed=i)):
            Image.fromarray(pixels).save(target / f"{j:02d}.png")
    return folder


@dataclass(frozen=True)
class Demo:
    """A prepared demo: where its catalog and outputs are, and the flow's settings."""

    catalog: Path
    out: Path
    learn: LearnSettings
    evaluation: EvalSettings
    run: RunSettings
    torch_threads: int | None = None  # intra-op threads to use (None: torch's default)


def _catalog(catalog: Path, expected: set[str], write) -> Path:
    """``catalog``, written by ``write`` unless it is already there; one written by the other demo is refused."""
    if not catalog.is_dir():
        return write(catalog)
    found = {p.name for p in catalog.iterdir() if p.is_dir()}
    if found != expected:
        raise InputError(
            f"{catalog} holds another catalog ({', '.join(sorted(found)) or 'empty'}); give the demo another --dir"
        )
    return catalog


def _world_demo(root: Path, steps: int | None) -> Demo:
    import toyworld
    from toyworld.scenes import HELD_OUT

    catalog = _catalog(root / "catalog", {c.name for c in HELD_OUT}, write_world_catalog)
    return Demo(
        catalog=catalog,
        out=root / "out",
        learn=LearnSettings(model=str(toyworld.MODEL_DIR), steps=steps or WORLD_STEPS, batch_size=4),
        evaluation=EvalSettings(
            prompts=list(WORLD_PROMPTS),
            samples=WORLD_SAMPLES,
            render_steps=WORLD_RENDER_STEPS,
            guidance=WORLD_GUIDANCE,
            clip_arch=toyworld.CLIP_ARCH,
            clip_checkpoint=str(toyworld.CLIP_CHECKPOINT),
        ),
        run=RunSettings(device="cpu", concepts_per_batch=len(HELD_OUT), checkpoint_every=50, workers=2),
        torch_threads=WORLD_TORCH_THREADS,
    )


def _random_demo(root: Path, steps: int | None) -> Demo:
    from inversion.evaluation.clip import write_tiny_clip
    from inversion.model.zoo import write_random_model

    catalog = _catalog(root / "catalog", {c[0] for c in SAMPLE_CONCEPTS}, write_sample_catalog)
    model, clip = root / "models" / "tiny-sd", root / "models" / "tiny-clip.pt"
    if not (model / "model_index.json").is_file():
        write_random_model("tiny", model)
    if not clip.is_file():
        clip.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_clip(clip)
    return Demo(
        catalog=catalog,
        out=root / "out",
        learn=LearnSettings(model=str(model), steps=steps or RANDOM_STEPS, batch_size=2),
        evaluation=EvalSettings(
            samples=2, render_steps=8, guidance=3.0, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
        ),
        run=RunSettings(device="cpu", concepts_per_batch=2, checkpoint_every=20, workers=2),
    )


def prepare_demo(root: Path, *, random_models: bool = False, steps: int | None = None) -> Demo:
    """Write the demo's catalog (and, with ``random_models``, its tiny models) under ``root``; kept if
    already there. ``steps`` overrides the demo's optimizer steps per concept."""
    root = Path(root).resolve()
    return _random_demo(root, steps) if random_models else _world_demo(root, steps)
