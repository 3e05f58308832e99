"""tasks.concurrency: the GPU limit is created once and never changed by a run, and a slot is held for
exactly the duration of a ``gpu_slot`` block — against the session's Prefect test server."""

from __future__ import annotations

import threading
import uuid

import pytest

from tasks.concurrency import ensure_gpu_limit, gpu_slot, release_all_slots

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _limit(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


@pytest.fixture
def name() -> str:
    return f"sstar-gpu-{uuid.uuid4().hex[:8]}"


def test_create_update_and_leave_alone(name: str) -> None:
    assert ensure_gpu_limit(name, 2) == "created"
    assert (_limit(name).limit, _limit(name).active) == (2, True)
    assert ensure_gpu_limit(name, 2) == "unchanged"
    assert ensure_gpu_limit(name, 3, update=False) == "unchanged"  # what flows call: an operator's value stays
    assert _limit(name).limit == 2
    assert ensure_gpu_limit(name, 3) == "updated"
    assert _limit(name).limit == 3


def test_a_limit_needs_a_slot(name: str) -> None:
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ValueError, match="at least 1 slot, got 0"):
        ensure_gpu_limit(name, 0)
    with pytest.raises(ObjectNotFound):
        _limit(name)


def test_a_slot_is_held_inside_the_block_only(name: str) -> None:
    ensure_gpu_limit(name, 2)
    with gpu_slot(name):
        assert _limit(name).active_slots == 1
    assert _limit(name).active_slots == 0


def test_a_second_holder_waits_for_the_only_slot(name: str) -> None:
    ensure_gpu_limit(name, 1)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def second() -> None:
        first_in.wait(30)
        with gpu_slot(name):
            order.append("second in")
            second_in.set()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        with gpu_slot(name):
            order.append("first in")
            first_in.set()
            # the second holder must not get in while the only slot is held; 3 s is ample for an
            # acquisition that is not blocked (a free slot is taken at once)
            overlapped = second_in.wait(3)
            order.append("first out")
            first_out.set()
    finally:
        thread.join(60)
    assert not overlapped
    assert order == ["first in", "first out", "second in"]
    assert _limit(name).active_slots == 0


def test_release_all_slots_frees_what_a_dead_holder_kept(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    ensure_gpu_limit(name, 2)
    with get_client(sync_client=True) as client:  # as if two holders died without releasing
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=2))
    assert _limit(name).active_slots == 2
    release_all_slots(name)
    assert _limit(name).active_slots == 0
