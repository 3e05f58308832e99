"""Flow matching, the objective SD 3 and Flux were trained with, for learning words on them.

The conventions are diffusers' (``examples/dreambooth/train_dreambooth_sd3.py`` and ``..._flux.py``, the
``FlowMatchEulerDiscreteScheduler`` and the two pipelines); where their scripts offer a choice, the one
taken here is named.

* **Path and target.** A latent ``x0`` (the VAE's mean + std · ε, then ``(x0 - shift_factor) ·
  scaling_factor``, the VAE config's values) and noise ``n`` at noise level ``σ`` in [0, 1] give
  ``x_σ = (1 - σ) · x0 + σ · n``; the transformer predicts the velocity ``n - x0``. The loss is the mean
  squared error per example, unweighted (diffusers' ``compute_loss_weighting_for_sd3`` gives weight 1 for
  logit-normal sampling).
* **Which σ.** ``u ~ sigmoid(N(0, 1))`` (logit-normal, mean 0, std 1: ``compute_density_for_timestep_sampling
  ("logit_normal")``), taken to one of the scheduler's ``num_train_timesteps`` levels by
  ``index = int(u · N)`` (the scripts' discretisation) on the table ``t = (N - index) / N``, shifted:

  - SD 3 (``use_dynamic_shifting`` off): ``σ = s·t / (1 + (s - 1)·t)`` with the config's ``shift`` (3.0),
    the table the scheduler builds for itself;
  - Flux (``use_dynamic_shifting`` on): the resolution-dependent shift of its pipeline,
    ``σ = e^μ / (e^μ + 1/t - 1)`` (the scheduler's exponential ``time_shift``; ``μ / (μ + 1/t - 1)`` for a
    linear one) with ``μ = calculate_shift(image_seq_len)``, linear between ``base_shift`` at
    ``base_image_seq_len`` and ``max_shift`` at ``max_image_seq_len``; ``image_seq_len`` is the packed
    latent's token count at the training resolution. (diffusers' Flux scripts sample u uniformly on an
    unshifted table; the logit-normal draw and the shift of the Flux pipeline are SD 3's recipe applied to
    Flux, so training sees the noise levels rendering visits.)

* **The transformer's inputs.** SD 3: ``timestep = σ · N`` (the scheduler's timesteps). Flux:
  ``timestep = σ`` (the pipeline passes ``t / 1000``), the distilled guidance input ``guidance`` =
  :data:`FLUX_GUIDANCE` for every example (the scripts' default ``--guidance_scale``), the latent packed
  into 2 × 2 patches (:func:`pack_latents`, ``_pack_latents``) with their image ids
  (:func:`latent_image_ids`, ``_prepare_latent_image_ids``) and all-zero text ids; its prediction is compared
  with the packed velocity.

The plateau rule's held-out examples fix the views, prompts, noise and σ (hence timestep, packing and ids), so
their loss is a function of the vectors alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: the distilled guidance a Flux transformer is given while a word is trained (diffusers' scripts' default)
FLUX_GUIDANCE = 3.5
#: the logit-normal timestep density: mean and standard deviation of the normal draw before the sigmoid
LOGIT_MEAN, LOGIT_STD = 0.0, 1.0


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Flux's ``μ`` for ``image_seq_len`` latent tokens: linear from ``base_shift`` to ``max_shift``."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, H/2 · W/2, 4C]``: Flux's 2 × 2 patches, as ``FluxPipeline._pack_latents``."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def latent_image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ids ``[H · W, 3]`` (0, row, column) of Flux's packed latent of ``height`` × ``width`` patches."""
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(height)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(width)[None, :]
    return ids.reshape(height * width, 3).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class FlowSchedule:
    """The training noise levels of a flow-matching model at one resolution (module docstring)."""

    sigmas: torch.Tensor  # [N]: index 0 is the noisiest level
    num_train_timesteps: int

    @classmethod
    def for_model(cls, config: Any, latent_size: int) -> FlowSchedule:
        """The table of the scheduler ``config`` for square latents of ``latent_size`` (before packing)."""
        n = int(config.num_train_timesteps)
        t = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy()) / n
        if not getattr(config, "use_dynamic_shifting", False):
            shift = float(config.shift)
            return cls(shift * t / (1 + (shift - 1) * t), n)
        mu = calculate_shift(
            (latent_size // 2) ** 2,
            config.base_image_seq_len,
            config.max_image_seq_len,
            config.base_shift,
            config.max_shift,
        )
        scale = math.exp(mu) if getattr(config, "time_shift_type", "exponential") == "exponential" else mu
        return cls(scale / (scale + (1 / t - 1)), n)

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """``batch`` noise levels σ (fp32, CPU) from ``generator``: logit-normal, discretised, shifted."""
        u = torch.sigmoid(torch.normal(LOGIT_MEAN, LOGIT_STD, size=(batch,), generator=generator))
        indices = (u * self.num_train_timesteps).long().clamp(max=self.num_train_timesteps - 1)
        return self.sigmas[indices]


def flow_losses(
    transformer: torch.nn.Module,
    text_kwargs: dict[str, Any],
    latents: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    dtype: torch.dtype,
    num_train_timesteps: int,
    flux: bool,
) -> torch.Tensor:
    """Per-example flow-matching loss ``[B]`` of an SD 3 or a Flux transformer (``text_kwargs``:
    :meth:`~inversion.text.encoder.PromptEncoder.transformer_kwargs`) on scaled ``latents`` ``[B, C, H, W]``
    noised with ``noise`` to the levels ``sigmas``."""
    s = sigmas.to(latents.device, torch.float32).view(-1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    target = noise - latents
    if not flux:
        timestep = s.flatten() * num_train_timesteps
        pred = transformer(hidden_states=noisy.to(dtype), timestep=timestep, **text_kwargs, return_dict=False)[0]
    else:
        b, _, h, w = noisy.shape
        guidance = None
        config: Any = transformer.config
        if config.guidance_embeds:
            guidance = torch.full((b,), FLUX_GUIDANCE, device=latents.device, dtype=torch.float32)
        pred = transformer(
            hidden_states=pack_latents(noisy).to(dtype),
            timestep=s.flatten(),
            guidance=guidance,
            img_ids=latent_image_ids(h // 2, w // 2, latents.device, dtype),
            **text_kwargs,
            return_dict=False,
        )[0]
        target = pack_latents(target)
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(dim=1)
