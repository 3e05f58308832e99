"""Fixtures of the task tests: a small local catalog, settings for the tiny model, a tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_shape_images


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A local catalog: ``red-square`` (2 images), ``half`` (1 image + 1 truncated), ``broken`` (no
    decodable image) and ``bad-meta`` (an invalid ``concept.json``: unusable before any image is read)."""
    root = tmp_path / "catalog"
    write_shape_images(root / "red-square", count=2)
    (root / "red-square" / "concept.json").write_text(json.dumps({"initializer": "square", "class": "square"}))
    write_shape_images(root / "half", count=1, color=(40, 40, 200))
    (root / "half" / "cut.png").write_bytes((root / "half" / "00.png").read_bytes()[:60])
    (root / "broken").mkdir()
    (root / "broken" / "junk.png").write_bytes(b"definitely not a png")
    write_shape_images(root / "bad-meta", count=1)
    (root / "bad-meta" / "concept.json").write_text(json.dumps({"property": "sculpture"}))
    return root


@pytest.fixture
def learn(tiny_model_dir: Path):
    from tasks.settings import LearnSettings

    return LearnSettings(model=str(tiny_model_dir), steps=2, batch_size=1)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inversion.evaluation.clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip.safetensors")


@pytest.fixture
def quiet_run_logger():
    """Lets ``task.fn(...)`` run outside a flow: ``get_run_logger()`` returns a logger that drops records."""
    from prefect.logging import disable_run_logger

    with disable_run_logger():
        yield


@pytest.fixture
def run_count(prefect_harness):
    """``run_count(state)``: how many times the server saw a task run start, read from the API once the
    task run reached it in ``state``'s final state (task runs reach the server as events, a moment later)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tests.waiting import wait_until

    def count(state) -> int:
        task_run_id = state.state_details.task_run_id
        with get_client(sync_client=True) as client:

            def final_run():
                try:
                    task_run = client.read_task_run(task_run_id)
                except ObjectNotFound:
                    return None
                return task_run if task_run.state and task_run.state.type == state.type else None

            return wait_until(final_run, 30, f"task run {task_run_id} in the API").run_count

    return count
