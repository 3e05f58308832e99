"""The words-only baseline cache of a catalog's output: ``<out>/baselines/<key>.png``.

A baseline rendering does not depend on the learned word (:class:`inversion.evaluation.scoring.BaselineCache`),
so it is rendered once per model, prompts, seeds and sampler settings (the key,
:func:`inversion.evaluation.scoring.baseline_key`) and read back by every later concept and run that needs it.
Each entry is one lossless PNG sheet: one row per prompt, one column per seed, every cell the
rendering's size (the shape is in the PNG's ``sstar-grid`` text chunk). Entries are written
atomically; a missing or unreadable one is rendered again.
"""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image
from PIL.PngImagePlugin import PngImageFile, PngInfo

from inversion.model.fingerprint import model_fingerprint
from storage.errors import StorageError
from storage.store.open import open_store

#: where baseline renderings live under ``<out>/``
BASELINES_PREFIX = "baselines/"
_SHAPE_KEY = "sstar-grid"  # "<prompts>x<seeds>"


def _sheet(images: list[list[Image.Image]]) -> bytes:
    width, height = images[0][0].size
    sheet = Image.new("RGB", (width * len(images[0]), height * len(images)))
    for row, line in enumerate(images):
        for column, image in enumerate(line):
            sheet.paste(image.convert("RGB"), (column * width, row * height))
    info = PngInfo()
    info.add_text(_SHAPE_KEY, f"{len(images)}x{len(images[0])}")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _cells(data: bytes) -> list[list[Image.Image]]:
    opened = Image.open(io.BytesIO(data))
    if not isinstance(opened, PngImageFile):  # only a PNG carries the shape chunk
        raise ValueError(f"a baseline sheet must be a PNG, got {opened.format}")
    rows, columns = (int(n) for n in opened.text[_SHAPE_KEY].split("x"))
    sheet = opened.convert("RGB")
    width, height = sheet.width // columns, sheet.height // rows
    return [
        [sheet.crop((c * width, r * height, (c + 1) * width, (r + 1) * height)) for c in range(columns)]
        for r in range(rows)
    ]


@lru_cache(maxsize=8)
def _scope(model: str) -> str:
    return model_fingerprint(model)


class StoreBaselineCache:
    """:class:`inversion.evaluation.scoring.BaselineCache` over ``<out_uri>/baselines/`` for the model ``model``
    (a folder or hub id; keys name it by content)."""

    def __init__(self, out_uri: str, model: str) -> None:
        self.store = open_store(out_uri)
        self.scope = _scope(model)

    def get(self, key: str) -> list[list[Image.Image]] | None:
        """The kept rendering of ``key``; ``None`` when absent or unreadable (then it is rendered again)."""
        try:
            return _cells(self.store.get(f"{BASELINES_PREFIX}{key}.png"))
        except (StorageError, OSError, ValueError, KeyError):
            return None

    def put(self, key: str, images: list[list[Image.Image]]) -> None:
        """Keep ``images`` (``images[prompt][seed]``) under ``key``, atomically."""
        self.store.put(f"{BASELINES_PREFIX}{key}.png", _sheet(images))
