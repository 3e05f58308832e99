"""The Prefect global concurrency limit that guards GPU work (inversion and rendering).

Its slots are the number of inversions allowed to share the GPU(s) at once; every GPU task holds one
slot while it runs. ``deployments/create_gpu_limit.py`` calls :func:`ensure_gpu_limit` for a
server's operators; ``learn_catalog`` calls it at start so a run never goes unguarded.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound


def ensure_gpu_limit(name: str = "sstar-gpu", slots: int = 1, *, update: bool = True) -> str:
    """Create the limit ``name`` with ``slots`` slots, or (with ``update``) set an existing one's slots.

    Returns ``created``, ``updated`` or ``unchanged``. Flows pass ``update=False`` so that what an
    operator set with ``deployments/create_gpu_limit.py`` is never overwritten by a run.
    """
    if slots < 1:
        raise ValueError(f"a GPU limit needs at least 1 slot, got {slots}")
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
            return "created"
        if not update or (existing.limit == slots and existing.active):
            return "unchanged"
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        return "updated"


#: seconds a slot's lease lasts without renewal; Prefect renews it while the holder lives, so a
#: killed worker's slot goes back to the pool this long after it died (the server's repossessor)
GPU_LEASE_SECONDS = 60


def gpu_slot(name: str):
    """Hold one slot of the GPU limit ``name`` for the duration of a ``with`` block."""
    return concurrency(name, occupy=1, strict=False, lease_duration=GPU_LEASE_SECONDS)


def release_all_slots(name: str) -> None:
    """Mark every slot of ``name`` free — for operators after a crash, when the server's lease
    repossessor is not running (it is in ``prefect server start``; test servers may not run it)."""
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
