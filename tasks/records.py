"""Small, serialisable records that tasks pass to one another (URIs and numbers — never tensors or images)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from inversion.config import Property
from storage.scanstate import ConceptState


@dataclass(frozen=True)
class ConceptRecord:
    """A catalog concept as discovered: where it is, what to learn, and its content digest.

    ``digest`` is ``None`` while pending (an image changed since the last scan): staging reads the
    images and fills it in. ``settings`` fingerprints the learning settings, the digest's third input.
    """

    concept_id: str
    digest: str | None
    token: str
    initializer: str
    class_name: str
    property: Property
    vectors: int
    images: tuple[str, ...]
    captions: tuple[str, ...] = ()
    settings: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def known_digest(self) -> str:
        """The digest, which a record has once its images were read (every staged concept that has
        usable images, or a complete result); a one-line error names a record still pending."""
        if self.digest is None:
            raise ValueError(f"concept {self.concept_id} has no digest: its images have not been read")
        return self.digest


@dataclass(frozen=True)
class StagedConcept:
    """A concept whose images were read once, validated and written to a local work folder.

    ``record`` carries the digest of the bytes read. ``done``: a complete result already exists for
    that digest (identical bytes re-uploaded), so nothing was decoded and nothing is to be learned.
    ``scan`` is what the next catalog scan may remember about the images (``None``: read them again).
    """

    record: ConceptRecord
    work_dir: str
    image_dir: str
    num_images: int
    problems: tuple[str, ...] = ()
    error: str | None = None
    done: bool = False
    scan: ConceptState | None = None


@dataclass(frozen=True)
class InversionOutcome:
    """What inverting one concept produced (the embedding files sit in ``work_dir``); ``steps`` is
    the number of steps it actually ran."""

    staged: StagedConcept
    embedding_path: str | None
    steps: int = 0
    resumed_from: int = 0
    final_loss: float | None = None
    train_seconds: float = 0.0
    error: str | None = None
    stop_reason: str | None = None  # why training stopped: ``max_steps`` or ``plateau`` (inversion.training.stopping)


@dataclass(frozen=True)
class ScoredConcept:
    """An inverted concept with its scores and the grid files rendered for people."""

    inversion: InversionOutcome
    scores: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    error: str | None = None
    eval_seconds: float | None = None  # rendering and scoring
