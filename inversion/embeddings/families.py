"""Which keys each client reads from a word's single file, per model family (no torch).

A word for a model with several text encoders is one tensor ``[N, width]`` per text encoder. SDXL, SD 3
and Flux ship it as one safetensors file that names each encoder's tensor by a key; the clients differ in
the keys they read, so the layouts live here, once, for the writer (:mod:`inversion.embeddings.formats`),
the reader and ``sstar inspect``:

* ComfyUI (``comfy/sd1_clip.py`` ``load_embed``; each tokenizer asks the file for its own key) and
  AUTOMATIC1111 / kohya for SDXL: ``clip_l`` (CLIP ViT-L, 768), ``clip_g`` (OpenCLIP bigG, 1280) and
  ``t5xxl`` (T5-XXL, 4096). SDXL has the first two, SD 3 all three, Flux ``clip_l`` and ``t5xxl``.
* diffusers' advanced Flux script (``train_dreambooth_lora_flux_advanced.py`` with ``--enable_t5_ti``)
  writes ``clip_l`` and ``t5``; users load each tensor with its own ``load_textual_inversion`` call, the
  second on ``text_encoder_2`` / ``tokenizer_2``. diffusers' SD 3 pipeline has no embedding loader.

The keys are in text-encoder order (diffusers' ``text_encoder``, ``_2``, ``_3``:
:attr:`inversion.model.components.DiffusionComponents.text_sides`). The widths are the real models'; the
tiny test models have their own, and a file is right for a model when each key's width is that text
encoder's hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.filenames import diffusers_flux_filename, keyed_filename
from inversion.model.info import FAMILY_FOLDERS, Family

__all__ = [
    "FAMILY_METADATA_KEY",
    "TOKEN_METADATA_KEY",
    "VECTORS_METADATA_KEY",
    "KeyedFile",
    "KEYED_FILES",
    "ENCODER_WIDTHS",
    "text_encoder_count",
    "family_of_keys",
]

#: metadata of the SD 3 / Flux files: the family, the token (the files store no token of their own) and the
#: number of vectors; SD 1.x / 2.x / XL files carry none of them, so their bytes stay as they were
FAMILY_METADATA_KEY = "sstar.family"
TOKEN_METADATA_KEY = "sstar.token"
VECTORS_METADATA_KEY = "sstar.vectors"


@dataclass(frozen=True)
class KeyedFile:
    """One single-file layout: ``{key: [N, width]}``, one key per text encoder, in text-encoder order."""

    kind: str  # its name among the files save_embedding_files writes
    format: str  # its name among the formats parse_embedding tells apart
    keys: tuple[str, ...]
    clients: str

    def filename(self, token: str, family: Family) -> str:
        """Its name in a word's folder: ``<token-slug>.safetensors`` (the stem is ComfyUI's and A1111's
        ``embedding:`` name), diffusers' Flux file ``<token-slug>_emb.safetensors`` (the advanced script's)."""
        return diffusers_flux_filename(token) if self.format == "diffusers-flux" else keyed_filename(token, family)


_COMFYUI = "ComfyUI (embedding:<file stem>)"
#: the single files written for each family that has them, by the keys their clients read
KEYED_FILES: dict[Family, tuple[KeyedFile, ...]] = {
    "sdxl": (KeyedFile("sdxl", "per-encoder", ("clip_l", "clip_g"), f"AUTOMATIC1111, kohya, {_COMFYUI}"),),
    "sd3": (KeyedFile("comfyui", "per-encoder", ("clip_l", "clip_g", "t5xxl"), _COMFYUI),),
    "flux": (
        KeyedFile("comfyui", "per-encoder", ("clip_l", "t5xxl"), _COMFYUI),
        KeyedFile("diffusers", "diffusers-flux", ("clip_l", "t5"), "diffusers (load_textual_inversion per key)"),
    ),
}

#: the text encoders' widths in the real models (ComfyUI's ``embedding_size`` for clip_l, clip_g, t5xxl)
ENCODER_WIDTHS: dict[Family, tuple[int, ...]] = {
    "sd1": (768,),
    "sd2": (1024,),
    "sdxl": (768, 1280),
    "sd3": (768, 1280, 4096),
    "flux": (768, 4096),
}


def text_encoder_count(family: Family) -> int:
    """How many text encoders a model of ``family`` has (the ``text_encoder*`` folders it is read from)."""
    return sum(folder.startswith("text_encoder") for folder in FAMILY_FOLDERS[family])


def family_of_keys(keys: set[str] | frozenset[str]) -> tuple[Family, KeyedFile] | None:
    """The family and layout whose keys are exactly ``keys``, or ``None`` when no layout has them."""
    for family, layouts in KEYED_FILES.items():
        for layout in layouts:
            if set(layout.keys) == set(keys):
                return family, layout
    return None
