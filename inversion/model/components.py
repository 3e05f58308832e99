"""Loading a frozen diffusion pipeline: its parts (:class:`DiffusionComponents`), from a diffusers folder or hub
id (:func:`load_components`), and back into a diffusers pipeline (:func:`build_pipeline`).

The model family (:mod:`inversion.model.info`) is read from the folder's configs and decides which parts are
loaded, with which classes (:data:`PART_CLASSES`): SD 1.x / 2.x / XL denoise with a UNet and train on the
epsilon or v objective; SD 3 and Flux denoise with a transformer, read text with T5 as well, and train
with flow matching. Random-weight models for tests, benchmarks and the plumbing demo are built in
:mod:`inversion.model.zoo`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inversion.errors import ConfigError, InputError
from inversion.model.info import FAMILIES, FAMILY_FOLDERS, Family, classify, read_family

log = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction")
_CLIP_L = {"tokenizer": "CLIPTokenizer", "text_encoder": "CLIPTextModel"}
_UNET = {"vae": "AutoencoderKL", "unet": "UNet2DConditionModel", "scheduler": "DDPMScheduler"}
_FLOW = {"vae": "AutoencoderKL", "scheduler": "FlowMatchEulerDiscreteScheduler"}
#: the class (transformers' or diffusers' name) each folder of a family's model is loaded with; the scheduler
#: is the training one (DDPM's noise schedule for the UNet families, the flow-matching one for SD 3 and Flux)
PART_CLASSES: dict[Family, dict[str, str]] = {
    "sd1": {**_CLIP_L, **_UNET},
    "sd2": {**_CLIP_L, **_UNET},
    "sdxl": {**_CLIP_L, "tokenizer_2": "CLIPTokenizer", "text_encoder_2": "CLIPTextModelWithProjection", **_UNET},
    "sd3": {
        **{"tokenizer": "CLIPTokenizer", "text_encoder": "CLIPTextModelWithProjection"},
        **{"tokenizer_2": "CLIPTokenizer", "text_encoder_2": "CLIPTextModelWithProjection"},
        **{"tokenizer_3": "T5TokenizerFast", "text_encoder_3": "T5EncoderModel"},
        **{"transformer": "SD3Transformer2DModel", **_FLOW},
    },
    "flux": {
        **_CLIP_L,
        **{"tokenizer_2": "T5TokenizerFast", "text_encoder_2": "T5EncoderModel"},
        **{"transformer": "FluxTransformer2DModel", **_FLOW},
    },
}
#: the diffusers pipeline of each family, for rendering and for saving a folder diffusers loads
PIPELINE_CLASSES: dict[Family, str] = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
_NO_SAFETY_CHECKER = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
_PIPELINE_OPTIONS: dict[Family, dict[str, Any]] = {
    "sd1": _NO_SAFETY_CHECKER,
    "sd2": _NO_SAFETY_CHECKER,
    "sdxl": dict(force_zeros_for_empty_prompt=True, add_watermarker=False),
}


@dataclass
class DiffusionComponents:
    """The parts of a latent diffusion pipeline that Textual Inversion uses, under diffusers' names. All weights
    are frozen.

    Every family has ``tokenizer``/``text_encoder`` (CLIP-L; SD 2.x: OpenCLIP-H). The further text sides
    are SDXL's ``tokenizer_2``/``text_encoder_2`` (OpenCLIP bigG), SD 3's ``_2`` (CLIP-G) and ``_3`` (T5)
    and Flux's ``_2`` (T5); :attr:`text_sides` lists them in order. The denoiser is ``unet`` for SD 1.x /
    2.x / XL and ``transformer`` for SD 3 and Flux (the other is ``None``; :attr:`denoiser` is whichever
    the model has); ``noise_scheduler`` is the training scheduler (DDPM's schedule, or the flow-matching
    one for SD 3 and Flux).
    """

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel (SD 3: CLIPTextModelWithProjection)
    vae: Any  # diffusers.AutoencoderKL
    unet: Any  # diffusers.UNet2DConditionModel (None for SD 3 and Flux)
    noise_scheduler: Any  # diffusers.DDPMScheduler / FlowMatchEulerDiscreteScheduler from the model's config
    source: str
    tokenizer_2: Any = None  # transformers.CLIPTokenizer (SDXL, SD 3) or T5TokenizerFast (Flux)
    text_encoder_2: Any = None  # CLIPTextModelWithProjection (SDXL, SD 3) or T5EncoderModel (Flux)
    tokenizer_3: Any = None  # transformers.T5TokenizerFast (SD 3)
    text_encoder_3: Any = None  # transformers.T5EncoderModel (SD 3)
    transformer: Any = None  # diffusers.SD3Transformer2DModel or FluxTransformer2DModel (None for a UNet model)
    #: held while a trainer or renderer temporarily swaps the text encoder's token embedding
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _compiled_unet: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def family(self) -> Family:
        """``sd1``, ``sd2``, ``sdxl``, ``sd3`` or ``flux``, from the denoiser's class and the text encoders'
        configs (:func:`inversion.model.info.classify`, the rule folders are read by)."""
        transformer = type(self.transformer).__name__ if self.transformer is not None else None
        return classify(self.text_encoder_2 is not None, self.text_encoder.config, transformer)

    @property
    def denoiser(self) -> Any:
        """The UNet, or SD 3's / Flux's transformer."""
        return self.unet if self.unet is not None else self.transformer

    @property
    def flow_matching(self) -> bool:
        """Whether the model was trained with flow matching (SD 3, Flux) rather than on noise (epsilon / v)."""
        return self.transformer is not None

    @property
    def text_sides(self) -> tuple[tuple[Any, Any], ...]:
        """``(tokenizer, text encoder)`` of each text side, in diffusers' order (``""``, ``_2``, ``_3``)."""
        pairs = ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2))
        return tuple(pair for pair in (*pairs, (self.tokenizer_3, self.text_encoder_3)) if pair[1] is not None)

    @property
    def modules(self) -> tuple[torch.nn.Module, ...]:
        """Every weight-holding part: the text encoder(s), the VAE and the denoiser."""
        return (*(encoder for _, encoder in self.text_sides), self.vae, self.denoiser)

    @property
    def resolution(self) -> int:
        """The image size the model was built for: the denoiser's sample size (UNet, SD 3) × the VAE's
        down-sampling factor; Flux's transformer has none, so its VAE's ``sample_size`` (1024 for real)."""
        if self.family == "flux":
            return int(self.vae.config.sample_size)
        return int(self.denoiser.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts (one of :data:`PREDICTION_TYPES`), per the scheduler config.

        Raises :class:`ConfigError` for any other type, and for a flow-matching model: training against a
        guessed target would silently learn nonsense.
        """
        prediction = str(getattr(self.noise_scheduler.config, "prediction_type", None))
        if self.flow_matching or prediction not in PREDICTION_TYPES:
            kind = "flow matching" if self.flow_matching else f"scheduler prediction_type {prediction!r}"
            raise ConfigError(
                f"model {self.source}: unknown {kind} (sstar trains {' or '.join(PREDICTION_TYPES)} models)"
            )
        return prediction

    @property
    def latent_scaling(self) -> float:
        """The VAE's latent scaling factor, from its config (SDXL's 0.13025; SD 1.x's 0.18215 if unset)."""
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def latent_shift(self) -> float:
        """The VAE's latent shift (SD 3's 0.0609, Flux's 0.1159; 0 where unset): latents are
        ``(encoded - shift) * scaling``."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def compiled_unet(self) -> torch.nn.Module:
        """The denoiser (UNet, or SD 3's / Flux's transformer) wrapped by ``torch.compile`` (created once; it
        shares the denoiser's weights).

        Compilation happens lazily on the first call of the wrapper, per input shape.
        """
        if self._compiled_unet is None:
            self._compiled_unet = torch.compile(self.denoiser)
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
        if device.type == "cuda" and self.unet is not None:
            self.unet.to(memory_format=torch.channels_last)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype


def library_class(name: str) -> Any:
    """A class of transformers or diffusers by name (the names :data:`PART_CLASSES` and ``model_index.json`` use)."""
    import diffusers
    import transformers

    return getattr(transformers, name) if hasattr(transformers, name) else getattr(diffusers, name)


def build_pipeline(components: DiffusionComponents, scheduler: Any) -> Any:
    """The family's diffusers text-to-image pipeline over ``components`` (no safety checker, no watermark)."""
    family = components.family
    parts = {part: getattr(components, part) for part in PART_CLASSES[family] if part != "scheduler"}
    options = _PIPELINE_OPTIONS.get(family, {})
    return library_class(PIPELINE_CLASSES[family])(**parts, scheduler=scheduler, **options)


#: the folders every family's model has (the family is read from the configs of the first two)
_COMMON_PARTS = ("tokenizer", "text_encoder", "vae", "scheduler")


def _check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise InputError(f"model folder not found: {path}")
    if not (path / "model_index.json").is_file():
        raise InputError(f"not a diffusers model folder (no model_index.json): {path}")
    for part in _COMMON_PARTS:
        if not (path / part).is_dir():
            raise InputError(f"diffusers model folder {path} lacks its {part}/ subfolder")


def _check_family(family: Family, families: Collection[Family], source: str, local: Path | None) -> None:
    """The family is one the caller takes, and a local folder has each of the family's parts."""
    if family not in families:
        raise InputError(f"{source} is a {family} model; this needs one of: {', '.join(families)}")
    missing = [part for part in FAMILY_FOLDERS[family] if local is not None and not (local / part).is_dir()]
    if missing:
        raise InputError(f"{family} model folder {local} lacks its {missing[0]}/ subfolder")


def load_components(model: str | Path, *, families: Collection[Family] = FAMILIES) -> DiffusionComponents:
    """Load a model of one of ``families`` from a local diffusers folder or a hub id.

    The family comes from the folder (:func:`inversion.model.info.read_family`) and names the parts loaded
    and their classes (:data:`PART_CLASSES`). Every family is taken by default; a caller that can handle only
    some passes ``families`` (another family: a one-line :class:`InputError` naming it). Weights are loaded
    in fp32 on the CPU and frozen; callers move them with :meth:`DiffusionComponents.to`.
    """
    source = str(model)
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local:
        _check_model_folder(path)
        source = str(path.resolve())
    try:
        family = read_family(source)
        _check_family(family, families, source, path if looks_local else None)
        parts = {
            part: library_class(name).from_pretrained(source, subfolder=part)
            for part, name in PART_CLASSES[family].items()
        }
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model {source}: {first_line}") from exc
    parts.setdefault("unet", None)
    components = DiffusionComponents(noise_scheduler=parts.pop("scheduler"), source=source, **parts)
    components.freeze()
    return components
