"""Small helpers shared by :mod:`inversion` and :mod:`storage`, which may not import each other.

This package imports nothing of ours and nothing heavier than Pillow:

* :mod:`common.atomic` — :func:`~common.atomic.atomic_write`, the one way files are published whole;
* :mod:`common.images` — :func:`~common.images.normalise_image`, the one image normaliser.
"""

from .atomic import TEMP_PREFIX, atomic_write, atomic_write_bytes
from .images import normalise_image

__all__ = ["TEMP_PREFIX", "atomic_write", "atomic_write_bytes", "normalise_image"]
