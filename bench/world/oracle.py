"""The toy world's oracle: measure an image's shape hue, background and size exactly.

* **hue**: circular mean of the hue of the *saturated* pixels (HSV saturation and value above
  thresholds), weighted by chroma — mixing a colour with black, gray or white (anti-aliased edges)
  does not change its hue, so on generated images of the world this is exact up to uint8 rounding;
* **background**: black / gray / white, the level nearest to the median of the unsaturated border
  pixels;
* **size**: the fraction of saturated pixels; :func:`size_words` turns it into the size word for a
  known shape.

Vectorised numpy over a batch ``[N, H, W, 3]`` (uint8 or floats in [0, 255]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .generate import BACKGROUND_LEVELS, BACKGROUNDS, HUE_WORDS, SIZE_RANGES, circular_distance, hue_bin

SATURATION_MIN = 0.35
VALUE_MIN = 0.25
#: below this fraction of saturated pixels an image has no measurable shape (hue = NaN)
MIN_SHAPE_FRACTION = 0.01
#: a shape's area as a fraction of its extent squared (the triangle's base and height equal its extent)
SHAPE_AREA = {"circle": float(np.pi / 4), "square": 1.0, "triangle": 0.5}
#: extents below this are ``small``, above it ``large``: half-way between the two words' ranges
SIZE_THRESHOLD = (SIZE_RANGES[0][1] + SIZE_RANGES[1][0]) / 2


@dataclass
class Measurement:
    """Per-image measurements of a batch (arrays of length N)."""

    hue: np.ndarray  # degrees in [0, 360); NaN where no shape was found
    hue_concentration: np.ndarray  # length of the mean hue vector in [0, 1] (1 = one pure hue)
    background: np.ndarray  # index into BACKGROUNDS
    size: np.ndarray  # fraction of saturated pixels

    @property
    def has_shape(self) -> np.ndarray:
        return ~np.isnan(self.hue)

    @property
    def hue_words(self) -> list[str | None]:
        return [None if np.isnan(h) else HUE_WORDS[int(hue_bin(h))] for h in self.hue]

    @property
    def background_names(self) -> list[str]:
        return [BACKGROUNDS[int(b)] for b in self.background]

    def to_dict(self) -> dict[str, Any]:
        return {
            "hue": [None if np.isnan(h) else float(h) for h in self.hue],
            "hue_concentration": self.hue_concentration.tolist(),
            "background": self.background_names,
            "size": self.size.tolist(),
        }


def _as_array(images: np.ndarray | Sequence[Any]) -> np.ndarray:
    if isinstance(images, np.ndarray):
        array = images
    else:  # PIL images
        array = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected images [N, H, W, 3], got {array.shape}")
    return array.astype(np.float32) / 255.0


def measure(images: np.ndarray | Sequence[Any]) -> Measurement:
    """Measure a batch of images (uint8 ``[N, H, W, 3]`` or a list of PIL images)."""
    rgb = _as_array(images)
    n = rgb.shape[0]
    vmax = rgb.max(axis=-1)
    vmin = rgb.min(axis=-1)
    chroma = vmax - vmin
    saturation = np.where(vmax > 0, chroma / np.maximum(vmax, 1e-6), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(chroma, 1e-6)
    hue = (
        np.where(
            vmax == r, np.mod((g - b) / safe, 6.0), np.where(vmax == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
        )
        * 60.0
    )
    saturated = (saturation >= SATURATION_MIN) & (vmax >= VALUE_MIN)
    weight = np.where(saturated, chroma, 0.0)
    angle = np.deg2rad(hue)
    sx = (weight * np.cos(angle)).sum(axis=(1, 2))
    sy = (weight * np.sin(angle)).sum(axis=(1, 2))
    total = weight.sum(axis=(1, 2))
    fraction = saturated.reshape(n, -1).mean(axis=1)
    mean_hue = np.mod(np.rad2deg(np.arctan2(sy, sx)), 360.0)
    concentration = np.hypot(sx, sy) / np.maximum(total, 1e-9)
    mean_hue = np.where(fraction >= MIN_SHAPE_FRACTION, mean_hue, np.nan)

    border = np.concatenate([rgb[:, 0, :, :], rgb[:, -1, :, :], rgb[:, 1:-1, 0, :], rgb[:, 1:-1, -1, :]], axis=1)
    border_sat = np.concatenate(
        [saturated[:, 0, :], saturated[:, -1, :], saturated[:, 1:-1, 0], saturated[:, 1:-1, -1]], axis=1
    )
    gray = border.mean(axis=-1) * 255.0
    masked = np.where(border_sat, np.nan, gray)
    all_saturated = border_sat.all(axis=1)
    with np.errstate(all="ignore"):
        level = np.where(
            all_saturated, np.median(gray, axis=1), np.nanmedian(np.where(all_saturated[:, None], gray, masked), axis=1)
        )
    levels = np.asarray(BACKGROUND_LEVELS, dtype=np.float32)
    background = np.abs(level[:, None] - levels[None, :]).argmin(axis=1)
    return Measurement(mean_hue, concentration, background, fraction)


def size_words(measurement: Measurement, shape: str) -> np.ndarray:
    """Index into ``SIZE_WORDS`` of each image's size word, for images of ``shape``: the extent
    ``sqrt(size / SHAPE_AREA[shape])`` against :data:`SIZE_THRESHOLD` (an image without a shape is ``small``)."""
    if shape not in SHAPE_AREA:
        raise ValueError(f"shape must be one of {', '.join(SHAPE_AREA)}, got {shape!r}")
    extent = np.sqrt(np.asarray(measurement.size, dtype=np.float64) / SHAPE_AREA[shape])
    return (extent > SIZE_THRESHOLD).astype(np.int64)


def hue_error(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Circular distance between hues in degrees (in [0, 180]; NaN stays NaN)."""
    return circular_distance(a, b)


def summarise(measurement: Measurement, target_hue: float, target_background: str) -> dict[str, float]:
    """Median hue error (images without a shape count as 180°), share within 10°, background accuracy."""
    errors = np.where(measurement.has_shape, hue_error(measurement.hue, target_hue), 180.0)
    return {
        "median_hue_error": float(np.median(errors)),
        "mean_hue_error": float(np.mean(errors)),
        "within_10": float(np.mean(errors <= 10.0)),
        "background_accuracy": float(np.mean(measurement.background == BACKGROUNDS.index(target_background))),
        "shape_found": float(np.mean(measurement.has_shape)),
        "n": int(len(errors)),
    }
