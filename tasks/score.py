"""The evaluation task: render the learned word and its words-only baseline, score both with CLIP."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task

from inversion.checkpoint import CHECKPOINT_FILENAME
from inversion.errors import SstarError
from inversion.formats import load_embedding
from inversion.images import list_images, open_rgb
from inversion.scoring import ScoreSettings, score_concept, write_scores

from . import runtime
from .concurrency import gpu_slot
from .invert import TRAINING_LOG
from .records import InversionOutcome, ScoredConcept
from .retry import RETRY
from .settings import EvalSettings, LearnSettings, RunSettings


@task(name="score-concept", **RETRY)
def score_concept_task(outcome: InversionOutcome, learn: LearnSettings, evaluation: EvalSettings,
                       run: RunSettings) -> ScoredConcept:
    """Render the evaluation prompts with the learned token and with the concept's captions, score both.

    Returns the files to publish (embeddings, grids, ``scores.json``); deterministic failures come
    back as ``error`` rather than an exception, so they are not retried.
    """
    if outcome.error is not None or outcome.embedding_path is None:
        return ScoredConcept(outcome, error=outcome.error or "no embedding was learned")
    record = outcome.staged.record
    try:
        embedding = load_embedding(Path(outcome.embedding_path))
        references = [open_rgb(p) for p in list_images(Path(outcome.staged.image_dir))]
        renderer = runtime.renderer(learn.model, evaluation.render_steps, evaluation.guidance, run.device,
                                    learn.precision)
        clip = runtime.clip_model(evaluation.clip_arch, evaluation.clip_checkpoint, evaluation.clip_pretrained,
                                  run.device)
        settings = ScoreSettings(prompts=tuple(evaluation.prompts) if evaluation.prompts else None,
                                 samples=evaluation.samples)
        with gpu_slot(run.gpu_limit_name):
            started = time.perf_counter()
            scores = score_concept(renderer, clip, embedding, references, record.class_name,
                                   captions=list(record.captions) or None, property=record.property,
                                   settings=settings)
            eval_seconds = time.perf_counter() - started
    except SstarError as exc:
        return ScoredConcept(outcome, error=f"scoring failed: {exc}")
    out_dir = Path(outcome.staged.work_dir) / "result"
    written = write_scores(scores, out_dir)
    embedding_dir = Path(outcome.embedding_path).parent
    # every embedding file the trainer wrote (the .pt, or SDXL's learned_embeds_2 and clip_l/clip_g file)
    extras = [*(p for p in sorted(embedding_dir.iterdir()) if p.suffix in (".pt", ".safetensors")
                and p.name not in (CHECKPOINT_FILENAME, Path(outcome.embedding_path).name)),
              embedding_dir / TRAINING_LOG]
    files = [outcome.embedding_path, *(str(p) for p in extras if p.is_file()), *(str(p) for p in written.values())]
    get_run_logger().info("%s: image similarity %.3f vs baseline %.3f (lift %+.3f)", record.concept_id,
                          scores.image_similarity, scores.baseline_image_similarity, scores.inversion_lift)
    return ScoredConcept(outcome, scores.to_json(), tuple(files), eval_seconds=eval_seconds)
