"""Loading a frozen Stable-Diffusion-style pipeline: its parts (:class:`DiffusionComponents`), from a diffusers
folder or hub id (:func:`load_components`), and back into a diffusers pipeline (:func:`build_pipeline`).

The model family (:mod:`inversion.model.info`) is read from the folder's configs. Random-weight models for
tests, benchmarks and the plumbing demo are built in :mod:`inversion.model.zoo`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inversion.errors import ConfigError, InputError
from inversion.model.info import Family, classify, read_family

log = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class DiffusionComponents:
    """The parts of a latent diffusion pipeline that Textual Inversion uses. All weights are frozen.

    ``tokenizer_2``/``text_encoder_2`` are SDXL's second text side (OpenCLIP bigG), ``None`` otherwise.
    """

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    vae: Any  # diffusers.AutoencoderKL
    unet: Any  # diffusers.UNet2DConditionModel
    noise_scheduler: Any  # diffusers.DDPMScheduler built from the model's scheduler config
    source: str
    tokenizer_2: Any = None  # transformers.CLIPTokenizer (SDXL)
    text_encoder_2: Any = None  # transformers.CLIPTextModelWithProjection (SDXL)
    #: held while a trainer or renderer temporarily swaps the text encoder's token embedding
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _compiled_unet: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def family(self) -> Family:
        """``sd1``, ``sd2`` or ``sdxl``, from the text encoders' configs (:func:`inversion.model.info.classify`)."""
        return classify(self.text_encoder_2 is not None, self.text_encoder.config)

    @property
    def modules(self) -> tuple[torch.nn.Module, ...]:
        """Every weight-holding part: the text encoder(s), the VAE and the UNet."""
        texts = (self.text_encoder,) + ((self.text_encoder_2,) if self.text_encoder_2 is not None else ())
        return (*texts, self.vae, self.unet)

    @property
    def resolution(self) -> int:
        """The image size the model was built for (UNet sample size × VAE down-sampling factor)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts (one of :data:`PREDICTION_TYPES`), per the scheduler config.

        Raises :class:`ConfigError` for any other type: training against a guessed target would
        silently learn nonsense.
        """
        prediction = str(self.noise_scheduler.config.prediction_type)
        if prediction not in PREDICTION_TYPES:
            raise ConfigError(
                f"model {self.source}: unknown scheduler prediction_type {prediction!r} "
                f"(sstar trains {' or '.join(PREDICTION_TYPES)} models)"
            )
        return prediction

    @property
    def latent_scaling(self) -> float:
        """The VAE's latent scaling factor, from its config (SDXL's 0.13025; SD 1.x's 0.18215 if unset)."""
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    def compiled_unet(self) -> torch.nn.Module:
        """The UNet wrapped by ``torch.compile`` (created once; it shares the UNet's weights).

        Compilation happens lazily on the first call of the wrapper, per input shape.
        """
        if self._compiled_unet is None:
            self._compiled_unet = torch.compile(self.unet)
        return self._compiled_unet

    def freeze(self) -> None:
        """Switch every weight to inference: no gradients, eval mode."""
        for module in self.modules:
            module.requires_grad_(False)
            module.eval()

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "DiffusionComponents":
        """Move the frozen weights to ``device`` and cast them to ``dtype`` (a no-op when already there).

        On CUDA the UNet's weights are also put in channels-last layout, which its convolutions run
        faster in under bf16/fp16 (cuDNN's NHWC kernels); results are unchanged.
        """
        device = torch.device(device)
        for module in self.modules:
            first = next(module.parameters())
            if first.device != device or first.dtype != dtype:
                module.to(device=device, dtype=dtype)
        if device.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def build_pipeline(components: DiffusionComponents, scheduler: Any) -> Any:
    """The family's diffusers text-to-image pipeline over ``components`` (no safety checker, no watermark)."""
    if components.family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            text_encoder_2=components.text_encoder_2,
            tokenizer=components.tokenizer,
            tokenizer_2=components.tokenizer_2,
            unet=components.unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


_PARTS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
_SDXL_PARTS = ("tokenizer_2", "text_encoder_2")


def _check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise InputError(f"model folder not found: {path}")
    if not (path / "model_index.json").is_file():
        raise InputError(f"not a diffusers model folder (no model_index.json): {path}")
    for part in _PARTS:
        if not (path / part).is_dir():
            raise InputError(f"diffusers model folder {path} lacks its {part}/ subfolder")


def load_components(model: str | Path) -> DiffusionComponents:
    """Load a Stable Diffusion 1.x, 2.x or SDXL model from a local diffusers folder or a hub id.

    The family comes from the folder (:func:`inversion.model.info.read_family`); for SDXL the second
    tokenizer and text encoder are loaded too. Weights are
    loaded in fp32 on the CPU and frozen; callers move them with :meth:`DiffusionComponents.to`.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    source = str(model)
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local:
        _check_model_folder(path)
        source = str(path.resolve())
    try:
        sdxl = read_family(source) == "sdxl"
        if sdxl and looks_local:
            for part in _SDXL_PARTS:
                if not (path / part).is_dir():
                    raise InputError(f"SDXL model folder {path} lacks its {part}/ subfolder")
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
        tokenizer_2 = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2") if sdxl else None
        text_encoder_2 = (
            CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2") if sdxl else None
        )
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model {source}: {first_line}") from exc
    components = DiffusionComponents(
        tokenizer, text_encoder, vae, unet, scheduler, source, tokenizer_2=tokenizer_2, text_encoder_2=text_encoder_2
    )
    components.freeze()
    return components
