"""The toy world's model architectures, as data (in the spirit of :data:`inversion.model.components.ARCHITECTURES`).

:data:`WORLD_ARCHITECTURE` is a Stable-Diffusion-style latent diffusion model for 32 px images:
a 4×-down AutoencoderKL (4 latent channels, 8×8 latents), a two-level UNet with cross-attention
(dim 128) and a 3-layer CLIP text encoder (hidden 128) over the real CLIP vocabulary. It shares
the text-encoder settings (vocabulary, special tokens) and the scheduler with our tiny and SD-1.5
architectures. The world CLIP is an open_clip custom architecture registered with our own CLIP
configs (``inversion/evaluation/clip_configs/sstar-world-clip.json``), so ``sstar score --clip-arch
sstar-world-clip --clip-checkpoint …`` scores with it like with any other.
"""

from __future__ import annotations

from typing import Any

from inversion.evaluation.clip import CONFIG_DIR
from inversion.model.zoo import SCHEDULER_CONFIG, TEXT_ENCODER_COMMON
from toyworld import CLIP_ARCH as WORLD_CLIP_ARCH

WORLD_CLIP_CONFIG = CONFIG_DIR / f"{WORLD_CLIP_ARCH}.json"


def world_architecture(resolution: int = 32) -> dict[str, dict[str, Any]]:
    """Component configs of the world's diffusion model for ``resolution``-pixel images (a multiple of 16)."""
    if resolution % 16:
        raise ValueError(f"world resolution must be a multiple of 16, got {resolution}")
    return {
        "text_encoder": dict(
            TEXT_ENCODER_COMMON,
            hidden_size=128,
            intermediate_size=512,
            num_attention_heads=4,
            num_hidden_layers=3,
            projection_dim=128,
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            sample_size=resolution,
            block_out_channels=[32, 64, 64],
            down_block_types=["DownEncoderBlock2D"] * 3,
            up_block_types=["UpDecoderBlock2D"] * 3,
            layers_per_block=1,
            norm_num_groups=16,
            scaling_factor=1.0,  # set from the data after training
        ),
        "unet": dict(
            sample_size=resolution // 4,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=[64, 128],
            down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            cross_attention_dim=128,
            attention_head_dim=4,
            norm_num_groups=32,
        ),
        "scheduler": dict(SCHEDULER_CONFIG),
    }


WORLD_ARCHITECTURE = world_architecture(32)


def build_diffusion(resolution: int = 32, seed: int = 0):
    """Fresh (seeded, random) tokenizer, text encoder, VAE, UNet and DDPM scheduler of the world model.

    They come frozen; each training phase unfreezes what it trains.
    """
    from inversion.model.zoo import build_random_components

    c = build_random_components(world_architecture(resolution), seed=seed)
    return c.tokenizer, c.text_encoder, c.vae, c.unet, c.noise_scheduler


def build_clip(seed: int = 0):
    """A fresh (seeded, random) world CLIP (open_clip ``CLIP``)."""
    import torch

    from inversion.evaluation.clip import open_clip_module

    open_clip = open_clip_module()
    torch.manual_seed(seed)
    return open_clip.CLIP(**open_clip.get_model_config(WORLD_CLIP_ARCH))
