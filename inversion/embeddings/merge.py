"""A new word from learned words: weighted sum, spherical interpolation, or concatenation.

``sstar merge --from a.safetensors:0.5 --from b.safetensors:0.5 --token '<ab>' [--mode sum|slerp|concat]``

* ``sum`` — vector i of the new word is ``Σ_k w_k · v_k[i]``: the parents must have the same number of
  vectors (matched by position). Weights need not add up to 1 (``0.5 + 0.5`` is the mean).
* ``slerp`` — two parents, weights ``w_a, w_b`` ≥ 0: ``t = w_b / (w_a + w_b)``; each matched pair of
  vectors is interpolated along the great circle between their directions, and the length linearly
  (``|v| = (1 − t)|a| + t|b|``). Unlike ``sum`` at ``t = 0.5``, the result keeps the parents' length
  instead of shrinking where they point apart. SDXL words interpolate each text encoder's columns on their own.
* ``concat`` — the parents' vectors one after another (``N_a + N_b`` vectors), each parent's scaled by its
  weight (``1`` keeps it as learned): one multi-vector word that says both.

Parents must have the same widths (one model family). :func:`merge_files` writes every format
:func:`inversion.embeddings.formats.save_embedding_files` writes, each with the merge recorded in its metadata
under :data:`MERGE_METADATA_KEY` (JSON: mode, token, and per parent its file, token, weight and SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from inversion.config import MERGE_MODES, MergeMode
from inversion.embeddings.formats import LearnedEmbedding, load_embeddings, save_embedding_files
from inversion.errors import ConfigError, EmbeddingFormatError

#: the metadata key of a merged word's files (a JSON object; see the module docstring)
MERGE_METADATA_KEY = "sstar.merge"


@dataclass(frozen=True)
class Parent:
    """One word to merge: its embedding, its weight and, for the record, the file it came from."""

    embedding: LearnedEmbedding
    weight: float
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ConfigError(
                f"weight of {self.source or self.embedding.token} must be a finite number, got {self.weight!r}"
            )


def parse_source(text: str) -> tuple[str, float]:
    """``file.safetensors:0.5`` → ``("file.safetensors", 0.5)``; without ``:weight`` the weight is 1."""
    path, sep, weight = text.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return text, 1.0


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Row-wise spherical interpolation of directions, linear interpolation of lengths."""
    a_norm, b_norm = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    a_dir, b_dir = a / a_norm.clamp_min(1e-12), b / b_norm.clamp_min(1e-12)
    cos = (a_dir * b_dir).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    sin = torch.sin(angle)
    parallel = sin.abs() < 1e-6  # (anti)parallel: the plane is undefined; fall back to linear directions
    wa = torch.where(parallel, torch.full_like(sin, 1 - t), torch.sin((1 - t) * angle) / sin.clamp_min(1e-12))
    wb = torch.where(parallel, torch.full_like(sin, t), torch.sin(t * angle) / sin.clamp_min(1e-12))
    direction = wa * a_dir + wb * b_dir
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return direction * ((1 - t) * a_norm + t * b_norm)


def merge_embeddings(parents: Sequence[Parent], token: str, mode: MergeMode = "sum") -> LearnedEmbedding:
    """The new word ``token`` from ``parents`` by ``mode`` (module docstring). One-line errors name the
    parent at fault: mismatched widths, vector counts (``sum``/``slerp``), or weights (``slerp``)."""
    if mode not in MERGE_MODES:
        raise ConfigError(f"mode must be one of {', '.join(MERGE_MODES)}, got {mode!r}")
    if not parents:
        raise ConfigError("merge needs at least one parent word")
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"token must be one word without spaces, got {token!r}")
    first = parents[0]

    def name(parent: Parent) -> str:
        return parent.source or parent.embedding.token

    for other in parents[1:]:
        if (other.embedding.widths, other.embedding.family) != (first.embedding.widths, first.embedding.family):
            raise EmbeddingFormatError(
                f"{name(first)} and {name(other)} were learned for different model families "
                f"(widths {first.embedding.widths} and {other.embedding.widths})"
            )
        if mode != "concat" and other.embedding.num_vectors != first.embedding.num_vectors:
            raise EmbeddingFormatError(
                f"{name(first)} has {first.embedding.num_vectors} vector(s) but {name(other)} "
                f"{other.embedding.num_vectors}: {mode} matches vectors one to one "
                f"(use --mode concat)"
            )
    widths = first.embedding.widths
    if mode == "concat":
        vectors = torch.cat([p.weight * p.embedding.vectors for p in parents])
    elif mode == "sum":
        vectors = sum((p.weight * p.embedding.vectors for p in parents), torch.zeros_like(first.embedding.vectors))
    else:
        if len(parents) != 2:
            raise ConfigError(f"slerp interpolates between two words, got {len(parents)}")
        a, b = parents
        if a.weight < 0 or b.weight < 0 or a.weight + b.weight <= 0:
            raise ConfigError(f"slerp weights must be >= 0 and not both 0, got {a.weight} and {b.weight}")
        t = b.weight / (a.weight + b.weight)
        vectors = torch.cat([_slerp(x, y, t) for x, y in zip(a.embedding.tables, b.embedding.tables)], dim=1)
    return LearnedEmbedding(token, vectors.float().contiguous(), widths, first.embedding.family)


def merge_record(parents: Sequence[Parent], token: str, mode: MergeMode) -> dict[str, str]:
    """The metadata a merged word's files carry (:data:`MERGE_METADATA_KEY` → JSON)."""

    def sha256(source: str) -> str | None:
        path = Path(source)
        return hashlib.sha256(path.read_bytes()).hexdigest() if source and path.is_file() else None

    record = {
        "mode": mode,
        "token": token,
        "parents": [
            {"file": p.source, "token": p.embedding.token, "weight": p.weight, "sha256": sha256(p.source)}
            for p in parents
        ],
    }
    return {MERGE_METADATA_KEY: json.dumps(record, sort_keys=True)}


def merge_files(
    sources: Sequence[tuple[str | Path, float]], token: str, out: Path, mode: MergeMode = "sum"
) -> dict[str, Path]:
    """``sstar merge``: read the parent files (tokens must be distinct), merge, and write every format
    into the folder ``out`` with the merge in each file's metadata. Returns the files by kind."""
    paths = [Path(path) for path, _ in sources]
    embeddings = load_embeddings(paths)
    parents = [Parent(e, float(w), str(path)) for e, (path, w) in zip(embeddings, sources)]
    merged = merge_embeddings(parents, token, mode)
    Path(out).mkdir(parents=True, exist_ok=True)
    return save_embedding_files(merged, Path(out), metadata=merge_record(parents, token, mode))
