"""Rendering prompts with learned words, and assembling labelled grids.

:class:`Renderer` wraps the frozen components in their family's diffusers pipeline
(``StableDiffusionPipeline``, or ``StableDiffusionXLPipeline`` for SDXL) once and
renders any number of prompts over seeds with any set of learned embeddings installed — the shared
model is never modified (tokens go into a copy of the tokenizer, vectors into a swapped-in
embedding layer), so one loaded model serves every concept of a worker process.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from inversion.cancel import check_stop
from inversion.config import SAMPLERS, Precision, Sampler
from inversion.device import resolve_device, resolve_dtype
from inversion.embeddings.formats import LearnedEmbedding
from inversion.model.components import DiffusionComponents, build_pipeline
from inversion.text.encoder import PromptEncoder
from inversion.text.tokens import expand_token
from inversion.text.weighting import encode_weighted


def make_scheduler(sampler: str, config: Any, flow_matching: bool = False) -> Any:
    """The diffusers scheduler of ``sampler`` over the model's scheduler ``config``: ``ddim`` (DDIM) or
    ``dpm`` (DPM-Solver++ multistep, 2nd order: the same images in fewer steps). A flow-matching model
    (SD 3, Flux) gets a fresh copy of its own flow-matching Euler scheduler, whichever ``sampler``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if flow_matching:
        return FlowMatchEulerDiscreteScheduler.from_config(config)

    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


@dataclass(frozen=True)
class RenderSettings:
    """How to sample: denoising steps, guidance scale (classifier-free; Flux's embedded guidance: module
    docstring), image size (None: the model's), and the sampler (:func:`make_scheduler`)."""

    steps: int = 25
    guidance: float = 7.5
    resolution: int | None = None
    precision: Precision = "fp32"
    device: str = "auto"
    batch_size: int = 8
    sampler: Sampler = "ddim"


class Renderer:
    """Renders prompts (which may contain learned tokens) with a frozen diffusion model."""

    def __init__(self, components: DiffusionComponents, settings: RenderSettings | None = None) -> None:
        self.components = components
        self.settings = settings or RenderSettings()
        self.device = resolve_device(self.settings.device)
        self.dtype = resolve_dtype(self.settings.precision, self.device)
        scheduler = make_scheduler(self.settings.sampler, components.noise_scheduler.config, components.flow_matching)
        self._pipeline = build_pipeline(components, scheduler)
        self._pipeline.set_progress_bar_config(disable=True)

    def render(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        embeddings: Sequence[LearnedEmbedding] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[Image.Image]]:
        """Render every prompt with every seed: ``result[p][s]`` is prompt p with seed s.

        The same seed gives the same starting noise for every prompt, so rows are comparable. A prompt
        may give words strengths, ``(<tok>:0.7)``, with A1111's meaning (:mod:`inversion.text.weighting`).
        """
        return self._render(prompts, seeds, embeddings, progress, "pil")

    def render_arrays(
        self, prompts: Sequence[str], seeds: Sequence[int], embeddings: Sequence[LearnedEmbedding] = ()
    ) -> list[list[np.ndarray]]:
        """:meth:`render`, each image a float array ``[H, W, 3]`` in [0, 1] as the VAE decoded it (no 8-bit
        rounding: for measuring small changes)."""
        return self._render(prompts, seeds, embeddings, None, "np")

    def _render(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        embeddings: Sequence[LearnedEmbedding],
        progress: Callable[[int, int], None] | None,
        output_type: str,
    ) -> list[list[Any]]:
        s = self.settings
        resolution = s.resolution or self.components.resolution
        text = PromptEncoder(self.components)
        for embedding in embeddings:
            text.check(embedding)
        placeholders = [text.register(e.token, e.num_vectors) for e in embeddings]
        expanded = list(prompts)
        for emb in embeddings:
            expanded = [expand_token(p, emb.token, emb.num_vectors) for p in expanded]
        jobs = [(p, seed) for p in range(len(prompts)) for seed in seeds]
        images: dict[tuple[int, int], Any] = {}
        with self.components.lock:
            self.components.to(self.device, self.dtype)
            with text.learned(placeholders, [e.vectors.to(self.device) for e in embeddings]), torch.no_grad():
                negative = text.negative()
                for start in range(0, len(jobs), s.batch_size):
                    check_stop()
                    chunk = jobs[start : start + s.batch_size]
                    embeds = encode_weighted(text, [expanded[p] for p, _ in chunk])
                    latents = torch.cat([self.initial_noise(seed, resolution) for _, seed in chunk])
                    out = self._pipeline(
                        **text.pipeline_kwargs(embeds, negative),
                        latents=latents,
                        num_inference_steps=s.steps,
                        guidance_scale=s.guidance,
                        height=resolution,
                        width=resolution,
                        output_type=output_type,
                        callback_on_step_end=_stop_between_steps,
                    )
                    for job, image in zip(chunk, out.images):
                        images[job] = image
                    if progress is not None:
                        progress(min(start + len(chunk), len(jobs)), len(jobs))
        return [[images[(p, seed)] for seed in seeds] for p in range(len(prompts))]

    def initial_noise(self, seed: int, resolution: int) -> torch.Tensor:
        """The starting latent of ``seed``: ``[1, C, h, w]`` drawn on the CPU (the same on every device);
        Flux's packed to ``[1, h/2 * w/2, 4C]`` (module docstring)."""
        components = self.components
        generator = torch.Generator().manual_seed(int(seed))
        if components.family != "flux":
            size = resolution // components.vae_scale_factor
            channels = int(components.denoiser.config.in_channels)
            return torch.randn((1, channels, size, size), generator=generator).to(self.device, self.dtype)
        size = 2 * (resolution // (components.vae_scale_factor * 2))  # whole 2x2 patches, as FluxPipeline sizes it
        channels = int(components.transformer.config.in_channels) // 4
        noise = torch.randn((1, channels, size, size), generator=generator)
        from diffusers import FluxPipeline

        return FluxPipeline._pack_latents(noise, 1, channels, size, size).to(self.device, self.dtype)


def _stop_between_steps(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
    """The pipelines' step-end callback: a signalled run stops before the next denoising step
    (:mod:`inversion.cancel`), not after the batch's last."""
    check_stop()
    return callback_kwargs


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def make_grid(
    rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str], cell: int | None = None, title: str | None = None
) -> Image.Image:
    """Assemble ``rows`` of images into one grid with each row's label (its prompt) written above it."""
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one image")
    cell = cell or max(rows[0][0].size[0], 96)
    columns = max(len(r) for r in rows)
    width = max(columns * cell, 256)
    font_size = 12
    label_height = font_size * 2 + 6
    title_height = font_size + 10 if title else 0
    height = title_height + len(rows) * (label_height + cell)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(font_size)
    chars = max(16, width // math.ceil(font_size * 0.6))
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    y = title_height
    for label, images in zip(row_labels, rows):
        for i, line in enumerate(textwrap.wrap(label, width=chars, max_lines=2, placeholder=" ...")):
            draw.text((4, y + 2 + i * (font_size + 1)), line, fill="black", font=font)
        y += label_height
        for x, image in enumerate(images):
            grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (x * cell, y))
        y += cell
    return grid
