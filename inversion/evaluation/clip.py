"""CLIP models for scoring learned words, through open_clip.

A :class:`ClipSpec` names a CLIP: an open_clip architecture (``ViT-B-32`` by default, the evaluation
model of the method's reference code) plus its weights — either a local checkpoint file or a
pretrained tag that open_clip downloads (only where the user's machine can reach the internet).

``sstar-tiny-clip`` is our own tiny architecture (a 2-layer ViT on 64 px images and a 2-layer text
tower with the real CLIP vocabulary), registered from ``clip_configs/``. :func:`write_tiny_clip`
writes random weights for it, so tests and the offline demo score without downloading anything.

:func:`load_clip` loads a model once per process and device and hands the same :class:`ClipModel`
to every caller, so a worker scoring many concepts pays the load once.

Notes:
    OpenAI's own weights were trained with QuickGELU. With a pretrained tag that says so
    (``ViT-B-32`` + ``openai``) we switch QuickGELU on; for OpenAI weights in a local file, name the
    ``ViT-B-32-quickgelu`` architecture (open_clip cannot tell from the file).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from inversion.config import DEFAULT_CLIP_ARCH, ClipSpec
from inversion.device import resolve_device
from inversion.errors import ConfigError, InputError

log = logging.getLogger(__name__)

TINY_ARCH = "sstar-tiny-clip"
CONFIG_DIR = Path(__file__).parent / "clip_configs"

_registered = False
_register_lock = threading.Lock()


def open_clip_module():
    """Import open_clip with our own architectures (``clip_configs/``) registered (once); return the module."""
    global _registered
    import open_clip

    if not _registered:
        with _register_lock:
            if not _registered:
                open_clip.add_model_config(CONFIG_DIR)
                _registered = True
    return open_clip


class ClipNetwork(Protocol):
    """What :class:`ClipModel` uses of an open_clip model (``CLIP``, ``CustomTextCLIP``…)."""

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


class ClipModel:
    """A loaded open_clip model with its inference preprocessing and tokenizer.

    Embeddings come back L2-normalised, fp32, on the CPU: rows are unit vectors, so a dot product
    is a (raw) cosine similarity.
    """

    def __init__(
        self,
        model: ClipNetwork,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        spec: ClipSpec,
        device: torch.device,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device

    @property
    def embed_dim(self) -> int:
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, torch.Tensor):
            return int(projection.shape[-1])
        return int(self.embed_texts(["a"]).shape[-1])

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """CLIP image embeddings ``[N, D]`` of ``images`` (PIL, any mode/size), in batches of ``batch_size``."""
        if batch_size < 1:
            raise ConfigError(f"CLIP batch size must be >= 1, got {batch_size}")
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in chunk])
            features = self.model.encode_image(pixels.to(self.device, self._dtype()))
            out.append(_normalise(features))
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """CLIP text embeddings ``[N, D]`` of ``texts`` (truncated to the model's context length)."""
        if batch_size < 1:
            raise ConfigError(f"CLIP batch size must be >= 1, got {batch_size}")
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size]))
            out.append(_normalise(self.model.encode_text(tokens.to(self.device))))
        if not out:
            projection = getattr(self.model, "text_projection", None)
            return torch.empty(0, int(projection.shape[-1]) if isinstance(projection, torch.Tensor) else 0)
        return torch.cat(out)


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # torch's load_state_dict error starts with a header; its first detail line says what is wrong
    if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        return lines[1]
    return lines[0]


def _check_arch(open_clip, arch: str) -> None:
    known = open_clip.list_models()
    if arch not in known:
        common = [
            name
            for name in (DEFAULT_CLIP_ARCH, "ViT-B-32-quickgelu", "ViT-B-16", "ViT-L-14", "RN50", TINY_ARCH)
            if name in known
        ]
        raise InputError(
            f"unknown CLIP architecture {arch!r}; known ones include {', '.join(common)} "
            f"({len(known)} in all, see open_clip.list_models())"
        )


def _create(spec: ClipSpec, device: torch.device):
    open_clip = open_clip_module()
    _check_arch(open_clip, spec.arch)
    kwargs: dict[str, Any] = {"device": device}
    if spec.checkpoint is not None:
        path = spec.checkpoint
        if not path.is_file():
            raise InputError(f"CLIP checkpoint not found: {path}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=str(path), **kwargs)
        except Exception as exc:  # torch and open_clip raise RuntimeError, KeyError, ValueError, pickle errors…
            detail = _first_line(exc)
            if any(s in detail for s in ("size mismatch", "Missing key", "Unexpected key", "shape")):
                raise InputError(f"CLIP checkpoint {path} does not match architecture {spec.arch}: {detail}") from exc
            if detail.startswith("Weights only load failed"):
                detail = "not a state-dict file of tensors (pickled objects are not loaded)"
            raise InputError(f"cannot load CLIP checkpoint {path} as architecture {spec.arch}: {detail}") from exc
    else:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        if spec.pretrained not in tags:
            raise InputError(
                f"unknown pretrained tag {spec.pretrained!r} for CLIP {spec.arch}; "
                f"known: {', '.join(tags) or 'none (use a local checkpoint file)'}"
            )
        tag_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
        model_cfg = open_clip.get_model_config(spec.arch) or {}
        if tag_cfg.get("quick_gelu", False) and not model_cfg.get("quick_gelu", False):
            kwargs["force_quick_gelu"] = True  # the weights were trained with QuickGELU (OpenAI's)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=spec.pretrained, **kwargs
            )
        except Exception as exc:
            raise InputError(
                f"cannot load CLIP {spec.arch} with pretrained weights {spec.pretrained!r} "
                f"(downloading needs internet; otherwise pass a local checkpoint file): {_first_line(exc)}"
            ) from exc
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(spec.arch)
    return ClipModel(model, preprocess, tokenizer, spec, device)


_cache: dict[tuple[ClipSpec, str], ClipModel] = {}
_cache_lock = threading.Lock()


def load_clip(spec: ClipSpec, device: str | torch.device = "auto") -> ClipModel:
    """Load the CLIP ``spec`` names onto ``device`` (``auto``: CUDA when present), once per process.

    Later calls with an equal spec and device return the same :class:`ClipModel`.
    """
    resolved = resolve_device(device)
    key = (spec, str(resolved))
    with _cache_lock:  # one load even when several threads ask at once
        if key not in _cache:
            log.info("loading CLIP %s on %s", spec.describe(), resolved)
            _cache[key] = _create(spec, resolved)
        return _cache[key]


def write_tiny_clip(out_path: Path, seed: int = 0) -> Path:
    """Write random (seeded) weights for :data:`TINY_ARCH` as a checkpoint file; returns its path.

    ``.safetensors`` paths get a safetensors file, anything else a ``torch.save`` state dict. Load it
    with ``load_clip(ClipSpec(TINY_ARCH, checkpoint=path))``.
    """
    open_clip = open_clip_module()
    out_path = Path(out_path)
    config = open_clip.get_model_config(TINY_ARCH)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = open_clip.CLIP(**config)
    finally:
        torch.random.set_rng_state(generator_state)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out_path))
    else:
        torch.save(state, out_path)
    return out_path
