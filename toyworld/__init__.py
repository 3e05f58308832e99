"""The toy world: a tiny Stable-Diffusion-format model and CLIP trained on procedural shapes, shipped as data.

In this world a caption can only name coarse hue bins, so Textual Inversion has something to
learn that words cannot say (:mod:`toyworld.scenes`). The weights (``weights/``, ~33 MB fp16) were
trained once by ``python -m bench.world.train`` (the command is in ``weights/train_log.json``):

* :data:`MODEL_DIR` — a diffusers folder (32 px images), usable as ``--model``;
* :data:`CLIP_ARCH` / :data:`CLIP_CHECKPOINT` — the world's CLIP, usable as ``--clip-arch`` /
  ``--clip-checkpoint`` (the architecture ships with :mod:`inversion`'s CLIP configs).

``sstar demo`` learns the world's held-out concepts on it; ``bench/world`` and ``bench/quality``
measure quality on it. Installed non-editable, the weights ship as package data.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CLIP_ARCH", "CLIP_CHECKPOINT", "MODEL_DIR"]

#: the world's diffusion model (a diffusers folder)
MODEL_DIR: Path = Path(__file__).resolve().parent / "weights"
#: open_clip architecture of the world's CLIP (``inversion/evaluation/clip_configs/sstar-world-clip.json``)
CLIP_ARCH = "sstar-world-clip"
#: the world CLIP's weights
CLIP_CHECKPOINT: Path = MODEL_DIR / "clip" / f"{CLIP_ARCH}.safetensors"
