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

from inversion.errors import SstarError
from tasks import model_cache
from tasks.baselines import StoreBaselineCache
from tasks.concurrency import gpu_slot
from tasks.records import InversionOutcome, ScoredConcept, ScoreSummary
from tasks.retry import RETRY
from tasks.settings import EvalSettings, LearnSettings, RunSettings

if TYPE_CHECKING:
    from inversion.evaluation.scoring import ConceptScores, ScoreRequest


def _requests(outcomes: list[InversionOutcome]) -> list[ScoreRequest]:
    """What scoring needs of each learned word: its embedding, class word, staged images, captions, property."""
    from inversion.embeddings.formats import load_embedding  # torch: imported by the task body, never the coordinator
    from inversion.evaluation.scoring import ScoreRequest
    from inversion.images import list_images, open_rgb

    requests = []
    for outcome in outcomes:
        record, embedding_path = outcome.staged.record, outcome.embedding_path
        assert embedding_path is not None  # only learned words are scored
        references = [open_rgb(p) for p in list_images(Path(outcome.staged.image_dir))]
        requests.append(
            ScoreRequest(
                load_embedding(Path(embedding_path)),
                record.class_name,
                references,
                list(record.captions) or None,
                record.property,
            )
        )
    return requests


def _scored(outcome: InversionOutcome, scores: ConceptScores, eval_seconds: float) -> ScoredConcept:
    """The scored concept, with the grids and ``scores.json`` written under its work folder."""
    from inversion.evaluation.scoring import write_scores

    get_run_logger().info(
        "%s: image similarity %.3f vs baseline %.3f (lift %+.3f)",
        outcome.staged.record.concept_id,
        scores.image_similarity,
        scores.baseline_image_similarity,
        scores.inversion_lift,
    )
    written = write_scores(scores, Path(outcome.staged.work_dir) / "result")
    summary = ScoreSummary.of(scores.to_json())
    return ScoredConcept(outcome, summary, tuple(str(p) for p in written.values()), eval_seconds=eval_seconds)


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
    from inversion.evaluation.scoring import ScoreSettings, score_concepts

    # 1. a concept whose inversion failed is not scored
    scored: dict[int, ScoredConcept] = {
        i: ScoredConcept(outcome, error=outcome.error or "no embedding was learned")
        for i, outcome in enumerate(outcomes)
        if outcome.error is not None or outcome.embedding_path is None
    }
    live = [i for i in range(len(outcomes)) if i not in scored]
    if not live:
        return [scored[i] for i in range(len(outcomes))]
    # 2. render and score the learned words together, on the GPU slot
    try:
        requests = _requests([outcomes[i] for i in live])
        renderer = model_cache.renderer_for(learn, evaluation, run)
        clip = model_cache.clip_model(evaluation.clip_spec(), run.device)
        settings = ScoreSettings(
            prompts=tuple(evaluation.prompts) if evaluation.prompts else None, samples=evaluation.samples
        )
        cache = StoreBaselineCache(out_uri, learn.model) if out_uri is not None else None
        with gpu_slot(run.gpu_limit_name, wait_timeout=run.slot_wait_timeout):
            started = time.perf_counter()
            all_scores = score_concepts(renderer, clip, requests, settings, cache)
            eval_seconds = (time.perf_counter() - started) / len(live)
    except SstarError as exc:
        scored.update({i: ScoredConcept(outcomes[i], error=f"scoring failed: {exc}") for i in live})
        return [scored[i] for i in range(len(outcomes))]
    # 3. each concept's grids and scores.json
    scored.update({i: _scored(outcomes[i], scores, eval_seconds) for i, scores in zip(live, all_scores)})
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
