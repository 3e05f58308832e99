"""Preflight: before any training, check everything a run will need, and fail in seconds if it cannot.

A catalog run that trains every concept and then fails all of them at scoring (an unreachable CLIP
download) costs hours of GPU time and leaves half-written outputs. :func:`preflight` checks, in this
order: the catalog can be listed, the diffusion model's folder (or hub id) is complete down to its
configs and every tokenizer of its family (SD 3's three, the T5 one among them), the scoring CLIP
loads, and the output accepts a write and a delete. It writes nothing under ``out`` unless every other
check passed, and then only a probe it deletes at once.

A failure is a :class:`PreflightError` whose one-line message names the command-line option to fix
(``--catalog``, ``--model``, ``--clip-checkpoint``, ``--out``). A catalog run checks its inputs
(:func:`check_inputs`) before scanning and its outputs (:func:`check_outputs`) right after, before any
training; the scoring CLIP is loaded only when some concept is to be learned, so a run where nothing
changed does not pay for it.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from inversion.config import DEFAULT_CLIP_PRETRAINED
from inversion.errors import SstarError
from inversion.model.fingerprint import model_fingerprint
from inversion.model.info import (
    FAMILY_FOLDERS,
    TOKENIZER_FOLDERS,
    Family,
    read_family,
    tokenizer_vocabulary,
)
from storage.errors import StorageError
from storage.store.open import open_store, parse_uri
from tasks import model_cache
from tasks.settings import EvalSettings, LearnSettings, RunSettings

__all__ = [
    "PreflightError",
    "preflight",
    "check_inputs",
    "check_outputs",
    "check_catalog",
    "check_model",
    "check_clip",
    "check_output",
]

#: the config file of a diffusers model's folder, where it is not ``config.json`` (tokenizers are read whole)
_CONFIG_FILES = {"scheduler": "scheduler_config.json"}
PROBE_PREFIX = ".sstar-preflight-"


class PreflightError(SstarError):
    """A run cannot start; ``option`` is the command-line option that fixes it."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem

    def __reduce__(self):  # rebuilt from its fields when Prefect pickles it
        return type(self), (self.option, self.problem)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_catalog(catalog: str) -> None:
    """The catalog's root exists and lists (one listing request)."""
    try:
        parsed = parse_uri(catalog)
        if parsed.scheme == "file" and not (parsed.path and parsed.path.is_dir()):
            raise PreflightError("--catalog", f"catalog folder not found: {parsed.path}")
        next(iter(open_store(catalog).list_info()), None)
    except StorageError as exc:
        raise PreflightError("--catalog", f"cannot list the catalog {catalog}: {_first_line(exc)}") from None


def _read_config(path: Path, part: str) -> None:
    name = _CONFIG_FILES.get(part, "config.json")
    try:
        json.loads((path / part / name).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise PreflightError("--model", f"model {path} has no readable {part}/{name} ({_first_line(exc)})") from None


def _check_configs(path: Path) -> Family:
    """A local model folder's family, and the config of each of the family's weighted folders reads."""
    if not (path / "model_index.json").is_file():
        raise PreflightError("--model", f"not a diffusers model folder (no model_index.json): {path}")
    _read_config(path, "text_encoder")  # what the family is read from, with the message that names it
    family = read_family(str(path.resolve()))
    for part in FAMILY_FOLDERS[family]:
        if part not in TOKENIZER_FOLDERS:
            _read_config(path, part)
    return family


def check_model(model: str) -> str:
    """The model's configs and every tokenizer of its family read (no weights, no torch); returns its content
    fingerprint."""
    path = Path(model).expanduser()
    local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1
    try:
        _check_configs(path) if local else read_family(model)
        tokenizer_vocabulary(str(path.resolve()) if local else model)
        return model_fingerprint(model)
    except PreflightError:
        raise
    except SstarError as exc:  # our own one-line message names the model and the file
        raise PreflightError("--model", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - transformers/hub raise many types for a bad model
        raise PreflightError("--model", f"cannot load the tokenizer of {model}: {_first_line(exc)}") from None


def _download_blocked(arch: str, tag: str, timeout: float = 3.0) -> str | None:
    """Why open_clip's pretrained ``arch``/``tag`` weights cannot be had here, or ``None``: they are
    neither in the local hub cache nor downloadable (the hub does not answer a TCP connect within
    ``timeout``). Saves the minute of download retries an offline machine would spend failing."""
    import open_clip
    from huggingface_hub import constants, try_to_load_from_cache

    hub = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "")
    parts = hub.split("/")  # "org/repo/" or "org/repo/file"
    repo, name = "/".join(parts[:2]), "/".join(parts[2:]).strip("/")
    names = [name] if name else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if repo and any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
        return None
    if constants.HF_HUB_OFFLINE:
        return "it is not in the local hub cache and HF_HUB_OFFLINE is set"
    endpoint = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError as exc:
        return f"it is not in the local hub cache and {endpoint.hostname} is unreachable ({exc.strerror or exc})"
    return None


def check_clip(evaluation: EvalSettings, device: str) -> None:
    """The scoring CLIP loads (once per process: scoring in this process reuses it)."""
    source = (
        f"checkpoint {evaluation.clip_checkpoint}"
        if evaluation.clip_checkpoint
        else f"pretrained weights {evaluation.clip_pretrained or DEFAULT_CLIP_PRETRAINED!r}"
    )
    fix = "pass --clip-checkpoint FILE with a local open_clip checkpoint"
    if not evaluation.clip_checkpoint:
        blocked = _download_blocked(evaluation.clip_arch, evaluation.clip_pretrained or DEFAULT_CLIP_PRETRAINED)
        if blocked:
            raise PreflightError(
                "--clip-checkpoint",
                f"the scoring CLIP {evaluation.clip_arch} with {source} needs a download, but {blocked}; {fix}",
            )
    try:
        model_cache.clip_model(evaluation.clip_spec(), device)
    except Exception as exc:  # noqa: BLE001 - open_clip, torch and the hub raise many types
        raise PreflightError(
            "--clip-checkpoint",
            f"the scoring CLIP {evaluation.clip_arch} with {source} does not load ({_first_line(exc)}); {fix}",
        ) from None


def check_output(out: str) -> None:
    """The output accepts a write and a delete (a probe object, removed at once)."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        store = open_store(out)
        store.put(key, b"sstar preflight probe\n")
        store.delete(key)
    except StorageError as exc:
        raise PreflightError("--out", f"cannot write to {out}: {_first_line(exc)}") from None


def check_inputs(catalog: str, learn: LearnSettings) -> None:
    """What a scan needs: the catalog lists, the model's configs and tokenizer load."""
    check_catalog(catalog)
    check_model(learn.model)


def check_outputs(out: str, evaluation: EvalSettings | None, run: RunSettings) -> None:
    """What learning and publishing need: the scoring CLIP loads (skipped with ``evaluation=None``,
    for a run with nothing to score), then the output accepts a write and a delete — last, so
    nothing is written when another check fails."""
    if evaluation is not None:
        check_clip(evaluation, run.device)
    check_output(out)


def preflight(catalog: str, out: str, learn: LearnSettings, evaluation: EvalSettings, run: RunSettings) -> None:
    """Every check, in order (catalog, model, CLIP, output); :class:`PreflightError` on the first failure."""
    check_inputs(catalog, learn)
    check_outputs(out, evaluation, run)
