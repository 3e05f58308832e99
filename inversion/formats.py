"""Embedding files: the formats diffusers and AUTOMATIC1111-style UIs load, and kohya's.

* diffusers: ``learned_embeds.safetensors`` = ``{token: tensor[N, dim]}``.
* AUTOMATIC1111: a ``.pt`` file ``{"string_to_token": {"*": 265}, "string_to_param": {"*": tensor[N, dim]},
  "name": ..., "step": ...}`` in torch's legacy serialization (what A1111's safe-unpickle check
  accepts); the file name is the trigger word. diffusers' ``load_textual_inversion`` reads it too.
* kohya / A1111 safetensors: ``{"emb_params": tensor[N, dim]}``.

Reading never unpickles arbitrary objects: ``.pt``/``.bin`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.atomic import atomic_write

from .errors import EmbeddingFormatError

DIFFUSERS_FILENAME = "learned_embeds.safetensors"
A1111_PLACEHOLDER = "*"
A1111_PLACEHOLDER_ID = 265  # the id of "*" in CLIP's vocabulary, as A1111 writes it


@dataclass(frozen=True)
class LearnedEmbedding:
    """A learned word: its token and its vectors ``[N, dim]`` (fp32, CPU)."""

    token: str
    vectors: torch.Tensor

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])


def _clean(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()


def save_diffusers(embedding: LearnedEmbedding, path: Path) -> Path:
    """Write the diffusers ``{token: [N, dim]}`` safetensors file (atomically)."""
    tensors = {embedding.token: _clean(embedding.vectors)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    return Path(path)


def save_a1111(embedding: LearnedEmbedding, path: Path, step: int = 0, name: str | None = None) -> Path:
    """Write an AUTOMATIC1111-style ``.pt`` embedding (also loadable by diffusers), atomically.

    It is written in torch's legacy (non-zip) serialization: AUTOMATIC1111's default safe-unpickle
    check refuses zip archives holding entries other than ``data.pkl``, ``data/N``, ``version``,
    ``byteorder`` and ``.data/serialization_id`` — and current torch's zip files also hold
    ``.format_version`` and ``.storage_alignment``. ``torch.load(weights_only=True)`` reads both.
    """
    payload = {
        "string_to_token": {A1111_PLACEHOLDER: A1111_PLACEHOLDER_ID},
        "string_to_param": {A1111_PLACEHOLDER: _clean(embedding.vectors)},
        "name": name or Path(path).stem,
        "step": int(step),
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp, _use_new_zipfile_serialization=False))
    return Path(path)


def a1111_filename(token: str) -> str:
    """The A1111 file name for ``token``: A1111 uses the file stem as the trigger word.

    A token of plain ASCII letters, digits and ``- _ .`` (inside optional ``<>``) keeps its spelling
    (``<my-cat>`` → ``my-cat.pt``). Any other token gets an ASCII slug plus 8 hex digits of its
    SHA-256 (``<café-猫>`` → ``caf-<hash>.pt``): safe as an object key and on every filesystem,
    stable, and distinct for distinct tokens. The exact token is always in the diffusers file.
    """
    core = token[1:-1] if len(token) > 2 and token.startswith("<") and token.endswith(">") else token
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", core).strip("-._")
    if slug and slug == core:
        return f"{slug}.pt"
    suffix = hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]
    return f"{slug[:48].rstrip('-._') or 'embedding'}-{suffix}.pt"


def _only_tensor(tensors: dict, path: Path) -> torch.Tensor:
    values = [v for v in tensors.values() if isinstance(v, torch.Tensor)]
    if len(values) != 1:
        raise EmbeddingFormatError(f"{path}: expected exactly one embedding tensor, found {len(values)}")
    return values[0]


def _as_vectors(tensor: torch.Tensor, path: Path) -> torch.Tensor:
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or tensor.shape[0] < 1 or not tensor.is_floating_point():
        raise EmbeddingFormatError(f"{path}: embedding must be a float tensor [N, dim], got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise EmbeddingFormatError(f"{path}: embedding contains NaN or infinite values")
    return tensor.to(torch.float32).contiguous()


def load_embedding(path: Path, token: str | None = None) -> LearnedEmbedding:
    """Read a diffusers, A1111 or kohya embedding file.

    ``token`` overrides the token stored in the file; A1111 and kohya files default to ``<file-stem>``
    (as the UIs use the stem as the trigger word).
    """
    path = Path(path)
    if not path.is_file():
        raise EmbeddingFormatError(f"embedding file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise EmbeddingFormatError(f"{path}: not a readable safetensors file ({exc})") from exc
        if "emb_params" in tensors:
            return LearnedEmbedding(token or f"<{path.stem}>", _as_vectors(tensors["emb_params"], path))
        if len(tensors) != 1:
            raise EmbeddingFormatError(f"{path}: expected one token in a diffusers embedding, found {len(tensors)}")
        (stored, vectors), = tensors.items()
        return LearnedEmbedding(token or stored, _as_vectors(vectors, path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EmbeddingFormatError(f"{path}: not a readable embedding file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise EmbeddingFormatError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict):
            raise EmbeddingFormatError(f"{path}: string_to_param is not a dict")
        return LearnedEmbedding(token or f"<{path.stem}>", _as_vectors(_only_tensor(params, path), path))
    if "emb_params" in data:
        return LearnedEmbedding(token or f"<{path.stem}>", _as_vectors(data["emb_params"], path))
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 1:
        raise EmbeddingFormatError(f"{path}: unrecognised embedding format (keys: {', '.join(map(str, data))})")
    (stored, vectors), = tensors.items()
    return LearnedEmbedding(token or stored, _as_vectors(vectors, path))


def save_embedding_files(embedding: LearnedEmbedding, folder: Path, step: int = 0) -> dict[str, Path]:
    """Write both files a user needs into ``folder``: diffusers safetensors and the A1111 ``.pt``."""
    folder = Path(folder)
    return {
        "diffusers": save_diffusers(embedding, folder / DIFFUSERS_FILENAME),
        "a1111": save_a1111(embedding, folder / a1111_filename(embedding.token), step=step),
    }
