"""Random-weight diffusion models, built locally (no download): for tests, benchmarks and the plumbing demo.

Architectures are data: :data:`ARCHITECTURES` maps a name to the component configs, in the spirit
of diffusers' config-as-data. ``tiny``, ``sd2-tiny`` and ``sdxl-tiny`` are a few MB each and render
64 px in a blink on a CPU (the structure of SD 1.x, SD 2.x and SDXL: text encoders, activations,
padding token, prediction type, SDXL's added conditioning); ``sd15``, ``sd2`` and ``sdxl`` are the real
architectures (the public configs of SD 1.5, SD 2.1 and SDXL base 1.0) with random weights, for
realistic speed and memory. All use the real CLIP vocabulary (see :mod:`inversion.model.vocab`).

``sd3-tiny`` and ``flux-tiny`` (:data:`FLOW_ARCHITECTURES`) have the structure of SD 3.5 and Flux.1-dev:
CLIP-L (+ CLIP-G for SD 3) and T5 text sides, a transformer denoiser (SD 3.5's query-key RMS norm and
one dual-attention layer; Flux's double- and single-stream blocks, rotary image ids and distilled
guidance input), a 16-channel VAE with its shift and scale, and a flow-matching scheduler (SD 3's fixed
shift 3; Flux's resolution-dependent shift). T5 reads text with a small unigram tokenizer trained offline
(:func:`inversion.model.vocab.write_t5_tokenizer`) and is 96 wide: SD 3 pads its CLIP features (32 + 48)
up to T5's width, as the real one pads 768 + 1280 up to 4096. Each part's config carries its class
(``_class_name`` in diffusers' configs, ``architectures`` in transformers'), so a family's builder needs no
table of classes of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from inversion.errors import InputError
from inversion.model.components import DiffusionComponents, build_pipeline
from inversion.model.info import classify
from inversion.model.vocab import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    MAX_LENGTH,
    T5_VOCAB_SIZE,
    VOCAB_SIZE,
    write_clip_tokenizer,
    write_t5_tokenizer,
)

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

#: SD 2.x's schedule: the same betas, trained for v-prediction
SCHEDULER_CONFIG_V = dict(SCHEDULER_CONFIG, prediction_type="v_prediction")

#: OpenCLIP's tokenizer settings as diffusers stores them for SD 2.x and SDXL's second text encoder
OPENCLIP_TOKENIZER = dict(pad_token="!")

#: the VAE of every real architecture (SD 1.x/2.x/XL share its shape; the scaling factor differs)
_VAE_REAL = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    norm_num_groups=32,
)
_VAE_TINY = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=64,
    block_out_channels=[16, 32],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    layers_per_block=1,
    norm_num_groups=8,
)
_UNET_TINY = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=[32, 64],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)
_UNET_SD = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)

#: the scheduler prediction types the trainer knows the target of

ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
        ),
        "vae": _VAE_TINY,
        "unet": _UNET_TINY,
        "scheduler": SCHEDULER_CONFIG,
    },
    "sd15": {
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            projection_dim=768,
        ),
        "vae": dict(_VAE_REAL, sample_size=512, scaling_factor=0.18215),
        "unet": _UNET_SD,
        "scheduler": SCHEDULER_CONFIG,
    },
    # SD 2.x: OpenCLIP text side (gelu, "!" padding), linear attention projections, v-prediction
    "sd2-tiny": {
        "tokenizer": OPENCLIP_TOKENIZER,
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            hidden_act="gelu",
        ),
        "vae": _VAE_TINY,
        "unet": dict(_UNET_TINY, use_linear_projection=True),
        "scheduler": SCHEDULER_CONFIG_V,
    },
    "sd2": {  # stable-diffusion-2-1: OpenCLIP ViT-H/14 with its last layer dropped (23 of 24), 768 px
        "tokenizer": OPENCLIP_TOKENIZER,
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=23,
            projection_dim=512,
            hidden_act="gelu",
        ),
        "vae": dict(_VAE_REAL, sample_size=768, scaling_factor=0.18215),
        "unet": dict(
            _UNET_SD,
            sample_size=96,
            cross_attention_dim=1024,
            attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True,
        ),
        "scheduler": SCHEDULER_CONFIG_V,
    },
    # SDXL: two text encoders of distinct widths (32 + 48 here, 768 + 1280 for real), pooled projection
    # and micro-conditioning as added embeddings (6 time ids × addition_time_embed_dim + pooled width)
    "sdxl-tiny": {
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
        ),
        "tokenizer_2": OPENCLIP_TOKENIZER,
        "text_encoder_2": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=48,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            hidden_act="gelu",
        ),
        "vae": dict(_VAE_TINY, scaling_factor=0.13025, force_upcast=True),
        "unet": dict(
            _UNET_TINY,
            layers_per_block=2,
            attention_head_dim=[2, 4],
            transformer_layers_per_block=[1, 2],
            cross_attention_dim=32 + 48,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        ),
        "scheduler": SCHEDULER_CONFIG,
    },
    "sdxl": {  # stable-diffusion-xl-base-1.0: CLIP ViT-L + OpenCLIP ViT-bigG/14, 1024 px
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            projection_dim=768,
        ),
        "tokenizer_2": OPENCLIP_TOKENIZER,
        "text_encoder_2": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=1280,
            intermediate_size=5120,
            num_attention_heads=20,
            num_hidden_layers=32,
            projection_dim=1280,
            hidden_act="gelu",
        ),
        "vae": dict(_VAE_REAL, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
        "unet": dict(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=[320, 640, 1280],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            attention_head_dim=[5, 10, 20],
            transformer_layers_per_block=[1, 2, 10],
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            norm_num_groups=32,
        ),
        "scheduler": SCHEDULER_CONFIG,
    },
}

_CLIP_L_TINY = dict(
    TEXT_ENCODER_COMMON,
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    projection_dim=32,
)
#: T5 v1.1's shape (gated GELU, untied embeddings), 96 wide: at least SD 3's two CLIP widths together
_T5_TINY = dict(
    architectures=["T5EncoderModel"],
    vocab_size=T5_VOCAB_SIZE,
    d_model=96,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
)
_VAE_FLOW_TINY = dict(
    _VAE_TINY, _class_name="AutoencoderKL", latent_channels=16, use_quant_conv=False, use_post_quant_conv=False
)
_FLOW_SCHEDULER = dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0)

#: SD 3.5-like and Flux.1-dev-like tiny models (see the module docstring); text encoder ``_N`` reads with
#: tokenizer ``_N``, a CLIP tokenizer for a CLIP encoder and the T5 one for T5
FLOW_ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "sd3-tiny": {
        "text_encoder": dict(_CLIP_L_TINY, architectures=["CLIPTextModelWithProjection"]),
        "tokenizer_2": OPENCLIP_TOKENIZER,
        "text_encoder_2": dict(
            _CLIP_L_TINY,
            architectures=["CLIPTextModelWithProjection"],
            hidden_size=48,
            intermediate_size=64,
            hidden_act="gelu",
        ),
        "text_encoder_3": _T5_TINY,
        "vae": dict(_VAE_FLOW_TINY, scaling_factor=1.5305, shift_factor=0.0609),
        "transformer": dict(
            _class_name="SD3Transformer2DModel",
            sample_size=32,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=96,  # T5's width
            caption_projection_dim=32,
            pooled_projection_dim=32 + 32,  # CLIP-L's and CLIP-G's pooled projections, side by side
            pos_embed_max_size=32,
            qk_norm="rms_norm",
            dual_attention_layers=(0,),
        ),
        "scheduler": _FLOW_SCHEDULER,
    },
    "flux-tiny": {
        "text_encoder": dict(_CLIP_L_TINY, architectures=["CLIPTextModel"]),
        "text_encoder_2": _T5_TINY,
        "vae": dict(_VAE_FLOW_TINY, scaling_factor=0.3611, shift_factor=0.1159),
        "transformer": dict(
            _class_name="FluxTransformer2DModel",
            patch_size=1,
            in_channels=16 * 4,  # the VAE's 16 channels, packed 2 x 2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=96,  # T5's width
            pooled_projection_dim=32,  # CLIP-L's pooled output
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
        "scheduler": dict(
            _FLOW_SCHEDULER,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
    },
}

#: CLI names of the random-weight models ``sstar model`` can write (an architecture's name).
RANDOM_MODELS = {
    "tiny": "tiny",
    "sd15-random": "sd15",
    "sd2-tiny": "sd2-tiny",
    "sd2-random": "sd2",
    "sdxl-tiny": "sdxl-tiny",
    "sdxl-random": "sdxl",
    "sd3-tiny": "sd3-tiny",
    "flux-tiny": "flux-tiny",
}


def build_random_components(architecture: str | Mapping[str, dict], seed: int = 0) -> DiffusionComponents:
    """Build a pipeline with random weights (seeded), no download.

    ``architecture`` is a key of :data:`ARCHITECTURES` or a mapping of the same shape (``text_encoder``,
    ``vae``, ``unet``, ``scheduler`` config dicts; optionally ``tokenizer`` settings, and SDXL's
    ``text_encoder_2``/``tokenizer_2``) — e.g. a model to be trained from scratch.
    """
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if isinstance(architecture, Mapping):
        configs, name = architecture, "custom"
    elif architecture in ARCHITECTURES:
        configs, name = ARCHITECTURES[architecture], architecture
    else:
        raise InputError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")

    sdxl = "text_encoder_2" in configs
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(folder, **configs.get("tokenizer", {}))
        tokenizer_2 = CLIPTokenizer.from_pretrained(folder, **configs.get("tokenizer_2", {})) if sdxl else None
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])) if sdxl else None
    vae = AutoencoderKL(**configs["vae"])
    unet = UNet2DConditionModel(**configs["unet"])
    scheduler = DDPMScheduler(**configs["scheduler"])
    components = DiffusionComponents(
        tokenizer,
        text_encoder,
        vae,
        unet,
        scheduler,
        f"random:{name}",
        tokenizer_2=tokenizer_2,
        text_encoder_2=text_encoder_2,
    )
    components.freeze()
    return components


def _text_side(config: dict[str, Any], clip_folder: Path, t5_folder: Path, options: dict) -> tuple[Any, Any]:
    """A text encoder built from ``config`` (its class in ``architectures``) with random weights, and its
    tokenizer: the T5 one for a T5 encoder, the CLIP one otherwise (``options`` as for ``from_pretrained``)."""
    import transformers
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # (lazily exported)

    settings = {key: value for key, value in config.items() if key != "architectures"}
    model_class = getattr(transformers, config["architectures"][0])
    if model_class is transformers.T5EncoderModel:
        tokenizer = T5TokenizerFast.from_pretrained(t5_folder, **options)
        assert len(tokenizer) == settings["vocab_size"], "the T5 embedding has one row per tokenizer piece"
        return tokenizer, model_class(transformers.T5Config(**settings))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(clip_folder, **options)
    return tokenizer, model_class(transformers.CLIPTextConfig(**settings))


def build_flow_components(architecture: str | Mapping[str, dict], seed: int = 0) -> DiffusionComponents:
    """Build an SD 3- or Flux-structured model with random weights (seeded), no download.

    ``architecture`` is a key of :data:`FLOW_ARCHITECTURES` or a mapping of the same shape; the family
    follows from the transformer's class.
    """
    import tempfile

    from inversion.model.components import library_class

    if isinstance(architecture, Mapping):
        configs, name = architecture, "custom"
    elif architecture in FLOW_ARCHITECTURES:
        configs, name = FLOW_ARCHITECTURES[architecture], architecture
    else:
        raise InputError(f"unknown architecture {architecture!r}; known: {', '.join(FLOW_ARCHITECTURES)}")
    classify(False, None, configs["transformer"]["_class_name"])  # a known family, or a one-line error
    parts: dict[str, Any] = {}
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        clip_folder, t5_folder = write_clip_tokenizer(Path(tmp) / "clip"), write_t5_tokenizer(Path(tmp) / "t5")
        for encoder in sorted(part for part in configs if part.startswith("text_encoder")):
            tokenizer = encoder.replace("text_encoder", "tokenizer")
            options = configs.get(tokenizer, {})
            parts[tokenizer], parts[encoder] = _text_side(configs[encoder], clip_folder, t5_folder, options)
    for part in ("vae", "transformer", "scheduler"):
        parts[part] = library_class(configs[part]["_class_name"]).from_config(configs[part])
    noise_scheduler = parts.pop("scheduler")
    components = DiffusionComponents(unet=None, noise_scheduler=noise_scheduler, source=f"random:{name}", **parts)
    components.freeze()
    return components


def save_pipeline(components: DiffusionComponents, out: Path) -> Path:
    """Save components as a diffusers folder (the family's pipeline: ``StableDiffusionPipeline``,
    ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline`` or ``FluxPipeline``) loadable by diffusers
    itself. The UNet families render with DDIM (their training scheduler is DDPM); SD 3 and Flux with
    their flow-matching scheduler, which both trains and samples."""
    from diffusers import DDIMScheduler

    scheduler = components.noise_scheduler
    if not components.flow_matching:
        scheduler = DDIMScheduler.from_config(scheduler.config)
    pipeline = build_pipeline(components, scheduler)
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


def write_random_model(name: str, out: Path, seed: int = 0) -> Path:
    """Write the random-weight model ``name`` (a key of :data:`RANDOM_MODELS`) as a diffusers folder."""
    if name not in RANDOM_MODELS:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(RANDOM_MODELS)}")
    architecture = RANDOM_MODELS[name]
    build = build_flow_components if architecture in FLOW_ARCHITECTURES else build_random_components
    return save_pipeline(build(architecture, seed=seed), out)
