"""common.images.normalise_image: one rule for every mode, 16-bit grey scaled by its full range."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from common.images import normalise_image


def _decoded_png(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (200, 1), (257, 1), (32767, 127), (32768, 128), (60000, 233), (65535, 255)]
)
def test_sixteen_bit_grey_scales_by_the_full_range(value: int, expected: int) -> None:
    """round(v * 255 / 65535), however dark the picture: a 16-bit value of 200 is almost black."""
    image = _decoded_png(Image.new("I;16", (4, 4), value))
    assert image.mode.startswith("I")
    assert normalise_image(image).getpixel((1, 1)) == (expected,) * 3


def test_a_dark_sixteen_bit_picture_keeps_its_contrast() -> None:
    image = Image.new("I;16", (2, 1), 0)
    image.putpixel((1, 0), 1000)
    out = normalise_image(_decoded_png(image))
    assert [out.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (4, 4, 4)]


def test_alpha_and_transparency_are_composited_over_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    out = normalise_image(rgba)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (255, 0, 0)
    grey_alpha = normalise_image(Image.new("LA", (1, 1), (0, 128)))
    assert grey_alpha.getpixel((0, 0)) == (127, 127, 127)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (6, 2), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert normalise_image(Image.open(io.BytesIO(buffer.getvalue()))).size == (2, 6)
