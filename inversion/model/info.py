"""What a diffusers model says about itself in its JSON files: its family and its tokenizers' words.

Torch-free on purpose: the catalog coordinator (scan, metrics rows, preflight) needs these facts
for every run, and importing torch, diffusers or transformers for them would cost it seconds and
hundreds of MiB. The model is what ``--model`` takes: a local diffusers folder, or a hub id
``org/name`` where no such folder exists (its files then come through the local hub cache, as the
loader's do). :mod:`inversion.text.encoder` builds on :func:`classify` for loaded models.
"""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, get_args

from inversion.errors import InputError

__all__ = [
    "Family",
    "FAMILIES",
    "FAMILY_FOLDERS",
    "TOKENIZER_FOLDERS",
    "classify",
    "read_family",
    "family_or_none",
    "tokenizer_vocabulary",
]

Family = Literal["sd1", "sd2", "sdxl", "sd3", "flux"]
#: the families sstar reads, trains and renders words for (SD 3 and Flux with flow matching and T5 rows)
FAMILIES: tuple[Family, ...] = get_args(Family)
_UNET_FOLDERS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
#: the folders of a diffusers model that sstar reads, per family (diffusers' names: SD 3's CLIP-L, CLIP-G and T5
#: are ``text_encoder``, ``_2`` and ``_3``; Flux's CLIP-L and T5 are ``text_encoder`` and ``_2``)
FAMILY_FOLDERS: dict[Family, tuple[str, ...]] = {
    "sd1": _UNET_FOLDERS,
    "sd2": _UNET_FOLDERS,
    "sdxl": ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae", "unet", "scheduler"),
    "sd3": (
        *("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "tokenizer_3", "text_encoder_3"),
        *("vae", "transformer", "scheduler"),
    ),
    "flux": ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae", "transformer", "scheduler"),
}
#: every tokenizer folder a diffusers model may have (SDXL and Flux have the second, SD 3 the third as well)
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
#: the denoiser class (diffusers' name) that makes a model with a ``transformer`` part one of our families
TRANSFORMER_FAMILIES: dict[str, Family] = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
_lock = threading.Lock()


def classify(has_text_encoder_2: bool, text_config: Any, transformer: str | None = None) -> Family:
    """The family of a model: the one rule, for folders and for loaded models alike.

    ``transformer`` is the class name of the model's denoiser where it is a transformer (``None`` for a
    UNet): SD 3's ``SD3Transformer2DModel`` or Flux's ``FluxTransformer2DModel``; any other transformer is
    none of our families (a one-line :class:`InputError`). For a UNet, a second text encoder means SDXL;
    an OpenCLIP text encoder (1024-d, or OpenCLIP's ``gelu`` activation where OpenAI CLIP has
    ``quick_gelu``) means SD 2.x; anything else is SD 1.x. ``text_config`` is the first text encoder's
    config (an object with attributes).
    """
    if transformer is not None:
        if transformer not in TRANSFORMER_FAMILIES:
            raise InputError(
                f"a model whose denoiser is a {transformer} is none of the families sstar knows ({', '.join(FAMILIES)})"
            )
        return TRANSFORMER_FAMILIES[transformer]
    if has_text_encoder_2:
        return "sdxl"
    if int(getattr(text_config, "hidden_size", 0) or 0) == 1024 or getattr(text_config, "hidden_act", "") == "gelu":
        return "sd2"
    return "sd1"


def _is_hub_id(source: str) -> bool:
    """The loader's rule: ``org/name`` that is not an existing path names a hub model."""
    return not Path(source).expanduser().exists() and not source.startswith((".", "/", "~")) and source.count("/") == 1


def _model_file(source: str, name: str) -> Path | None:
    """The local path of the model's file ``name`` (``part/file``): in the folder, or fetched into the
    hub cache for a hub id; ``None`` when the model has no such file."""
    if not _is_hub_id(source):
        path = Path(source).expanduser() / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source, name))
    except LocalEntryNotFoundError:
        raise  # not cached and not downloadable here: unknown, not absent (an OSError for the callers)
    except EntryNotFoundError:
        return None


def _read_json(source: str, name: str) -> dict[str, Any] | None:
    path = _model_file(source, name)
    if path is None:
        return None
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{name} does not hold a JSON object")
    return data


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _listed_class(index: dict[str, Any], part: str) -> str | None:
    """The class ``model_index.json`` gives the model's ``part``, or ``None`` where it lists no such part
    (diffusers writes ``[null, null]`` for an optional part left out)."""
    entry = index.get(part)
    if isinstance(entry, list) and entry and entry[0] is not None:
        return str(entry[-1])
    return None


def read_family(model: str | os.PathLike[str]) -> Family:
    """The family of the diffusers model ``model`` (a folder or a hub id), from its JSON configs alone.

    Reads ``model_index.json`` (a ``transformer`` part's class names SD 3 or Flux; an SDXL pipeline class or a
    ``text_encoder_2`` entry means SDXL) and, otherwise, ``text_encoder/config.json``; no weights, no torch.
    A one-line :class:`InputError` naming the model if they are missing or unreadable.
    """
    source = str(model)
    try:
        index = _read_json(source, "model_index.json")
        if index is None:
            raise FileNotFoundError("it has no model_index.json")
        transformer = _listed_class(index, "transformer")
        if transformer is not None:
            return classify(False, None, transformer)
        if _listed_class(index, "text_encoder_2") is not None or "XL" in str(index.get("_class_name", "")):
            return "sdxl"
        text = _read_json(source, "text_encoder/config.json")
        if text is None:
            raise FileNotFoundError("it has no text_encoder/config.json")
        return classify(False, SimpleNamespace(**text))
    except (OSError, ValueError) as exc:  # hub errors are OSErrors; bad JSON is a ValueError
        raise InputError(f"cannot read the model family of {source}: {_one_line(exc)}") from exc


