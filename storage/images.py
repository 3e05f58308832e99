"""Decoding and normalising a concept's images, and handing them to the training code.

:func:`validate_image` turns untrusted bytes into a loaded RGB :class:`PIL.Image.Image`:
only JPEG/PNG/WebP decoders are used, the pixel count is checked before decoding
(decompression bombs), and the result goes through :func:`common.images.normalise_image` (EXIF
orientation applied; CMYK, palette, 16-bit, grey and alpha images converted, not rejected).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.images import normalise_image
from storage.catalog import ConceptProblem, ConceptSpec
from storage.errors import InvalidImage, InvalidInput, StorageError
from storage.store.base import ObjectStore

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IngestedConcept",
    "validate_image",
    "ingest_concept",
    "write_pngs",
]

DEFAULT_MAX_PIXELS = 40_000_000  # ~ 6300 x 6300; a phone photo is 12-50 MP, a DreamBooth photo 4 MP
_FORMATS = ("JPEG", "PNG", "WEBP")  # the JPEG opener also yields MPO (multi-picture phone JPEGs)


def validate_image(
    name: str, data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode ``data`` into a loaded RGB image or raise :class:`~storage.errors.InvalidImage`.

    ``name`` only labels error messages. ``max_side``, when given, shrinks the image (keeping
    its aspect ratio) so that its longer side is at most that many pixels; JPEGs are then
    decoded at reduced scale, which is much faster.
    """
    if not data:
        raise InvalidImage(f"{name}: empty file")
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=_FORMATS)
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImage(f"{name}: image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise InvalidImage(
                f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                "(possible decompression bomb)"
            )
        if max_side is not None and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (max_side, max_side))
        image.load()
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"{name}: rejected as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{name}: not a decodable JPEG, PNG or WebP image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"{name}: cannot decode image ({_short(exc)}); truncated or corrupt?") from None
    except Exception as exc:  # noqa: BLE001 - a hostile file can trip any error in a decoder; it is a bad image
        raise InvalidImage(f"{name}: cannot decode image ({type(exc).__name__}: {_short(exc)})") from None
    try:
        image = normalise_image(image)
    except Exception as exc:  # noqa: BLE001 - as above: a conversion failure rejects the image, never escapes
        raise InvalidImage(f"{name}: cannot convert mode {image.mode} to RGB ({_short(exc)})") from None
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass(frozen=True)
class IngestedConcept:
    """A concept's decoded images and the files that could not be used.

    ``images`` pairs each usable image key with its RGB image; ``problems`` names each
    rejected file (and the concept itself, with ``file=None``, when no image is usable).
    """

    spec: ConceptSpec
    images: tuple[tuple[str, Image.Image], ...]
    problems: tuple[ConceptProblem, ...]

    @property
    def usable(self) -> bool:
        return bool(self.images)


def ingest_concept(
    store: ObjectStore,
    spec: ConceptSpec,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    max_workers: int = 4,
    data: Mapping[str, bytes] | None = None,
) -> IngestedConcept:
    """Read and validate every image of ``spec``; bad files become problems, not exceptions.

    ``data`` holds bytes already read by key (:func:`storage.catalog.read_concept`), so a concept's
    images are read once; keys missing from it are read from ``store``.
    """

    def load(key: str) -> tuple[str, Image.Image | str]:
        """``key`` with its image, or with the reason it cannot be used."""
        try:
            body = data.get(key) if data is not None else None
            raw = body if body is not None else store.get(key)
            return key, validate_image(key, raw, max_pixels=max_pixels, max_side=max_side)
        except InvalidImage as exc:
            return key, str(exc).removeprefix(f"{key}: ")
        except StorageError as exc:
            return key, f"cannot read: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(spec.images) or 1))) as pool:
        results = list(pool.map(load, spec.images))
    images = tuple((key, outcome) for key, outcome in results if isinstance(outcome, Image.Image))
    problems = [ConceptProblem(spec.concept_id, key, outcome) for key, outcome in results if isinstance(outcome, str)]
    if not images:
        problems.append(ConceptProblem(spec.concept_id, None, "no usable image"))
    return IngestedConcept(spec, images, tuple(problems))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def write_pngs(images: Sequence[tuple[str, Image.Image]], local_dir: Path) -> list[Path]:
    """Save ``(key, image)`` pairs as ``NNN_<name>.png`` in ``local_dir`` (created; must be empty)."""
    local_dir = Path(local_dir)
    if local_dir.exists() and any(local_dir.iterdir()):
        raise InvalidInput(f"refusing to write images into non-empty folder {local_dir}")
    local_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index, (key, image) in enumerate(images):
        stem = _UNSAFE.sub("-", Path(key.rsplit("/", 1)[-1]).stem).strip("-.") or "image"
        path = local_dir / f"{index:03d}_{stem[:80]}.png"
        image.save(path, format="PNG", compress_level=1)
        paths.append(path)
    return paths
