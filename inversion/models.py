"""Loading a frozen Stable-Diffusion-style pipeline, and building random-weight ones for tests and benchmarks.

Architectures are data: :data:`ARCHITECTURES` maps a name to the component configs, in the spirit
of diffusers' config-as-data. ``tiny`` is a few MB and renders 64 px in a blink on a CPU;
``sd15`` is the real Stable Diffusion 1.5 architecture (860M-parameter UNet) with random weights,
for realistic speed and memory. Both use the real CLIP vocabulary (see :mod:`inversion.vocab`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, InputError
from .vocab import BOS_TOKEN_ID, EOS_TOKEN_ID, MAX_LENGTH, VOCAB_SIZE, write_clip_tokenizer

log = logging.getLogger(__name__)

#: text-encoder settings every architecture shares: the CLIP vocabulary and its special tokens
TEXT_ENCODER_COMMON = dict(
    vocab_size=VOCAB_SIZE,
    max_position_embeddings=MAX_LENGTH,
    bos_token_id=BOS_TOKEN_ID,
    eos_token_id=EOS_TOKEN_ID,  # pooled output must land on <|endoftext|>, not on an added token
    pad_token_id=EOS_TOKEN_ID,
    hidden_act="quick_gelu",
)

#: the Stable Diffusion 1.x training noise schedule (DDPM), shared by every random-weight architecture
SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    steps_offset=1,
    prediction_type="epsilon",
)

#: the scheduler prediction types the trainer knows the target of
PREDICTION_TYPES = ("epsilon", "v_prediction")

ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "text_encoder": dict(
            TEXT_ENCODER_COMMON, hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, projection_dim=32,
        ),
        "vae": dict(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
            block_out_channels=[16, 32],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            layers_per_block=1, norm_num_groups=8,
        ),
        "unet": dict(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=[32, 64],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        ),
        "scheduler": SCHEDULER_CONFIG,
    },
    "sd15": {
        "text_encoder": dict(
            TEXT_ENCODER_COMMON, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=12, projection_dim=768,
        ),
        "vae": dict(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
            block_out_channels=[128, 256, 512, 512],
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215,
        ),
        "unet": dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=[320, 640, 1280, 1280],
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        ),
        "scheduler": SCHEDULER_CONFIG,
    },
}

#: CLI names of the random-weight models ``sstar model`` can write.
RANDOM_MODELS = {"tiny": "tiny", "sd15-random": "sd15"}


@dataclass
class DiffusionComponents:
    """The parts of a latent diffusion pipeline that Textual Inversion uses. All weights are frozen."""

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    vae: Any  # diffusers.AutoencoderKL
    unet: Any  # diffusers.UNet2DConditionModel
    noise_scheduler: Any  # diffusers.DDPMScheduler built from the model's scheduler config
    source: str
    #: held while a trainer or renderer temporarily swaps the text encoder's token embedding
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _compiled_unet: Any = field(default=None, init=False, repr=False, compare=False)

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
        """The VAE's latent scaling factor (its config's ``scaling_factor``; SD 1.x's 0.18215 if unset)."""
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
        for module in (self.text_encoder, self.vae, self.unet):
            module.requires_grad_(False)
            module.eval()

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "DiffusionComponents":
        """Move the frozen weights to ``device`` and cast them to ``dtype`` (a no-op when already there).

        On CUDA the UNet's weights are also put in channels-last layout, which its convolutions run
        faster in under bf16/fp16 (cuDNN's NHWC kernels); results are unchanged.
        """
        device = torch.device(device)
        for module in (self.text_encoder, self.vae, self.unet):
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


def build_random_components(architecture: str | Mapping[str, dict], seed: int = 0) -> DiffusionComponents:
    """Build a pipeline with random weights (seeded), no download.

    ``architecture`` is a key of :data:`ARCHITECTURES` or a mapping of the same shape (``text_encoder``,
    ``vae``, ``unet``, ``scheduler`` config dicts) — e.g. a model to be trained from scratch.
    """
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if isinstance(architecture, Mapping):
        configs, name = architecture, "custom"
    elif architecture in ARCHITECTURES:
        configs, name = ARCHITECTURES[architecture], architecture
    else:
        raise InputError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(tmp)))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    vae = AutoencoderKL(**configs["vae"])
    unet = UNet2DConditionModel(**configs["unet"])
    scheduler = DDPMScheduler(**configs["scheduler"])
    components = DiffusionComponents(tokenizer, text_encoder, vae, unet, scheduler, f"random:{name}")
    components.freeze()
    return components


def save_pipeline(components: DiffusionComponents, out: Path) -> Path:
    """Save components as a diffusers ``StableDiffusionPipeline`` folder loadable by diffusers itself."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=DDIMScheduler.from_config(components.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


def write_random_model(name: str, out: Path, seed: int = 0) -> Path:
    """Write the random-weight model ``name`` (a key of :data:`RANDOM_MODELS`) as a diffusers folder."""
    if name not in RANDOM_MODELS:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(RANDOM_MODELS)}")
    return save_pipeline(build_random_components(RANDOM_MODELS[name], seed=seed), out)


def _check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise InputError(f"model folder not found: {path}")
    if not (path / "model_index.json").is_file():
        raise InputError(f"not a diffusers model folder (no model_index.json): {path}")
    for part in ("tokenizer", "text_encoder", "vae", "unet", "scheduler"):
        if not (path / part).is_dir():
            raise InputError(f"diffusers model folder {path} lacks its {part}/ subfolder")


def load_components(model: str | Path) -> DiffusionComponents:
    """Load a Stable-Diffusion-1.x/2.x-style model from a local diffusers folder or a hub id.

    Weights are loaded in fp32 on the CPU and frozen; callers move them with :meth:`DiffusionComponents.to`.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = str(model)
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local:
        _check_model_folder(path)
        source = str(path.resolve())
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model {source}: {first_line}") from exc
    components = DiffusionComponents(tokenizer, text_encoder, vae, unet, scheduler, source)
    components.freeze()
    return components
