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

from dataclasses import asdict, dataclass
from typing import Any, Sequence

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
EXCLUSION_DEGREES = 8.0
EMPTY_CAPTION_PROB = 0.10
DROP_PROB = {"size": 0.3, "hue": 0.2, "background": 0.3}

#: templates around the noun phrase; the photo-style ones are our trainer's object templates
#: (:data:`inversion.templates.OBJECT_TEMPLATES`), so the world's text encoder has seen the filler
#: words Textual Inversion trains with. "a large {} in a photo"-style templates are left out (they
#: would contradict the size word).
PLAIN_TEMPLATES: tuple[str, ...] = ("{}", "a {}")
WRAP_PROB = 0.6
BEST_TEMPLATE = "a photo of a {}"


def _photo_templates() -> tuple[str, ...]:
    from inversion.templates import OBJECT_TEMPLATES

    extra = ("a photo of a {}", "an image of a {}", "a picture of a {}")
    kept = tuple(t for t in OBJECT_TEMPLATES if not any(w in t.split() for w in SIZE_WORDS))
    return tuple(dict.fromkeys(extra + kept))


PHOTO_TEMPLATES: tuple[str, ...] = _photo_templates()


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
    """A concept the training stream never shows: a hue half-way between two words, one shape, size, background."""

    name: str
    hue: float
    shape: str
    size: float  # extent as a fraction of the image side
    background: str

    @property
    def size_word(self) -> str:
        return SIZE_WORDS[int(np.argmin([abs(self.size - (lo + hi) / 2) for lo, hi in SIZE_RANGES]))]

    @property
    def hue_word(self) -> str:
        """The nearer bin's word (for a hue exactly between two, the upper one)."""
        return hue_word(self.hue)

    def best_caption(self) -> str:
        """The most informative caption the grammar allows: hue word, size, shape, background."""
        return BEST_TEMPLATE.format(phrase(self.size_word, self.hue_word, self.shape, self.background))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hue_word": self.hue_word, "size_word": self.size_word,
                "best_caption": self.best_caption()}


#: the held-out concepts; each hue is exactly half-way between two bin centres
HELD_OUT: tuple[HeldOutConcept, ...] = (
    HeldOutConcept("held-red-orange-circle", 22.5, "circle", 0.70, "white"),
    HeldOutConcept("held-yellow-green-square", 112.5, "square", 0.65, "black"),
    HeldOutConcept("held-teal-blue-triangle", 202.5, "triangle", 0.70, "gray"),
    HeldOutConcept("held-purple-pink-circle", 292.5, "circle", 0.70, "black"),
)


def phrase(size_word: str | None, hue_word_: str | None, shape: str, background: str | None) -> str:
    words = [w for w in (size_word, hue_word_, shape) if w]
    text = " ".join(words)
    if background:
        text += f" on a {background} background"
    return text


# -- attributes ---------------------------------------------------------------------------------------

def _violates(hue, shape, background, exclude: Sequence[HeldOutConcept], margin: float) -> np.ndarray:
    bad = np.zeros(hue.shape, dtype=bool)
    for c in exclude:
        bad |= ((shape == SHAPES.index(c.shape)) & (background == BACKGROUNDS.index(c.background))
                & (circular_distance(hue, c.hue) <= margin))
    return bad


def sample_attributes(rng: np.random.Generator, n: int, exclude: Sequence[HeldOutConcept] = HELD_OUT,
                      margin: float = EXCLUSION_DEGREES) -> dict[str, np.ndarray]:
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
    return {"hue": hue, "shape": shape, "background": background, "size_word": size_word, "size": size,
            "cx": cx, "cy": cy}


def concept_attributes(concept: HeldOutConcept, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` scenes of ``concept`` (fixed hue, shape, size, background) at random positions."""
    size = np.full(n, concept.size)
    return {
        "hue": np.full(n, concept.hue),
        "shape": np.full(n, SHAPES.index(concept.shape)),
        "background": np.full(n, BACKGROUNDS.index(concept.background)),
        "size_word": np.full(n, SIZE_WORDS.index(concept.size_word)),
        "size": size,
        "cx": rng.uniform(size / 2, 1 - size / 2),
        "cy": rng.uniform(size / 2, 1 - size / 2),
    }


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
        out.append({
            "hue": hue,
            "hue_word": hue_word(hue),
            "shape": SHAPES[int(attrs["shape"][i])],
            "background": BACKGROUNDS[int(attrs["background"][i])],
            "size_word": SIZE_WORDS[int(attrs["size_word"][i])],
            "size": float(attrs["size"][i]),
            "cx": float(attrs["cx"][i]),
            "cy": float(attrs["cy"][i]),
        })
    return out


def make_batch(rng: np.random.Generator, n: int, resolution: int = DEFAULT_RESOLUTION,
               exclude: Sequence[HeldOutConcept] = HELD_OUT, empty_prob: float = EMPTY_CAPTION_PROB,
               supersample: int = 4) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """``n`` training samples: uint8 images ``[n, H, W, 3]``, captions, attribute dicts."""
    attrs = sample_attributes(rng, n, exclude)
    images = render(attrs, resolution, supersample)
    info = scenes(attrs)
    captions = [caption(a, rng, empty_prob) for a in info]
    return images, captions, info


def concept_images(concept: HeldOutConcept, n: int, seed: int = 0, resolution: int = DEFAULT_RESOLUTION,
                   supersample: int = 4) -> np.ndarray:
    """``n`` training images of a held-out concept (seeded; positions vary)."""
    rng = np.random.default_rng(seed)
    return render(concept_attributes(concept, rng, n), resolution, supersample)


def evaluation_captions(rng: np.random.Generator, n: int, exclude: Sequence[HeldOutConcept] = HELD_OUT
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
