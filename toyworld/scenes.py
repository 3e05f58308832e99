"""The toy world's scenes: one saturated shape of continuous hue on a plain background, and its held-out concepts.

Every scene shows one shape (circle / square / triangle) in a fully saturated colour of
**continuous** hue (HSV with S = V = 1, hue in [0, 360)), of continuous size and position, on a
black, gray or white background. Words name only coarse bins: one of 8 hue words (45° wide,
centred on 0°, 45°, …), ``small`` / ``large``, the shape and the background.

:data:`HELD_OUT` lists concepts whose hue lies exactly half-way between two bin centres, which the
world model never saw during training: the best any caption can do is a neighbouring bin's word,
and a learned word has room to do better. ``sstar demo`` learns them; ``bench/world`` (the training
stream, captions, oracle) and ``bench/quality`` build on this module.

:data:`HELD_OUT_VARIED` holds the same hues and shapes, but each training image draws its background
and size at random, as users' photos vary; its images are what makes a word learn *only* the hue and
shape, so it is where editability (asking for another background or size) can be measured fairly.

Everything is numpy; images are uint8 ``[N, H, W, 3]`` arrays, anti-aliased by supersampling (the
mix of a colour with black, gray or white keeps its hue, so edge pixels do not disturb the oracle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

HUE_WORDS: tuple[str, ...] = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
#: bin centres in degrees, one per word of :data:`HUE_WORDS` (each bin is 45° wide)
HUE_CENTRES: tuple[float, ...] = tuple(45.0 * i for i in range(len(HUE_WORDS)))
HUE_BIN_WIDTH = 360.0 / len(HUE_WORDS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "white")
BACKGROUND_LEVELS: tuple[int, ...] = (0, 128, 255)
SIZE_WORDS: tuple[str, ...] = ("small", "large")
#: extent of the shape as a fraction of the image side, per size word (sampled uniformly inside)
SIZE_RANGES: tuple[tuple[float, float], ...] = ((0.30, 0.45), (0.60, 0.80))

DEFAULT_RESOLUTION = 32
BEST_TEMPLATE = "a photo of a {}"


def hue_bin(hue: float | np.ndarray) -> np.ndarray:
    """Index into :data:`HUE_WORDS` of the bin holding ``hue`` (a hue exactly between two centres
    goes to the upper one: 22.5° → orange)."""
    h = np.mod(np.asarray(hue, dtype=np.float64) + HUE_BIN_WIDTH / 2, 360.0)
    return np.floor(h / HUE_BIN_WIDTH).astype(np.int64) % len(HUE_WORDS)


def hue_word(hue: float) -> str:
    return HUE_WORDS[int(hue_bin(hue))]


def circular_distance(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Absolute circular difference of hues in degrees, in [0, 180]."""
    d = np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), 360.0)
    return np.minimum(d, 360.0 - d)


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """HSV (hue in degrees, S = V = 1) → RGB floats in [0, 1], shape ``[..., 3]``."""
    h = np.mod(np.asarray(hue, dtype=np.float64), 360.0) / 60.0
    k = np.mod(np.array([5.0, 3.0, 1.0]) + h[..., None], 6.0)
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


@dataclass(frozen=True)
class HeldOutConcept:
    """A concept the training stream never shows: a hue half-way between two words, one shape, size, background.

    A ``varied`` concept's training images draw background and size at random instead (its ``size`` and
    ``background`` then only say which concept of :data:`HELD_OUT` it varies), and its best caption names
    neither.
    """

    name: str
    hue: float
    shape: str
    size: float  # extent as a fraction of the image side
    background: str
    varied: bool = False

    @property
    def size_word(self) -> str:
        return SIZE_WORDS[int(np.argmin([abs(self.size - (lo + hi) / 2) for lo, hi in SIZE_RANGES]))]

    @property
    def hue_word(self) -> str:
        """The nearer bin's word (for a hue exactly between two, the upper one)."""
        return hue_word(self.hue)

    def best_caption(self) -> str:
        """The most informative caption the grammar allows: hue word, size, shape, background (a varied
        concept: hue word and shape only, since its images have no one size or background)."""
        if self.varied:
            return BEST_TEMPLATE.format(phrase(None, self.hue_word, self.shape, None))
        return BEST_TEMPLATE.format(phrase(self.size_word, self.hue_word, self.shape, self.background))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "hue_word": self.hue_word,
            "size_word": self.size_word,
            "best_caption": self.best_caption(),
        }


#: the held-out concepts; each hue is exactly half-way between two bin centres
HELD_OUT: tuple[HeldOutConcept, ...] = (
    HeldOutConcept("held-red-orange-circle", 22.5, "circle", 0.70, "white"),
    HeldOutConcept("held-yellow-green-square", 112.5, "square", 0.65, "black"),
    HeldOutConcept("held-teal-blue-triangle", 202.5, "triangle", 0.70, "gray"),
    HeldOutConcept("held-purple-pink-circle", 292.5, "circle", 0.70, "black"),
)


