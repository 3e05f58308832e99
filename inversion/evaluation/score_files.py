"""``sstar score`` as a library call: a learned word's embedding file and its images in, grids and ``scores.json`` out.

:func:`inversion.evaluation.scoring.score_concept` scores objects already in memory (the catalog flow's
tasks load them once for many concepts); this module is the one-word use-case around it, reading every
input from files and checking them all before any model loads, so a wrong path costs no load time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from inversion.config import ClipSpec, Property
from inversion.embeddings.formats import LearnedEmbedding, load_embeddings
from inversion.evaluation.clip import ClipModel, load_clip
from inversion.evaluation.prompts import load_prompts
from inversion.evaluation.render import Renderer, RenderSettings
from inversion.evaluation.scoring import ScoreSettings, embed_reference_images, score_concept, write_scores
from inversion.images import list_images, open_rgb
from inversion.model.components import load_components


def score_embedding_file(
    model_dir: str | Path,
    embedding_path: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    clip_spec: ClipSpec,
    class_word: str,
    *,
    prompts_file: str | Path | None = None,
    samples: int = 4,
    seeds: Sequence[int] | None = None,
    captions: Sequence[str] | None = None,
    property: Property = "object",
    token: str | None = None,
    words: Sequence[str | Path] = (),
    render: RenderSettings | None = None,
    clip_device: str = "auto",
    clip_batch_size: int = 32,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load the models, render, score, write ``grid.png``, ``baseline_grid.png`` and ``scores.json``.

    ``words`` are more embedding files installed while rendering, so the prompts may name their tokens
    (``{} in the style of <brand-style>``); a token held by two files is refused naming both.
    Returns what ``scores.json`` says (raw cosines), plus ``files``: the written files by their full paths.
    """
    say = log or (lambda message: None)
    # 1. read every input (images, embedding files, prompts): cheap checks before any model loads
    image_files, embedding, others, prompts = _read_inputs(images_dir, embedding_path, words, token, prompts_file)
    settings = ScoreSettings(
        prompts=prompts,
        samples=samples,
        seeds=tuple(seeds) if seeds is not None else None,
        render=render or RenderSettings(),
        clip_batch_size=clip_batch_size,
        words=tuple(others),
    )
    # 2. the concept's images, CLIP, and the images' CLIP embeddings
    reference_images, clip, reference_embeds = _embed_references(image_files, clip_spec, clip_device, settings, say)
    # 3. the diffusion model: render the prompts and score them
    say(f"loading diffusion model {model_dir}")
    renderer = Renderer(load_components(model_dir), settings.render)
    prompt_count, seed_count = len(settings.prompts_for(property)), len(settings.seed_list)
    say(f"scoring {embedding.token} over {prompt_count} prompts × {seed_count} seeds")
    scores = score_concept(
        renderer,
        clip,
        embedding,
        reference_images,
        class_word,
        captions,
        property,
        settings,
        reference_embeds=reference_embeds,
    )
    # 4. the files, and what they say
    written = write_scores(scores, Path(out_dir))
    result: dict[str, Any] = json.loads(written["scores"].read_text(encoding="utf-8"))
    result["files"] = {kind: str(path) for kind, path in written.items()}
    return result


def _read_inputs(
    images_dir: str | Path,
    embedding_path: str | Path,
    words: Sequence[str | Path],
    token: str | None,
    prompts_file: str | Path | None,
) -> tuple[list[Path], LearnedEmbedding, list[LearnedEmbedding], tuple[str, ...] | None]:
    """The concept's image files, the word scored (its token overridden by ``token``), the other words
    installed, and the prompts (``None``: the defaults); each refused with one line if it cannot be read."""
    image_files = list_images(Path(images_dir))
    embedding, *others = load_embeddings([embedding_path, *words], tokens=[token])
    prompts = load_prompts(Path(prompts_file)) if prompts_file is not None else None
    return image_files, embedding, others, prompts


def _embed_references(
    image_files: Sequence[Path],
    clip_spec: ClipSpec,
    clip_device: str,
    settings: ScoreSettings,
    say: Callable[[str], None],
) -> tuple[list[Image.Image], ClipModel, torch.Tensor]:
    """The concept's images (opened before CLIP loads, so an unreadable one costs no load time), the CLIP
    model, and the images' CLIP embeddings."""
    reference_images = [open_rgb(path) for path in image_files]
    say(f"loading CLIP {clip_spec.describe()}")
    clip = load_clip(clip_spec, clip_device)
    return reference_images, clip, embed_reference_images(clip, reference_images, settings.clip_batch_size)
