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
    "KEYED_WORD_FAMILIES",
    "word_filename",
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


#: the model families whose word stands as its single keyed file (ComfyUI's), having no ``learned_embeds`` file
KEYED_WORD_FAMILIES = ("sd3", "flux")


def word_filename(token: str, family: str | None) -> str:
    """The file that stands for a learned word in its result folder: the one the flows point at (scoring, the
    metrics' and the embeddings index's ``embedding_uri``, compositions, the report's link), and that
    :func:`inversion.embeddings.formats.load_embedding` reads back as the whole word.

    SD 1.x / 2.x / XL, and a model whose family is unknown: diffusers' :data:`DIFFUSERS_FILENAME` (an SDXL word's
    :data:`DIFFUSERS_FILENAME_2` beside it is read with it). SD 3 and Flux (:data:`KEYED_WORD_FAMILIES`): the
    ComfyUI file ``<token-slug>.safetensors`` (:func:`keyed_filename`), the one file that holds every text
    encoder's rows, T5's included (SD 3 has no diffusers file; Flux's diffusers pair file is written beside it).
    """
    return keyed_filename(token, family) if family in KEYED_WORD_FAMILIES else DIFFUSERS_FILENAME