def _config_signature(source: str) -> tuple:
    """What the family depends on, cheaply: the (size, mtime) of a local folder's two configs, so a
    model replaced at the same path is read again; a hub id is its own signature."""
    if _is_hub_id(source):
        return ()
    signature: list[tuple[int, int] | None] = []
    for name in ("model_index.json", "text_encoder/config.json"):
        try:
            stat = (Path(source).expanduser() / name).stat()
            signature.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


@lru_cache(maxsize=64)
def _cached_family(source: str, signature: tuple) -> Family | None:
    try:
        return read_family(source)
    except InputError:
        return None


def family_or_none(model: str | os.PathLike[str]) -> Family | None:
    """:func:`read_family`, or ``None`` where the model's configs cannot be read (for metrics rows).

    Cached per model (and, for a folder, per state of its two config files): a catalog run calls it
    for every row and pays for one read.
    """
    source = str(model)
    return _cached_family(source, _config_signature(source))


def _model_words(whole: dict[str, Any], folder: str) -> list[str]:
    """The pieces of a ``tokenizer.json``'s model: a BPE / WordPiece vocabulary maps each piece to its id,
    a unigram one (T5's SentencePiece model) lists ``[piece, score]`` pairs."""
    vocab = (whole.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        return list(vocab)
    if isinstance(vocab, list) and all(
        isinstance(entry, list) and entry and isinstance(entry[0], str) for entry in vocab
    ):
        return [entry[0] for entry in vocab]
    raise ValueError(f"{folder}/tokenizer.json has neither a BPE nor a unigram vocabulary")


def _tokenizer_words(source: str, folder: str) -> set[str] | None:
    """The words of one tokenizer folder as transformers' ``get_vocab`` has them (its vocabulary plus the
    added tokens), or ``None`` when the model has no such folder.

    Either file layout transformers reads: ``tokenizer.json`` (the fast tokenizer's one file, what
    transformers 5 saves; a CLIP BPE or a T5 unigram model) or CLIP's ``vocab.json`` with ``merges.txt``,
    plus ``added_tokens.json`` and the ``added_tokens_decoder`` of ``tokenizer_config.json``.
    """
    words: set[str] = set()
    whole = _read_json(source, f"{folder}/tokenizer.json")
    if whole is not None:
        words.update(_model_words(whole, folder))
        words.update(t["content"] for t in whole.get("added_tokens") or () if isinstance(t.get("content"), str))
    else:
        vocab = _read_json(source, f"{folder}/vocab.json")
        if vocab is None:
            return None
        if _model_file(source, f"{folder}/merges.txt") is None:
            raise FileNotFoundError(f"{folder}/ has vocab.json but no merges.txt")
        words.update(vocab)
    words.update(_read_json(source, f"{folder}/added_tokens.json") or {})
    config = _read_json(source, f"{folder}/tokenizer_config.json") or {}
    for entry in (config.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            words.add(entry["content"])
    return words


def _tokenizer_folders(source: str) -> tuple[str, ...]:
    """The model's tokenizers: ``tokenizer``, and each further one its ``model_index.json`` lists (SDXL's and
    Flux's ``tokenizer_2``, SD 3's ``tokenizer_2`` and ``tokenizer_3``)."""
    index = _read_json(source, "model_index.json") or {}
    return tuple(f for f in TOKENIZER_FOLDERS if f == TOKENIZER_FOLDERS[0] or _listed_class(index, f) is not None)


@lru_cache(maxsize=8)
def _cached_vocabulary(source: str, signature: tuple) -> frozenset[str]:
    words: set[str] = set()
    for folder in _tokenizer_folders(source):
        found = _tokenizer_words(source, folder)
        if found is None:
            raise FileNotFoundError(f"it has no {folder}/tokenizer.json or {folder}/vocab.json")
        words.update(found)
    return frozenset(words)


def _tokenizer_signature(source: str) -> tuple:
    if _is_hub_id(source):
        return ()
    names = ["model_index.json"] + [
        f"{folder}/{name}"
        for folder in TOKENIZER_FOLDERS
        for name in ("tokenizer.json", "vocab.json", "added_tokens.json", "tokenizer_config.json")
    ]
    signature: list[tuple[int, int] | None] = []
    for name in names:
        try:
            stat = (Path(source).expanduser() / name).stat()
            signature.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


def tokenizer_vocabulary(model: str | os.PathLike[str]) -> frozenset[str]:
    """Every word of the model's tokenizers (SDXL and Flux: two, SD 3: three, T5's unigram pieces among
    them), read from their JSON files (no transformers, no torch).

    Cached per model and state of those files. A one-line :class:`InputError` naming the model when a
    tokenizer's files are missing or unreadable.
    """
    source = str(model)
    try:
        with _lock:
            return _cached_vocabulary(source, _tokenizer_signature(source))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the tokenizer of {source}: {_one_line(exc)}") from exc
