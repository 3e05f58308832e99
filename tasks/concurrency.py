"""The Prefect global concurrency limit that guards GPU work (inversion and rendering).

Its slots are the number of inversions allowed to share the GPU(s) at once; every GPU task holds one
slot while it runs. ``deployments/create_gpu_limit.py`` calls :func:`ensure_gpu_limit` for a
server's operators; ``learn_catalog`` calls it at start so a run never goes unguarded.

No wait without a deadline, and none on the dead: :func:`gpu_slot` asks for a slot once a second
(one request each, so no grant is lost to a cancelled request; while tasks of its own process hold every
slot, it waits for their hand-over or release instead, :mod:`tasks.slots_here`), frees the slot of a holder that died
(:mod:`tasks.slot_holders`), logs who holds the slot every minute, and gives up after the run's
``slot_wait_timeout`` with one line naming the limit, the holder and ``sstar slots --release``. It
takes the slot with Prefect's own lease calls rather than ``prefect.concurrency.sync.concurrency``,
which does not tell its caller the lease id that the holder record needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound

from inversion.cancel import check_stop
from inversion.errors import SstarError
from tasks import slot_holders, slots_here
from tasks.slots_here import Slot


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
            return _create_limit(client, name, slots)
        if not update or (existing.limit == slots and existing.active):
            return "unchanged"
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        return "updated"


def _create_limit(client: SyncPrefectClient, name: str, slots: int) -> str:
    """Create the limit ``name``; ``unchanged`` when another command created it first (two runs starting
    together on a fresh server both find it missing, and the second create breaks the name's uniqueness)."""
    try:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
    except Exception as exc:  # noqa: BLE001 - whatever the server said, the limit existing now is success
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise exc from None
        return "unchanged"
    return "created"


#: seconds a slot's lease lasts without renewal; Prefect renews it while the holder lives. A server
#: with a lease repossessor (``prefect server start``) frees a killed holder's slot this long after it
#: died; the local ephemeral server has none, so a waiter frees it (:mod:`tasks.slot_holders`)
GPU_LEASE_SECONDS = 60

#: seconds between two tries of a task waiting for a slot (each try also looks for dead holders)
SLOT_POLL_S = 1.0

#: seconds between two log lines of a task waiting for a slot
SLOT_LOG_EVERY_S = 60.0


class SlotWaitTimeout(SstarError, TimeoutError):
    """A task waited its whole ``slot_wait_timeout`` for a slot that a live run kept."""


@contextmanager
def gpu_slot(name: str, *, wait_timeout: float) -> Iterator[None]:
    """Hold one slot of the GPU limit ``name`` for the duration of a ``with`` block.

    Waits for it at most ``wait_timeout`` seconds (then :class:`SlotWaitTimeout`), logging the holder
    every minute and freeing the slot of a holder that died meanwhile. A limit that does not exist
    guards nothing (as Prefect's ``strict=False``).
    """
    taken = _wait_for_slot(name, wait_timeout)
    if taken is None:
        yield
        return
    slot, granted = taken
    if granted:
        slots_here.HELD_HERE.took(name, slot)
    handed_over = False
    try:
        slot_holders.write_record(slot.limit_id, slot.lease_id)  # a handed-over slot's record now names this task
        with _lease_renewed(slot.lease_id):
            yield
        handed_over = slots_here.HELD_HERE.keep(name, slot)
    finally:
        if not handed_over:
            slots_here.HELD_HERE.give_back(name, slot)


def give_back_parked_slots() -> None:
    """Give back the GPU slots this process keeps for its next task (:mod:`tasks.slots_here`): a run's flow
    calls it as its GPU work ends, rather than leaving them to the park timer."""
    slots_here.HELD_HERE.give_back_parked()


def _wait_for_slot(name: str, wait_timeout: float) -> tuple[Slot, bool] | None:
    """A slot of ``name`` taken for this process, and whether the server granted it (else a task of this
    process handed it over); None where no limit exists."""
    here = slots_here.HELD_HERE
    started = last_log = time.monotonic()
    ask = False  # True: ask the server even if this process holds every slot (a try could only be refused)
    while True:
        check_stop()  # a signalled run stops waiting (inversion.cancel)
        parked = here.take_parked(name)
        if parked is not None:
            return parked, False
        time.sleep(here.pause_left(name))  # this process has just ended its turn: a run elsewhere asks first
        mark = here.releases(name)
        if ask or not here.full(name):
            taken = _try_slot(name)
            if taken is not _TAKEN:
                return None if taken is None else (taken, True)
        held_here = here.held(name)
        left = wait_timeout - (time.monotonic() - started)
        if held_here and left > 0:
            woken = here.wait(name, mark, min(slots_here.HELD_HERE_WAIT_S, left))
            if isinstance(woken, Slot):
                return woken, False
            if woken is slots_here.RELEASED:
                ask = False
                continue
        ask = True  # no release here for a while (or none held here): the server is asked at the next turn
        limit_id = _limit_id(name)
        for freed in slot_holders.recover_dead_holders(limit_id):
            _logger().warning("freed the slot of %r held by %s, which is dead", name, freed)
        now = time.monotonic()
        if now - started >= wait_timeout:
            raise SlotWaitTimeout(_gave_up(name, limit_id, now - started))
        if now - last_log >= SLOT_LOG_EVERY_S:
            last_log = now
            _logger().info("waited %.0f s for a slot of %r: %s", now - started, name, _held_by(name, limit_id))
        if not held_here:
            time.sleep(min(SLOT_POLL_S, max(0.0, wait_timeout - (now - started))))


#: what :func:`_try_slot` returns when every slot is taken
_TAKEN: Any = object()


def _try_slot(name: str) -> Any:
    """One request for a slot: ``(limit id, lease id)``, None (no such limit) or :data:`_TAKEN`."""
    import httpx
    from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse

    try:
        with get_client(sync_client=True) as client:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=GPU_LEASE_SECONDS, holder=_lease_holder()
            )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 423:  # every slot taken
            return _TAKEN
        raise
    granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
    return Slot(granted.limits[0].id, granted.lease_id, granted.limits[0].limit) if granted.limits else None


