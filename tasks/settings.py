"""Typed, validated settings of a learning run — the parameters of the flows.

Three pydantic models, so Prefect shows them as a form in its UI and validates deployment
parameters; a bad value fails with a message naming the field. They are *generated*, not written:

* :data:`LearnSettings` — the model plus every ``learn`` setting of
  :class:`inversion.config.TrainConfig` and a vector-count override. Part of each concept's digest:
  changing one re-learns the catalog.
* :data:`EvalSettings` — every setting of :class:`inversion.config.EvalConfig` plus the prompts.
* :data:`RunSettings` — every ``run`` setting of ``TrainConfig`` (a pipeline checkpoints every 50
  steps and stops each concept at its loss plateau by default) plus the pipeline-only settings of
  :class:`PipelineConfig`.

The same tuples (:data:`LEARN_SETTINGS`, :data:`EVAL_SETTINGS`, :data:`RUN_SETTINGS`) give the
flags of ``sstar learn`` and ``sstar serve``, so a default or help text lives in exactly one place.

Adding a setting: add a field made with :func:`inversion.fields.setting` — to ``TrainConfig`` with
``group="learn"`` or ``group="run"`` (training), to ``EvalConfig`` (evaluation), or to
:class:`PipelineConfig` below (only a pipeline has it). The pydantic field, the flag and the
validation follow; a ``learn`` setting also enters every concept's digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, field_validator

from inversion.config import ClipSpec, EvalConfig, TrainConfig, clip_spec
from inversion.fields import Setting, digest_values, setting, settings_of

#: a pipeline saves a resumable checkpoint this often unless told otherwise (a lone ``sstar invert`` does not)
PIPELINE_CHECKPOINT_EVERY = 50


@dataclass(frozen=True)
class LearnExtras:
    """The learning settings a pipeline has besides ``TrainConfig``'s ``learn`` group."""

    model: str = setting(help="diffusers model folder or hub id of the frozen text-to-image model")
    vectors: int | None = setting(None, help="override every concept's vector count", ge=1, le=64)


@dataclass(frozen=True)
class PipelineConfig:
    """The run settings only a pipeline has (the rest are ``TrainConfig``'s ``run`` group)."""

    concepts_per_batch: int = setting(1, help="concepts packed into one GPU batch", ge=1, le=64)
    max_concurrent_inversions: int = setting(1, help="inversions sharing a GPU at once", ge=1, le=64)
    chunk_size: int = setting(
        32,
        help=(
            "concepts staged, and published, by one task (rounded up to whole packs of concepts_per_batch): a "
            "chunk's packs train as soon as it is staged, and its metrics rows are written once it is published"
        ),
        ge=1,
        le=4096,
    )
    gpu_limit_name: str = setting("sstar-gpu", help="Prefect global concurrency limit guarding GPU work")
    workers: int = setting(
        4,
        help=(
            "threads running the run's tasks (stage, invert, score, publish); with a deployment to fan out to, "
            "the child flow runs in flight at once, never fewer than max_concurrent_inversions"
        ),
        ge=1,
        le=64,
    )
    work_dir: str | None = setting(None, help="local scratch folder (default: a temporary folder)")
    deployment: str | None = setting(
        None,
        help="fan packs of concepts_per_batch concepts out as flow runs of this learn-pack deployment "
        "('flow/deployment')",
    )
    slot_wait_timeout: float = setting(
        21600.0,
        help=(
            "seconds a GPU task waits at most for a slot of the GPU limit held by a live run, then fails naming "
            "the holder (a dead holder's slot is freed at once)"
        ),
        gt=0,
    )
    child_heartbeat_timeout: float = setting(
        600.0,
        help=(
            "with a deployment: seconds a Pending or Running child flow run may go without a heartbeat or state "
            "change before it counts as dead (its worker and process gone), is marked Crashed and is run again; "
            "keep it above 3x the workers' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (default 180 s)"
        ),
        gt=0,
    )
    child_wait_timeout: float = setting(
        43200.0,
        help=(
            "with a deployment: seconds the coordinator waits at most on one pack's child flow runs (re-runs "
            "included), then fails the pack's concepts naming the flow run"
        ),
        gt=0,
    )


