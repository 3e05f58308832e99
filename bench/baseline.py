"""The standard Textual Inversion recipes' per-step work, as a timing baseline.

Our own re-implementation of what the widely used diffusers example scripts do on every optimizer
step, so that the benchmark compares our trainer with what users run today. One loop serves the SD
recipes; the model family (:attr:`inversion.model.components.DiffusionComponents.family`) switches what differs
(Flux, whose script differs in most steps, has a loop of its own):

* SD 1.x/2.x — ``examples/textual_inversion/textual_inversion.py`` (default settings);
* SDXL — ``examples/textual_inversion/textual_inversion_sdxl.py`` (the version that trains both
  text encoders; its README's ``--mixed_precision bf16``);
* Flux — ``examples/advanced_diffusion_training/train_dreambooth_lora_flux_advanced.py`` in its pure
  textual-inversion mode, ``--train_text_encoder_ti --enable_t5_ti --train_transformer_frac 0`` with
  ``--initializer_concept``, everything else at its defaults (:func:`run_flux_baseline`; below).

What the two SD scripts do:

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

What the Flux script does (read from its source; our own code follows it):

* set-up: ``max(len(CLIP ids), len(T5 ids))`` of the initializer concept new tokens ``<s0>``, ``<s1>``, …
  are added as additional special tokens to the CLIP-L and the T5 tokenizer, both tables are resized
  and each new row is a copy of an initializer piece's row (cycled); the original tables are kept
  whole (cloned) with each table's standard deviation. Then VAE, transformer and both text encoders
  are cast to the weight dtype (``fp16``/``bf16`` from ``--mixed_precision``, ``no`` = fp32), and a
  rank-4 LoRA adapter (alpha 4, Gaussian A, zero B, in the layers' dtype) is added to the
  transformer's attention and feed-forward projections **even in this mode**: its weights require
  gradients, so every backward computes them, though no optimizer holds them (they are never zeroed
  and accumulate, and being zero-initialised leave the transformer's function unchanged);
* trainable: the WHOLE CLIP-L ``token_embedding`` and the WHOLE T5 ``shared`` table (upcast to fp32
  under ``fp16`` only: under ``bf16`` they train in bf16), one AdamW with a group per table (lr
  ``--text_encoder_lr`` 5e-6, weight decay 1e-3, betas 0.9/0.999, eps 1e-8), constant schedule;
* data: every image is opened, resized, cropped and normalised ONCE when the dataset is built (no flip
  by default); a step only stacks its batch; the one ``--instance_prompt`` (no templates) is tokenized
  ONCE (CLIP 77 tokens, T5 ``--max_sequence_length`` 512, both with their special tokens) and its ids
  repeated over the batch;
* every step: CLIP-L's pooled output and T5's last hidden state are computed from those ids (the text
  encoders in train mode, T5's dropout active; all-zero text ids); the pixels go through the VAE
  (``latent_dist.sample()``, then ``(x - shift_factor) * scaling_factor``; ``--cache_latents`` is off by
  default); noise; ``--weighting_scheme none`` (the default): ``u ~ U(0, 1)``, index ``int(u * 1000)``
  into the timesteps of a copy of the scheduler as built (Flux's dynamic shifting leaves that table
  unshifted), each timestep's sigma looked up in it; ``x = (1 - σ) x0 + σ n``, packed 2 × 2 with its
  image ids; guidance ``--guidance_scale`` 3.5; the transformer at ``timestep / 1000``; its output
  unpacked; the loss the mean squared error against ``n - x0`` (weights 1); backward; gradient norm
  clipped to 1.0 over both text encoders' parameters; optimizer step; then both tables are restored
  but for the new rows, and the new rows rescaled by ``(std(original table) / std(new rows)) ** 0.1``
  (``retract_embeddings``); the loss is read (logged every step);
* precision: with ``fp16``/``bf16`` accelerate runs the three prepared models (transformer, both text
  encoders) under autocast; fp16 adds the gradient scaler. Its README runs ``--mixed_precision bf16``,
  our default for it (:func:`recipe_precision`).

diffusers has no textual-inversion recipe for SD 3 (:func:`run_baseline` refuses that family).

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
#: defaults of the Flux script (``train_dreambooth_lora_flux_advanced.py``) that shape a TI-only step
FLUX_TEXT_ENCODER_LR = 5e-6  # --text_encoder_lr
FLUX_TEXT_WEIGHT_DECAY = 1e-3  # --adam_weight_decay_text_encoder
FLUX_GUIDANCE_SCALE = 3.5  # --guidance_scale
FLUX_T5_LENGTH = 512  # --max_sequence_length
FLUX_MAX_GRAD_NORM = 1.0  # --max_grad_norm
FLUX_LORA_RANK = FLUX_LORA_ALPHA = 4  # --rank, --lora_alpha
#: the transformer layers the script puts its LoRA adapter on (its default ``--lora_layers``), by name suffix
FLUX_LORA_LAYERS = (
    *("attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0"),
    *("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out"),
    *("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
)
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

    SD 1.x/2.x: ``fp16`` on CUDA, ``no`` (fp32) on the CPU. SDXL and Flux: ``bf16`` (their READMEs'
    commands) on either. Raises ``ValueError`` for an unknown setting, ``fp16`` with SDXL (see the module
    docstring), or SD 3, which has no textual-inversion recipe.
    """
    if family == "sd3":
        raise ValueError("diffusers has no textual-inversion recipe for SD 3: there is no baseline to race")
    if requested is None:
        if family in ("sdxl", "flux"):
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
    lr: float | None = None,
    seed: int = 0,
    on_step: Callable[[int, float, float], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> BaselineResult:
    """Run ``steps`` optimizer steps of the family's standard recipe; time each one (wall clock, synchronized).

    ``mixed_precision``: ``"no"``, ``"fp16"`` or ``"bf16"`` (see :func:`recipe_precision`, which also
    gives the default). ``lr``: default 5e-3 (the SD scripts' ``--learning_rate`` as our trainer's), Flux's
    :data:`FLUX_TEXT_ENCODER_LR`. ``on_ready`` is called once set-up is done (models placed, tables resized),
    before the first step; ``on_step(step, seconds, loss)`` after every step. A Flux model runs
    :func:`run_flux_baseline`; SD 3 has no recipe (``ValueError``).
    """
    from diffusers.optimization import get_scheduler

    device = torch.device(device)
    family = components.family
    mixed_precision = recipe_precision(family, device, mixed_precision)
    if family == "flux":
        return run_flux_baseline(
            components,
            image_dir,
            resolution=resolution,
            batch_size=batch_size,
            steps=steps,
            device=device,
            mixed_precision=mixed_precision,
            initializer=initializer,
            lr=FLUX_TEXT_ENCODER_LR if lr is None else lr,
            seed=seed,
            on_step=on_step,
            on_ready=on_ready,
        )
    lr = 5e-3 if lr is None else lr
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


# -- Flux: train_dreambooth_lora_flux_advanced.py, pure textual inversion (CLIP-L and T5) -----------------


@dataclass
class _TiTable:
    """One text encoder's table as the Flux script's embedding handler keeps it: new rows, the original
    table (whole) and its standard deviation."""

    tokenizer: Any
    encoder: Any
    original_vocab: int
    train_ids: list[int] = field(default_factory=list)
    original: torch.Tensor | None = None
    std: torch.Tensor | None = None
    frozen_rows: torch.Tensor | None = None  # True for every row but the new ones

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.encoder.get_input_embeddings().weight  # CLIP's token_embedding, T5's shared

    def add_tokens(self, tokens: list[str], initializer: str) -> None:
        """Add ``tokens`` as special tokens, resize the table, copy the initializer's pieces (cycled) in."""
        self.tokenizer.add_special_tokens({"additional_special_tokens": tokens})
        self.encoder.resize_token_embeddings(len(self.tokenizer))
        self.train_ids = list(self.tokenizer.convert_tokens_to_ids(tokens))
        table = self.weight.data
        self.std = table.std()
        pieces = self.tokenizer.encode(initializer, add_special_tokens=False)
        with torch.no_grad():
            for k, token_id in enumerate(self.train_ids):
                table[token_id] = table[pieces[k % len(pieces)]].clone()
        self.original = table.clone()
        self.frozen_rows = torch.ones(len(self.tokenizer), dtype=torch.bool)
        self.frozen_rows[self.train_ids] = False

    def tokenize(self, prompt: str, length: int) -> torch.Tensor:
        return self.tokenizer(
            [prompt], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids

    @torch.no_grad()
    def retract(self) -> None:
        """Every row but the new ones back from the original table; the new ones pulled towards its std."""
        assert self.original is not None and self.frozen_rows is not None and self.std is not None
        weight = self.weight.data
        weight[self.frozen_rows] = self.original[self.frozen_rows].to(weight.device, weight.dtype)
        moved = weight[~self.frozen_rows]
        weight[~self.frozen_rows] = moved * (self.std.to(weight.device) / moved.std()) ** 0.1


class _LoraBranch(torch.nn.Module):
    """A rank-r adapter beside one frozen linear layer, added to its output by a forward hook (what the
    script's LoRA layer computes: ``W x + B(A(x)) · alpha / r``, A Gaussian with std 1/r, B zero)."""

    def __init__(self, layer: torch.nn.Linear, rank: int, alpha: int, dtype: torch.dtype) -> None:
        super().__init__()
        place = dict(device=layer.weight.device, dtype=dtype)
        self.down = torch.nn.Linear(layer.in_features, rank, bias=False, **place)
        self.up = torch.nn.Linear(rank, layer.out_features, bias=False, **place)
        torch.nn.init.normal_(self.down.weight, std=1 / rank)
        torch.nn.init.zeros_(self.up.weight)
        self.scaling = alpha / rank
        self.handle = layer.register_forward_hook(self._add)

    def _add(self, layer: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0].to(self.down.weight.dtype)
        return output + (self.up(self.down(x)) * self.scaling).to(output.dtype)


def _add_lora(transformer: torch.nn.Module, dtype: torch.dtype) -> list[_LoraBranch]:
    return [
        _LoraBranch(module, FLUX_LORA_RANK, FLUX_LORA_ALPHA, dtype)
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in FLUX_LORA_LAYERS)
    ]


def _flux_pixels(image_dir: Path, resolution: int) -> list[torch.Tensor]:
    """The dataset's images, prepared once as the script's dataset does (resized, cropped, in [-1, 1])."""
    return [to_tensor(center_crop_resize(open_rgb(path), resolution)) for path in list_images(image_dir)]


def encode_flux_prompt(
    clip_encoder: Any, t5_encoder: Any, clip_ids: torch.Tensor, t5_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transformer's text inputs as the Flux script computes them from tokenized prompts: T5's last hidden
    state ``[B, T, D]``, CLIP-L's pooled output ``[B, P]`` (each in its encoder's dtype) and all-zero text ids."""
    device = next(clip_encoder.parameters()).device
    pooled = clip_encoder(clip_ids.to(device), output_hidden_states=False).pooler_output.to(clip_encoder.dtype)
    hidden = t5_encoder(t5_ids.to(device))[0].to(t5_encoder.dtype)
    return hidden, pooled, torch.zeros(hidden.shape[1], 3, device=device, dtype=clip_encoder.dtype)


def run_flux_baseline(
    components: DiffusionComponents,
    image_dir: Path,
    *,
    resolution: int,
    batch_size: int,
    steps: int,
    device: torch.device,
    mixed_precision: str,
    initializer: str = "cat",
    lr: float = FLUX_TEXT_ENCODER_LR,
    seed: int = 0,
    on_step: Callable[[int, float, float], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> BaselineResult:
    """``steps`` optimizer steps of the Flux script in pure textual-inversion mode (module docstring), timed
    like :func:`run_baseline`'s; its one instance prompt is our first object template with the new tokens.
    The components are handed back as found (tables, modes, placement, adapter hooks removed)."""
    import itertools

    from diffusers import FluxPipeline
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

    weight_dtype = DTYPES["fp32" if mixed_precision == "no" else mixed_precision]
    result = BaselineResult()
    started = time.perf_counter()
    vae, transformer = components.vae, components.transformer
    clip = _TiTable(
        copy.deepcopy(components.tokenizer), components.text_encoder, components.text_encoder.config.vocab_size
    )
    t5 = _TiTable(
        copy.deepcopy(components.tokenizer_2), components.text_encoder_2, components.text_encoder_2.config.vocab_size
    )
    tables = (clip, t5)
    modules = (clip.encoder, t5.encoder, vae, transformer)
    original_place = {module: (next(module.parameters()).device, next(module.parameters()).dtype) for module in modules}
    snapshots = {
        module: {k: v.detach().clone() for k, v in module.state_dict().items()}
        for module in modules
        if next(module.parameters()).dtype.itemsize > weight_dtype.itemsize
    }
    lora: list[_LoraBranch] = []
    try:
        # -- set-up, as the script: new tokens in both tokenizers, tables resized and initialised ----------
        count = max(len(t.tokenizer.encode(initializer, add_special_tokens=False)) for t in tables)
        tokens = [f"<s{j}>" for j in range(count)]
        for table in tables:
            table.encoder.to(device=device, dtype=torch.float32)
            table.add_tokens(tokens, initializer)
        for module in modules:
            module.requires_grad_(False)
            module.to(device=device, dtype=weight_dtype)
        lora = _add_lora(transformer, torch.float32 if mixed_precision == "fp16" else weight_dtype)
        for table in tables:  # only the token tables train (fp32 master copies under fp16 only)
            if mixed_precision == "fp16":
                table.weight.data = table.weight.data.float()
            table.weight.requires_grad_(True)
        optimizer = torch.optim.AdamW(
            [{"params": [t.weight], "weight_decay": FLUX_TEXT_WEIGHT_DECAY, "lr": lr} for t in tables],
            betas=ADAM_BETAS,
            weight_decay=FLUX_TEXT_WEIGHT_DECAY,
            eps=ADAM_EPS,
        )
        lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
        scaler = torch.amp.GradScaler(device.type) if mixed_precision == "fp16" else None
        autocast = (
            (lambda: torch.autocast(device.type, dtype=weight_dtype))
            if mixed_precision != "no"
            else contextlib.nullcontext
        )
        prompt = templates_for("object")[0].format("".join(tokens))
        clip_ids, t5_ids = clip.tokenize(prompt, 77), t5.tokenize(prompt, FLUX_T5_LENGTH)
        pixels = _flux_pixels(Path(image_dir), resolution)
        schedule = type(components.noise_scheduler).from_config(components.noise_scheduler.config)
        n_train = int(schedule.config.num_train_timesteps)
        shift, scaling = float(vae.config.shift_factor), float(vae.config.scaling_factor)
        vae_scale = components.vae_scale_factor
        rng = random.Random(seed)
        order: list[int] = []
        torch.manual_seed(seed)
        transformer.train()
        for table in tables:
            table.encoder.train()
        synchronize(device)
        result.setup_seconds = time.perf_counter() - started
        if on_ready is not None:
            on_ready()

        # -- the training loop ---------------------------------------------------------------------------------
        for step in range(steps):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            batch = []
            for _ in range(batch_size):  # DataLoader(shuffle=True): a new permutation each epoch
                if not order:
                    order = list(range(len(pixels)))
                    rng.shuffle(order)
                batch.append(pixels[order.pop()])
            pixel_values = torch.stack(batch).float().to(device)
            bsz = pixel_values.shape[0]
            with autocast():
                hidden, pooled, text_ids = encode_flux_prompt(
                    clip.encoder, t5.encoder, clip_ids.repeat(bsz, 1), t5_ids.repeat(bsz, 1)
                )

            latents = vae.encode(pixel_values.to(vae.dtype)).latent_dist.sample()
            x0 = ((latents - shift) * scaling).to(weight_dtype)
            _, channels, height, width = x0.shape
            image_ids = FluxPipeline._prepare_latent_image_ids(bsz, height // 2, width // 2, device, weight_dtype)
            noise = torch.randn_like(x0)
            u = compute_density_for_timestep_sampling(weighting_scheme="none", batch_size=bsz)
            timesteps = schedule.timesteps[(u * n_train).long()].to(device)
            table_t = schedule.timesteps.to(device)
            at = [int((table_t == t).nonzero().item()) for t in timesteps]  # the script's sigma look-up
            sigmas = schedule.sigmas.to(device=device, dtype=x0.dtype)[at].view(-1, 1, 1, 1)
            noisy = (1.0 - sigmas) * x0 + sigmas * noise
            packed = FluxPipeline._pack_latents(noisy, bsz, channels, height, width)
            guidance = None
            if transformer.config.guidance_embeds:
                guidance = torch.tensor([FLUX_GUIDANCE_SCALE], device=device).expand(bsz)
            with autocast():
                pred = transformer(
                    hidden_states=packed,
                    timestep=timesteps / 1000,
                    guidance=guidance,
                    pooled_projections=pooled,
                    encoder_hidden_states=hidden,
                    txt_ids=text_ids,
                    img_ids=image_ids,
                    return_dict=False,
                )[0]
            pred = FluxPipeline._unpack_latents(pred, height * vae_scale, width * vae_scale, vae_scale)
            weighting = compute_loss_weighting_for_sd3(weighting_scheme="none", sigmas=sigmas)
            squared = (weighting.float() * (pred.float() - (noise - x0).float()) ** 2).reshape(bsz, -1)
            loss = squared.mean(dim=1).mean()

            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            parameters = itertools.chain(clip.encoder.parameters(), t5.encoder.parameters())
            torch.nn.utils.clip_grad_norm_(parameters, FLUX_MAX_GRAD_NORM)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()  # the adapter's gradients are not the optimizer's: they accumulate
            for table in tables:
                table.retract()

            value = loss.detach().item()
            synchronize(device)
            seconds = time.perf_counter() - tick
            result.step_seconds.append(seconds)
            result.step_cpu_seconds.append(time.process_time() - cpu_tick)
            result.losses.append(value)
            if on_step is not None:
                on_step(step + 1, seconds, value)
        return result
    finally:
        for branch in lora:
            branch.handle.remove()
        for table in tables:  # the first rows are the original ones again: cut the new ones off
            if table.encoder.get_input_embeddings().num_embeddings != table.original_vocab:
                table.encoder.resize_token_embeddings(table.original_vocab)
        for module, (where, dtype) in original_place.items():
            module.to(device=where, dtype=dtype)  # every weight: under fp16 the tables were fp32 alone
        for module, state in snapshots.items():
            module.load_state_dict(state)
        components.freeze()