@contextmanager
def _lease_renewed(lease_id: UUID) -> Iterator[None]:
    """Renew ``lease_id`` every third of its duration while the block runs (a failed renewal is logged and
    tried again: the holder lives, and its record keeps its slot from being taken meanwhile)."""
    stop = threading.Event()
    logger = _logger()

    def renew() -> None:
        while not stop.wait(GPU_LEASE_SECONDS / 3):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(lease_id, GPU_LEASE_SECONDS)
            except Exception as exc:  # noqa: BLE001 - a server hiccup must not end the GPU work
                logger.warning("could not renew the GPU slot's lease %s: %s", lease_id, exc)

    renewer = threading.Thread(target=renew, name=f"sstar-lease-{lease_id}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(30)


def _lease_holder() -> Any:
    """The task run (else flow run) this slot is taken for, as Prefect records it on the lease."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext, TaskRunContext

    if (task := TaskRunContext.get()) is not None:
        return ConcurrencyLeaseHolder(type="task_run", id=task.task_run.id)
    if (flow := FlowRunContext.get()) is not None and flow.flow_run is not None:
        return ConcurrencyLeaseHolder(type="flow_run", id=flow.flow_run.id)
    return None


def _limit_id(name: str) -> UUID:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).id


def _held_by(name: str, limit_id: UUID) -> str:
    """``N of M slots taken, held by <holder>; <holder>`` from sstar's records (and Prefect's count)."""
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    holders = [h.describe() for h in slot_holders.read_records(limit_id)]
    held = "; ".join(holders) if holders else "a holder sstar has no record of (a run on another host?)"
    return f"{limit.active_slots} of {limit.limit} slots taken, held by {held}"


def _gave_up(name: str, limit_id: UUID, waited: float) -> str:
    return (
        f"waited {waited:.0f} s (slot_wait_timeout) for a slot of Prefect concurrency limit {name!r}: "
        f"{_held_by(name, limit_id)}; stop that run, or free its slot with `sstar slots --release {name}`"
    )


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.logging import get_logger, get_run_logger

    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow or task run: the module's own logger
        return get_logger(__name__)


def slots_report() -> list[str]:
    """What ``sstar slots`` prints: each global concurrency limit's taken slots and its recorded holders."""
    with get_client(sync_client=True) as client:
        limits = client.read_global_concurrency_limits(limit=200)
    lines = []
    for limit in sorted(limits, key=lambda x: x.name):
        lines.append(f"{limit.name}: {limit.active_slots} of {limit.limit} slots taken")
        for holder in slot_holders.read_records(limit.id):
            state = "dead: the next waiter frees its slot" if holder.is_dead() else "alive"
            lines.append(f"  held by {holder.describe()} since {holder.since} ({state})")
    return lines or ["no Prefect global concurrency limits on this server"]


def release_all_slots(name: str) -> list[str]:
    """Free every slot of ``name``, a live holder's too — for operators (``sstar slots --release``) when no
    run uses the limit. Each recorded or stored lease is given back through Prefect's API, then the
    count is set to 0 (slots whose lease the server forgot); what was freed, described."""
    try:
        limit_id = _limit_id(name)
    except ObjectNotFound:
        raise SstarError(f"no Prefect global concurrency limit is named {name!r} (sstar slots lists them)") from None
    freed = []
    with slot_holders.recovery_lock(limit_id):
        for holder in slot_holders.read_records(limit_id):
            slot_holders.release_lease(holder.lease_id)
            slot_holders.remove_record(limit_id, holder.lease_id)
            freed.append(holder.describe())
        for lease_id in slot_holders.stored_leases(limit_id):
            slot_holders.release_lease(lease_id)
            freed.append(f"lease {lease_id} with no holder record")
        with get_client(sync_client=True) as client:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    return freed
