"""Typed, validated configuration of a Textual Inversion run.

Two objects: :class:`ConceptConfig` says *what* to learn (a token, its initializer, its images),
:class:`TrainConfig` says *how* (steps, batch, learning rate, precision…). Both validate on
construction and raise :class:`~inversion.errors.ConfigError` with a message naming the field.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

Property = Literal["object", "style"]
Precision = Literal["fp32", "bf16", "fp16"]
PROPERTIES: tuple[str, ...] = ("object", "style")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")

_TOKEN_RE = re.compile(r"^\S+$")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


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
        _require(bool(self.token) and bool(_TOKEN_RE.match(self.token)),
                 f"token must be one word without spaces, got {self.token!r}")
        _require(bool(self.initializer.strip()), f"initializer of {self.token} must not be empty")
        _require(isinstance(self.num_vectors, int) and self.num_vectors >= 1,
                 f"num_vectors of {self.token} must be an integer >= 1, got {self.num_vectors!r}")
        _require(self.property in PROPERTIES,
                 f"property of {self.token} must be one of {', '.join(PROPERTIES)}, got {self.property!r}")
        object.__setattr__(self, "images", Path(self.images))

    @builtins.property
    def slug(self) -> str:
        """The token without brackets, safe as a file name (``<my-cat>`` → ``my-cat``)."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.token).strip("-.")
        return slug or "embedding"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults follow the method's paper (lr 5e-3, a few hundred to thousands of steps).

    Attributes:
        steps: optimizer steps.
        batch_size: images per concept per micro-batch.
        grad_accum: micro-batches accumulated per optimizer step.
        lr: AdamW learning rate (per step, before scaling).
        scale_lr: multiply ``lr`` by ``batch_size * grad_accum`` (the paper's convention).
        lr_schedule: ``constant`` or ``cosine`` (decays to 0 over ``steps``).
        lr_warmup_steps: linear warm-up before the schedule.
        weight_decay: AdamW weight decay on the new vectors.
        resolution: training image size in pixels; ``None`` uses the model's native size.
        precision: dtype of the frozen weights (the learned vectors always stay fp32).
        seed: seeds everything not tied to a single concept.
        checkpoint_every: save a resumable checkpoint every K steps (0 = only at the end).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        compile: run the UNet through ``torch.compile``: a one-off compilation (about a minute, per
            model and batch shape) buys faster steps on long GPU runs. It changes neither the loss nor
            the checkpoints, so a run may be resumed with or without it.
    """

    steps: int = 600
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 5e-3
    scale_lr: bool = False
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 0.0
    resolution: int | None = None
    precision: Precision = "fp32"
    seed: int = 0
    checkpoint_every: int = 0
    device: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        _require(0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}")
        _require(self.lr_schedule in LR_SCHEDULES,
                 f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        _require(self.lr_warmup_steps >= 0, f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.resolution is None or (self.resolution >= 8 and self.resolution % 8 == 0),
                 f"resolution must be a multiple of 8 and >= 8, got {self.resolution}")
        _require(self.precision in PRECISIONS,
                 f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _require(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    @property
    def effective_lr(self) -> float:
        """The learning rate AdamW uses, after optional scaling by the batch size."""
        return self.lr * (self.batch_size * self.grad_accum if self.scale_lr else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        _require(not unknown, f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)
