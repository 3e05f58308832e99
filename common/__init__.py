"""common: the few helpers :mod:`inversion` and :mod:`storage` share, since they may not import each other.

This package imports nothing of ours and nothing heavier than Pillow; this file imports nothing at all,
so callers name the module they use:

* :mod:`common.atomic` — :func:`~common.atomic.atomic_write`, the one way files are published whole;
* :mod:`common.images` — :func:`~common.images.normalise_image`, the one image normaliser;
* :mod:`common.filenames` — the names of the files a learned word's result is made of;
* :mod:`common.digest` — the one content-key recipe (canonical JSON, then SHA-256);
* :mod:`common.norms` — the line above which a learned word counts as blown up.
"""
