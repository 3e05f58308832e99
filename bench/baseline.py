"""The standard Textual Inversion recipes' per-step work, as a timing baseline.

Our own re-implementation of what the widely used diffusers example scripts do on every optimizer
step, so that the benchmark compares our trainer with what users run today. One loop serves both
recipes; the model family (:attr:`inversion.model.components.DiffusionComponents.family`) switches what differs:

* SD 1.x/2.x — ``examples/textual_inversion/textual_inversion.py`` (default settings);
* SDXL — ``examples/textual_inversion/textual_inversion_sdxl.py`` (the version that trains both
  text encoders; its README's ``--mixed_precision bf16``).

What both do:

* the placeholder token is added to the tokenizer(s) and each text encoder's embedding table is
  resized; the new row starts as a copy of the initializer token's row (SDXL: in both encoders);
* the WHOLE input-embedding table(s) are the trainable parameters (one AdamW, betas 0.9/0.999,
  weight decay 1e-2, eps 1e-8, constant schedule); the rest of each text encoder is frozen but in
  train mode;
* every step the data loader (``num_workers=0``, the default) opens each image, crops/resizes it,
  flips it with probability 0.5 and tokenizes a random template (SDXL: with both tokenizers); the
  pixel batch goes through the VAE (``latent_dist.sample() * scaling_factor``); random timesteps
  and noise; UNet prediction; MSE in fp32; backward; optimizer step; then every row except the
  placeholder's is copied back from the original table(s) (``index_no_updates``), and the loss is read;
* conditioning: SD 1.x/2.x the text encoder's last hidden state; SDXL the penultimate hidden states
  of both encoders concatenated, the second encoder's pooled projection and the micro-conditioning
  time ids ``(original h, w, crop top, left, target h, w)`` of each image (the script's
  ``--center_crop`` view, which is also our trainer's: :func:`inversion.text.encoder.crop_conditioning`);
* precision (:func:`recipe_precision`): ``no`` = everything fp32; ``fp16``/``bf16`` = UNet and VAE
  weights in that dtype, the first text encoder fp32 with its forward under autocast (what
  ``accelerate.prepare`` does), a gradient scaler for fp16; SDXL also casts its second text encoder
  (its table included) to that dtype, as the script does — so SDXL cannot use fp16 (the scaler
  refuses fp16 gradients) and the script's README runs it in bf16.

It runs on the same :class:`~inversion.model.components.DiffusionComponents`, images and prompt templates as
our trainer, and restores the components exactly afterwards (embedding tables, modes, ``requires_grad``,
placement; weights it casts to a narrower dtype from a copy taken before the cast).
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from inversion.device import DTYPES, synchronize
from inversion.images import center_crop_resize, list_images, open_rgb, to_tensor
from inversion.model.components import DiffusionComponents
from inversion.model.info import Family
from inversion.text.encoder import crop_conditioning
from inversion.training.templates import templates_for

#: defaults of the example scripts
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-2
ADAM_EPS = 1e-8
#: the mixed-precision settings the scripts take (accelerate's ``--mixed_precision``)
MIXED_PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class BaselineResult:
    """Wall (and process-CPU) seconds of every optimizer step (warm-up included), losses, set-up time."""

    step_seconds: list[float] = field(default_factory=list)
    step_cpu_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0


def recipe_precision(family: Family, device: torch.device | str, requested: str | None = None) -> str:
    """The baseline's ``--mixed_precision``: ``requested`` if given, else what each script is run with.

    SD 1.x/2.x: ``fp16`` on CUDA, ``no`` (fp32) on the CPU. SDXL: ``bf16`` (its README's command) on
    either. Raises ``ValueError`` for an unknown setting, or ``fp16`` with SDXL (see the module docstring).
    """
    if requested is None:
        if family == "sdxl":
            return "bf16"
        return "fp16" if torch.device(device).type == "cuda" else "no"
    if requested not in MIXED_PRECISIONS:
        raise ValueError(f"unknown mixed precision {requested!r}; choose from {', '.join(MIXED_PRECISIONS)}")
    if family == "sdxl" and requested == "fp16":
        raise ValueError(
            "the SDXL recipe cannot run in fp16: it casts its second text encoder's trained table to "
            "fp16, whose gradients the gradient scaler refuses; use bf16 or no"
        )
    return requested


@dataclass
class _TextSide:
    """One text encoder as the script sets it up: its tokenizer copy, resized table and frozen rows."""

    tokenizer: Any
    encoder: Any
    original_vocab: int
    placeholder_ids: list[int] = field(default_factory=list)
    orig_embeds: torch.Tensor | None = None

    def add_token(self, token: str, initializer: str) -> None:
        """Add ``token``, resize the table and copy the initializer's row into the new one."""
        if self.tokenizer.add_tokens([token]) != 1:
            raise ValueError(f"tokenizer already contains {token}")
        initializer_ids = self.tokenizer.encode(initializer, add_special_tokens=False)
        if len(initializer_ids) != 1:
            raise ValueError(f"the initializer {initializer!r} must be a single token")
        self.placeholder_ids = [self.tokenizer.convert_tokens_to_ids(token)]
        self.encoder.resize_token_embeddings(len(self.tokenizer))
        table = self.encoder.get_input_embeddings().weight.data
        with torch.no_grad():
            for token_id in self.placeholder_ids:
                table[token_id] = table[initializer_ids[0]].clone()

    def freeze_all_but_table(self) -> None:
        self.encoder.requires_grad_(True)  # from_pretrained leaves everything trainable, as the script finds it
        text_model = getattr(self.encoder, "text_model", self.encoder)  # transformers 5 flattened CLIPTextModel
        text_model.encoder.requires_grad_(False)
        text_model.final_layer_norm.requires_grad_(False)
        text_model.embeddings.position_embedding.requires_grad_(False)

    @property
    def table(self) -> torch.nn.Parameter:
        return self.encoder.get_input_embeddings().weight

    def tokenize(self, text: str) -> torch.Tensor:
        return self.tokenizer(
            text, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt"
        ).input_ids[0]

    def restore_rows(self) -> None:
        """Copy every row but the placeholders' back from the original table (``index_no_updates``)."""
        assert self.orig_embeds is not None
        index_no_updates = torch.ones((len(self.tokenizer),), dtype=torch.bool)
        index_no_updates[min(self.placeholder_ids) : max(self.placeholder_ids) + 1] = False
        with torch.no_grad():
            self.table[index_no_updates] = self.orig_embeds[index_no_updates]

    def undo(self) -> None:
        """Shrink the table back to the original vocabulary.

        After the copy-back its first rows are the original ones.
        """
        embedding = self.encoder.get_input_embeddings()
        if embedding.num_embeddings != self.original_vocab:
            embedding.weight = torch.nn.Parameter(embedding.weight.data[: self.original_vocab].clone())
            embedding.num_embeddings = self.original_vocab
        self.encoder.config.vocab_size = self.original_vocab


def _text_sides(components: DiffusionComponents) -> list[_TextSide]:
    pairs = [(components.tokenizer, components.text_encoder)]
    if components.text_encoder_2 is not None:
        pairs.append((components.tokenizer_2, components.text_encoder_2))
    return [
        _TextSide(copy.deepcopy(tokenizer), encoder, int(encoder.config.vocab_size)) for tokenizer, encoder in pairs
    ]


@dataclass
class _Batch:
    pixels: torch.Tensor  # [B, 3, R, R] in [-1, 1]
    input_ids: list[torch.Tensor]  # per text encoder, [B, 77]
    time_ids: torch.Tensor  # [B, 6]: original h, w, crop top, left, target h, w (used by SDXL only)


class _Loader:
    """The script's ``TextualInversionDataset`` + ``DataLoader(shuffle=True, num_workers=0)``, per batch."""

    def __init__(
        self,
        image_dir: Path,
        sides: Sequence[_TextSide],
        token: str,
        resolution: int,
        batch_size: int,
        seed: int,
        flip_p: float = 0.5,
    ) -> None:
        self.files = list_images(image_dir)
        self.sides = sides
        self.token = token
        self.resolution = resolution
        self.batch_size = batch_size
        self.flip_p = flip_p
        self.templates = templates_for("object")
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def _item(self, index: int) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        text = self.rng.choice(self.templates).format(self.token)
        ids = [side.tokenize(text) for side in self.sides]
        original = open_rgb(self.files[index])
        time_ids = [*crop_conditioning(original, self.resolution), self.resolution, self.resolution]
        image = center_crop_resize(original, self.resolution)
        if self.rng.random() < self.flip_p:
            image = image.transpose(0)  # PIL FLIP_LEFT_RIGHT, as torchvision's RandomHorizontalFlip
        return to_tensor(image), ids, time_ids

    def next_batch(self) -> _Batch:
        items = []
        for _ in range(self.batch_size):
            if not self.order:  # a new shuffled epoch
                self.order = list(range(len(self.files)))
                self.rng.shuffle(self.order)
            items.append(self._item(self.order.pop()))
        return _Batch(
            torch.stack([p for p, _, _ in items]),
            [torch.stack([ids[k] for _, ids, _ in items]) for k in range(len(self.sides))],
            torch.tensor([t for _, _, t in items], dtype=torch.float32),
        )


def encode_conditioning(
    family: Family,
    encoders: Sequence[Any],
    input_ids: Sequence[torch.Tensor],
    time_ids: torch.Tensor,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """The UNet's keyword arguments as the family's script computes them from tokenized prompts.

    SD 1.x/2.x: the last hidden state. SDXL: both penultimate hidden states concatenated, the second
    encoder's pooled projection (``text_embeds``) and ``time_ids``.
    """
    if family != "sdxl":
        return {"encoder_hidden_states": encoders[0](input_ids[0])[0].float().to(dtype)}
    hidden_1 = encoders[0](input_ids[0], output_hidden_states=True).hidden_states[-2].to(dtype)
    out_2 = encoders[1](input_ids[1], output_hidden_states=True)
    hidden_2 = out_2.hidden_states[-2].to(dtype)
    return {
        "encoder_hidden_states": torch.cat([hidden_1, hidden_2], dim=-1),
        "added_cond_kwargs": {"text_embeds": out_2[0], "time_ids": time_ids.to(hidden_1.device, dtype)},
    }


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
    """Run ``steps`` optimizer steps of the family's standard recipe; time each one (wall clock, synchronized).

    ``mixed_precision``: ``"no"``, ``"fp16"`` or ``"bf16"`` (see :func:`recipe_precision`, which also
    gives the default). ``on_ready`` is called once set-up is done (models placed, tables resized),
    before the first step; ``on_step(step, seconds, loss)`` after every step.
    """
    from diffusers.optimization import get_scheduler

    device = torch.device(device)
    family = components.family
    mixed_precision = recipe_precision(family, device, mixed_precision)
    weight_dtype = DTYPES["fp32" if mixed_precision == "no" else mixed_precision]
    result = BaselineResult()
    started = time.perf_counter()

    vae, unet, scheduler = components.vae, components.unet, components.noise_scheduler
    sides = _text_sides(components)
    original_place = (components.device, components.dtype)
    narrowed = [side.encoder for side in sides[1:]] + [vae, unet]  # what the recipe casts to weight_dtype
    # a cast to a narrower dtype loses bits: keep what it would lose, to hand the components back exactly
    # (bench/speed.py builds each variant's model in the dtype it runs in, so there this copies nothing)
    snapshots = {
        module: {k: v.detach().clone() for k, v in module.state_dict().items()}
        for module in narrowed
        if next(module.parameters()).dtype.itemsize > weight_dtype.itemsize
    }
    try:
        # -- set-up, as the script: add the token, resize the table(s), initialise the new rows ------
        for side in sides:
            side.encoder.to(device=device, dtype=torch.float32)
            side.add_token(token, initializer)
        vae.requires_grad_(False)
        unet.requires_grad_(False)
        for side in sides:
            side.freeze_all_but_table()

        optimizer = torch.optim.AdamW(
            [side.table for side in sides], lr=lr, betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS
        )
        lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
        unet.to(device=device, dtype=weight_dtype)
        vae.to(device=device, dtype=weight_dtype)
        for side in sides[1:]:  # SDXL's second text encoder: cast with the frozen models, table included
            side.encoder.to(device=device, dtype=weight_dtype)
        for side in sides:
            side.orig_embeds = side.table.data.clone()
        scaler = torch.amp.GradScaler(device.type) if mixed_precision == "fp16" else None
        text_autocast = (
            torch.autocast(device.type, dtype=weight_dtype) if mixed_precision != "no" else contextlib.nullcontext()
        )
        scaling = float(vae.config.scaling_factor)
        num_timesteps = int(scheduler.config.num_train_timesteps)
        prediction = scheduler.config.prediction_type
        loader = _Loader(Path(image_dir), sides, token, resolution, batch_size, seed)
        torch.manual_seed(seed)
        for side in sides:
            side.encoder.train()
        synchronize(device)
        result.setup_seconds = time.perf_counter() - started
        if on_ready is not None:
            on_ready()

        # -- the training loop -------------------------------------------------------------------
        for step in range(steps):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            batch = loader.next_batch()
            pixel_values = batch.pixels.to(device)
            input_ids = [ids.to(device) for ids in batch.input_ids]

            latents = vae.encode(pixel_values.to(dtype=weight_dtype)).latent_dist.sample().detach()
            latents = latents * scaling
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(0, num_timesteps, (bsz,), device=latents.device).long()
            noisy_latents = scheduler.add_noise(latents, noise, timesteps)

            with text_autocast:
                conditioning = encode_conditioning(
                    family, [side.encoder for side in sides], input_ids, batch.time_ids, weight_dtype
                )

            model_pred = unet(noisy_latents, timesteps, **conditioning).sample
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
            for side in sides:  # only the placeholder rows may change
                side.restore_rows()

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
        # leave the shared components as we found them: frozen, eval, original tables, placement
        for side in sides:
            side.undo()
        components.to(*original_place)
        for module, state in snapshots.items():
            module.load_state_dict(state)
        components.freeze()
