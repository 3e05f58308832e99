"""Scoring a composition: one prompt naming several learned words (``a photo of <mug> in the style of <brand>``).

Does the combination keep what each word learned? The prompt is rendered over the seeds with every
word installed, and scored with the same CLIP conventions as a single word (:mod:`inversion.evaluation.scoring`,
raw cosines):

* **image similarity to each word's concept**: CLIP-I of the rendered images against that concept's
  training images, one number per word (``min`` is the word the composition keeps least);
* **text similarity**: CLIP-T of the images against the prompt with each token replaced by its class
  word and the strength syntax removed (``a photo of mug in the style of painting``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from inversion.embeddings.formats import LearnedEmbedding
from inversion.errors import InputError
from inversion.evaluation.clip import ClipModel
from inversion.evaluation.render import Renderer, make_grid
from inversion.evaluation.scoring import image_similarity, text_similarity
from inversion.text.weighting import plain_text


@dataclass(frozen=True)
class Word:
    """One learned word of a composition: its embedding, class word and its concept's CLIP image embeddings."""

    embedding: LearnedEmbedding
    class_word: str
    reference_embeds: torch.Tensor = field(repr=False)


@dataclass
class CompositionScores:
    """A rendered composition and its scores (raw cosines)."""

    prompt: str
    text_prompt: str
    image_similarities: dict[str, float]  # by token
    text_similarity: float
    images: list[Image.Image] = field(repr=False)  # one per seed

    @property
    def min_image_similarity(self) -> float:
        return min(self.image_similarities.values())

    def grid(self, title: str) -> Image.Image:
        """The images in one row under the prompt."""
        return make_grid([self.images], [self.prompt], title=title)

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt,
            "text_prompt": self.text_prompt,
            "image_similarities": self.image_similarities,
            "min_image_similarity": self.min_image_similarity,
            "text_similarity": self.text_similarity,
        }


def class_prompt(prompt: str, words: Sequence[Word]) -> str:
    """``prompt`` as CLIP's text side should read it: each token (whole word, with its multi-vector
    names) replaced by its class word, strength syntax removed."""
    text = plain_text(prompt)
    for word in words:
        text = re.sub(re.escape(word.embedding.token) + r"(?:_\d+)?", word.class_word, text)
    return text


def score_composition(
    renderer: Renderer,
    clip: ClipModel,
    prompt: str,
    words: Sequence[Word],
    seeds: Sequence[int],
    clip_batch_size: int = 32,
) -> CompositionScores:
    """Render ``prompt`` over ``seeds`` with every word installed and score it (module docstring)."""
    if not words:
        raise InputError(f"composition {prompt!r} names no learned word")
    missing = [w.embedding.token for w in words if w.embedding.token not in prompt]
    if missing:
        raise InputError(f"composition {prompt!r} does not contain the token {missing[0]}")
    (images,) = renderer.render([prompt], list(seeds), [w.embedding for w in words])
    embeds = clip.embed_images(images, batch_size=clip_batch_size)
    text_prompt = class_prompt(prompt, words)
    text = text_similarity(embeds, clip.embed_texts([text_prompt]), [0] * len(images))
    similarities = {w.embedding.token: image_similarity(embeds, w.reference_embeds) for w in words}
    return CompositionScores(prompt, text_prompt, similarities, text, images)
