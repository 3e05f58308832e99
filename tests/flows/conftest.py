"""Shared fixtures of the flow tests: a session-scoped output root made by two real catalog runs (for the
report, dashboard, SQL and browser tests), the tests' own PostgreSQL cluster, and a real ``prefect server
start`` on a database of its own there (for the deployment-mode tests)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import write_shape_images
from tests.flows.postgres import Postgres, running_postgres
from tests.flows.prefect_server import PrefectServer

RUN_IDS = ("views-run-1", "views-run-2")


@dataclass(frozen=True)
class TwoRuns:
    """``out``: a local output root after two learn_catalog runs over the same catalog (2 good concepts and
    a corrupt one): the first learns 2 and fails 1, the second skips 2 and fails 1 again."""

    out: Path
    run_ids: tuple[str, ...]
    summaries: dict[str, dict]


@pytest.fixture(scope="session")
def two_runs(prefect_harness, tiny_model_dir, tmp_path_factory) -> TwoRuns:
    from flows.learn import learn_catalog
    from inversion.evaluation.clip import write_tiny_clip
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    root = tmp_path_factory.mktemp("two-runs")
    catalog, out = root / "catalog", root / "out"
    write_shape_images(catalog / "red-square", color=(220, 30, 30), seed=1)
    write_shape_images(catalog / "blue-square", color=(30, 30, 220), seed=2)
    (catalog / "corrupt").mkdir()
    (catalog / "corrupt" / "00.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    clip = write_tiny_clip(root / "tiny-clip.pt")
    learn = LearnSettings(model=str(tiny_model_dir), steps=4, batch_size=2)
    evaluation = EvalSettings(
        prompts=["a photo of {}"], samples=2, render_steps=2, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
    )
    run = RunSettings(device="cpu", checkpoint_every=0, workers=2, concepts_per_batch=2)
    for run_id in RUN_IDS:
        learn_catalog(
            catalog=str(catalog),
            out=str(out),
            learn=learn,
            evaluation=evaluation,
            run=run,
            run_id=run_id,
            return_state=True,
        )
    summaries = {r: json.loads((out / "runs" / r / "summary.json").read_text()) for r in RUN_IDS}
    return TwoRuns(out, RUN_IDS, summaries)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The tests' PostgreSQL cluster (:mod:`tests.flows.postgres`), stopped and deleted at session end."""
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture
def prefect_server(postgres: Postgres, tmp_path: Path) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` on a new PostgreSQL database, with its own home; its workers and
    itself stopped at the end (:mod:`tests.flows.prefect_server`)."""
    server = PrefectServer(tmp_path, postgres.new_database(f"prefect_{uuid.uuid4().hex[:12]}"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