#: a pipeline stops each concept when its held-out loss plateaus unless told otherwise (``sstar invert``: fixed)
PIPELINE_STOP = "plateau"
_PIPELINE_DEFAULTS = {"checkpoint_every": PIPELINE_CHECKPOINT_EVERY, "stop": PIPELINE_STOP}


def _with_pipeline_defaults(declared: Setting) -> Setting:
    default = _PIPELINE_DEFAULTS.get(declared.name, declared.default)
    return declared.with_default(default) if default != declared.default else declared


_TRAIN_LEARN = tuple(settings_of(TrainConfig, "learn").values())
_TRAIN_RUN = tuple(_with_pipeline_defaults(s) for s in settings_of(TrainConfig, "run").values())
_EXTRAS = settings_of(LearnExtras)

LEARN_SETTINGS: tuple[Setting, ...] = (_EXTRAS["model"], *_TRAIN_LEARN, _EXTRAS["vectors"])
EVAL_SETTINGS: tuple[Setting, ...] = tuple(settings_of(EvalConfig).values())
RUN_SETTINGS: tuple[Setting, ...] = (*_TRAIN_RUN, *settings_of(PipelineConfig).values())


def pydantic_field(declared: Setting) -> tuple[Any, Any]:
    """``(type, Field(...))`` of a setting for :func:`pydantic.create_model`: same default, description, bounds."""
    s = declared.spec
    default = ... if declared.required else declared.default
    pattern = f"^(?:{s.pattern})$" if s.pattern is not None else None
    alias = AliasChoices(declared.name, *s.aliases) if s.aliases else None
    return declared.annotation, Field(
        default,
        description=s.help,
        ge=s.ge,
        gt=s.gt,
        le=s.le,
        lt=s.lt,
        multiple_of=s.multiple_of,
        pattern=pattern,
        validation_alias=alias,
    )


def _parameters(name: str, base: type[_Parameters], settings: Iterable[Setting], doc: str) -> type[_Parameters]:
    """A pydantic model named ``name`` (an attribute of this module, so it pickles) with one field per setting."""
    fields: dict[str, Any] = {declared.name: pydantic_field(declared) for declared in settings}
    return create_model(name, __base__=base, __module__=__name__, __qualname__=name, __doc__=doc, **fields)


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    if TYPE_CHECKING:  # the fields are generated; a type checker cannot see them

        def __init__(self, **values: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...


class _Learn(_Parameters):
    if TYPE_CHECKING:  # each model's own __init__ would be synthesised from its declared fields only
        __init__ = _Parameters.__init__

    def train_config(self, run: _Run) -> TrainConfig:
        """The trainer's config: these learning settings with the ``run`` settings of ``run``."""
        values = {s.name: getattr(self, s.name) for s in _TRAIN_LEARN}
        values.update({s.name: getattr(run, s.name) for s in _TRAIN_RUN})
        return TrainConfig(**values)

    def digest_settings(self) -> dict[str, Any]:
        """The settings that change what is learned (the digest input): a setting declared
        ``digest_at_default=False`` enters only when it differs from its default."""
        return digest_values(LEARN_SETTINGS, self.model_dump())


class _Eval(_Parameters):
    if TYPE_CHECKING:
        __init__ = _Parameters.__init__

    prompts: list[str] | None = Field(
        default=None, description="evaluation prompts with {} for the token; default by property"
    )

    def clip_spec(self) -> ClipSpec:
        """The CLIP to score with, from the three ``clip_*`` settings (:func:`inversion.config.clip_spec`)."""
        return clip_spec(self.clip_arch, self.clip_checkpoint, self.clip_pretrained)

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


class _Run(_Parameters):
    if TYPE_CHECKING:
        __init__ = _Parameters.__init__


if TYPE_CHECKING:  # generated classes are not types to a checker; their bases stand in for them
    LearnSettings = _Learn
    EvalSettings = _Eval
    RunSettings = _Run
else:
    LearnSettings = _parameters(
        "LearnSettings",
        _Learn,
        LEARN_SETTINGS,
        (
            "How every concept is learned. These settings are part of each concept's content digest: changing one "
            "re-learns the catalog; evaluation and run settings do not."
        ),
    )
    EvalSettings = _parameters("EvalSettings", _Eval, EVAL_SETTINGS, "How learned words are rendered and scored.")
    RunSettings = _parameters("RunSettings", _Run, RUN_SETTINGS, "Where and how a run executes.")
