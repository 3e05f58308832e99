"""Embedding files: the formats diffusers and AUTOMATIC1111-style UIs load, and kohya's.

SD 1.x (``dim`` 768) and SD 2.x (1024), one text encoder:

* diffusers: ``learned_embeds.safetensors`` = ``{token: tensor[N, dim]}``.
* AUTOMATIC1111: a ``.pt`` file ``{"string_to_token": {"*": 265}, "string_to_param": {"*": tensor[N, dim]},
  "name": ..., "step": ...}`` in torch's legacy serialization (what A1111's safe-unpickle check
  accepts); the file name is the trigger word. diffusers' ``load_textual_inversion`` reads it too.
* kohya / A1111 safetensors: ``{"emb_params": tensor[N, dim]}``.

SDXL, two text encoders (CLIP-L 768, OpenCLIP bigG 1280):

* A1111 / ComfyUI / kohya: ``<token-slug>.safetensors`` = ``{"clip_l": [N, 768], "clip_g": [N, 1280]}``
  (a plain dict; A1111 takes it only with both keys).
* diffusers: ``learned_embeds.safetensors`` = ``{token: [N, 768]}`` (for ``text_encoder``) and
  ``learned_embeds_2.safetensors`` = ``{token: [N, 1280]}`` (for ``text_encoder_2``). Reading
  ``learned_embeds.safetensors`` picks up its ``_2`` sibling when there is one.

SD 3 (CLIP-L 768, CLIP-G 1280, T5-XXL 4096) and Flux (CLIP-L 768, T5-XXL 4096), keys by client in
:mod:`inversion.embeddings.families`:

* ComfyUI: ``<token-slug>.safetensors`` = ``{"clip_l", "clip_g", "t5xxl"}`` (SD 3) or ``{"clip_l", "t5xxl"}``
  (Flux), ``[N, width]`` each.
* diffusers (Flux only; its SD 3 pipeline has no embedding loader): ``<token-slug>_emb.safetensors`` =
  ``{"clip_l": [N, 768], "t5": [N, 4096]}``, as diffusers' advanced Flux script writes it, loaded with one
  ``load_textual_inversion`` per key (``t5`` on ``text_encoder_2`` / ``tokenizer_2``).
* Both record the family, the token and the number of vectors in their metadata (:func:`word_metadata`):
  their keys hold no token, and two tables alone do not tell Flux from SDXL.

Files from other trainers are read by the same rules (:func:`parse_embedding` names the format): kohya's
``emb_params`` and ``clip_l``/``clip_g`` files, diffusers' ``learned_embeds.bin`` (``torch.save`` of
``{token: tensor}``), A1111 ``.pt`` files in either torch serialization, ComfyUI's per-encoder keys.

Reading never unpickles arbitrary objects: ``.pt``/``.bin`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common.atomic import atomic_write
from common.filenames import DIFFUSERS_FILENAME, DIFFUSERS_FILENAME_2, a1111_filename
from inversion.embeddings.families import (
    FAMILY_METADATA_KEY,
    KEYED_FILES,
    TOKEN_METADATA_KEY,
    VECTORS_METADATA_KEY,
    KeyedFile,
    family_of_keys,
    text_encoder_count,
)
from inversion.errors import EmbeddingFormatError
from inversion.model.info import Family

#: the keys of an SDXL embedding in A1111/ComfyUI/kohya files, in text-encoder order
SDXL_KEYS = ("clip_l", "clip_g")
A1111_PLACEHOLDER = "*"
A1111_PLACEHOLDER_ID = 265  # the id of "*" in CLIP's vocabulary, as A1111 writes it
#: where an A1111 ``.pt`` keeps sstar's metadata (A1111 ignores keys it does not know)
A1111_METADATA_KEY = "sstar_metadata"


@dataclass(frozen=True, init=False)
class LearnedEmbedding:
    """A learned word: its token and its vectors ``[N, dim]`` (fp32, CPU).

    For a model with several text encoders (SDXL, SD 3, Flux) ``vectors`` holds each encoder's vectors side
    by side, in encoder order, and ``widths`` says how many columns each has (``(768, 1280)``). Given as
    ``None``, there is one text encoder and ``widths`` is ``(dim,)``. ``family`` is the model family the
    word is for, where that decides its files: ``None`` for one text encoder (SD 1.x and 2.x files are
    alike), ``"sdxl"`` for two and ``"sd3"`` for three unless given; a Flux word (two, like SDXL) must say
    ``"flux"``. :meth:`from_tables` builds a word from one tensor per text encoder.
    """

    token: str
    vectors: torch.Tensor
    widths: tuple[int, ...]
    family: Family | None

    def __init__(
        self,
        token: str,
        vectors: torch.Tensor,
        widths: Sequence[int] | None = None,
        family: Family | None = None,
    ) -> None:
        object.__setattr__(self, "token", token)
        object.__setattr__(self, "vectors", vectors)
        columns = int(vectors.shape[-1])
        object.__setattr__(self, "widths", (columns,) if widths is None else tuple(int(w) for w in widths))
        if sum(self.widths) != columns:
            raise EmbeddingFormatError(
                f"embedding {token}: widths {self.widths} do not add up to its {columns} columns"
            )
        object.__setattr__(self, "family", _word_family(token, len(self.widths), family))

    @classmethod
    def from_tables(cls, token: str, tables: Sequence[torch.Tensor], family: Family | None = None) -> LearnedEmbedding:
        """The word whose text encoder ``i`` has the vectors ``tables[i]`` ``[N, width_i]`` (the order of
        :attr:`~inversion.model.components.DiffusionComponents.text_sides`)."""
        counts = {int(table.shape[0]) for table in tables}
        if len(counts) != 1 or any(table.ndim != 2 for table in tables):
            shapes = ", ".join(str(tuple(table.shape)) for table in tables)
            raise EmbeddingFormatError(f"embedding {token}: one [N, width] table per text encoder, got {shapes}")
        return cls(token, torch.cat(list(tables), dim=1), [int(t.shape[1]) for t in tables], family)

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def tables(self) -> tuple[torch.Tensor, ...]:
        """The vectors of each text encoder, ``[N, width]`` each, in encoder order."""
        return tuple(self.vectors.split(list(self.widths), dim=1))


#: the family a word is for when its maker does not say: the one with that many text encoders (Flux must say)
_FAMILY_BY_ENCODERS: dict[int, Family] = {2: "sdxl", 3: "sd3"}


def _word_family(token: str, encoders: int, family: Family | None) -> Family | None:
    """The family a word of ``encoders`` tables is for: ``family`` if it has that many text encoders, else
    the one family with that many (``None`` for one: SD 1.x or 2.x)."""
    if family is None:
        return _FAMILY_BY_ENCODERS.get(encoders)
    if text_encoder_count(family) != encoders:
        raise EmbeddingFormatError(
            f"embedding {token}: {encoders} table(s), but a {family} model has {text_encoder_count(family)} "
            f"text encoder(s)"
        )
    return None if text_encoder_count(family) == 1 else family


def _clean(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()


def save_diffusers(
    embedding: LearnedEmbedding, path: Path, encoder: int = 0, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the diffusers ``{token: [N, dim]}`` safetensors file of text encoder ``encoder`` (atomically),
    with ``metadata`` in the safetensors header (:func:`read_metadata`)."""
    tensors = {embedding.token: _clean(embedding.tables[encoder])}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None))
    return Path(path)


