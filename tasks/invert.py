"""The GPU task: learn the token vectors of a queue of concepts, ``concepts_per_batch`` at a time.

Continuous packing: the queue trains in one pack of ``concepts_per_batch`` slots, and a concept that
stops (its cap, or its loss plateau) hands its slot to the next waiting one, so the batch stays full
until the queue is empty (:func:`inversion.training.trainer.train_concepts` with ``slots``).

Checkpoints go to the output store every K steps, so a run killed mid-inversion resumes from the
last one on whichever worker retries it. GPU work holds a slot of a Prefect global concurrency
limit. The trainer (torch) is imported by the task body: the coordinator imports this module without
it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task

from common.filenames import CHECKPOINT_FILENAME, TRAINING_LOG, word_filename
from inversion.errors import SstarError
from storage.results import ResultStore
from tasks import model_cache
from tasks.concurrency import gpu_slot
from tasks.records import InversionOutcome, StagedConcept
from tasks.retry import RETRY
from tasks.settings import LearnSettings, RunSettings

if TYPE_CHECKING:
    from inversion.config import TrainConfig
    from inversion.training.trainer import StepReport, TrainResult


def _restore_checkpoint(results: ResultStore, staged: StagedConcept, out_dir: Path) -> bool:
    record = staged.record
    data = results.get_checkpoint(record.concept_id, record.known_digest(), CHECKPOINT_FILENAME)
    if data is None:
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CHECKPOINT_FILENAME).write_bytes(data)
    return True


class _ProgressLog:
    """The trainer's step callback: a log line every 10 s (and at the last step), and one per stopped concept."""

    def __init__(self, logger, by_token: dict[str, StagedConcept], every_s: float = 10.0) -> None:
        self.logger, self.by_token, self.every_s = logger, by_token, every_s
        self.last = time.monotonic()

    def __call__(self, report: StepReport) -> None:
        if time.monotonic() - self.last > self.every_s or report.step == report.total_steps:
            self.last = time.monotonic()
            losses = ", ".join(f"{t} {v:.4f}" for t, v in report.losses.items())
            self.logger.info("step %d/%d (%.1f s): %s", report.step, report.total_steps, report.elapsed, losses)
        for token, reason in report.stopped.items():
            concept_id = self.by_token[token].record.concept_id
            self.logger.info("%s: stopped (%s) at pack step %d", concept_id, reason, report.step)


def _training_log(result: TrainResult, config: TrainConfig, staged: StagedConcept, queue: int, slots: int) -> dict:
    """What :data:`TRAINING_LOG` holds: the loss curves, why training stopped, whether it resumed, the settings."""
    return dict(
        token=result.token,
        steps=result.steps,
        stop_reason=result.stop_reason,
        resumed_from=result.resumed_from,
        final_loss=result.final_loss,
        norm_ratio=result.norm_ratio,
        train_seconds=result.seconds,
        losses=result.losses,
        held_out_losses=result.held_out_losses,
        settings=config.to_dict() | {"images": staged.num_images, "concepts_in_queue": queue, "slots": slots},
    )


def _outcome(
    staged: StagedConcept, out_dir: Path, result: TrainResult, config: TrainConfig, queue: int, slots: int, family: str
) -> InversionOutcome:
    """The concept's outcome: why training failed, or its embedding files, the training log (written here) and
    which file stands for the word on the model's ``family`` (:func:`~common.filenames.word_filename`)."""
    if result.error is not None:
        return InversionOutcome(staged, None, error=result.error)
    log = _training_log(result, config, staged, queue, slots)
    (out_dir / TRAINING_LOG).write_text(json.dumps(log, indent=1, default=str))
    return InversionOutcome(
        staged,
        str(out_dir / word_filename(result.token, family)),
        result.steps,
        result.resumed_from,
        result.final_loss,
        result.seconds,
        stop_reason=result.stop_reason,
        files=(*(str(path) for path in result.files.values()), str(out_dir / TRAINING_LOG)),
        norm_ratio=result.norm_ratio,
    )


@task(name="invert-pack", **RETRY)
def invert_pack(
    staged: list[StagedConcept], learn: LearnSettings, run: RunSettings, out_uri: str
) -> list[InversionOutcome]:
    """Learn every staged concept of the queue, ``run.concepts_per_batch`` at a time in one UNet batch."""
    from inversion.training.trainer import train_concepts  # torch: imported by the task body, never by the coordinator

    logger = get_run_logger()
    outcomes: dict[str, InversionOutcome] = {
        s.record.concept_id: InversionOutcome(s, None, error=s.error) for s in staged if s.error is not None
    }
    live = [s for s in staged if s.error is None]
    if not live:
        return [outcomes[s.record.concept_id] for s in staged]
    # 1. resume from the checkpoints an earlier attempt left in the output store
    results = ResultStore.open(out_uri)
    out_dirs = [Path(s.work_dir) / "embedding" for s in live]
    for s, out_dir in zip(live, out_dirs):
        if _restore_checkpoint(results, s, out_dir):
            logger.info("%s: resuming from the checkpoint in %s", s.record.concept_id, out_uri)
    by_token = {s.record.token: s for s in live}

    def upload_checkpoint(token: str, path: Path) -> None:
        record = by_token[token].record
        results.put_checkpoint(record.concept_id, record.known_digest(), CHECKPOINT_FILENAME, path.read_bytes())

    # 2. train the queue in one pack of slots, on the GPU slot
    config = learn.train_config(run)
    concepts = [s.concept_config(learn.seed) for s in live]
    try:
        components = model_cache.diffusion_components(learn.model)
        with gpu_slot(run.gpu_limit_name, wait_timeout=run.slot_wait_timeout):
            trained = train_concepts(
                components,
                concepts,
                config,
                output_dirs=out_dirs,
                resume=True,
                callback=_ProgressLog(logger, by_token),
                on_checkpoint=upload_checkpoint,
                slots=run.concepts_per_batch,
            )
    except SstarError as exc:  # deterministic (bad settings, unreadable image): fail the pack's concepts
        return [outcomes.get(s.record.concept_id) or InversionOutcome(s, None, error=str(exc)) for s in staged]
    # 3. one outcome per concept, its files with the training log
    for s, out_dir, result in zip(live, out_dirs, trained):
        if result.error is None and result.resumed_from:
            logger.info("%s: resumed at step %d of %d", s.record.concept_id, result.resumed_from, result.steps)
        outcomes[s.record.concept_id] = _outcome(
            s, out_dir, result, config, len(live), run.concepts_per_batch, components.family
        )
    return [outcomes[s.record.concept_id] for s in staged]
