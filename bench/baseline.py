"""The standard Textual Inversion recipe's per-step work, as a timing baseline.

Our own re-implementation of what the widely used diffusers example script
(``examples/textual_inversion/textual_inversion.py``, default settings) does on every optimizer step,
so that the benchmark compares our trainer with what users run today:

* the placeholder token is added to the tokenizer and the text encoder's embedding table is
  resized; the new row starts as a copy of the initializer token's row;
* the WHOLE input-embedding table is the trainable parameter (AdamW, betas 0.9/0.999, weight decay
  1e-2, eps 1e-8, constant schedule); the rest of the text encoder is frozen but in train mode;
* every step the data loader (``num_workers=0``, the default) opens each image, crops/resizes it,
  flips it with probability 0.5 and tokenizes a random template; the pixel batch goes through the
  VAE (``latent_dist.sample() * scaling_factor``); random timesteps and noise; UNet prediction;
  MSE in fp32; backward; optimizer step; then every row except the placeholder's is copied back
  from the original table (``index_no_updates``);
* precision: fp32 on the CPU; on a GPU the script's ``--mixed_precision fp16``: UNet and VAE
  weights in fp16, text encoder weights fp32 with its forward under fp16 autocast (what
  ``accelerator.prepare`` does) and a gradient scaler.

It runs on the same :class:`~inversion.models.DiffusionComponents`, images and prompt templates as
our trainer, and restores the components (embedding table, modes, ``requires_grad``) afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from inversion.device import DTYPES, synchronize
from inversion.images import center_crop_resize, list_images, open_rgb, to_tensor
from inversion.models import DiffusionComponents
from inversion.templates import templates_for

#: defaults of the example script
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-2
ADAM_EPS = 1e-8


@dataclass
class BaselineResult:
    """Wall (and process-CPU) seconds of every optimizer step (warm-up included), losses, set-up time."""

    step_seconds: list[float] = field(default_factory=list)
    step_cpu_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0


class _Loader:
    """The script's ``TextualInversionDataset`` + ``DataLoader(shuffle=True, num_workers=0)``, per batch."""

    def __init__(self, image_dir: Path, tokenizer, token: str, resolution: int, batch_size: int,
                 seed: int, flip_p: float = 0.5) -> None:
        self.files = list_images(image_dir)
        self.tokenizer = tokenizer
        self.token = token
        self.resolution = resolution
        self.batch_size = batch_size
        self.flip_p = flip_p
        self.templates = templates_for("object")
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def _item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.rng.choice(self.templates).format(self.token)
        input_ids = self.tokenizer(text, padding="max_length", truncation=True,
                                   max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids[0]
        image = center_crop_resize(open_rgb(self.files[index]), self.resolution)
        if self.rng.random() < self.flip_p:
            image = image.transpose(0)  # PIL FLIP_LEFT_RIGHT, as torchvision's RandomHorizontalFlip
        return to_tensor(image), input_ids

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, ids = [], []
        for _ in range(self.batch_size):
            if not self.order:  # a new shuffled epoch
                self.order = list(range(len(self.files)))
                self.rng.shuffle(self.order)
            p, i = self._item(self.order.pop())
            pixels.append(p)
            ids.append(i)
        return torch.stack(pixels), torch.stack(ids)


def run_baseline(
    components: DiffusionComponents,
    image_dir: Path,
    *,
    resolution: int,
    batch_size: int = 1,
    steps: int = 3,
    device: torch.device | str = "cpu",
    mixed_precision: str | None = None,
    token: str = "<bench-0>",
    initializer: str = "cat",
    lr: float = 5e-3,
    seed: int = 0,
    on_step: Callable[[int, float, float], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> BaselineResult:
    """Run ``steps`` optimizer steps of the standard recipe; time each one (wall clock, synchronized).

    ``mixed_precision``: ``"no"`` (fp32) or ``"fp16"``/``"bf16"`` (UNet/VAE weights in that dtype,
    text encoder fp32 under autocast, gradient scaler for fp16). Default: fp16 on CUDA, fp32 on CPU.
    ``on_ready`` is called once set-up is done (models placed, table resized), before the first step;
    ``on_step(step, seconds, loss)`` after every step.
    """
    from diffusers.optimization import get_scheduler

    device = torch.device(device)
    if mixed_precision is None:
        mixed_precision = "fp16" if device.type == "cuda" else "no"
    weight_dtype = DTYPES["fp32" if mixed_precision == "no" else mixed_precision]
    result = BaselineResult()
    started = time.perf_counter()

    tokenizer = copy.deepcopy(components.tokenizer)
    text_encoder, vae, unet = components.text_encoder, components.vae, components.unet
    scheduler = components.noise_scheduler
    original_vocab = text_encoder.config.vocab_size
    original_place = (components.device, components.dtype)
    try:
        # -- set-up, as the script: add the token, resize the table, initialise the new row ---------
        text_encoder.to(device=device, dtype=torch.float32)
        if tokenizer.add_tokens([token]) != 1:
            raise ValueError(f"tokenizer already contains {token}")
        initializer_id = tokenizer.encode(initializer, add_special_tokens=False)[0]
        placeholder_ids = [tokenizer.convert_tokens_to_ids(token)]
        text_encoder.resize_token_embeddings(len(tokenizer))
        token_embeds = text_encoder.get_input_embeddings().weight.data
        with torch.no_grad():
            for token_id in placeholder_ids:
                token_embeds[token_id] = token_embeds[initializer_id].clone()

        vae.requires_grad_(False)
        unet.requires_grad_(False)
        text_encoder.requires_grad_(True)  # from_pretrained leaves everything trainable; freeze as the script does
        text_model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 flattened CLIPTextModel
        text_model.encoder.requires_grad_(False)
        text_model.final_layer_norm.requires_grad_(False)
        text_model.embeddings.position_embedding.requires_grad_(False)

        optimizer = torch.optim.AdamW(text_encoder.get_input_embeddings().parameters(), lr=lr, betas=ADAM_BETAS,
                                      weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS)
        lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
        unet.to(device=device, dtype=weight_dtype)
        vae.to(device=device, dtype=weight_dtype)
        orig_embeds_params = text_encoder.get_input_embeddings().weight.data.clone()
        scaler = torch.amp.GradScaler(device.type) if mixed_precision == "fp16" else None
        text_autocast = (torch.autocast(device.type, dtype=weight_dtype) if mixed_precision != "no"
                         else contextlib.nullcontext())
        scaling = float(vae.config.scaling_factor)
        num_timesteps = int(scheduler.config.num_train_timesteps)
        prediction = scheduler.config.prediction_type
        loader = _Loader(Path(image_dir), tokenizer, token, resolution, batch_size, seed)
        torch.manual_seed(seed)
        text_encoder.train()
        synchronize(device)
        result.setup_seconds = time.perf_counter() - started
        if on_ready is not None:
            on_ready()

        # -- the training loop -------------------------------------------------------------------
        for step in range(steps):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            pixel_values, input_ids = loader.next_batch()
            pixel_values, input_ids = pixel_values.to(device), input_ids.to(device)

            latents = vae.encode(pixel_values.to(dtype=weight_dtype)).latent_dist.sample().detach()
            latents = latents * scaling
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(0, num_timesteps, (bsz,), device=latents.device).long()
            noisy_latents = scheduler.add_noise(latents, noise, timesteps)

            with text_autocast:
                encoder_hidden_states = text_encoder(input_ids)[0]
            encoder_hidden_states = encoder_hidden_states.float().to(dtype=weight_dtype)

            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
            if prediction == "epsilon":
                target = noise
            elif prediction == "v_prediction":
                target = scheduler.get_velocity(latents, noise, timesteps)
            else:
                raise ValueError(f"unknown prediction type {prediction}")
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")

            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()

            # only the placeholder rows may change: copy every other row back
            index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
            index_no_updates[min(placeholder_ids): max(placeholder_ids) + 1] = False
            with torch.no_grad():
                text_encoder.get_input_embeddings().weight[index_no_updates] = orig_embeds_params[index_no_updates]

            value = loss.detach().item()  # the script logs it every step
            synchronize(device)
            seconds = time.perf_counter() - tick
            result.step_seconds.append(seconds)
            result.step_cpu_seconds.append(time.process_time() - cpu_tick)
            result.losses.append(value)
            if on_step is not None:
                on_step(step + 1, seconds, value)
        return result
    finally:
        # leave the shared components as we found them: frozen, eval, original table. transformers
        # resizes the table in place; after the copy-back its first rows are the original ones.
        embedding = text_encoder.get_input_embeddings()
        if embedding.num_embeddings != original_vocab:
            embedding.weight = torch.nn.Parameter(embedding.weight.data[:original_vocab].clone())
            embedding.num_embeddings = original_vocab
        text_encoder.config.vocab_size = original_vocab
        components.to(*original_place)
        components.freeze()
