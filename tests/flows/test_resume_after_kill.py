"""A worker killed mid-inversion: the retried run resumes from the last uploaded checkpoint and ends
with exactly the vectors of an uninterrupted run; nothing partial is ever visible as a result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import write_shape_images
from tests.flows.sstar_cli import learn_argv
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

STEPS = 100


def _learn_args(catalog, out, model, clip):
    return learn_argv(
        catalog,
        out,
        model,
        tiny_clip=clip,
        steps=STEPS,
        batch_size=1,
        checkpoint_every=5,
        samples=1,
        render_steps=2,
        prompts=clip.parent / "prompts.txt",
        device="cpu",
        workers=1,
    )


def test_killed_inversion_resumes_from_checkpoint(prefect_harness, tiny_model_dir, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.cli import main
    from inversion.config import ConceptConfig, TrainConfig
    from inversion.embeddings.formats import load_embedding
    from inversion.evaluation.clip import write_tiny_clip
    from inversion.model.components import load_components
    from inversion.training.trainer import train_concept
    from storage.results import ResultStore

    clip = write_tiny_clip(tmp_path / "clip" / "tiny.pt")
    (clip.parent / "prompts.txt").write_text("a photo of {}\n")
    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_shape_images(catalog / "red-square")
    (catalog / "red-square" / "concept.json").write_text(json.dumps({"initializer": "square"}))

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "killed.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *_learn_args(catalog, out, tiny_model_dir, clip)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    checkpoints = out / "checkpoints" / "red-square"
    try:
        wait_until(
            lambda: list(checkpoints.rglob("checkpoint.safetensors")),
            240,
            "a checkpoint upload",
            abort=lambda: proc.poll() is not None and (tmp_path / "killed.log").read_text()[-3000:],
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert not (out / "embeddings").exists() or not list((out / "embeddings").rglob("*")), (
        "a killed run must leave no visible result"
    )
    # the dead process still holds its GPU slot (the test server runs no lease repossessor, like the CLI's
    # local one): the re-run must see that its holder is dead and free the slot by itself
    assert main(_learn_args(catalog, out, tiny_model_dir, clip)) == 0
    (digest_dir,) = (out / "embeddings" / "red-square").iterdir()
    results = ResultStore.open(str(out))
    assert results.is_complete("red-square", digest_dir.name)
    training = json.loads((digest_dir / "training.json").read_text())
    assert 5 <= training["resumed_from"] < STEPS, training["resumed_from"]
    assert training["steps"] == STEPS
    assert not results.list_checkpoints("red-square", digest_dir.name)

    # the same concept trained without interruption ends with exactly the same vectors on the CPU
    staged_like = tmp_path / "reference-images"
    write_shape_images(staged_like)
    reference = train_concept(
        load_components(tiny_model_dir),
        ConceptConfig("<red-square>", "square", staged_like, seed=0),
        TrainConfig(steps=STEPS, batch_size=1, checkpoint_every=5, device="cpu"),
    )
    learned = load_embedding(digest_dir / "learned_embeds.safetensors")
    torch.testing.assert_close(learned.vectors, reference.embedding.vectors, rtol=0, atol=0)
    assert training["losses"] == pytest.approx(reference.losses, rel=1e-6)
