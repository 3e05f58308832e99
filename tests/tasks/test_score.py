"""tasks.score: a learned word and its words-only baseline are rendered and scored with the tiny CLIP;
the files to publish come back, and failures come back as errors rather than exceptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.filenames import TRAINING_LOG
from inversion.embeddings.formats import DIFFUSERS_FILENAME, LearnedEmbedding, a1111_filename, save_embedding_files
from storage.catalog import ConceptMeta, ConceptSpec
from tasks import model_cache
from tasks.records import SCORE_COLUMNS, ConceptRecord, InversionOutcome, ScoreSummary, StagedConcept
from tasks.score import score_concept
from tasks.settings import EvalSettings, RunSettings
from tests.conftest import write_shape_images

pytestmark = pytest.mark.usefixtures("prefect_harness", "quiet_run_logger")

RUN = RunSettings(device="cpu")


@pytest.fixture
def evaluation(tiny_clip: Path) -> EvalSettings:
    return EvalSettings(
        prompts=["a photo of {}", "a drawing of {}"],
        samples=1,
        render_steps=2,
        clip_arch="sstar-tiny-clip",
        clip_checkpoint=str(tiny_clip),
    )


def _outcome(tmp_path: Path, learn, dim: int | None = None) -> InversionOutcome:
    """A learned (here: random) word for a red square, laid out as the inversion task leaves it."""
    work = tmp_path / "work"
    images = write_shape_images(work / "images", count=2)
    width = dim or model_cache.diffusion_components(learn.model).text_encoder.get_input_embeddings().weight.shape[1]
    vectors = torch.randn(1, width, generator=torch.Generator().manual_seed(0))
    written = save_embedding_files(LearnedEmbedding("<red-square>", vectors), work / "embedding")
    (work / "embedding" / TRAINING_LOG).write_text(json.dumps({"steps": 2}))
    meta = ConceptMeta("<red-square>", "square", "square", "object", 1, ("a red square",))
    record = ConceptRecord(
        ConceptSpec("red-square", meta, ("red-square/00.png", "red-square/01.png"), "0123456789abcdef")
    )
    staged = StagedConcept(record, str(work), str(images), 2)
    files = (*(str(path) for path in written.values()), str(work / "embedding" / TRAINING_LOG))
    return InversionOutcome(staged, str(work / "embedding" / DIFFUSERS_FILENAME), steps=2, files=files)


def test_scores_and_files_to_publish(tmp_path: Path, learn, evaluation: EvalSettings) -> None:
    outcome = _outcome(tmp_path, learn)
    scored = score_concept.fn(outcome, learn, evaluation, RUN)
    assert scored.error is None and scored.inversion == outcome
    assert {Path(f).name for f in scored.files} >= {"grid.png", "baseline_grid.png", "scores.json"}
    names = [Path(f).name for f in scored.files_to_publish()]  # the inversion's files, then scoring's
    assert names[:3] == [DIFFUSERS_FILENAME, a1111_filename("<red-square>"), TRAINING_LOG]
    assert len(names) == len(set(names)) and all(Path(f).is_file() for f in scored.files_to_publish())
    for column in SCORE_COLUMNS:
        bound = 2.0 if column == "inversion_lift" else 1.0  # cosines; the lift is a difference of two
        assert -bound <= getattr(scored.scores, column) <= bound, column
    assert scored.scores.inversion_lift == pytest.approx(
        scored.scores.image_similarity - scored.scores.baseline_image_similarity
    )
    saved = json.loads(next(Path(f) for f in scored.files if f.endswith("scores.json")).read_text())
    assert saved["baselines"][0]["phrase"] == "red square"  # the record's caption, not the class word
    assert ScoreSummary.of(saved) == scored.scores
    assert scored.eval_seconds is not None and scored.eval_seconds > 0


def test_an_upstream_failure_is_passed_on_without_rendering(tmp_path: Path, learn, evaluation, monkeypatch) -> None:
    monkeypatch.setattr(model_cache, "renderer", lambda *a, **k: pytest.fail("nothing may be rendered"))
    outcome = InversionOutcome(_outcome(tmp_path, learn).staged, None, error="training of <red-square> diverged")
    scored = score_concept.fn(outcome, learn, evaluation, RUN)
    assert scored.error == "training of <red-square> diverged" and scored.files == ()


def test_a_deterministic_scoring_failure_is_an_error_not_an_exception(tmp_path: Path, learn, evaluation) -> None:
    outcome = _outcome(tmp_path, learn, dim=768)  # learned for another model
    scored = score_concept.fn(outcome, learn, evaluation, RUN)
    assert scored.error.startswith("scoring failed: ") and "another model" in scored.error
    assert scored.files == ()
