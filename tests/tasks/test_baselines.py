"""tasks.baselines: words-only renderings kept under <out>/baselines/ come back pixel for pixel;
a missing or unreadable entry is a miss (rendered again), never an error."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tasks.baselines import BASELINES_PREFIX, StoreBaselineCache


def _images(rows: int, columns: int) -> list[list[Image.Image]]:
    rng = np.random.default_rng(0)
    return [
        [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(columns)]
        for _ in range(rows)
    ]


def test_kept_images_come_back_exactly(tiny_model_dir, tmp_path):
    cache = StoreBaselineCache(str(tmp_path / "out"), str(tiny_model_dir))
    assert len(cache.scope) >= 16 and cache.get("k") is None
    images = _images(2, 3)
    cache.put("k", images)
    again = StoreBaselineCache(str(tmp_path / "out"), str(tiny_model_dir)).get("k")
    assert again is not None and [len(row) for row in again] == [3, 3]
    for row, row_again in zip(images, again):
        for image, image_again in zip(row, row_again):
            assert np.array_equal(np.asarray(image), np.asarray(image_again))
    assert (tmp_path / "out" / BASELINES_PREFIX / "k.png").is_file()


def test_an_unreadable_entry_is_a_miss(tiny_model_dir, tmp_path):
    cache = StoreBaselineCache(str(tmp_path / "out"), str(tiny_model_dir))
    (tmp_path / "out" / BASELINES_PREFIX).mkdir(parents=True)
    (tmp_path / "out" / BASELINES_PREFIX / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (4, 4)).save(tmp_path / "out" / BASELINES_PREFIX / "plain.png")  # no grid shape
    assert cache.get("bad") is None and cache.get("plain") is None
