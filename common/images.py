"""The one image normaliser: any decoded Pillow image → upright 8-bit RGB.

Used by :mod:`storage.images` (validating catalog uploads) and :mod:`inversion.images` (reading a
concept folder), so a picture trains the same whichever way it arrives.
"""

from __future__ import annotations

from PIL import Image, ImageOps

__all__ = ["normalise_image"]

#: Pillow's integer grey modes. The 16-bit ones hold 0…65535; Pillow's PNG decoder returned 16-bit
#: grey as "I" in older releases, so "I" is read as 16-bit too.
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")


def normalise_image(image: Image.Image) -> Image.Image:
    """``image`` with its EXIF orientation applied, converted to RGB.

    * 16-bit grey is scaled to 8 bits by its full range (65535 → 255, 32768 → 128), whatever the
      picture's own brightest pixel: a dark 16-bit photo stays dark;
    * alpha (and palette or grey transparency) is composited over white;
    * CMYK, YCbCr, palette, 1-bit, grey and float images are converted by Pillow.

    Corrupt EXIF data is ignored (the image is kept as stored) rather than rejected.
    """
    return _to_rgb(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - corrupt EXIF must not cost an otherwise fine image
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        # + 0.5: round to nearest; convert("L") clips anything outside 0…255
        return image.convert("I").point(lambda v: v * (255 / 65535) + 0.5).convert("L").convert("RGB")
    if mode == "F":
        return image.convert("L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
