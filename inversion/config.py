"""Typed, validated configuration of a Textual Inversion run.

:class:`ConceptConfig` says *what* to learn (a token, its initializer, its images),
:class:`TrainConfig` says *how* (steps, batch, learning rate, precision…) and :class:`EvalConfig`
how a learned word is rendered and scored. All validate on construction and raise
:class:`~inversion.errors.ConfigError` with a message naming the field.

``TrainConfig`` and ``EvalConfig`` are the one source of their settings: each field is declared with
:func:`inversion.fields.setting` (default, help, bounds), and the command-line flags and the flows'
pydantic parameter models are generated from them. To add a setting, add a field here; see
:mod:`inversion.fields`.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

from inversion.errors import ConfigError
from inversion.fields import setting, validate

Property = Literal["object", "style"]
Precision = Literal["fp32", "bf16", "fp16"]
LrSchedule = Literal["constant", "cosine"]
Sampler = Literal["ddim", "dpm"]  # inversion.evaluation.render.make_scheduler
PROPERTIES: tuple[str, ...] = get_args(Property)
PRECISIONS: tuple[str, ...] = get_args(Precision)
SAMPLERS: tuple[str, ...] = get_args(Sampler)
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
#: how ``sstar merge`` combines learned words (:mod:`inversion.embeddings.merge`; here so the CLI needs no torch)
MergeMode = Literal["sum", "slerp", "concat"]
MERGE_MODES: tuple[str, ...] = get_args(MergeMode)
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
#: the method's evaluation CLIP: OpenAI's ViT-B/32 (``inversion.evaluation.clip`` uses these too)
DEFAULT_CLIP_ARCH = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"

StopPolicy = Literal["fixed", "plateau"]
STOP_POLICIES: tuple[str, ...] = get_args(StopPolicy)
#: how a learned word's vectors start and whether their norm moves (inversion.training.vector_modes)
InitMode = Literal["word", "cross"]
NormMode = Literal["free", "vocab"]

_TOKEN_RE = re.compile(r"^\S+$")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_property(value: object) -> TypeGuard[Property]:
    return value in PROPERTIES


def as_property(value: str) -> Property:
    """``value`` as a :data:`Property` (``object`` or ``style``); a one-line :class:`ConfigError` names any other."""
    if not _is_property(value):
        raise ConfigError(f"property must be one of {', '.join(PROPERTIES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class PlateauRule:
    """The ``plateau`` policy's parameters (validated by :class:`TrainConfig`; the rule's state is
    :class:`inversion.training.stopping.StopState`)."""

    every: int
    patience: int
    min_delta: float
    min_steps: int

    def due(self, step: int) -> bool:
        """Whether the held-out loss is measured after optimizer step ``step`` (1-based)."""
        return step > 0 and step % self.every == 0


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to score with: an open_clip architecture and where its weights come from.

    Exactly one of ``checkpoint`` (a local state-dict file: ``.pt``, ``.pth``, ``.bin`` or
    ``.safetensors``) and ``pretrained`` (an open_clip tag such as ``openai``, downloaded on first
    use) must be given; see :meth:`default` for the method's evaluation model.
    """

    arch: str = DEFAULT_CLIP_ARCH
    checkpoint: Path | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch.strip():
            raise ConfigError(f"CLIP architecture must be a non-empty name, got {self.arch!r}")
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint).expanduser().absolute())
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise ConfigError(f"CLIP pretrained tag must be a non-empty name, got {self.pretrained!r}")
        if self.checkpoint is not None and self.pretrained is not None:
            raise ConfigError(
                f"CLIP {self.arch}: give a checkpoint file or a pretrained tag, not both "
                f"(got {self.checkpoint} and {self.pretrained!r})"
            )
        if self.checkpoint is None and self.pretrained is None:
            raise ConfigError(
                f"CLIP {self.arch} needs weights: a local checkpoint file or a pretrained tag "
                f"(e.g. {DEFAULT_CLIP_ARCH} with {DEFAULT_CLIP_PRETRAINED!r})"
            )

    @classmethod
    def default(cls) -> "ClipSpec":
        """OpenAI's CLIP ViT-B/32, the method's evaluation model (downloaded by open_clip on first use)."""
        return cls(DEFAULT_CLIP_ARCH, pretrained=DEFAULT_CLIP_PRETRAINED)

    def describe(self) -> str:
        """``arch`` + the weights, for logs and scores.json (e.g. ``ViT-B-32/openai``)."""
        return f"{self.arch}/{self.pretrained}" if self.pretrained else f"{self.arch}@{self.checkpoint}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "pretrained": self.pretrained,
        }


