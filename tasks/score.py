"""The evaluation tasks: render the learned words and their words-only baselines, score both with CLIP.

A pack's words are scored together (one batched rendering) and the baselines come from the output's
cache when an earlier concept or run already rendered them (:mod:`tasks.baselines`). The renderer and
CLIP (torch) are imported by the task bodies: the coordinator imports this module without them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task

from common.filenames import CHECKPOINT_FILENAME, TRAINING_LOG
from inversion.errors import SstarError
from tasks import model_cache
from tasks.baselines import StoreBaselineCache
from tasks.concurrency import gpu_slot
from tasks.records import InversionOutcome, ScoredConcept
from tasks.retry import RETRY
from tasks.settings import EvalSettings, LearnSettings, RunSettings

if TYPE_CHECKING:
    from inversion.evaluation.scoring import ConceptScores


def _files_to_publish(work_dir: str, embedding_path: str, scores: ConceptScores) -> tuple[str, ...]:
    """The files of a scored concept: its embedding files (in ``embedding_path``'s folder), training
    log and the scores and grids written under ``work_dir``."""
    from inversion.evaluation.scoring import write_scores

    written = write_scores(scores, Path(work_dir) / "result")
    embedding_dir = Path(embedding_path).parent
    # every embedding file the trainer wrote (the .pt, or SDXL's learned_embeds_2 and clip_l/clip_g file)
    extras = [
        *(
            p
            for p in sorted(embedding_dir.iterdir())
            if p.suffix in (".pt", ".safetensors") and p.name not in (CHECKPOINT_FILENAME, Path(embedding_path).name)
        ),
        embedding_dir / TRAINING_LOG,
    ]
    return (embedding_path, *(str(p) for p in extras if p.is_file()), *(str(p) for p in written.values()))


def score_outcomes(
    outcomes: list[InversionOutcome],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    out_uri: str | None = None,
) -> list[ScoredConcept]:
    """Render and score every learned word of ``outcomes`` together (batched renders, one GPU slot);
    with ``out_uri``, words-only baselines are kept and reused under ``<out>/baselines/``.

    Each concept's ``eval_seconds`` is its share of the whole. Deterministic failures come back as
    ``error`` (for all of them: they share one rendering), so they are not retried.
    """
    from inversion.embeddings.formats import (
        load_embedding,  # torch: imported by the task body, never by the coordinator
    )
    from inversion.evaluation.scoring import ScoreRequest, ScoreSettings, score_concepts
    from inversion.images import list_images, open_rgb

    scored: dict[int, ScoredConcept] = {}
    embedding_paths: dict[int, str] = {}  # the outcomes to score: those that learned an embedding
    for i, outcome in enumerate(outcomes):
        if outcome.error is not None or outcome.embedding_path is None:
            scored[i] = ScoredConcept(outcome, error=outcome.error or "no embedding was learned")
        else:
            embedding_paths[i] = outcome.embedding_path
    live = list(embedding_paths)
    if live:
        try:
            requests = []
            for i in live:
                record = outcomes[i].staged.record
                references = [open_rgb(p) for p in list_images(Path(outcomes[i].staged.image_dir))]
                requests.append(
                    ScoreRequest(
                        load_embedding(Path(embedding_paths[i])),
                        record.class_name,
                        references,
                        list(record.captions) or None,
                        record.property,
                    )
                )
            renderer = model_cache.renderer_for(learn, evaluation, run)
            clip = model_cache.clip_model(evaluation.clip_spec(), run.device)
            settings = ScoreSettings(
                prompts=tuple(evaluation.prompts) if evaluation.prompts else None, samples=evaluation.samples
            )
            cache = StoreBaselineCache(out_uri, learn.model) if out_uri is not None else None
            with gpu_slot(run.gpu_limit_name):
                started = time.perf_counter()
                all_scores = score_concepts(renderer, clip, requests, settings, cache)
                eval_seconds = (time.perf_counter() - started) / len(live)
        except SstarError as exc:
            for i in live:
                scored[i] = ScoredConcept(outcomes[i], error=f"scoring failed: {exc}")
            all_scores = []
        for i, scores in zip(live, all_scores):
            outcome = outcomes[i]
            get_run_logger().info(
                "%s: image similarity %.3f vs baseline %.3f (lift %+.3f)",
                outcome.staged.record.concept_id,
                scores.image_similarity,
                scores.baseline_image_similarity,
                scores.inversion_lift,
            )
            files = _files_to_publish(outcome.staged.work_dir, embedding_paths[i], scores)
            scored[i] = ScoredConcept(outcome, scores.to_json(), files, eval_seconds=eval_seconds)
    return [scored[i] for i in range(len(outcomes))]


score_outcomes_task = task(name="score-outcomes", **RETRY)(score_outcomes)
""":func:`score_outcomes` of one pack as a Prefect task (transient storage errors are retried)."""


@task(name="score-concept", **RETRY)
def score_concept(
    outcome: InversionOutcome,
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    out_uri: str | None = None,
) -> ScoredConcept:
    """One concept's :func:`score_outcomes`."""
    (scored,) = score_outcomes([outcome], learn, evaluation, run, out_uri)
    return scored
