"""Small synthetic images in every awkward flavour, generated with Pillow (no files in the repo)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def rgb_jpeg(size=(64, 48), color=(200, 30, 30)) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", quality=90)


def rgb_png(size=(32, 32), color=(10, 120, 240)) -> bytes:
    return encode(Image.new("RGB", size, color), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "JPEG")  # pure cyan


def palette_png(transparent: bool) -> bytes:
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    if transparent:
        return encode(image, "PNG", transparency=0)
    return encode(image, "PNG")


def gray16_png(value: int = 65535) -> bytes:
    image = Image.new("I;16", (16, 16), value)
    return encode(image, "PNG")


def rgba_png() -> bytes:
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent → white
    return encode(image, "PNG")


def la_png() -> bytes:
    return encode(Image.new("LA", (10, 10), (80, 0)), "PNG")


def exif_rotated_jpeg(size=(60, 20), orientation: int = 6) -> bytes:
    image = Image.new("RGB", size, (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes())


def webp() -> bytes:
    return encode(Image.new("RGB", (24, 24), (1, 2, 3)), "WEBP")


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG", quality=95)
    return data[: len(data) // 2]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a gigantic image (a classic decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )
