"""The trainer's norm_ratio reaches the concept's outcome, its training log and its metrics row."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from inversion.config import TrainConfig
from inversion.embeddings.formats import LearnedEmbedding
from inversion.embeddings.norms import VocabNorms
from inversion.training.trainer import TrainResult
from tasks.invert import _outcome
from tasks.publish import publish_concept
from tests.tasks.test_publish import _scored

pytestmark = pytest.mark.usefixtures("quiet_run_logger")


def test_outcome_and_row_carry_the_norm_ratio(tmp_path: Path, learn) -> None:
    scored = _scored(tmp_path / "work")
    vectors = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1 against a vocabulary mean of 0.5
    result = TrainResult("<red-square>", LearnedEmbedding("<red-square>", vectors), 2, [0.5, 0.4], 1.0)
    result.vocab_norms = (VocabNorms(0.5, 0.1, 0.9),)
    outcome = _outcome(scored.inversion.staged, tmp_path / "work", result, TrainConfig(), 1, 1, "sd1")
    assert outcome.norm_ratio == pytest.approx(10.0)
    assert json.loads((tmp_path / "work" / "training.json").read_text())["norm_ratio"] == pytest.approx(10.0)
    row = publish_concept(
        replace(scored, inversion=replace(scored.inversion, norm_ratio=10.0)), str(tmp_path / "out"), "run-1", learn
    )
    assert row.norm_ratio == 10.0
