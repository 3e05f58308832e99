"""CLIP scores of a learned word, and how much better it does than words alone.

Two numbers, with the DreamBench conventions the method's successors use:

* **image similarity** (CLIP-I, reconstruction): the mean pairwise cosine between the CLIP image
  embeddings of the generated images and of the concept's training images;
* **text similarity** (CLIP-T, editability): the mean cosine between each generated image and its
  own prompt with the token replaced by the concept's class word ("a photo of a cat on the beach").

All scores are **raw cosines** in [-1, 1]. Some papers report CLIPScore, which is 2.5 × max(cos, 0);
do not compare our numbers with those without converting.

The **words-only baseline** renders the same prompts with the token replaced by the concept's
caption phrase(s) ("a photo of a fluffy ginger cat" → "a photo of a fluffy ginger cat on the
beach"), with the same seeds, and is scored by exactly the same function as the learned word
(:func:`_score_images`). It does not depend on the learned word, so its renderings can be kept and
reused (:class:`BaselineCache`); :func:`score_concepts` scores a pack's words with batched renders.
``inversion_lift`` = image similarity − baseline image similarity: how much closer to the training
images the learned word gets than a description does.
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from common.atomic import atomic_write_bytes
from common.digest import canonical_digest
from common.filenames import (
    BASELINE_GRID_FILENAME,
    BASELINE_GRID_THUMBNAIL_FILENAME,
    GRID_FILENAME,
    GRID_THUMBNAIL_FILENAME,
    SCORES_FILENAME,
)
from inversion.config import Property, as_property
from inversion.embeddings.formats import LearnedEmbedding
from inversion.errors import ConfigError, InputError
from inversion.evaluation.clip import ClipModel
from inversion.evaluation.prompts import caption_phrase, check_prompts, default_captions, default_prompts, fill
from inversion.evaluation.render import Renderer, RenderSettings, make_grid
from inversion.text.encoder import check_fits
from inversion.text.weighting import plain_text

SCALE = "raw cosine similarity in [-1, 1] (not the 2.5x-scaled CLIPScore)"
THUMBNAIL_WIDTH = 768


def _as_embeddings(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise InputError(f"{name} must be a [N, D] tensor of embeddings, got {getattr(x, 'shape', type(x))}")
    if x.shape[0] == 0:
        raise InputError(f"{name} is empty: no images to score")
    return torch.nn.functional.normalize(x.detach().float().cpu(), dim=-1)


def image_similarity(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """CLIP-I: the mean raw cosine over all (generated, reference) pairs of image embeddings.

    Rows are normalised here, so any embeddings work. Invariant to the order of the rows of either
    argument and symmetric in its two arguments; two identical one-image sets score 1.0.
    """
    g = _as_embeddings(generated, "generated image embeddings")
    r = _as_embeddings(reference, "reference image embeddings")
    if g.shape[1] != r.shape[1]:
        raise InputError(f"embedding sizes differ: generated {g.shape[1]}, reference {r.shape[1]}")
    return float((g @ r.T).mean())


def text_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor, prompt_index: Sequence[int]) -> float:
    """CLIP-T: the mean raw cosine between each image and its own prompt's text embedding.

    ``prompt_index[i]`` is the row of ``text_embeds`` (the prompt with the class word in place of the
    token) that image ``i`` was generated from.
    """
    images = _as_embeddings(image_embeds, "image embeddings")
    texts = _as_embeddings(text_embeds, "text embeddings")
    index = torch.as_tensor(list(prompt_index), dtype=torch.long)
    if index.numel() != images.shape[0]:
        raise InputError(f"prompt_index has {index.numel()} entries for {images.shape[0]} images")
    if images.shape[1] != texts.shape[1]:
        raise InputError(f"embedding sizes differ: images {images.shape[1]}, texts {texts.shape[1]}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= texts.shape[0]):
        raise InputError(f"prompt_index must lie in [0, {texts.shape[0]}), got {index.tolist()}")
    return float((images * texts[index]).sum(dim=-1).mean())


@dataclass(frozen=True)
class ScoreSettings:
    """What to render for scoring.

    Attributes:
        prompts: evaluation prompts with ``{}`` for the word; ``None`` uses the defaults of the
            concept's property (:mod:`inversion.evaluation.prompts`).
        samples: images per prompt (seeds ``0 … samples-1`` unless ``seeds`` is given).
        seeds: explicit seeds, one image per seed per prompt; overrides ``samples``.
        render: sampler settings for the renderer the caller builds (``sstar score``).
        clip_batch_size: images per CLIP forward pass.
        words: other learned words installed while rendering (the learned word's and the baseline's
            prompts may name their tokens: ``{} in the style of <brand-style>``); a baseline that
            renders them is not kept in the baseline cache.
    """

    prompts: tuple[str, ...] | None = None
    samples: int = 4
    seeds: tuple[int, ...] | None = None
    render: RenderSettings = field(default_factory=RenderSettings)
    clip_batch_size: int = 32
    words: tuple[LearnedEmbedding, ...] = ()

    def __post_init__(self) -> None:
        if self.prompts is not None:
            object.__setattr__(self, "prompts", check_prompts(self.prompts, "evaluation prompts"))
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ConfigError(f"samples must be an integer >= 1, got {self.samples!r}")
        if self.seeds is not None:
            seeds = tuple(int(s) for s in self.seeds)
            if not seeds or len(set(seeds)) != len(seeds):
                raise ConfigError(f"seeds must be distinct and at least one, got {list(seeds)}")
            object.__setattr__(self, "seeds", seeds)
        if self.clip_batch_size < 1:
            raise ConfigError(f"clip_batch_size must be >= 1, got {self.clip_batch_size}")

    @property
    def seed_list(self) -> tuple[int, ...]:
        return self.seeds if self.seeds is not None else tuple(range(self.samples))

    def prompts_for(self, property: str) -> tuple[str, ...]:
        return self.prompts if self.prompts is not None else default_prompts(property)


@dataclass(frozen=True)
class PromptScore:
    """One evaluation prompt's scores for one variant (raw cosines)."""

    template: str
    prompt: str  # what was rendered
    text_prompt: str  # what the images are compared with (class word in place of the token)
    image_similarity: float
    text_similarity: float


