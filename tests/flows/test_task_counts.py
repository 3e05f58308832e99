"""Task runs grow with packs and chunks, not with concepts (issue 21), counted through the Prefect API.

Two catalogs of new concepts, 4 and 12, learned at the least work the CLI allows (the tiny model, one step,
one prompt, one sample, one render step) in packs of 2 and chunks of 4. Each task name's runs may grow by at
most one per added pack, and all of them together by at most 3 per added pack; a task run per concept (what
``stage-concept`` and ``publish-concept`` were) grows by one per added concept, twice as fast, and fails it.
Each concept's state stays visible: every concept has its row in the run's table artifact.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from tests.conftest import write_shape_images

pytestmark = pytest.mark.slow

PACK = 2
CHUNK = 4
SMALL, LARGE = 4, 12


def _catalog(root: Path, concepts: int) -> Path:
    for i in range(concepts):
        write_shape_images(root / f"shape-{i:02d}", count=2, color=(20 * i, 250 - 20 * i, 90), size=32, seed=i)
    return root


def _task_runs(flow_run_id) -> collections.Counter[str]:
    """Task runs of the flow run by task name (``stage-chunk-3f2` → ``stage-chunk``), read from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return collections.Counter(run.name.rsplit("-", 1)[0] for run in asyncio.run(read()))


def _table_artifact(flow_run_id) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    async def read():
        async with get_client() as client:
            wanted = ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])
            )
            return await client.read_artifacts(artifact_filter=wanted)

    (artifact,) = asyncio.run(read())
    data = artifact.data
    return data if isinstance(data, list) else __import__("json").loads(data)


def _learn(tmp_path: Path, model: Path, clip: Path, concepts: int) -> tuple[collections.Counter[str], list[dict]]:
    from flows.learn import learn_catalog
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    catalog = _catalog(tmp_path / f"catalog-{concepts}", concepts)
    state = learn_catalog(
        catalog=str(catalog),
        out=str(tmp_path / f"out-{concepts}"),
        learn=LearnSettings(model=str(model), steps=1, batch_size=1),
        evaluation=EvalSettings(
            prompts=["a photo of {}"], samples=1, render_steps=1, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
        ),
        run=RunSettings(device="cpu", checkpoint_every=0, workers=2, concepts_per_batch=PACK, chunk_size=CHUNK),
        run_id=f"counts-{concepts}",
        return_state=True,
    )
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    return _task_runs(flow_run_id), _table_artifact(flow_run_id)


def test_task_runs_grow_with_packs_not_concepts(prefect_harness, tiny_model_dir, tmp_path):
    from inversion.evaluation.clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "tiny-clip.pt")
    small, small_table = _learn(tmp_path, tiny_model_dir, clip, SMALL)
    large, large_table = _learn(tmp_path, tiny_model_dir, clip, LARGE)

    print("task runs:", dict(small), dict(large))
    added_packs = (LARGE - SMALL) // PACK
    growth = {name: large[name] - small[name] for name in large | small}
    assert all(grown <= added_packs for grown in growth.values()), (growth, small, large)
    assert sum(large.values()) - sum(small.values()) <= 3 * added_packs, (small, large)
    assert large["stage-chunk"] == LARGE // CHUNK and large["publish-chunk"] == LARGE // CHUNK, large
    assert large["score-outcomes"] == LARGE // PACK, large
    # every concept's state is still shown, one row each
    for table, concepts in ((small_table, SMALL), (large_table, LARGE)):
        assert sorted((r["concept_id"], r["status"]) for r in table) == [
            (f"shape-{i:02d}", "ok") for i in range(concepts)
        ]