def save_keyed(
    embedding: LearnedEmbedding, path: Path, keys: Sequence[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the single safetensors file ``{key: [N, width]}``, ``keys[i]`` naming text encoder ``i``'s
    vectors (atomically): SDXL's ``clip_l``/``clip_g`` (AUTOMATIC1111, ComfyUI, kohya), SD 3's and Flux's
    ComfyUI file, diffusers' Flux ``clip_l``/``t5`` file (:data:`~inversion.embeddings.families.KEYED_FILES`)."""
    if len(embedding.tables) != len(keys):
        raise EmbeddingFormatError(
            f"embedding {embedding.token} has {len(embedding.tables)} table(s); a file with keys "
            f"{', '.join(keys)} needs {len(keys)}"
        )
    tensors = {key: _clean(table) for key, table in zip(keys, embedding.tables)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None))
    return Path(path)


def save_sdxl(embedding: LearnedEmbedding, path: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the SDXL ``{"clip_l": [N, 768], "clip_g": [N, 1280]}`` file (:func:`save_keyed`): what
    AUTOMATIC1111, ComfyUI and kohya load for SDXL."""
    return save_keyed(embedding, path, SDXL_KEYS, metadata)


def save_a1111(
    embedding: LearnedEmbedding,
    path: Path,
    step: int = 0,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write an AUTOMATIC1111-style ``.pt`` embedding (also loadable by diffusers), atomically.

    It is written in torch's legacy (non-zip) serialization: AUTOMATIC1111's default safe-unpickle
    check refuses zip archives holding entries other than ``data.pkl``, ``data/N``, ``version``,
    ``byteorder`` and ``.data/serialization_id`` — and current torch's zip files also hold
    ``.format_version`` and ``.storage_alignment``. ``torch.load(weights_only=True)`` reads both.
    """
    if len(embedding.tables) != 1:
        raise EmbeddingFormatError(
            f"embedding {embedding.token} is for {len(embedding.tables)} text encoders; "
            f"an A1111 .pt holds one (use the SDXL .safetensors)"
        )
    payload = {
        "string_to_token": {A1111_PLACEHOLDER: A1111_PLACEHOLDER_ID},
        "string_to_param": {A1111_PLACEHOLDER: _clean(embedding.vectors)},
        "name": name or Path(path).stem,
        "step": int(step),
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    if metadata:
        payload[A1111_METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: torch.save(payload, tmp, _use_new_zipfile_serialization=False))
    return Path(path)


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


#: the per-encoder keys of single-file embeddings, in text-encoder order: ComfyUI's (SDXL has the first two,
#: SD 3 the first three, Flux ``clip_l`` and ``t5xxl``) and the ``t5`` of diffusers' Flux file
#: (:data:`~inversion.embeddings.families.KEYED_FILES`)
ENCODER_KEYS = ("clip_l", "clip_g", "t5xxl", "t5")


@dataclass(frozen=True)
class EmbeddingFile:
    """What an embedding file holds, read without any model: its format, the token it names (if any) and
    its vectors ``[N, dim]`` by table (``"*"``/the token/``emb_params`` for one encoder, else
    :data:`ENCODER_KEYS`), in text-encoder order."""

    format: str  # one of FORMATS
    stored_token: str | None
    tables: dict[str, torch.Tensor]

    @property
    def layout(self) -> tuple[Family, KeyedFile] | None:
        """The family and single-file layout whose keys the file holds; ``None`` for a one-encoder file or
        keys no layout has."""
        return family_of_keys(frozenset(self.tables)) if self.format in KEYED_FORMATS else None


#: the formats :func:`parse_embedding` tells apart, with the tools that write each
FORMATS = {
    "diffusers": "diffusers {token: tensor}",
    "a1111": "AUTOMATIC1111 .pt (string_to_param)",
    "emb_params": "kohya / AUTOMATIC1111 (emb_params)",
    "per-encoder": "single file with per-encoder keys (ComfyUI; A1111 / kohya for SDXL)",
    "diffusers-flux": "diffusers' Flux file (clip_l + t5, one load_textual_inversion per key)",
}
#: the formats of single files with one key per text encoder
KEYED_FORMATS = ("per-encoder", "diffusers-flux")


def parse_embedding(data: dict, path: Path) -> EmbeddingFile:
    """Tell an embedding file's format from its keys and take its float tensors ``[N, dim]``."""
    if any(key in data for key in ENCODER_KEYS):
        keys = [key for key in ENCODER_KEYS if key in data]
        bad = [key for key in keys if not isinstance(data[key], torch.Tensor)]
        if bad:
            raise EmbeddingFormatError(f"{path}: {bad[0]} is not a tensor")
        keyed = "diffusers-flux" if "t5" in keys else "per-encoder"
        return EmbeddingFile(keyed, None, {key: _as_vectors(data[key], path) for key in keys})
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict):
            raise EmbeddingFormatError(f"{path}: string_to_param is not a dict")
        name = data.get("name")
        return EmbeddingFile(
            "a1111", name if isinstance(name, str) else None, {"*": _as_vectors(_only_tensor(params, path), path)}
        )
    if "emb_params" in data:
        return EmbeddingFile("emb_params", None, {"emb_params": _as_vectors(data["emb_params"], path)})
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 1:
        raise EmbeddingFormatError(
            f"{path}: expected one token in a diffusers embedding, found {len(tensors)} "
            f"(keys: {', '.join(map(str, data))})"
        )
    ((stored, vectors),) = tensors.items()
    return EmbeddingFile("diffusers", str(stored), {str(stored): _as_vectors(vectors, path)})


def _keyed_tables(parsed: EmbeddingFile, path: Path) -> tuple[Family, list[torch.Tensor]]:
    """The family and per-encoder tables of a single file with per-encoder keys; one line when its keys are
    no family's or its tables hold different numbers of vectors."""
    found = parsed.layout
    if found is None:
        if set(parsed.tables) < set(SDXL_KEYS):
            missing = [key for key in SDXL_KEYS if key not in parsed.tables]
            raise EmbeddingFormatError(f"{path}: SDXL embedding lacks its {missing[0]} tensor")
        layouts = "; ".join(f"{', '.join(f.keys)} ({family})" for family, files in KEYED_FILES.items() for f in files)
        raise EmbeddingFormatError(f"{path}: holds {', '.join(parsed.tables)}; a word's single file holds {layouts}")
    family, layout = found
    tables = [parsed.tables[key] for key in layout.keys]
    first = layout.keys[0]
    for key, table in zip(layout.keys[1:], tables[1:]):
        if table.shape[0] != tables[0].shape[0]:
            raise EmbeddingFormatError(f"{path}: {first} has {tables[0].shape[0]} vectors but {key} {table.shape[0]}")
    return family, tables


def _from_dict(data: dict, path: Path, token: str | None) -> LearnedEmbedding:
    """Interpret the tensors of an embedding file (any format above) as a word for its family.

    The token: ``token``; else the one the file stores (diffusers' key, or sstar's metadata in SD 3 / Flux
    files); else ``<file-stem>``.
    """
    parsed = parse_embedding(data, path)
    stem_token = token or f"<{path.stem}>"
    if parsed.format not in KEYED_FORMATS:
        (vectors,) = parsed.tables.values()
        stored = parsed.stored_token if parsed.format == "diffusers" else None
        return LearnedEmbedding(token or stored or stem_token, vectors)
    family, tables = _keyed_tables(parsed, path)
    recorded = _stored_metadata(path, data).get(TOKEN_METADATA_KEY)
    return LearnedEmbedding.from_tables(token or recorded or stem_token, tables, family)


def read_tensors(path: Path) -> dict:
    """The raw contents of an embedding file (safetensors, or a ``.pt``/``.bin`` read with ``weights_only``);
    one-line :class:`EmbeddingFormatError` for a missing or unreadable file."""
    if not path.is_file():
        raise EmbeddingFormatError(f"embedding file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise EmbeddingFormatError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EmbeddingFormatError(f"{path}: not a readable embedding file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise EmbeddingFormatError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def diffusers_sibling(path: Path) -> Path | None:
    """``X_2.safetensors`` beside ``X.safetensors`` (diffusers' second SDXL file), when there is one."""
    second = path.with_name(f"{path.stem}_2{path.suffix}")
    return second if path.suffix == ".safetensors" and second.is_file() else None


def load_embedding(path: Path, token: str | None = None) -> LearnedEmbedding:
    """Read a diffusers, A1111, kohya, SDXL (``clip_l``/``clip_g``), SD 3 or Flux embedding file; the word's
    :attr:`~LearnedEmbedding.tables` are its vectors per text encoder, its ``family`` the one its keys name.

    ``token`` overrides the token stored in the file (diffusers' key, sstar's metadata in SD 3 / Flux files);
    other files default to ``<file-stem>`` (as the UIs use the stem as the trigger word). A diffusers file
    ``X.safetensors`` with a sibling ``X_2.safetensors`` (diffusers' SDXL layout) is read as one SDXL word:
    both files must hold the same token and number of vectors.
    """
    path = Path(path)
    embedding = _from_dict(read_tensors(path), path, token)
    second = diffusers_sibling(path)
    if second is None or len(embedding.widths) != 1:
        return embedding
    other = _from_dict(read_tensors(second), second, token)
    if other.token != embedding.token or other.num_vectors != embedding.num_vectors or len(other.widths) != 1:
        raise EmbeddingFormatError(
            f"{second}: holds {other.token} with {other.num_vectors} vector(s), but {path.name} "
            f"holds {embedding.token} with {embedding.num_vectors}"
        )
    return LearnedEmbedding(
        embedding.token, torch.cat([embedding.vectors, other.vectors], dim=1), embedding.widths + other.widths
    )


def save_embedding_files(
    embedding: LearnedEmbedding, folder: Path, step: int = 0, metadata: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """Write the files a user needs into ``folder``, by kind, each carrying ``metadata`` (:func:`read_metadata`).

    One text encoder (SD 1.x/2.x): ``diffusers`` (``learned_embeds.safetensors``) and ``a1111``
    (``<token-slug>.pt``). SDXL: ``diffusers`` and ``diffusers_2`` (``learned_embeds_2.safetensors``)
    and ``sdxl`` (``<token-slug>.safetensors`` with ``clip_l``/``clip_g``). SD 3: ``comfyui``
    (``<token-slug>.safetensors`` with ``clip_l``/``clip_g``/``t5xxl``). Flux: ``comfyui`` (``clip_l``/``t5xxl``)
    and ``diffusers`` (``<token-slug>_emb.safetensors`` with ``clip_l``/``t5``). The SD 3 and Flux files also
    record the family, the token and the number of vectors (:func:`word_metadata`). The family is
    ``embedding.family``: a Flux word must be made with ``family="flux"``.
    """
    folder = Path(folder)
    if embedding.family is None and len(embedding.tables) == 1:
        return {
            "diffusers": save_diffusers(embedding, folder / DIFFUSERS_FILENAME, metadata=metadata),
            "a1111": save_a1111(embedding, folder / a1111_filename(embedding.token), step=step, metadata=metadata),
        }
    if embedding.family is None:
        raise EmbeddingFormatError(
            f"embedding {embedding.token}: no file format for {len(embedding.tables)} text encoders"
        )
    files: dict[str, Path] = {}
    described = dict(metadata or {})
    if embedding.family == "sdxl":
        files["diffusers"] = save_diffusers(embedding, folder / DIFFUSERS_FILENAME, metadata=metadata)
        files["diffusers_2"] = save_diffusers(embedding, folder / DIFFUSERS_FILENAME_2, encoder=1, metadata=metadata)
    else:
        described = {**word_metadata(embedding), **described}
    for layout in KEYED_FILES[embedding.family]:
        path = folder / layout.filename(embedding.token, embedding.family)
        files[layout.kind] = save_keyed(embedding, path, layout.keys, described or None)
    return files


def word_metadata(embedding: LearnedEmbedding) -> dict[str, str]:
    """What an SD 3 / Flux file records about its word (their keys store no token): family, token, vectors."""
    return {
        FAMILY_METADATA_KEY: str(embedding.family),
        TOKEN_METADATA_KEY: embedding.token,
        VECTORS_METADATA_KEY: str(embedding.num_vectors),
    }


def load_embeddings(paths: Sequence[Path | str], tokens: Sequence[str | None] = ()) -> list[LearnedEmbedding]:
    """Read several embedding files to use together (:func:`load_embedding` each; ``tokens[i]``, where
    given and not ``None``, overrides the token of ``paths[i]``).

    Two files holding the same token are refused with one line naming both, and so are words of
    different widths (learned for different model families).
    """
    seen: dict[str, Path] = {}
    embeddings: list[LearnedEmbedding] = []
    for i, path in enumerate(map(Path, paths)):
        embedding = load_embedding(path, token=tokens[i] if i < len(tokens) else None)
        if embedding.token in seen:
            raise EmbeddingFormatError(
                f"{seen[embedding.token]} and {path} both hold the token {embedding.token}; "
                f"give one of them another token"
            )
        if embeddings and (embedding.widths, embedding.family) != (embeddings[0].widths, embeddings[0].family):
            first = seen[embeddings[0].token]
            raise EmbeddingFormatError(
                f"{first} (width {'+'.join(map(str, embeddings[0].widths))}) and {path} "
                f"(width {'+'.join(map(str, embedding.widths))}) were learned for different "
                f"model families"
            )
        seen[embedding.token] = path
        embeddings.append(embedding)
    return embeddings


def _stored_metadata(path: Path, data: dict) -> dict[str, str]:
    """The metadata of the file at ``path`` whose contents are ``data``."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    found = data.get(A1111_METADATA_KEY)
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def read_metadata(path: Path | str) -> dict[str, str]:
    """The string metadata an embedding file carries: a safetensors header's, or an A1111 ``.pt``'s
    :data:`A1111_METADATA_KEY` (empty when there is none)."""
    path = Path(path)
    return _stored_metadata(path, read_tensors(path))  # read_tensors: the one-line errors for a bad file
