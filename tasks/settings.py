"""Typed, validated settings of a learning run — the parameters of the flows.

Pydantic models, so Prefect shows them as a form in its UI and validates deployment parameters;
every field has a default, and a bad value fails with a message naming the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inversion.config import TrainConfig


class LearnSettings(BaseModel):
    """How every concept is learned. These settings are part of each concept's content digest:
    changing one re-learns the catalog; evaluation settings do not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="diffusers model folder or hub id of the frozen text-to-image model")
    steps: int = Field(600, ge=1, description="optimizer steps per concept")
    batch_size: int = Field(4, ge=1, description="images per concept per step")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-3, gt=0, lt=1)
    scale_lr: bool = False
    lr_schedule: Literal["constant", "cosine"] = "constant"
    resolution: int | None = Field(None, ge=8, multiple_of=8, description="training size; default the model's")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    vectors: int | None = Field(None, ge=1, le=64, description="override every concept's vector count")

    def train_config(self, checkpoint_every: int, device: str, compile: bool = False) -> TrainConfig:
        return TrainConfig(
            steps=self.steps, batch_size=self.batch_size, grad_accum=self.grad_accum, lr=self.lr,
            scale_lr=self.scale_lr, lr_schedule=self.lr_schedule, resolution=self.resolution,
            precision=self.precision, seed=self.seed, checkpoint_every=checkpoint_every, device=device,
            compile=compile,
        )

    def digest_settings(self) -> dict:
        """The settings that change what is learned (the digest input)."""
        return self.model_dump()


class EvalSettings(BaseModel):
    """How learned words are rendered and scored with CLIP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[str] | None = Field(None, description="evaluation prompts with {} for the token; default by property")
    samples: int = Field(4, ge=1, le=64, description="images per prompt")
    render_steps: int = Field(25, ge=1, le=500, description="denoising steps")
    guidance: float = Field(7.5, ge=0, le=50)
    clip_arch: str = "ViT-B-32"
    clip_checkpoint: str | None = Field(None, description="local open_clip checkpoint file for clip_arch")
    clip_pretrained: str | None = Field(None, description="open_clip pretrained tag (downloads; where reachable)")

    @field_validator("prompts")
    @classmethod
    def _prompts_have_slot(cls, prompts: list[str] | None) -> list[str] | None:
        if prompts is not None:
            if not prompts:
                raise ValueError("prompts must not be empty (omit it for the defaults)")
            for prompt in prompts:
                if "{}" not in prompt:
                    raise ValueError(f"prompt {prompt!r} has no {{}} where the token goes")
        return prompts


class RunSettings(BaseModel):
    """Where and how a run executes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    concepts_per_batch: int = Field(1, ge=1, le=64, description="concepts packed into one GPU batch")
    compile: bool = Field(False, description="torch.compile the UNet (one-off compile per worker; faster GPU steps)")
    max_concurrent_inversions: int = Field(1, ge=1, le=64, description="inversions sharing a GPU at once")
    gpu_limit_name: str = Field("sstar-gpu", description="Prefect global concurrency limit guarding GPU work")
    checkpoint_every: int = Field(50, ge=0, description="upload a resumable checkpoint every K steps")
    workers: int = Field(4, ge=1, le=64, description=(
        "threads running the run's tasks (stage, invert, score, publish); with a deployment to fan out to, "
        "the child flow runs in flight at once, never fewer than max_concurrent_inversions"))
    work_dir: str | None = Field(None, description="local scratch folder (default: a temporary folder)")
    deployment: str | None = Field(
        None, description="fan concepts out as flow runs of this learn_concept deployment ('flow/deployment')"
    )
