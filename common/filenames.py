"""The names of the files a learned word's result is made of (no torch).

The trainer, the scorer and the embedding formats write these files; the catalog coordinator, the
publishers and the reports refer to them by name without loading any model, so the names live here,
once, and the modules that write the files import them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = [
    "CHECKPOINT_FILENAME",
    "DIFFUSERS_FILENAME",
    "DIFFUSERS_FILENAME_2",
    "SCORES_FILENAME",
    "GRID_FILENAME",
    "BASELINE_GRID_FILENAME",
    "GRID_THUMBNAIL_FILENAME",
    "BASELINE_GRID_THUMBNAIL_FILENAME",
    "TRAINING_LOG",
    "TRAINING_STRIP_FILENAME",
    "SUCCESS_FILENAME",
    "a1111_filename",
    "keyed_filename",
    "sdxl_filename",
    "diffusers_flux_filename",
]

#: the resumable training state of one concept (:mod:`inversion.training.checkpoint`)
CHECKPOINT_FILENAME = "checkpoint.safetensors"
#: diffusers' ``{token: [N, dim]}`` file (:mod:`inversion.embeddings.formats`)
DIFFUSERS_FILENAME = "learned_embeds.safetensors"
#: diffusers' file for SDXL's second text encoder (OpenCLIP bigG), beside :data:`DIFFUSERS_FILENAME`
DIFFUSERS_FILENAME_2 = "learned_embeds_2.safetensors"
#: the scores of the learned word and of its words-only baseline (:mod:`inversion.evaluation.scoring`)
SCORES_FILENAME = "scores.json"
GRID_FILENAME = "grid.png"
BASELINE_GRID_FILENAME = "baseline_grid.png"
#: small JPEG copies of the grids, written beside them for reports to link (never embed)
GRID_THUMBNAIL_FILENAME = "grid.thumb.jpg"
BASELINE_GRID_THUMBNAIL_FILENAME = "baseline_grid.thumb.jpg"
#: the loss curves, stop reason and settings of one training (:mod:`tasks.invert`), published with the embedding
TRAINING_LOG = "training.json"
#: a small copy of the concept's own training images, side by side in one JPEG (:mod:`tasks.ingest`), published
#: with the result so the run report shows what the renders should resemble
TRAINING_STRIP_FILENAME = "training_images.jpg"
#: the manifest that completes a published result, written last (:mod:`storage.results`)
SUCCESS_FILENAME = "_SUCCESS"


def a1111_filename(token: str, suffix: str = ".pt") -> str:
    """The A1111 file name for ``token``: A1111 uses the file stem as the trigger word.

    A token of plain ASCII letters, digits and ``- _ .`` (inside optional ``<>``) keeps its spelling
    (``<my-cat>`` → ``my-cat.pt``). Any other token gets an ASCII slug plus 8 hex digits of its
    SHA-256 (``<café-猫>`` → ``caf-<hash>.pt``): safe as an object key and on every filesystem,
    stable, and distinct for distinct tokens. The exact token is always in the diffusers file.
    """
    core = token[1:-1] if len(token) > 2 and token.startswith("<") and token.endswith(">") else token
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", core).strip("-._")
    if slug and slug == core:
        return f"{slug}{suffix}"
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]
    return f"{slug[:48].rstrip('-._') or 'embedding'}-{digest}{suffix}"


def keyed_filename(token: str, family: str) -> str:
    """The name of a word's single file with per-encoder keys (SDXL, SD 3, Flux) for ``token``: the file stem is
    the trigger word, as for the ``.pt`` (ComfyUI's ``embedding:<stem>``).

    A stem that would clash with another file of the output folder (``learned_embeds``,
    ``learned_embeds_2``, ``checkpoint``) gets ``-<family>`` appended.
    """
    name = a1111_filename(token, ".safetensors")
    if name in (DIFFUSERS_FILENAME, DIFFUSERS_FILENAME_2, CHECKPOINT_FILENAME):
        name = f"{Path(name).stem}-{family}.safetensors"
    return name


def sdxl_filename(token: str) -> str:
    """The SDXL ``.safetensors`` file name for ``token`` (:func:`keyed_filename`; ``-sdxl`` on a clash)."""
    return keyed_filename(token, "sdxl")


def diffusers_flux_filename(token: str) -> str:
    """diffusers' Flux file (``clip_l`` + ``t5``) for ``token``: ``<token-slug>_emb.safetensors``, the ``_emb``
    name diffusers' advanced Flux script gives it (no clash with the folder's other files)."""
    return a1111_filename(token, "_emb.safetensors")
