"""inversion.cancel: a stop requested from another thread (the ``sstar`` command's signal handler) ends
training before its next step, with the last checkpoint left as it was, and rendering before its next
denoising step — in a second, where finishing the work would take minutes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from inversion.cancel import Cancelled, check_stop, clear_stop, request_stop, stop_requested
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def _no_stop_left() -> Iterator[None]:
    clear_stop()
    yield
    clear_stop()


def _stopped_within(work: Callable[[], object], started: Callable[[], bool], limit_s: float) -> BaseException:
    """Run ``work`` in a thread; once ``started()``, request a stop; what ``work`` raised within ``limit_s``."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(started, 120, "the work to start", abort=lambda: None if thread.is_alive() else f"it ended: {raised}")
    asked = time.monotonic()
    request_stop("SIGTERM")
    thread.join(limit_s)
    assert not thread.is_alive(), f"still working {limit_s} s after the stop request"
    assert time.monotonic() - asked < limit_s
    (exc,) = raised
    return exc


def test_a_stop_request_raises_at_the_next_check() -> None:
    check_stop()
    assert stop_requested() is None
    assert request_stop("SIGINT") is True
    assert request_stop("SIGTERM") is False  # the first reason stays
    with pytest.raises(Cancelled, match="^stopped on SIGINT$"):
        check_stop()
    assert not issubclass(Cancelled, Exception)  # no `except Exception` turns it into a concept's failure


def test_training_stops_before_its_next_step_and_keeps_its_last_checkpoint(tiny_model_dir, concept_images, tmp_path):
    from inversion.config import ConceptConfig, TrainConfig
    from inversion.model.components import load_components
    from inversion.training.checkpoint import CHECKPOINT_FILENAME, read_checkpoint
    from inversion.training.trainer import train_concepts

    components = load_components(tiny_model_dir)
    config = TrainConfig(steps=100_000, batch_size=1, checkpoint_every=3, device="cpu", stop="fixed")
    uploaded: list[bytes] = []
    exc = _stopped_within(
        lambda: train_concepts(
            components,
            [ConceptConfig("<red-square>", "square", concept_images, seed=0)],
            config,
            output_dirs=[tmp_path / "out"],
            on_checkpoint=lambda token, path: uploaded.append(path.read_bytes()),
        ),
        lambda: bool(uploaded),
        limit_s=10,
    )
    assert isinstance(exc, Cancelled)
    checkpoint = (tmp_path / "out" / CHECKPOINT_FILENAME).read_bytes()
    assert checkpoint == uploaded[-1], "no checkpoint is written on the way out"
    assert read_checkpoint(tmp_path / "out" / CHECKPOINT_FILENAME).step % 3 == 0


def test_rendering_stops_before_its_next_denoising_step(tiny_model_dir) -> None:
    from inversion.evaluation.render import Renderer, RenderSettings
    from inversion.model.components import load_components

    renderer = Renderer(
        load_components(tiny_model_dir), RenderSettings(device="cpu", steps=500, batch_size=1, sampler="ddim")
    )
    steps: list[int] = []
    pipeline = renderer._pipeline
    original = pipeline.scheduler.step

    def counted_step(*args, **kwargs):  # one denoising step done
        steps.append(1)
        return original(*args, **kwargs)

    pipeline.scheduler.step = counted_step
    exc = _stopped_within(
        lambda: renderer.render(["a photo of a square"], range(20)), lambda: len(steps) >= 2, limit_s=5
    )
    assert isinstance(exc, Cancelled)
    assert len(steps) < 500, "the first batch was not finished"
