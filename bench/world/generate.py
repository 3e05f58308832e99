"""The toy world's generator: one saturated shape on a plain background, and a caption for it.

Every image shows one shape (circle / square / triangle) in a fully saturated colour of
**continuous** hue (HSV with S = V = 1, hue in [0, 360)), of continuous size and position, on a
black, gray or white background. Captions name only coarse bins: one of 8 hue words (45° wide,
centred on 0°, 45°, …), ``small`` / ``large``, the shape and the background; some attributes are
dropped, some captions are wrapped in photo-style templates, and ~10% are empty (for
classifier-free guidance).

:data:`HELD_OUT` lists concepts whose hue lies exactly half-way between two bin centres: the
training stream never shows that shape on that background within ±8° of that hue
(:func:`sample_attributes` with ``exclude``), so the best any caption can do is a neighbouring
bin's word, and a learned word has room to do better.

Everything is numpy and seeded by a ``numpy.random.Generator``; images are uint8 ``[N, H, W, 3]``
arrays, anti-aliased by supersampling (the mix of a colour with black, gray or white keeps its hue,
so edge pixels do not disturb the oracle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The scenes themselves (vocabulary, held-out concepts, drawing) live in the product's data package,
# which `sstar demo` also uses; this module adds the training stream and its captions.
from toyworld.scenes import (  # noqa: F401 - re-exported: bench code reads them as generate.*
    BACKGROUND_LEVELS,
    BACKGROUNDS,
    BEST_TEMPLATE,
    DEFAULT_RESOLUTION,
    HELD_OUT,
    HELD_OUT_VARIED,
    HUE_BIN_WIDTH,
    HUE_CENTRES,
    HUE_WORDS,
    SHAPES,
    SIZE_RANGES,
    SIZE_WORDS,
    HeldOutConcept,
    circular_distance,
    concept_attributes,
    concept_images,
    hue_bin,
    hue_to_rgb,
    hue_word,
    phrase,
    render,
)

EXCLUSION_DEGREES = 8.0
EMPTY_CAPTION_PROB = 0.10
DROP_PROB = {"size": 0.3, "hue": 0.2, "background": 0.3}

#: templates around the noun phrase; the photo-style ones are our trainer's object templates
#: (:data:`inversion.training.templates.OBJECT_TEMPLATES`), so the world's text encoder has seen the filler
#: words Textual Inversion trains with. "a large {} in a photo"-style templates are left out (they
#: would contradict the size word).
PLAIN_TEMPLATES: tuple[str, ...] = ("{}", "a {}")
WRAP_PROB = 0.6


def _photo_templates() -> tuple[str, ...]:
    from inversion.training.templates import OBJECT_TEMPLATES

    extra = ("a photo of a {}", "an image of a {}", "a picture of a {}")
    kept = tuple(t for t in OBJECT_TEMPLATES if not any(w in t.split() for w in SIZE_WORDS))
    return tuple(dict.fromkeys(extra + kept))


PHOTO_TEMPLATES: tuple[str, ...] = _photo_templates()


# -- attributes ---------------------------------------------------------------------------------------


def _violates(hue, shape, background, exclude: Sequence[HeldOutConcept], margin: float) -> np.ndarray:
    bad = np.zeros(hue.shape, dtype=bool)
    for c in exclude:
        bad |= (
            (shape == SHAPES.index(c.shape))
            & (background == BACKGROUNDS.index(c.background))
            & (circular_distance(hue, c.hue) <= margin)
        )
    return bad


def sample_attributes(
    rng: np.random.Generator, n: int, exclude: Sequence[HeldOutConcept] = HELD_OUT, margin: float = EXCLUSION_DEGREES
) -> dict[str, np.ndarray]:
    """``n`` random scenes as arrays: hue (deg), shape, background, size_word (indices), size, cx, cy (fractions).

    No scene has the shape and background of a concept of ``exclude`` with a hue within ``margin``
    degrees of its hue.
    """
    hue = rng.uniform(0.0, 360.0, n)
    shape = rng.integers(0, len(SHAPES), n)
    background = rng.integers(0, len(BACKGROUNDS), n)
    bad = _violates(hue, shape, background, exclude, margin)
    while bad.any():
        hue[bad] = rng.uniform(0.0, 360.0, int(bad.sum()))
        bad = _violates(hue, shape, background, exclude, margin)
    size_word = rng.integers(0, len(SIZE_WORDS), n)
    lo = np.array([r[0] for r in SIZE_RANGES])[size_word]
    hi = np.array([r[1] for r in SIZE_RANGES])[size_word]
    size = rng.uniform(lo, hi)
    cx = rng.uniform(size / 2, 1 - size / 2)
    cy = rng.uniform(size / 2, 1 - size / 2)
    return {
        "hue": hue,
        "shape": shape,
        "background": background,
        "size_word": size_word,
        "size": size,
        "cx": cx,
        "cy": cy,
    }


# -- captions -----------------------------------------------------------------------------------------


def caption(attr: dict[str, Any], rng: np.random.Generator, empty_prob: float = EMPTY_CAPTION_PROB) -> str:
    """One caption of one scene (``attr`` holds plain scalars, as :func:`scenes` returns them)."""
    if rng.random() < empty_prob:
        return ""
    size = None if rng.random() < DROP_PROB["size"] else attr["size_word"]
    hue = None if rng.random() < DROP_PROB["hue"] else attr["hue_word"]
    background = None if rng.random() < DROP_PROB["background"] else attr["background"]
    text = phrase(size, hue, attr["shape"], background)
    if rng.random() < WRAP_PROB:
        return PHOTO_TEMPLATES[int(rng.integers(len(PHOTO_TEMPLATES)))].format(text)
    return PLAIN_TEMPLATES[int(rng.integers(len(PLAIN_TEMPLATES)))].format(text)


def scenes(attrs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The attribute arrays as one dict of plain Python values (names, not indices) per scene."""
    out = []
    for i in range(len(attrs["hue"])):
        hue = float(attrs["hue"][i])
        out.append(
            {
                "hue": hue,
                "hue_word": hue_word(hue),
                "shape": SHAPES[int(attrs["shape"][i])],
                "background": BACKGROUNDS[int(attrs["background"][i])],
                "size_word": SIZE_WORDS[int(attrs["size_word"][i])],
                "size": float(attrs["size"][i]),
                "cx": float(attrs["cx"][i]),
                "cy": float(attrs["cy"][i]),
            }
        )
    return out


def make_batch(
    rng: np.random.Generator,
    n: int,
    resolution: int = DEFAULT_RESOLUTION,
    exclude: Sequence[HeldOutConcept] = HELD_OUT,
    empty_prob: float = EMPTY_CAPTION_PROB,
    supersample: int = 4,
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """``n`` training samples: uint8 images ``[n, H, W, 3]``, captions, attribute dicts."""
    attrs = sample_attributes(rng, n, exclude)
    images = render(attrs, resolution, supersample)
    info = scenes(attrs)
    captions = [caption(a, rng, empty_prob) for a in info]
    return images, captions, info


def evaluation_captions(
    rng: np.random.Generator, n: int, exclude: Sequence[HeldOutConcept] = HELD_OUT
) -> tuple[list[str], list[dict[str, Any]]]:
    """``n`` captions naming hue word, shape and background (size optional), for sample evaluation.

    The scene each caption was drawn from is returned as its target (its hue is the bin centre's
    neighbourhood; the evaluation checks the hue *word*, not the exact hue).
    """
    attrs = sample_attributes(rng, n, exclude)
    info = scenes(attrs)
    captions = []
    for a in info:
        size = a["size_word"] if rng.random() < 0.5 else None
        captions.append(BEST_TEMPLATE.format(phrase(size, a["hue_word"], a["shape"], a["background"])))
    return captions, info