@dataclass
class VariantScores:
    """The learned word or one caption, rendered over the prompt set and scored (raw cosines)."""

    phrase: str
    image_similarity: float
    text_similarity: float
    per_prompt: list[PromptScore]
    images: list[list[Image.Image]] = field(repr=False)  # images[prompt][seed]
    image_embeds: torch.Tensor = field(repr=False)  # [prompts * seeds, D], prompt-major

    def to_json(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "image_similarity": self.image_similarity,
            "text_similarity": self.text_similarity,
            "per_prompt": [
                {
                    "template": p.template,
                    "prompt": p.prompt,
                    "text_prompt": p.text_prompt,
                    "image_similarity": p.image_similarity,
                    "text_similarity": p.text_similarity,
                }
                for p in self.per_prompt
            ],
        }


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


@dataclass
class ConceptScores:
    """A concept's scores: the learned word, the words-only baseline(s), and the lift.

    Every number is a raw cosine (see the module docstring). With several captions, the baseline
    numbers are means over them (each caption renders the same number of images).
    """

    token: str
    class_word: str
    property: Property
    clip: str
    templates: tuple[str, ...]
    seeds: tuple[int, ...]
    num_reference_images: int
    learned: VariantScores
    baselines: list[VariantScores]

    @builtins.property  # the ``property`` field shadows the builtin in this class body
    def image_similarity(self) -> float:
        return self.learned.image_similarity

    @builtins.property
    def text_similarity(self) -> float:
        return self.learned.text_similarity

    @builtins.property
    def baseline_image_similarity(self) -> float:
        return _mean([b.image_similarity for b in self.baselines])

    @builtins.property
    def baseline_text_similarity(self) -> float:
        return _mean([b.text_similarity for b in self.baselines])

    @builtins.property
    def inversion_lift(self) -> float:
        """Image similarity of the learned word minus that of the words-only baseline."""
        return self.image_similarity - self.baseline_image_similarity

    @builtins.property
    def text_lift(self) -> float:
        """Text similarity of the learned word minus the baseline's (usually ≤ 0: the editability cost)."""
        return self.text_similarity - self.baseline_text_similarity

    @cached_property
    def grid(self) -> Image.Image:
        """The learned word's images: one row per prompt, one column per seed."""
        return make_grid(
            self.learned.images,
            [p.prompt for p in self.learned.per_prompt],
            title=f"{self.token}: image sim {self.image_similarity:.3f}, text sim {self.text_similarity:.3f} "
            f"(raw cosine)",
        )

    @cached_property
    def baseline_grid(self) -> Image.Image:
        """The words-only baseline's images: one row per caption and prompt, one column per seed."""
        rows = [row for b in self.baselines for row in b.images]
        labels = [p.prompt for b in self.baselines for p in b.per_prompt]
        return make_grid(
            rows,
            labels,
            title=f"words only: image sim {self.baseline_image_similarity:.3f}, "
            f"text sim {self.baseline_text_similarity:.3f} (raw cosine)",
        )

    def to_json(self) -> dict[str, Any]:
        """The scores as a JSON-ready dict (what ``scores.json`` holds)."""
        return {
            "token": self.token,
            "class_word": self.class_word,
            "property": self.property,
            "clip": self.clip,
            "scale": SCALE,
            "image_similarity": self.image_similarity,
            "text_similarity": self.text_similarity,
            "baseline_image_similarity": self.baseline_image_similarity,
            "baseline_text_similarity": self.baseline_text_similarity,
            "inversion_lift": self.inversion_lift,
            "text_lift": self.text_lift,
            "prompts": list(self.templates),
            "seeds": list(self.seeds),
            "num_reference_images": self.num_reference_images,
            "learned": self.learned.to_json(),
            "baselines": [b.to_json() for b in self.baselines],
        }


