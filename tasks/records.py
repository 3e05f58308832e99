"""Small, serialisable records that tasks pass to one another (URIs and numbers — never tensors or images).

A concept keeps one typed shape from the scan to its metrics row: a :class:`ConceptRecord` carries the
storage :class:`~storage.catalog.ConceptSpec` it was discovered as, an :class:`InversionOutcome` every
file the trainer wrote, and a :class:`ScoredConcept` its scores as a :class:`ScoreSummary`. All are
frozen dataclasses of plain values: they pickle for Prefect's task results and process pools.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from inversion.config import ConceptConfig, Property, as_property
from storage.catalog import ConceptSpec
from storage.metrics import MetricsRow
from storage.relearn import Reason, format_reasons
from storage.scanstate import ConceptState


@dataclass(frozen=True)
class ConceptRecord:
    """A catalog concept as discovered: its storage spec (where its images are, what to learn, its
    content digest), with the run's vector-count override applied to the metadata (:meth:`of`).

    ``digest`` is ``None`` while pending (an image changed since the last scan): staging reads the
    images and fills it in. ``settings`` fingerprints the learning settings, the digest's third input.
    ``relearn`` says why the scan found it to learn (:mod:`storage.relearn`: ``new``, ``images changed``,
    ``model changed`` …); empty for a concept with a complete result, or scanned without an output.
    """

    spec: ConceptSpec
    relearn: tuple[Reason, ...] = ()

    @classmethod
    def of(cls, spec: ConceptSpec, vectors: int | None = None, relearn: Iterable[Reason] = ()) -> ConceptRecord:
        """The record of ``spec``, learning ``vectors`` vectors when given (``learn.vectors``), else the
        metadata's own count, learned for the reasons ``relearn``. The override enters the metadata the digest
        is finished with, as staging reads the images (:func:`storage.catalog.read_concept`)."""
        if vectors is not None and vectors != spec.meta.vectors:
            spec = replace(spec, meta=replace(spec.meta, vectors=vectors))
        return cls(spec, tuple(relearn))

    @property
    def relearn_reason(self) -> str | None:
        """The metrics' ``relearn_reason`` column: the reasons joined (``images changed + model changed``)."""
        return format_reasons(self.relearn)

    @property
    def concept_id(self) -> str:
        return self.spec.concept_id

    @property
    def digest(self) -> str | None:
        return self.spec.digest

    @property
    def token(self) -> str:
        return self.spec.meta.token

    @property
    def initializer(self) -> str:
        return self.spec.meta.initializer

    @property
    def class_name(self) -> str:
        return self.spec.meta.class_name

    @property
    def vectors(self) -> int:
        return self.spec.meta.vectors

    @property
    def images(self) -> tuple[str, ...]:
        return self.spec.images

    @property
    def captions(self) -> tuple[str, ...]:
        return self.spec.meta.captions

    @property  # last: in the rest of the class body the name is this property, not the builtin
    def property(self) -> Property:
        return as_property(self.spec.meta.property)  # ConceptMeta checked it; this narrows the type

    def known_digest(self) -> str:
        """The digest, which a record has once its images were read (every staged concept that has
        usable images, or a complete result); a one-line error names a record still pending."""
        if self.digest is None:
            raise ValueError(f"concept {self.concept_id} has no digest: its images have not been read")
        return self.digest


def with_relearn_reason(row: MetricsRow, record: ConceptRecord) -> MetricsRow:
    """``row`` saying why ``record`` was learned, when it was (a row made elsewhere, such as a concept flow run's,
    which scanned its one concept without the catalog's state); a ``skipped`` row or one that says already is
    left as it is."""
    if row.status == "skipped" or row.relearn_reason is not None or record.relearn_reason is None:
        return row
    return replace(row, relearn_reason=record.relearn_reason)


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

    def concept_config(self, seed: int) -> ConceptConfig:
        """What the trainer learns for this concept: its record's word, initializer, vector count and
        property, over the staged images."""
        record = self.record
        return ConceptConfig(
            token=record.token,
            initializer=record.initializer,
            images=Path(self.image_dir),
            num_vectors=record.vectors,
            property=record.property,
            seed=seed,
        )


@dataclass(frozen=True)
class InversionOutcome:
    """What inverting one concept produced: ``files`` are every file the trainer wrote for it (its
    embedding files by format, and the training log), ``embedding_path`` the one scoring loads;
    ``steps`` is the number of steps it actually ran."""

    staged: StagedConcept
    embedding_path: str | None
    steps: int = 0
    resumed_from: int = 0
    final_loss: float | None = None
    train_seconds: float = 0.0
    error: str | None = None
    stop_reason: str | None = None  # why training stopped: ``max_steps`` or ``plateau`` (inversion.training.stopping)
    files: tuple[str, ...] = ()
    norm_ratio: float | None = None  # the word's largest norm over its vocabulary's mean (inversion.embeddings.norms)


@dataclass(frozen=True)
class ScoreSummary:
    """The five scores of a concept that become metrics columns (raw cosines and their difference; see
    :mod:`inversion.evaluation.scoring`). ``None`` where the source lacks one."""

    image_similarity: float | None = None
    text_similarity: float | None = None
    baseline_image_similarity: float | None = None
    baseline_text_similarity: float | None = None
    inversion_lift: float | None = None

    @classmethod
    def of(cls, scores: Mapping[str, Any]) -> ScoreSummary:
        """The summary of ``scores``: a ``scores.json``, an embeddings index row or a metrics row as a dict."""
        return cls(**{name: scores.get(name) for name in SCORE_COLUMNS})


#: the score fields that are metrics columns, in their order
SCORE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ScoreSummary))


@dataclass(frozen=True)
class ScoredConcept:
    """An inverted concept with its scores and the files scoring wrote (its grids and ``scores.json``);
    publishing takes these with the inversion's files."""

    inversion: InversionOutcome
    scores: ScoreSummary = ScoreSummary()
    files: tuple[str, ...] = ()
    error: str | None = None
    eval_seconds: float | None = None  # rendering and scoring

    def files_to_publish(self) -> tuple[str, ...]:
        """The inversion's files and scoring's, each once."""
        return tuple(dict.fromkeys((*self.inversion.files, *self.files)))
