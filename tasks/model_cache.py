"""Per-process caches: the diffusion model, renderer and CLIP model are loaded once per worker
process and reused by every concept that process handles."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from inversion.config import ClipSpec, Precision, Sampler

if TYPE_CHECKING:
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

_lock = threading.Lock()


@lru_cache(maxsize=2)
def _components(model: str):
    from inversion.model.components import load_components

    return load_components(model)


def diffusion_components(model: str):
    """The frozen diffusion model at ``model`` (a local diffusers folder or hub id), loaded once."""
    with _lock:
        return _components(model)


def renderer(
    model: str,
    steps: int,
    guidance: float,
    device: str = "auto",
    precision: Precision = "fp32",
    sampler: Sampler = "ddim",
):
    """A renderer over the cached model (cheap to build; the weights are shared)."""
    from inversion.evaluation.render import Renderer, RenderSettings

    return Renderer(
        diffusion_components(model),
        RenderSettings(steps=steps, guidance=guidance, device=device, precision=precision, sampler=sampler),
    )


def renderer_for(learn: LearnSettings, evaluation: EvalSettings, run: RunSettings):
    """The :func:`renderer` a run's settings ask for: their model, precision, render steps, guidance,
    sampler and device."""
    return renderer(
        learn.model, evaluation.render_steps, evaluation.guidance, run.device, learn.precision, evaluation.sampler
    )


def clip_model(spec: ClipSpec, device: str = "auto"):
    """The CLIP scorer ``spec`` names, loaded once per process (``inversion.evaluation.clip.load_clip`` caches it)."""
    from inversion.evaluation.clip import load_clip

    with _lock:
        return load_clip(spec, device=device)