@dataclass(frozen=True)
class ConceptConfig:
    """One concept to learn.

    Attributes:
        token: the placeholder word, e.g. ``<my-cat>``; must not already be in the vocabulary.
        initializer: a word or short phrase whose embedding initialises the new vector(s), e.g. ``cat``.
        images: folder holding the concept's training images.
        num_vectors: how many embedding vectors the token gets (``<t>``, ``<t>_1``, …).
        property: ``object`` or ``style`` — picks the neutral prompt templates.
        flip: horizontal-flip augmentation (turn it off for styles that carry text).
        seed: seeds this concept's sampling of images, templates, noise and timesteps.
    """

    token: str
    initializer: str
    images: Path
    num_vectors: int = 1
    property: Property = "object"
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _require(
            bool(self.token) and bool(_TOKEN_RE.match(self.token)),
            f"token must be one word without spaces, got {self.token!r}",
        )
        _require(bool(self.initializer.strip()), f"initializer of {self.token} must not be empty")
        _require(
            isinstance(self.num_vectors, int) and self.num_vectors >= 1,
            f"num_vectors of {self.token} must be an integer >= 1, got {self.num_vectors!r}",
        )
        _require(
            self.property in PROPERTIES,
            f"property of {self.token} must be one of {', '.join(PROPERTIES)}, got {self.property!r}",
        )
        object.__setattr__(self, "images", Path(self.images))

    @builtins.property
    def slug(self) -> str:
        """The token without brackets, safe as a file name (``<my-cat>`` → ``my-cat``)."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.token).strip("-.")
        return slug or "embedding"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults follow the method's paper (lr 5e-3, a few hundred to thousands of steps).

    Each field is a setting (:func:`inversion.fields.setting`) and carries its own help text, bounds
    and group: ``learn`` settings change what is learned (flags of ``sstar invert`` and ``sstar
    learn``, the flows' ``LearnSettings``, each concept's digest); ``run`` settings say where and how
    it runs (flags of both commands, the flows' ``RunSettings``); the others are set from Python.
    """

    steps: int = setting(
        600,
        help="the cap: most optimizer steps per concept (--steps is the old name)",
        group="learn",
        ge=1,
        aliases=("max_steps",),
    )
    batch_size: int = setting(4, help="images per concept per micro-batch", group="learn", ge=1)
    grad_accum: int = setting(1, help="micro-batches accumulated per optimizer step", group="learn", ge=1)
    lr: float = setting(5e-3, help="AdamW learning rate (per step, before --scale-lr)", group="learn", gt=0, lt=1)
    scale_lr: bool = setting(
        False, help="multiply lr by batch size × grad accumulation (the paper's convention)", group="learn"
    )
    lr_schedule: LrSchedule = setting(
        "constant", help="learning-rate schedule (cosine decays to 0 over the steps)", group="learn"
    )
    lr_warmup_steps: int = setting(0, help="linear learning-rate warm-up steps before the schedule", ge=0)
    weight_decay: float = setting(0.0, help="AdamW weight decay on the new vectors", ge=0)
    resolution: int | None = setting(
        None, help="training image size in px (default: the model's)", group="learn", ge=8, multiple_of=8
    )
    precision: Precision = setting(
        "fp32", help="dtype of the frozen weights (learned vectors always stay fp32)", group="learn"
    )
    seed: int = setting(0, help="seeds everything not tied to a single concept", group="learn")
    checkpoint_every: int = setting(
        0, help="save a resumable checkpoint every K steps (0: only at the end)", group="run", ge=0
    )
    device: str = setting("auto", help="auto (CUDA when present), cpu or cuda[:N]", group="run", pattern=DEVICE_PATTERN)
    init_mode: InitMode = setting(
        "word",
        help=(
            "word: each vector starts at the initializer's token embedding; cross: at the text encoder's output "
            "for the initializer (Cross Initialization, per text encoder), with a weak pull back towards it"
        ),
        group="learn",
        digest_at_default=False,
    )
    norm_mode: NormMode = setting(
        "free",
        help=(
            "free: the vectors' norms are learned too; vocab: every vector's norm is held at its text encoder's "
            "mean vocabulary norm and only its direction is learned (Directional TI). With --init-mode cross, "
            "only the direction of the cross start survives"
        ),
        group="learn",
        digest_at_default=False,
    )
    stop: StopPolicy = setting(
        "fixed",
        help=(
            "fixed: train every concept to the cap; plateau: stop a concept once its held-out denoising loss "
            "stops improving (see inversion.training.stopping)"
        ),
        group="run",
    )
    stop_every: int = setting(25, help="plateau: measure the held-out loss every K steps", ge=1)
    stop_patience: int = setting(3, help="plateau: stop after this many checks in a row without improvement", ge=1)
    stop_min_delta: float = setting(0.01, help="plateau: relative improvement of the best loss that counts", ge=0, lt=1)
    stop_min_steps: int = setting(50, help="plateau: never stop before this many steps", ge=0)
    stop_samples: int = setting(
        16, help="plateau: fixed noised examples of the concept's images per check", ge=1, le=256
    )
    compile: bool = setting(
        False,
        help=(
            "torch.compile the UNet: a one-off compile (about a minute per model and "
            "batch shape) for faster steps on long GPU runs; changes neither the loss "
            "nor the checkpoints"
        ),
        group="run",
    )

    def __post_init__(self) -> None:
        validate(self)

    @property
    def effective_lr(self) -> float:
        """The learning rate AdamW uses, after optional scaling by the batch size."""
        return self.lr * (self.batch_size * self.grad_accum if self.scale_lr else 1)

    @property
    def plateau(self) -> PlateauRule | None:
        """The plateau rule when ``stop`` is ``plateau``, else ``None``."""
        if self.stop != "plateau":
            return None
        return PlateauRule(self.stop_every, self.stop_patience, self.stop_min_delta, self.stop_min_steps)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (recorded in checkpoints and ``training.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class EvalConfig:
    """How learned words are rendered and scored with CLIP (flags of ``sstar score`` and ``sstar learn``,
    the flows' ``EvalSettings``). Not part of a concept's digest."""

    samples: int = setting(4, help="images per evaluation prompt", ge=1, le=64)
    # dpm × 15 steps scores as ddim × 25 did (CLIP image similarity and lift within 0.01 on the toy world)
    # in about half the rendering time: bench/quality/README.md, "Cheaper evaluation"
    sampler: Sampler = setting("dpm", help="dpm (DPM-Solver++ multistep) or ddim (the sampler before dpm)")
    render_steps: int = setting(15, help="denoising steps per image", ge=1, le=500)
    guidance: float = setting(
        7.5, help="classifier-free guidance scale (Flux: its distilled guidance, usually 3.5)", ge=0, le=50
    )
    clip_arch: str = setting(DEFAULT_CLIP_ARCH, help="open_clip architecture of the scoring CLIP")
    clip_checkpoint: str | None = setting(None, help="local open_clip checkpoint file for the CLIP architecture")
    clip_pretrained: str | None = setting(
        None,
        help=(
            f"open_clip pretrained tag (downloads where reachable; "
            f"default {DEFAULT_CLIP_PRETRAINED!r} without a checkpoint)"
        ),
    )

    def __post_init__(self) -> None:
        validate(self)


def clip_spec(arch: str, checkpoint: str | None, pretrained: str | None) -> ClipSpec:
    """The CLIP to score with. Without a checkpoint or a pretrained tag, the method's evaluation
    weights (``openai``), which open_clip downloads where the machine can reach them."""
    if checkpoint is None and pretrained is None:
        pretrained = DEFAULT_CLIP_PRETRAINED
    return ClipSpec(arch=arch, checkpoint=Path(checkpoint) if checkpoint else None, pretrained=pretrained)
