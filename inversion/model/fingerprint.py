"""A diffusion model's identity by content, for concept digests (no torch needed).

A digest that named the model by its path would re-learn a whole catalog when the mount moves, and
nothing when new weights replace old ones at the same path. :func:`model_fingerprint` names it by
what the loader reads instead: ``model_index.json`` and every file of the ``tokenizer``,
``text_encoder``, ``vae``, ``unet`` and ``scheduler`` folders (and, where present, SDXL's, SD 3's and
Flux's ``tokenizer_2`` and ``text_encoder_2``, SD 3's ``tokenizer_3`` and ``text_encoder_3``, and SD 3's
and Flux's ``transformer``) (configs, vocabularies, weights; files
whose name starts with a dot are ignored). Weight files are large, so their SHA-256 is cached in a
small JSON file keyed by absolute path, size and modification time: an unchanged model costs a
``stat`` per file, not a re-hash. A hub id (``org/name``) is named by the commit its local cache
resolves ``main`` to (``hub:org/name@<commit>``), or by the id alone while nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from inversion.errors import InputError

__all__ = ["COMPONENT_FOLDERS", "WEIGHT_SUFFIXES", "default_cache_file", "model_fingerprint"]

#: what :func:`inversion.model.components.load_components` reads from a diffusers folder
#: (a folder absent from a model adds nothing, so the folders SD 3 and Flux brought leave older digests as they were)
COMPONENT_FOLDERS = (
    *("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae", "unet", "scheduler"),
    *("tokenizer_3", "text_encoder_3", "transformer"),
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5", ".gguf")
_CHUNK = 8 * 1024 * 1024
_lock = threading.Lock()


def default_cache_file() -> Path:
    """``$SSTAR_CACHE_DIR/model-fingerprints.json``, else under ``$XDG_CACHE_HOME/sstar`` or ``~/.cache/sstar``."""
    base = os.environ.get("SSTAR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sstar"
    )
    return Path(base) / "model-fingerprints.json"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _load_cache(cache_file: Path) -> dict[str, list]:
    try:
        data = json.loads(cache_file.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # no cache or a damaged one: it is only a cache


def _save_cache(cache_file: Path, cache: dict[str, list]) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=f".{cache_file.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(cache, handle, sort_keys=True)
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs re-hashing next time


def _hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home) / "hub"


def _hub_fingerprint(model_id: str) -> str:
    ref = _hub_cache_dir() / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
    try:
        commit = ref.read_text("utf-8").strip()
    except OSError:
        commit = ""
    return f"hub:{model_id}@{commit}" if commit else f"hub:{model_id}"


def _model_files(folder: Path) -> list[Path]:
    files = [folder / "model_index.json"]
    for part in COMPONENT_FOLDERS:
        root = folder / part
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(Path(dirpath) / name for name in sorted(filenames) if not name.startswith("."))
    return [f for f in files if f.is_file()]


def model_fingerprint(model: str | os.PathLike[str], *, cache_file: Path | None = None) -> str:
    """``folder:<sha256>`` over the content of a local diffusers folder, or ``hub:<id>[@<commit>]``.

    ``model`` is what ``--model`` takes: a local folder, or a hub id ``org/name`` when no such folder
    exists (the same rule as :func:`inversion.model.components.load_components`). ``cache_file`` holds the weight
    hashes (default :func:`default_cache_file`).
    """
    source = str(model)
    path = Path(source).expanduser()
    if not path.exists() and not source.startswith((".", "/", "~")) and source.count("/") == 1:
        return _hub_fingerprint(source)
    folder = path.resolve()
    if not (folder / "model_index.json").is_file():
        raise InputError(f"not a diffusers model folder (no model_index.json): {folder}")
    cache_file = cache_file or default_cache_file()
    with _lock:
        cache = _load_cache(cache_file)
        changed = False
        entries = []
        for file in _model_files(folder):
            stat = file.stat()
            if file.suffix.lower() in WEIGHT_SUFFIXES:
                key = str(file.resolve())
                cached = cache.get(key)
                if isinstance(cached, list) and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
                    sha = str(cached[2])
                else:
                    sha = _file_sha256(file)
                    cache[key] = [stat.st_size, stat.st_mtime_ns, sha]
                    changed = True
            else:
                sha = _file_sha256(file)
            entries.append([file.relative_to(folder).as_posix(), sha])
        if changed:
            _save_cache(cache_file, cache)
    text = json.dumps(entries, separators=(",", ":"))
    return "folder:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
