"""The composition task: render and score one composition of learned words (:mod:`inversion.evaluation.composition`),
publish its grid and scores under ``<out>/compositions/<id>/<key>/`` and return its row.

A composition's ``key`` digests its prompt, the digests of the concepts it names and the settings that
change the pixels or the scores; a result already under that key is reused (a ``skipped`` row) without
loading any model, so a composition is rendered again only when one of those changed. The ML code
(torch) is imported by the task body only when something is rendered: the coordinator imports this
module without it.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from common.digest import canonical_digest
from common.filenames import (
    DIFFUSERS_FILENAME_2,
    GRID_FILENAME,
    GRID_THUMBNAIL_FILENAME,
    SCORES_FILENAME,
    word_filename,
)
from inversion.errors import SstarError
from storage.catalog import read_concept
from storage.compositions import CompositionRow, CompositionSpec, composition_prefix
from storage.errors import StorageError
from storage.images import ingest_concept
from storage.metrics import Status
from storage.results import ResultStore
from storage.store.open import open_store
from tasks import model_cache
from tasks.concurrency import gpu_slot
from tasks.records import ConceptRecord
from tasks.retry import RETRY
from tasks.settings import EvalSettings, LearnSettings, RunSettings

if TYPE_CHECKING:
    from inversion.evaluation.composition import Word


@dataclass(frozen=True)
class LearnedConcept:
    """A concept a composition names, with the digest of its complete result."""

    record: ConceptRecord
    digest: str


def composition_key(
    spec: CompositionSpec, concepts: list[LearnedConcept], learn: LearnSettings, evaluation: EvalSettings
) -> str:
    """16 hex digits over the prompt, the concepts' result digests and the rendering/scoring settings."""
    identity = {
        "prompt": spec.prompt,
        "concepts": [[c.record.concept_id, c.digest] for c in concepts],
        "samples": evaluation.samples,
        "steps": evaluation.render_steps,
        "guidance": evaluation.guidance,
        "sampler": evaluation.sampler,
        "precision": learn.precision,
        "clip": [evaluation.clip_arch, evaluation.clip_checkpoint, evaluation.clip_pretrained],
    }
    return canonical_digest(identity, 16)


def _row(
    spec: CompositionSpec,
    run_id: str,
    status: Status,
    concepts: list[LearnedConcept],
    key: str,
    scores: dict,
    grid_uri: str,
) -> CompositionRow:
    similarities = scores["image_similarities"]
    return CompositionRow(
        run_id=run_id,
        composition_id=spec.composition_id,
        prompt=spec.prompt,
        status=status,
        concepts=spec.concepts,
        key=key,
        digests=tuple(c.digest for c in concepts),
        image_similarities=tuple(float(similarities[c.record.token]) for c in concepts),
        min_image_similarity=float(scores["min_image_similarity"]),
        text_similarity=float(scores["text_similarity"]),
        grid_uri=grid_uri,
    )


def failed_composition(spec: CompositionSpec, run_id: str, error: str, key: str | None = None) -> CompositionRow:
    """The ``failed`` row of ``spec``, with why (and its key, once known)."""
    return CompositionRow(
        run_id=run_id,
        composition_id=spec.composition_id,
        prompt=spec.prompt,
        status="failed",
        concepts=spec.concepts,
        key=key,
        error=error,
    )


def _word(catalog_uri: str, results: ResultStore, concept: LearnedConcept, work: Path, clip, family: str) -> Word:
    """Download the concept's embedding (the file that stands for the word on the model's ``family``, and an SDXL
    word's second file) and CLIP-embed its training images."""
    from inversion.embeddings.formats import load_embedding
    from inversion.evaluation.composition import Word
    from inversion.evaluation.scoring import embed_reference_images

    folder = work / concept.record.concept_id
    folder.mkdir(parents=True)
    word = word_filename(concept.record.token, family)
    for name in (word, DIFFUSERS_FILENAME_2):
        key = results.key(concept.record.concept_id, concept.digest, name)
        if name == word or results.store.exists(key):
            (folder / name).write_bytes(results.store.get(key))
    embedding = load_embedding(folder / word, token=concept.record.token)
    catalog = open_store(catalog_uri)
    read = read_concept(catalog, concept.record.spec)
    images = [image for _, image in ingest_concept(catalog, read.spec, data=read.data).images]
    return Word(embedding, concept.record.class_name, embed_reference_images(clip, images))


def compose(
    spec: CompositionSpec,
    concepts: list[LearnedConcept],
    catalog_uri: str,
    out_uri: str,
    run_id: str,
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
) -> CompositionRow:
    """Render and score ``spec`` with ``concepts`` (its named concepts, in order), or reuse the result under
    its key; a failure becomes a ``failed`` row with its reason."""
    key = composition_key(spec, concepts, learn, evaluation)
    store = open_store(out_uri)
    prefix = composition_prefix(spec.composition_id, key)
    try:
        raw = store.get(f"{prefix}/{SCORES_FILENAME}")
        return _row(spec, run_id, "skipped", concepts, key, json.loads(raw), store.url(f"{prefix}/{GRID_FILENAME}"))
    except StorageError:
        pass  # not rendered yet (or unreadable): render it
    from inversion.evaluation.composition import score_composition  # torch: only when something is rendered
    from inversion.evaluation.scoring import save_thumbnail

    try:
        clip = model_cache.clip_model(evaluation.clip_spec(), run.device)
        renderer = model_cache.renderer_for(learn, evaluation, run)
        with tempfile.TemporaryDirectory(prefix="sstar-compose-") as work:
            family = renderer.components.family
            words = [_word(catalog_uri, ResultStore(store), c, Path(work), clip, family) for c in concepts]
            prompt = spec.filled({c.record.concept_id: c.record.token for c in concepts})
            with gpu_slot(run.gpu_limit_name, wait_timeout=run.slot_wait_timeout):
                scores = score_composition(renderer, clip, prompt, words, range(evaluation.samples))
            grid = scores.grid(
                f"{spec.composition_id}: min image sim {scores.min_image_similarity:.3f}, "
                f"text sim {scores.text_similarity:.3f} (raw cosine)"
            )
            png, thumb = io.BytesIO(), Path(work) / GRID_THUMBNAIL_FILENAME
            grid.save(png, format="PNG")
            thumbnail = save_thumbnail(grid, thumb).read_bytes()
    except (SstarError, StorageError) as exc:
        return failed_composition(spec, run_id, f"composition failed: {exc}", key)
    store.put(f"{prefix}/{GRID_FILENAME}", png.getvalue())
    store.put(f"{prefix}/{GRID_THUMBNAIL_FILENAME}", thumbnail)
    payload = {
        "composition_id": spec.composition_id,
        "key": key,
        "concepts": list(spec.concepts),
        "digests": [c.digest for c in concepts],
        **scores.to_json(),
    }
    store.put(f"{prefix}/{SCORES_FILENAME}", json.dumps(payload, indent=2).encode("utf-8"))  # last: marks it complete
    return _row(spec, run_id, "ok", concepts, key, payload, store.url(f"{prefix}/{GRID_FILENAME}"))


compose_task = task(name="compose", **RETRY)(compose)
""":func:`compose` as a Prefect task (transient storage errors are retried)."""
