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
    "TOKENIZER_FOLDERS",
    "classify",
    "read_family",
    "family_or_none",
    "tokenizer_vocabulary",
]

Family = Literal["sd1", "sd2", "sdxl"]
FAMILIES: tuple[str, ...] = get_args(Family)
#: the tokenizer folders of a diffusers model (SDXL has the second)
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2")
_lock = threading.Lock()


def classify(has_text_encoder_2: bool, text_config: Any) -> Family:
    """The family of a model from its text side: the one rule, for folders and for loaded models alike.

    A second text encoder means SDXL; an OpenCLIP text encoder (1024-d, or OpenCLIP's ``gelu``
    activation where OpenAI CLIP has ``quick_gelu``) means SD 2.x; anything else is SD 1.x.
    ``text_config`` is the text encoder's config (an object with attributes).
    """
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


def read_family(model: str | os.PathLike[str]) -> Family:
    """The family of the diffusers model ``model`` (a folder or a hub id), from its JSON configs alone.

    Reads ``model_index.json`` (an SDXL pipeline class or a ``text_encoder_2`` entry means SDXL) and,
    otherwise, ``text_encoder/config.json``; no weights, no torch. A one-line :class:`InputError`
    naming the model if they are missing or unreadable.
    """
    source = str(model)
    try:
        index = _read_json(source, "model_index.json")
        if index is None:
            raise FileNotFoundError("it has no model_index.json")
        second = index.get("text_encoder_2")
        if (isinstance(second, list) and second and second[0] is not None) or "XL" in str(index.get("_class_name", "")):
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


def _tokenizer_words(source: str, folder: str) -> set[str] | None:
    """The words of one tokenizer folder as ``transformers.CLIPTokenizer.get_vocab`` has them (its
    vocabulary plus the added tokens), or ``None`` when the model has no such folder.

    Either file layout transformers reads: ``tokenizer.json`` (the fast tokenizer's one file, what
    transformers 5 saves) or ``vocab.json`` with ``merges.txt``, plus ``added_tokens.json`` and the
    ``added_tokens_decoder`` of ``tokenizer_config.json``.
    """
    words: set[str] = set()
    whole = _read_json(source, f"{folder}/tokenizer.json")
    if whole is not None:
        vocab = (whole.get("model") or {}).get("vocab")
        if not isinstance(vocab, dict):
            raise ValueError(f"{folder}/tokenizer.json has no BPE vocabulary")
        words.update(vocab)
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


@lru_cache(maxsize=8)
def _cached_vocabulary(source: str, signature: tuple) -> frozenset[str]:
    words: set[str] = set()
    for position, folder in enumerate(TOKENIZER_FOLDERS):
        found = _tokenizer_words(source, folder)
        if found is None and position == 0:
            raise FileNotFoundError(f"it has no {folder}/tokenizer.json or {folder}/vocab.json")
        words.update(found or ())
    return frozenset(words)


def _tokenizer_signature(source: str) -> tuple:
    if _is_hub_id(source):
        return ()
    signature: list[tuple[int, int] | None] = []
    for folder in TOKENIZER_FOLDERS:
        for name in ("tokenizer.json", "vocab.json", "added_tokens.json", "tokenizer_config.json"):
            try:
                stat = (Path(source).expanduser() / folder / name).stat()
                signature.append((stat.st_size, stat.st_mtime_ns))
            except OSError:
                signature.append(None)
    return tuple(signature)


def tokenizer_vocabulary(model: str | os.PathLike[str]) -> frozenset[str]:
    """Every word of the model's tokenizers (SDXL: both), read from their JSON files (no transformers).

    Cached per model and state of those files. A one-line :class:`InputError` naming the model when
    the first tokenizer's files are missing or unreadable.
    """
    source = str(model)
    try:
        with _lock:
            return _cached_vocabulary(source, _tokenizer_signature(source))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the tokenizer of {source}: {_one_line(exc)}") from exc
