"""Reading a concept's training images from a folder and preparing them for the VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from common.images import normalise_image
from inversion.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def open_rgb(path: Path) -> Image.Image:
    """Open an image as upright RGB (see :func:`common.images.normalise_image`)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()  # closing the file invalidates ``opened``
    except UnidentifiedImageError as exc:
        raise InputError(f"cannot read image {path}: not a recognised image file") from exc
    except (OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    return normalise_image(image)


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic) and crop the centre square."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image → float tensor ``[3, H, W]`` in [-1, 1], the VAE's input range."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_training_images(folder: Path, resolution: int) -> tuple[list[Path], torch.Tensor]:
    """All images of ``folder`` as a ``[N, 3, resolution, resolution]`` tensor in [-1, 1]."""
    files = list_images(folder)
    tensors = [to_tensor(center_crop_resize(open_rgb(path), resolution)) for path in files]
    return files, torch.stack(tensors)