#: the same hues and shapes, trained on images whose background and size vary (``varied-…`` names)
HELD_OUT_VARIED: tuple[HeldOutConcept, ...] = tuple(
    replace(c, name=c.name.replace("held-", "varied-", 1), varied=True) for c in HELD_OUT
)


def phrase(size_word: str | None, hue_word_: str | None, shape: str, background: str | None) -> str:
    """The world's noun phrase, e.g. ``large orange circle on a white background`` (``None`` parts are left out)."""
    words = [w for w in (size_word, hue_word_, shape) if w]
    text = " ".join(words)
    if background:
        text += f" on a {background} background"
    return text


def concept_attributes(concept: HeldOutConcept, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` scenes of ``concept`` (fixed hue and shape) at random positions; the size and background are the
    concept's own, or for a varied concept drawn per image (:func:`_varied_looks`)."""
    if concept.varied:
        background, size_word, size = _varied_looks(rng, n)
    else:
        background = np.full(n, BACKGROUNDS.index(concept.background))
        size_word = np.full(n, SIZE_WORDS.index(concept.size_word))
        size = np.full(n, concept.size)
    return {
        "hue": np.full(n, concept.hue),
        "shape": np.full(n, SHAPES.index(concept.shape)),
        "background": background,
        "size_word": size_word,
        "size": size,
        "cx": rng.uniform(size / 2, 1 - size / 2),
        "cy": rng.uniform(size / 2, 1 - size / 2),
    }


def _varied_looks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image a background, a size word and a size inside that word's range, as the world's photos vary.

    Drawn as shuffled rounds of every background and every size word, so that even 4 images show all three
    backgrounds and both sizes (independent draws give 4 images of one background 1 time in 27)."""
    background = _shuffled_rounds(rng, len(BACKGROUNDS), n)
    size_word = _shuffled_rounds(rng, len(SIZE_WORDS), n)
    lo = np.array([r[0] for r in SIZE_RANGES])[size_word]
    hi = np.array([r[1] for r in SIZE_RANGES])[size_word]
    return background, size_word, rng.uniform(lo, hi)


def _shuffled_rounds(rng: np.random.Generator, choices: int, n: int) -> np.ndarray:
    """``n`` indices below ``choices``: each round of ``choices`` draws holds every index once, in random order."""
    rounds = -(-n // choices)
    return np.concatenate([rng.permutation(choices) for _ in range(rounds)])[:n].astype(np.int64)


# -- pixels -------------------------------------------------------------------------------------------


def render(attrs: dict[str, np.ndarray], resolution: int = DEFAULT_RESOLUTION, supersample: int = 4) -> np.ndarray:
    """Draw the scenes ``attrs`` as uint8 images ``[N, resolution, resolution, 3]``.

    Coverage is computed on a ``supersample``² sub-pixel grid (1 = no anti-aliasing).
    """
    n = len(attrs["hue"])
    ss = max(1, int(supersample))
    grid = (np.arange(resolution * ss, dtype=np.float32) + 0.5) / (resolution * ss)
    x = grid[None, None, :]
    y = grid[None, :, None]
    cx = attrs["cx"].astype(np.float32)[:, None, None]
    cy = attrs["cy"].astype(np.float32)[:, None, None]
    half = (attrs["size"].astype(np.float32) / 2)[:, None, None]
    shape = attrs["shape"][:, None, None]
    dx, dy = x - cx, y - cy
    circle = dx * dx + dy * dy <= half * half
    square = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    triangle = (dy <= half) & (np.abs(dx) <= (dy + half) / 2)  # apex up, base = height = extent
    mask = np.where(shape == 0, circle, np.where(shape == 1, square, triangle))
    cover = mask.reshape(n, resolution, ss, resolution, ss).mean(axis=(2, 4), dtype=np.float32)[..., None]
    colour = (hue_to_rgb(attrs["hue"]) * 255.0).astype(np.float32)[:, None, None, :]
    level = np.asarray(BACKGROUND_LEVELS, dtype=np.float32)[attrs["background"]][:, None, None, None]
    pixels = cover * colour + (1.0 - cover) * level
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def concept_images(
    concept: HeldOutConcept, n: int, seed: int = 0, resolution: int = DEFAULT_RESOLUTION, supersample: int = 4
) -> np.ndarray:
    """``n`` training images of a held-out concept (seeded; positions vary, and for a varied concept also
    backgrounds and sizes)."""
    rng = np.random.default_rng(seed)
    return render(concept_attributes(concept, rng, n), resolution, supersample)