def embed_reference_images(clip: ClipModel, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
    """CLIP embeddings of a concept's training images; compute once per concept and pass them on."""
    if not images:
        raise InputError("no reference (training) images to compare with")
    return clip.embed_images(list(images), batch_size=batch_size)


class BaselineCache(Protocol):
    """Rendered words-only baselines kept across concepts and runs (the tasks layer keeps them under
    ``<out>/baselines/``). A baseline does not depend on the learned word, so concepts sharing captions
    and prompts, and every re-learning of a concept, reuse one rendering."""

    #: the diffusion model's identity by content (:func:`inversion.model.fingerprint.model_fingerprint`)
    scope: str

    def get(self, key: str) -> list[list[Image.Image]] | None:
        """The images stored under ``key`` (``images[prompt][seed]``), or ``None``."""
        ...

    def put(self, key: str, images: list[list[Image.Image]]) -> None:
        """Keep ``images`` under ``key``."""
        ...


def baseline_key(
    scope: str, prompts: Sequence[str], seeds: Sequence[int], render: RenderSettings, resolution: int
) -> str:
    """The cache key of a words-only rendering: the model, the exact prompts (captions in the
    evaluation prompts), the seeds and every sampler setting that changes the pixels."""
    identity = {
        "model": scope,
        "prompts": list(prompts),
        "seeds": [int(x) for x in seeds],
        "steps": render.steps,
        "guidance": render.guidance,
        "sampler": render.sampler,
        "precision": render.precision,
        "resolution": resolution,
    }
    return canonical_digest(identity, 32)


def _score_images(
    clip: ClipModel,
    templates: Sequence[str],
    phrase: str,
    images: list[list[Image.Image]],
    reference_embeds: torch.Tensor,
    text_prompts: Sequence[str],
    text_embeds: torch.Tensor,
    clip_batch_size: int,
) -> VariantScores:
    """Score ``images[prompt][seed]``, rendered from ``templates`` with ``phrase`` in place of ``{}``.

    The one code path of both the learned word (``phrase`` = its token) and the words-only
    baseline (``phrase`` = a caption's noun phrase): same CLIP, reference embeddings and
    class-word text embeddings.
    """
    prompts = [fill(t, phrase) for t in templates]
    flat = [image for row in images for image in row]
    embeds = clip.embed_images(flat, batch_size=clip_batch_size)
    n = len(images[0])
    index = [p for p in range(len(templates)) for _ in range(n)]
    per_prompt = [
        PromptScore(
            template=t,
            prompt=prompts[p],
            text_prompt=text_prompts[p],
            image_similarity=image_similarity(embeds[p * n : (p + 1) * n], reference_embeds),
            text_similarity=text_similarity(embeds[p * n : (p + 1) * n], text_embeds[p : p + 1], [0] * n),
        )
        for p, t in enumerate(templates)
    ]
    return VariantScores(
        phrase=phrase,
        image_similarity=image_similarity(embeds, reference_embeds),
        text_similarity=text_similarity(embeds, text_embeds, index),
        per_prompt=per_prompt,
        images=images,
        image_embeds=embeds,
    )


@dataclass(frozen=True)
class ScoreRequest:
    """One concept to score: its learned word, training images (or their CLIP embeddings), class
    word, words-only captions and property (see :func:`score_concept` for each)."""

    embedding: LearnedEmbedding
    class_word: str
    reference_images: Sequence[Image.Image] = ()
    captions: Sequence[str] | None = None
    property: Property = "object"
    reference_embeds: torch.Tensor | None = None


@dataclass(frozen=True)
class _Plan:
    """What one request renders and is compared with."""

    request: ScoreRequest
    class_word: str
    templates: tuple[str, ...]
    phrases: list[str]
    reference_embeds: torch.Tensor
    text_prompts: list[str]
    text_embeds: torch.Tensor


def _plan(renderer: Renderer, clip: ClipModel, request: ScoreRequest, settings: ScoreSettings) -> _Plan:
    embedding, property = request.embedding, as_property(request.property)
    if not request.class_word or not request.class_word.strip():
        raise InputError(f"a class word is needed to score {embedding.token} (e.g. the initializer, 'cat')")
    class_word = request.class_word.strip()
    check_fits(renderer.components, embedding)  # one table per text encoder, of its width
    reference_embeds = request.reference_embeds
    if reference_embeds is None:
        reference_embeds = embed_reference_images(clip, request.reference_images, settings.clip_batch_size)
    reference_embeds = _as_embeddings(reference_embeds, "reference image embeddings")
    templates = tuple(settings.prompts_for(property))
    captions = list(request.captions) if request.captions else default_captions(class_word, property)
    phrases = [caption_phrase(c, property) for c in captions]
    for caption, phrase in zip(captions, phrases):
        if embedding.token in phrase:
            raise InputError(
                f"caption {caption!r} contains the learned token {embedding.token}; the baseline must use words only"
            )
    text_prompts = [plain_text(fill(t, class_word)) for t in templates]
    return _Plan(
        request, class_word, templates, phrases, reference_embeds, text_prompts, clip.embed_texts(text_prompts)
    )


def _render_groups(
    renderer: Renderer,
    groups: Sequence[Sequence[str]],
    seeds: Sequence[int],
    embeddings: Sequence[LearnedEmbedding] = (),
) -> list[list[list[Image.Image]]]:
    """Render several prompt lists in one call (full batches across them); the images of each list."""
    flat = [prompt for group in groups for prompt in group]
    images = renderer.render(flat, list(seeds), embeddings) if flat else []
    out, start = [], 0
    for group in groups:
        out.append(images[start : start + len(group)])
        start += len(group)
    return out


def _baseline_images(
    renderer: Renderer,
    groups: Sequence[Sequence[str]],
    seeds: Sequence[int],
    cache: BaselineCache | None,
    words: Sequence[LearnedEmbedding] = (),
) -> list[list[list[Image.Image]]]:
    """The words-only renderings of each prompt list: from ``cache`` where kept, the rest rendered in
    one call (each distinct list once, with ``words`` installed) and kept."""
    resolution = renderer.settings.resolution or renderer.components.resolution
    keys = [baseline_key(cache.scope, g, seeds, renderer.settings, resolution) if cache else None for g in groups]
    found: dict[tuple[str, ...], list[list[Image.Image]]] = {}
    for group, key in zip(groups, keys):
        if key is not None and tuple(group) not in found:
            images = cache.get(key)  # type: ignore[union-attr]
            if images is not None:
                found[tuple(group)] = images
    missing = list(dict.fromkeys(tuple(g) for g in groups if tuple(g) not in found))
    for group, images in zip(missing, _render_groups(renderer, missing, seeds, words)):
        found[group] = images
        if cache is not None:
            cache.put(baseline_key(cache.scope, group, seeds, renderer.settings, resolution), images)
    return [found[tuple(g)] for g in groups]


def _score_variant(
    clip: ClipModel, plan: _Plan, settings: ScoreSettings, phrase: str, images: list[list[Image.Image]]
) -> VariantScores:
    """:func:`_score_images` of one of ``plan``'s variants (its learned word or a baseline phrase):
    every variant of a plan shares the CLIP, templates, references and text embeddings."""
    return _score_images(
        clip=clip,
        templates=plan.templates,
        phrase=phrase,
        images=images,
        reference_embeds=plan.reference_embeds,
        text_prompts=plan.text_prompts,
        text_embeds=plan.text_embeds,
        clip_batch_size=settings.clip_batch_size,
    )


def score_concepts(
    renderer: Renderer,
    clip: ClipModel,
    requests: Sequence[ScoreRequest],
    settings: ScoreSettings | None = None,
    baseline_cache: BaselineCache | None = None,
) -> list[ConceptScores]:
    """Score several learned words (e.g. a pack's) as :func:`score_concept` scores one, with their
    renders batched: every learned word's prompts go through the renderer in one call (all words
    installed; their tokens must be distinct), and every distinct words-only baseline in another —
    or not at all when ``baseline_cache`` holds it."""
    settings = settings or ScoreSettings()
    tokens = [r.embedding.token for r in requests] + [w.token for w in settings.words]
    repeated = sorted({t for t in tokens if tokens.count(t) > 1})
    if repeated:
        raise InputError(f"token {repeated[0]} appears more than once among the words to score together")
    plans = [_plan(renderer, clip, r, settings) for r in requests]
    seeds = settings.seed_list
    learned = _render_groups(
        renderer,
        [[fill(t, p.request.embedding.token) for t in p.templates] for p in plans],
        seeds,
        [r.embedding for r in requests] + list(settings.words),
    )
    groups = [[fill(t, phrase) for t in p.templates] for p in plans for phrase in p.phrases]
    baselines = iter(
        _baseline_images(renderer, groups, seeds, None if settings.words else baseline_cache, settings.words)
    )
    results = []
    for plan, learned_images in zip(plans, learned):
        token = plan.request.embedding.token
        results.append(
            ConceptScores(
                token=token,
                class_word=plan.class_word,
                property=plan.request.property,
                clip=clip.spec.describe(),
                templates=plan.templates,
                seeds=tuple(seeds),
                num_reference_images=int(plan.reference_embeds.shape[0]),
                learned=_score_variant(clip, plan, settings, token, learned_images),
                baselines=[_score_variant(clip, plan, settings, phrase, next(baselines)) for phrase in plan.phrases],
            )
        )
    return results


def score_concept(
    renderer: Renderer,
    clip: ClipModel,
    embedding: LearnedEmbedding,
    reference_images: Sequence[Image.Image],
    class_word: str,
    captions: Sequence[str] | None = None,
    property: Property = "object",
    settings: ScoreSettings | None = None,
    reference_embeds: torch.Tensor | None = None,
    baseline_cache: BaselineCache | None = None,
) -> ConceptScores:
    """Score a learned word against its training images, and the words-only baseline the same way.

    Args:
        renderer: renders the prompts (its settings decide sampler, steps, guidance, device).
        clip: the scoring CLIP (:func:`~inversion.evaluation.clip.load_clip`).
        embedding: the learned word; its token must appear as ``{}`` in the prompts.
        reference_images: the concept's training images (unused when ``reference_embeds`` is given).
        class_word: the concept's class or initializer word; replaces the token for text similarity.
        captions: words-only descriptions of the concept (default
            :func:`~inversion.evaluation.prompts.default_captions`);
            each caption's noun phrase replaces the token for one baseline rendering.
        property: ``object`` or ``style`` (picks the default prompts and how captions are read).
        settings: prompts, seeds, CLIP batch size.
        reference_embeds: precomputed :func:`embed_reference_images` of the training images.
        baseline_cache: where words-only renderings are kept and reused (:class:`BaselineCache`).

    Returns:
        :class:`ConceptScores` with raw-cosine scores, per-prompt details and the rendered images.
    """
    request = ScoreRequest(embedding, class_word, reference_images, captions, property, reference_embeds)
    (scores,) = score_concepts(renderer, clip, [request], settings, baseline_cache)
    return scores


def _finite(data: Any) -> Any:
    """Replace NaN/inf (possible with broken weights) by None so the JSON stays standard."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


def save_thumbnail(image: Image.Image, path: Path, width: int = THUMBNAIL_WIDTH) -> Path:
    """Save ``image`` as a JPEG at most ``width`` pixels wide (aspect kept) to ``path``."""
    image = image.convert("RGB")
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
    image.save(path, format="JPEG", quality=85, optimize=True)
    return path


def write_scores(scores: ConceptScores, out_dir: Path) -> dict[str, Path]:
    """Save ``grid.png``, ``baseline_grid.png``, their JPEG thumbnails and ``scores.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "grid": out_dir / GRID_FILENAME,
        "baseline_grid": out_dir / BASELINE_GRID_FILENAME,
        "grid_thumbnail": out_dir / GRID_THUMBNAIL_FILENAME,
        "baseline_grid_thumbnail": out_dir / BASELINE_GRID_THUMBNAIL_FILENAME,
        "scores": out_dir / SCORES_FILENAME,
    }
    scores.grid.save(files["grid"])
    scores.baseline_grid.save(files["baseline_grid"])
    save_thumbnail(scores.grid, files["grid_thumbnail"])
    save_thumbnail(scores.baseline_grid, files["baseline_grid_thumbnail"])
    payload = _finite(scores.to_json())
    payload["files"] = {k: p.name for k, p in files.items()}
    atomic_write_bytes(files["scores"], (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
    return files
