"""The Textual Inversion training loop: learn new token vectors with every model weight frozen.

One loop serves one concept or a *pack* of K concepts trained together: each example carries its
own concept's token, so one denoiser forward/backward serves K concepts. Per-concept state (vectors,
AdamW moments, random generator, step) is kept apart and the pack's loss is the *sum* of the
per-concept mean losses, so each concept gets exactly the gradient it would get alone.

Speed choices (see ``bench/``): each training image and its flip go through the VAE once and
their latent distributions are cached (a fresh latent is sampled from them every step, so the
training distribution is unchanged); only the new vectors are parameters, nothing is copied back
into the frozen table.

When to stop: at the step cap (``stop="fixed"``) or, per concept, when its held-out loss plateaus
(``stop="plateau"``, :mod:`inversion.training.stopping`). With ``slots``, the pack is *continuous*: a
concept that stops hands its place in the batch to the next waiting one.

What the denoiser learns: the UNet families (SD 1.x, 2.x, XL) the noise or the velocity at a DDPM timestep
drawn uniformly (:func:`noise_target`); SD 3 and Flux the flow-matching velocity at a logit-normal, shifted
noise level, with Flux's packing, image ids and guidance input (:mod:`inversion.training.flow`, where
diffusers' conventions are written out). Every text encoder's rows of the word are learned, T5's included.

The checkpoint format lives in :mod:`inversion.training.checkpoint`, the device and precision choice in
:mod:`inversion.device`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from inversion.cancel import check_stop
from inversion.config import ConceptConfig, TrainConfig
from inversion.device import resolve_device, resolve_dtype
from inversion.embeddings.formats import LearnedEmbedding, save_embedding_files
from inversion.embeddings.norms import VocabNorms, norm_ratio, norms_metadata
from inversion.errors import ConfigError, TrainingDivergedError
from inversion.images import load_training_images
from inversion.model.components import DiffusionComponents
from inversion.model.info import Family
from inversion.text.encoder import PromptEncoder
from inversion.text.tokens import PlaceholderToken
from inversion.training.checkpoint import CHECKPOINT_FILENAME, read_checkpoint, write_checkpoint
from inversion.training.flow import FlowSchedule, flow_losses
from inversion.training.stopping import HELD_OUT_SEED_OFFSET, MAX_STEPS, StopState
from inversion.training.templates import templates_for
from inversion.training.vector_modes import VectorModes

# Latent caching encodes at most this many pixels per VAE call (8 images at 256 px, 2 at 512 px):
# at 512 px the VAE's activations, not the UNet's, set the trainer's peak memory otherwise.
_VAE_PIXELS = 8 * 256 * 256


@dataclass(frozen=True)
class StepReport:
    """Progress after one optimizer step of the pack."""

    step: int
    total_steps: int  # at most this many pack steps in all (concepts may stop sooner)
    losses: dict[str, float]
    elapsed: float
    stopped: dict[str, str] = field(default_factory=dict)  # token → stop reason, of concepts that stopped now


@dataclass
class TrainResult:
    """What training one concept produced."""

    token: str
    embedding: LearnedEmbedding
    steps: int
    losses: list[float]
    seconds: float
    output_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    resumed_from: int = 0
    failure: TrainingDivergedError | None = None
    stop_reason: str | None = None  # ``max_steps`` or ``plateau`` (inversion.training.stopping); None when it failed
    held_out_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of the plateau checks
    vocab_norms: tuple[VocabNorms, ...] = ()  # per text encoder, its vocabulary's row-norm statistics

    @property
    def norm_ratio(self) -> float | None:
        """The largest vector norm over its encoder's vocabulary mean (:mod:`inversion.embeddings.norms`)."""
        return norm_ratio(self.embedding, self.vocab_norms) if self.vocab_norms else None

    @property
    def error(self) -> str | None:
        """Why training stopped early (one line), or ``None`` when it ran to the end."""
        return None if self.failure is None else str(self.failure)

    @property
    def final_loss(self) -> float | None:
        """Mean loss over the last 10% of steps (at least one, at most 50): a stable summary."""
        if not self.losses:
            return None
        tail = self.losses[-max(1, min(50, len(self.losses) // 10)) :]
        return float(sum(tail) / len(tail))


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): warm-up, then constant or cosine."""
    base = config.effective_lr
    if step < config.lr_warmup_steps:
        return base * (step + 1) / config.lr_warmup_steps
    if config.lr_schedule == "cosine":
        span = max(1, config.steps - config.lr_warmup_steps)
        progress = min(1.0, (step - config.lr_warmup_steps) / span)
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base


class _ConceptRun:
    """Mutable training state of one concept in a pack."""

    def __init__(
        self,
        concept: ConceptConfig,
        placeholder: PlaceholderToken,
        start: torch.Tensor,
        config: TrainConfig,
        device: torch.device,
        output_dir: Path | None,
        widths: tuple[int, ...] | None = None,
        modes: VectorModes | None = None,
        vocab: tuple[VocabNorms, ...] = (),
        family: Family | None = None,
    ) -> None:
        self.concept = concept
        self.family = family  # the model's family, which names the word's files (Flux's two tables are not SDXL's)
        self.modes = modes or VectorModes(widths or (int(start.shape[1]),))  # init_mode / norm_mode state
        self.vocab = vocab  # the text encoders' vocabulary norms, recorded in the embedding files
        self.widths = widths  # columns of ``vectors`` per text encoder (SDXL: two), see inversion.text.encoder
        self.placeholder = placeholder
        self.vectors = torch.nn.Parameter(start.to(device=device, dtype=torch.float32).clone())
        self.optimizer = torch.optim.AdamW(
            [self.vectors], lr=config.effective_lr, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8
        )
        self.generator = torch.Generator().manual_seed(concept.seed)
        self.templates = templates_for(concept.property)
        self.prompt_word = " ".join(placeholder.names)
        self.output_dir = output_dir
        self.step = 0
        self.resumed_from = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        self.failure: TrainingDivergedError | None = None
        self.latent_mean: torch.Tensor | None = None
        self.latent_std: torch.Tensor | None = None
        self.time_ids: torch.Tensor | None = None  # SDXL micro-conditioning per cached view
        self.stopping = StopState()
        self.held_out: _Batch | None = None  # the plateau rule's fixed examples
        self.final_saved = False  # whether the checkpoint of the finished concept is written

    def finished(self, config: TrainConfig) -> bool:
        """Whether this concept trains no further: failed, at the cap, or stopped by its rule."""
        return self.failure is not None or self.step >= config.steps or self.stopping.reason is not None

    def checkpoint_due(self, config: TrainConfig) -> bool:
        """Whether to save a periodic checkpoint now: every ``checkpoint_every`` steps of a live concept with a
        folder (the final one: :meth:`final_checkpoint_due`)."""
        return (
            self.failure is None
            and self.output_dir is not None
            and bool(config.checkpoint_every)
            and self.step % config.checkpoint_every == 0
            and not self.finished(config)
        )

    def final_checkpoint_due(self, config: TrainConfig) -> bool:
        """Whether to save the final checkpoint now: a concept with a folder that finished without failing
        and whose final checkpoint is not written yet."""
        return self.failure is None and self.output_dir is not None and self.finished(config) and not self.final_saved

    @property
    def stop_reason(self) -> str | None:
        if self.failure is not None:
            return None
        return self.stopping.reason or MAX_STEPS

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / CHECKPOINT_FILENAME

    def save_checkpoint(self, config: TrainConfig) -> Path | None:
        path = self.checkpoint_path()
        if path is None or self.output_dir is None:
            return None
        state = self.optimizer.state.get(self.vectors, {})
        zeros = torch.zeros_like(self.vectors, device="cpu")
        tensors = {
            "vectors": self.vectors,
            "exp_avg": state["exp_avg"] if state else zeros,
            "exp_avg_sq": state["exp_avg_sq"] if state else zeros,
            "rng_state": self.generator.get_state(),
            **self.modes.tensors(),
        }
        meta = {
            "step": self.step,
            "adam_step": float(state["step"]) if state else 0.0,
            "losses": self.losses,
            "seconds": self.seconds,
            "token": self.concept.token,
            "num_vectors": self.concept.num_vectors,
            "initializer": self.concept.initializer,
            "train_config": config.to_dict(),
            "stopping": self.stopping.to_dict(),
        }
        write_checkpoint(path, tensors, meta)
        self.save_files()
        return path

    def load_checkpoint(self, config: TrainConfig) -> bool:
        path = self.checkpoint_path()
        if path is None or not path.is_file():
            return False
        checkpoint = read_checkpoint(path)
        checkpoint.check_resumable(self.concept.token, self.concept.num_vectors, config)
        meta, tensors = checkpoint.state, checkpoint.tensors
        with torch.no_grad():
            self.vectors.copy_(tensors["vectors"].to(self.vectors.device))
        if meta["adam_step"] > 0:
            self.optimizer.state[self.vectors] = {
                "step": torch.tensor(meta["adam_step"], dtype=torch.float32),
                "exp_avg": tensors["exp_avg"].to(self.vectors.device),
                "exp_avg_sq": tensors["exp_avg_sq"].to(self.vectors.device),
            }
        self.generator.set_state(tensors["rng_state"])
        self.modes.restore(tensors)
        self.step = self.resumed_from = checkpoint.step
        self.losses = [float(x) for x in meta["losses"]]
        self.seconds = float(meta["seconds"])
        self.stopping = StopState.from_dict(meta.get("stopping"))
        if config.plateau is None:  # the cap alone decides now (a change allowed on resume)
            self.stopping.reason = None
        self.final_saved = self.finished(config)  # resumed finished: its final checkpoint is the one just read
        return True

    # -- steps -------------------------------------------------------------------------------
    def advance(self, config: TrainConfig, loss: float, seconds: float) -> None:
        """Apply the accumulated gradient (one AdamW step, on the spheres in ``vocab`` mode) and record the step."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(config, self.step)
        self.modes.before_step(self.vectors)
        self.optimizer.step()
        self.modes.after_step(self.vectors)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(loss)
        self.seconds += seconds

    # -- results -----------------------------------------------------------------------------
    def save_files(self) -> dict[str, Path]:
        """Write the word's embedding files into its folder, with the vocabulary norms in their metadata."""
        assert self.output_dir is not None
        metadata = norms_metadata(self.vocab) if self.vocab else None
        return save_embedding_files(self.embedding(), self.output_dir, step=self.step, metadata=metadata)

    def embedding(self) -> LearnedEmbedding:
        vectors = self.vectors.detach().float().cpu().clone()
        return LearnedEmbedding(self.concept.token, vectors, self.widths, self.family)

    def result(self) -> TrainResult:
        return TrainResult(
            self.concept.token,
            self.embedding(),
            self.step,
            list(self.losses),
            self.seconds,
            self.output_dir,
            {},
            self.resumed_from,
            self.failure,
            self.stop_reason,
            list(self.stopping.history),
            self.vocab,
        )


def _cache_latents(components: DiffusionComponents, run: _ConceptRun, resolution: int, text: PromptEncoder) -> None:
    """Encode every training image (and its mirror image) once; keep the latent distributions
    (and, for SDXL, each view's micro-conditioning)."""
    files, pixels = load_training_images(run.concept.images, resolution)
    run.time_ids = text.time_ids(files, resolution, run.concept.flip)
    if run.concept.flip:
        pixels = torch.cat([pixels, torch.flip(pixels, dims=[-1])])
    means, stds = [], []
    chunk_size = max(1, _VAE_PIXELS // (resolution * resolution))
    with torch.no_grad():
        for chunk in pixels.split(chunk_size):
            dist = components.vae.encode(chunk.to(components.device, components.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    run.latent_mean, run.latent_std = torch.cat(means), torch.cat(stds)


@dataclass
class _Batch:
    """Noised training examples: scaled latents, noise, timesteps, their prompts (and SDXL time ids)."""

    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    prompts: list[str]
    time_ids: torch.Tensor | None = None


def _sample(
    run: _ConceptRun,
    batch: int,
    schedule: Schedule,
    device: torch.device,
    components: DiffusionComponents,
    generator: torch.Generator | None = None,
) -> _Batch:
    """Draw one concept's micro-batch from its own generator (or ``generator``), in a fixed order (for exact resume)."""
    assert run.latent_mean is not None and run.latent_std is not None
    g = run.generator if generator is None else generator
    shape = (batch, *run.latent_mean.shape[1:])
    views = torch.randint(run.latent_mean.shape[0], (batch,), generator=g)
    templates = torch.randint(len(run.templates), (batch,), generator=g)
    latent_eps = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    timesteps = schedule.draw(batch, g)
    views = views.to(device)
    latents = run.latent_mean[views] + run.latent_std[views] * latent_eps.to(device)
    prompts = [run.templates[i].format(run.prompt_word) for i in templates.tolist()]
    time_ids = None if run.time_ids is None else run.time_ids[views.cpu()]
    return _Batch(_scaled(latents, components), noise.to(device), timesteps.to(device), prompts, time_ids)


def _scaled(latents: torch.Tensor, components: DiffusionComponents) -> torch.Tensor:
    """Latents as the denoiser reads them: ``(latents - shift) * scaling`` (the VAE config's; SD 1.x / 2.x / XL
    have no shift)."""
    shift = components.latent_shift
    return (latents - shift) * components.latent_scaling if shift else latents * components.latent_scaling


@dataclass(frozen=True)
class UnetTimesteps:
    """The UNet families' training timesteps: uniform over the DDPM scheduler's ``num_timesteps``."""

    num_timesteps: int

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator)


#: how a concept's examples get their timesteps (UNet) or noise levels (flow matching)
Schedule = UnetTimesteps | FlowSchedule


def training_schedule(components: DiffusionComponents, resolution: int) -> Schedule:
    """The timestep / noise-level draw of ``components`` trained at ``resolution``."""
    config = components.noise_scheduler.config
    if components.flow_matching:
        return FlowSchedule.for_model(config, resolution // components.vae_scale_factor)
    return UnetTimesteps(int(config.num_train_timesteps))


def noise_target(
    components: DiffusionComponents, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to predict for ``latents`` noised with ``noise`` at ``timesteps``.

    The noise itself (``epsilon`` models) or the velocity (``v_prediction``), per the model's scheduler;
    any other prediction type raises :class:`ConfigError` (see :attr:`DiffusionComponents.prediction_type`).
    """
    if components.prediction_type == "v_prediction":
        return components.noise_scheduler.get_velocity(latents, noise, timesteps)
    return noise


def _example_losses(
    components: DiffusionComponents, unet: torch.nn.Module, text: PromptEncoder, batch: _Batch, dtype: torch.dtype
) -> torch.Tensor:
    """The denoising MSE of every example of ``batch`` (``[B]``, fp32); the learned vectors get its gradient.
    SD 3 and Flux: the flow-matching loss, ``batch.timesteps`` being noise levels σ (:mod:`inversion.training.flow`)."""
    if components.flow_matching:
        steps = int(components.noise_scheduler.config.num_train_timesteps)
        text_kwargs = text.transformer_kwargs(text.encode(batch.prompts), dtype)
        flux = text.family == "flux"
        return flow_losses(unet, text_kwargs, batch.latents, batch.noise, batch.timesteps, dtype, steps, flux)
    noisy = components.noise_scheduler.add_noise(batch.latents, batch.noise, batch.timesteps)
    target = noise_target(components, batch.latents, batch.noise, batch.timesteps)
    conditioning = text.unet_kwargs(text.encode(batch.prompts), dtype, batch.time_ids)
    pred = unet(noisy.to(dtype), batch.timesteps, **conditioning).sample
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


def _prepare_runs(components, concepts, config, text: PromptEncoder, device, output_dirs, resume) -> list[_ConceptRun]:
    tokens = [c.token for c in concepts]
    duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
    if duplicates:
        raise ConfigError(f"token {duplicates[0]} appears more than once in one pack")
    runs = []
    vocab = text.vocab_norms()
    for concept, out in zip(concepts, output_dirs):
        start, modes = VectorModes.start(text, concept.initializer, concept.num_vectors, config)
        placeholder = text.register(concept.token, concept.num_vectors)
        run = _ConceptRun(concept, placeholder, start, config, device, out, text.widths, modes, vocab, text.family)
        if resume:
            run.load_checkpoint(config)
        runs.append(run)
    return runs


def train_concepts(
    components: DiffusionComponents,
    concepts: Sequence[ConceptConfig],
    config: TrainConfig,
    *,
    output_dirs: Sequence[Path | None] | None = None,
    resume: bool = False,
    callback: Callable[[StepReport], None] | None = None,
    on_checkpoint: Callable[[str, Path], None] | None = None,
    slots: int | None = None,
) -> list[TrainResult]:
    """Learn each concept's token vectors; K concepts share every UNet forward/backward.

    Args:
        components: the frozen model (moved to the configured device and precision here).
        concepts: one or more concepts; their tokens must be distinct and new to the vocabulary.
        config: training settings shared by the pack (``config.stop`` decides when each concept stops).
        output_dirs: per concept, where the embedding files and checkpoints go (``None``: keep in memory).
        resume: continue each concept from the checkpoint in its output folder, when there is one.
        callback: called after every optimizer step with the per-concept losses.
        on_checkpoint: called with (token, checkpoint path) after each periodic checkpoint is saved, and
            after the final one of each concept as it finishes — e.g. to upload it, so a run killed mid-training
            (or after training, before publishing) resumes elsewhere with no step repeated.
        slots: continuous packing: train at most this many concepts per step, in order; when one
            stops, the next waiting concept takes its slot (``None``: all of them at once).

    Returns one :class:`TrainResult` per concept, in order. A concept whose loss turns NaN/inf stops
    with ``failure`` set (the others go on); see :func:`train_concept` for the raising variant.
    Each concept stops on its own (its cap or its plateau), whatever else shares its batch.
    Raises :class:`ConfigError` for settings the model cannot train with (e.g. an unknown prediction type).
    """
    # 1. check the inputs, before any work
    output_dirs, device, dtype, resolution = _check_inputs(components, concepts, config, output_dirs, slots)

    with components.lock:
        # 2. the frozen model on its device, one run per concept (resumed from its checkpoint if asked)
        text, unet, schedule = _ready_model(components, config, device, dtype, resolution)
        runs = _prepare_runs(components, concepts, config, text, device, output_dirs, resume)
        slots = len(runs) if slots is None else slots
        total = pack_steps([0 if r.finished(config) else config.steps - r.step for r in runs], slots)
        started = time.perf_counter()
        pack_step = 0

        # 3. the training loop: every pack step trains the first `slots` unfinished concepts
        with text.learned([r.placeholder for r in runs], [r.vectors for r in runs]):
            while active := [r for r in runs if not r.finished(config)][:slots]:
                check_stop()  # a signalled run stops here: its last uploaded checkpoint stays the one to resume from
                for run in active:
                    if run.latent_mean is None:  # a concept entering its slot
                        _enter_slot(components, run, config, resolution, text, schedule, device)
                _optimizer_step(components, unet, text, active, config, device, dtype, schedule)
                stopped = _check_plateau(components, unet, text, active, config, dtype)
                pack_step += 1
                _save_due_checkpoints(active, config, on_checkpoint)
                if callback is not None:
                    callback(_step_report(active, config, pack_step, total, time.perf_counter() - started, stopped))

        # 4. the final checkpoint and embedding files of every concept that did not fail
        return [_finish(run, config) for run in runs]


def _ready_model(
    components: DiffusionComponents, config: TrainConfig, device: torch.device, dtype: torch.dtype, resolution: int
) -> tuple[PromptEncoder, torch.nn.Module, Schedule]:
    """Move the frozen model to ``device`` and ``dtype``; return its prompt encoder, the denoiser to train
    through (compiled if asked) and its timestep draw at ``resolution``."""
    components.to(device, dtype)
    text = PromptEncoder(components)
    scheduler = components.noise_scheduler
    if not components.flow_matching:
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)  # add_noise moves it anyway; do it once
    denoiser = components.compiled_unet() if config.compile else components.denoiser
    return text, denoiser, training_schedule(components, resolution)


def _save_due_checkpoints(
    active: Sequence[_ConceptRun], config: TrainConfig, on_checkpoint: Callable[[str, Path], None] | None
) -> None:
    """Save the checkpoint of every active concept due for one, and hand each to ``on_checkpoint``: the periodic
    ones, and the final one of a concept that has just finished (its cap or its plateau), so that a run killed
    while the rest of its pack trains, or before it publishes, resumes that concept with no step repeated.

    Every file of the step is written before the first hand-over, and the hand-overs follow back to back: a kill
    between two leaves a pack's concepts resuming from different steps, and a concept that then trains beside
    another step (or alone) reduces its floats in another order than an uninterrupted run (the last bits differ).
    """
    saved = []
    for run in active:
        if run.checkpoint_due(config) or run.final_checkpoint_due(config):
            saved.append((run.concept.token, run.save_checkpoint(config)))
            run.final_saved = run.finished(config)
    for token, path in saved:
        if on_checkpoint is not None and path is not None:
            on_checkpoint(token, path)


def _check_inputs(
    components: DiffusionComponents,
    concepts: Sequence[ConceptConfig],
    config: TrainConfig,
    output_dirs: Sequence[Path | None] | None,
    slots: int | None,
) -> tuple[list[Path | None], torch.device, torch.dtype, int]:
    """Refuse a pack that cannot train (:class:`ConfigError`); return its output folders, the device and
    precision of the frozen model, and the image resolution."""
    if not concepts:
        raise ConfigError("no concepts to train")
    if slots is not None and slots < 1:
        raise ConfigError(f"slots must be at least 1, got {slots}")
    folders: list[Path | None] = list(output_dirs) if output_dirs is not None else [None] * len(concepts)
    if len(folders) != len(concepts):
        raise ConfigError("output_dirs must have one entry per concept")
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.precision, device)
    resolution = config.resolution or components.resolution
    if resolution % components.vae_scale_factor:
        raise ConfigError(f"resolution {resolution} is not a multiple of the VAE factor {components.vae_scale_factor}")
    if components.family == "flux" and (resolution // components.vae_scale_factor) % 2:
        raise ConfigError(
            f"resolution {resolution}: Flux packs latents in 2 x 2 patches, so it must be a multiple "
            f"of {2 * components.vae_scale_factor}"
        )
    if not components.flow_matching:
        _ = components.prediction_type  # raises ConfigError now, before any work, if the model's is unknown
    return folders, device, dtype, resolution


def _enter_slot(
    components: DiffusionComponents,
    run: _ConceptRun,
    config: TrainConfig,
    resolution: int,
    text: PromptEncoder,
    schedule: Schedule,
    device: torch.device,
) -> None:
    """Ready a concept taking its slot in the batch: its cached latents and, for the plateau rule, its held-out
    examples (drawn from a generator of their own, so its training stream is untouched)."""
    _cache_latents(components, run, resolution, text)
    if config.plateau is not None:
        generator = torch.Generator().manual_seed(run.concept.seed + HELD_OUT_SEED_OFFSET)
        run.held_out = _sample(run, config.stop_samples, schedule, device, components, generator)


def _step_report(
    active: Sequence[_ConceptRun],
    config: TrainConfig,
    pack_step: int,
    total: int,
    elapsed: float,
    stopped: dict[str, str],
) -> StepReport:
    """The progress of one pack step: each live concept's last loss, and the concepts that stopped at it."""
    losses = {r.concept.token: r.losses[-1] for r in active if r.failure is None and r.losses}
    capped = {r.concept.token: MAX_STEPS for r in active if r.failure is None and r.step >= config.steps}
    return StepReport(pack_step, total, losses, elapsed, {**stopped, **capped})


def _finish(run: _ConceptRun, config: TrainConfig) -> TrainResult:
    """A concept's result; unless it failed or lives in memory only, its last checkpoint and embedding files too."""
    if run.final_checkpoint_due(config):  # a concept that never trained a step (the loop saved the others')
        run.save_checkpoint(config)
    result = run.result()
    if run.output_dir is not None and run.failure is None:
        result.files = run.save_files()
    return result


def pack_steps(remaining: Sequence[int], slots: int) -> int:
    """Pack steps needed to train ``remaining[i]`` more steps of concept ``i``, ``slots`` concepts at a
    time in queue order (continuous packing); an upper bound when concepts may stop early."""
    queue = [r for r in remaining if r > 0]
    active: list[int] = []
    steps = 0
    while queue or active:
        while queue and len(active) < slots:
            active.append(queue.pop(0))
        advance = min(active)
        steps += advance
        active = [r - advance for r in active if r > advance]
    return steps


def _check_plateau(components, unet, text, active, config, dtype) -> dict[str, str]:
    """Measure the held-out loss of every active concept due for a check; returns those that stopped.

    Each concept is measured alone on its own fixed examples (no gradient), so its verdict does not
    depend on which concepts share its batch.
    """
    rule = config.plateau
    stopped: dict[str, str] = {}
    if rule is None:
        return stopped
    for run in active:
        if run.failure is not None or not rule.due(run.step):
            continue
        tick = time.perf_counter()
        with torch.no_grad():
            loss = float(_example_losses(components, unet, text, run.held_out, dtype).mean())
        run.seconds += time.perf_counter() - tick
        if run.stopping.observe(run.step, loss, rule):
            stopped[run.concept.token] = run.stopping.reason
    return stopped


def _joined_time_ids(samples: Sequence[_Batch]) -> torch.Tensor | None:
    """The SDXL time ids of ``samples`` joined in order, or ``None`` when they have none (not SDXL)."""
    time_ids = [s.time_ids for s in samples if s.time_ids is not None]
    if not time_ids:
        return None
    if len(time_ids) != len(samples):
        raise ValueError(f"{len(samples) - len(time_ids)} of {len(samples)} batches have no SDXL time ids")
    return torch.cat(time_ids)


def _optimizer_step(components, unet, text, active, config, device, dtype, schedule) -> None:
    """One optimizer step for every active concept (``grad_accum`` micro-batches)."""
    tick = time.perf_counter()
    step_losses = {id(r): 0.0 for r in active}
    for _ in range(config.grad_accum):
        live = [r for r in active if r.failure is None]
        if not live:
            return
        samples = [_sample(r, config.batch_size, schedule, device, components) for r in live]
        batch = _Batch(
            torch.cat([s.latents for s in samples]),
            torch.cat([s.noise for s in samples]),
            torch.cat([s.timesteps for s in samples]),
            [p for s in samples for p in s.prompts],
            _joined_time_ids(samples),
        )
        per_example = _example_losses(components, unet, text, batch, dtype)
        per_concept = per_example.view(len(live), config.batch_size).mean(dim=1)
        values = per_concept.detach().cpu().tolist()
        total = None
        for index, (run, value) in enumerate(zip(live, values)):
            if not math.isfinite(value):
                run.failure = TrainingDivergedError(run.concept.token, run.step + 1, value)
                continue
            step_losses[id(run)] += value / config.grad_accum
            penalty = run.modes.penalty(run.vectors)  # not in the recorded loss: the plateau rule compares modes
            term = (per_concept[index] if penalty is None else per_concept[index] + penalty) / config.grad_accum
            total = term if total is None else total + term
        if total is not None:
            total.backward()
    elapsed = time.perf_counter() - tick
    for run in active:
        if run.failure is not None:
            run.optimizer.zero_grad(set_to_none=True)
            continue
        run.advance(config, step_losses[id(run)], elapsed / len(active))


def train_concept(
    components: DiffusionComponents,
    concept: ConceptConfig,
    config: TrainConfig,
    *,
    output_dir: Path | None = None,
    resume: bool = False,
    callback: Callable[[StepReport], None] | None = None,
) -> TrainResult:
    """Learn one concept; raises :class:`TrainingDivergedError` if its loss turns NaN/inf."""
    (result,) = train_concepts(
        components, [concept], config, output_dirs=[output_dir], resume=resume, callback=callback
    )
    if result.failure is not None:
        raise result.failure
    return result


def evaluation_loss(
    components: DiffusionComponents,
    concept: ConceptConfig,
    vectors: torch.Tensor,
    *,
    samples: int = 16,
    seed: int = 1234,
    resolution: int | None = None,
) -> float:
    """Denoising loss of ``vectors`` as ``concept``'s token on a fixed set of noised examples.

    The training loss (same target, same MSE), but a deterministic function of the vectors: the same
    images, templates, noise and timesteps every call. Lower is better.
    """
    device, dtype = components.device, components.dtype
    resolution = resolution or components.resolution
    with components.lock:
        text = PromptEncoder(components)
        placeholder = text.register(concept.token, int(vectors.shape[0]))
        eval_concept = ConceptConfig(
            concept.token,
            concept.initializer,
            concept.images,
            int(vectors.shape[0]),
            concept.property,
            concept.flip,
            seed,
        )
        run = _ConceptRun(eval_concept, placeholder, vectors, TrainConfig(), device, None, text.widths)
        _cache_latents(components, run, resolution, text)
        schedule = training_schedule(components, resolution)
        with text.learned([placeholder], [run.vectors]), torch.no_grad():
            batch = _sample(run, samples, schedule, device, components)
            return float(_example_losses(components, components.denoiser, text, batch, dtype).mean())
