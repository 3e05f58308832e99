"""Two commands starting together on a fresh Prefect server both find the GPU limit missing and both create
it: the second create must count as success, not end the run (seen with two ``sstar learn`` on one output)."""

from __future__ import annotations

import uuid

from prefect.client.orchestration import get_client

from tasks.concurrency import _create_limit, ensure_gpu_limit


def test_the_second_create_of_a_limit_is_unchanged_not_an_error(prefect_harness) -> None:
    name = f"sstar-gpu-race-{uuid.uuid4().hex[:8]}"
    assert ensure_gpu_limit(name, 1, update=False) == "created"
    with get_client(sync_client=True) as client:  # the loser of the race: it read "missing" before the winner created
        assert _create_limit(client, name, 1) == "unchanged"
        assert client.read_global_concurrency_limit_by_name(name).limit == 1
