"""The GPU slots that tasks of this process hold, and their hand-over from one task to the next.

A run's training and scoring take turns on the GPU limit's slot (:mod:`tasks.concurrency`). Each take
and give-back through the Prefect server is a write on its database, and a take is a read followed by
an update: on SQLite a write landing between the two answers ``503 database is locked`` (the first
night's only server errors). So while a task of this process waits for a slot that another task of this
process holds, it waits here and is woken by the release; a holder that leaves while such a waiter
exists hands its lease straight to it (no server call). A holder that leaves with no waiter here keeps
the slot :data:`PARK_S` more for the run's next GPU task (submitted as this one ends), then gives it
back; a run gives back what is parked as it ends (not at interpreter exit, where a client could start
a new ephemeral Prefect server that outlives the process). All this for at most :data:`FAIR_TURN_S` in
a row: then the slot goes back through the server, and a waiter here pauses :data:`FAIR_PAUSE_S`
first, longer than a waiter elsewhere (another run polling each ``SLOT_POLL_S``) needs to ask, so
overlapping runs take turns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from uuid import UUID

from inversion.cancel import check_stop

#: seconds a task waits without asking the server while another task of its own process holds every slot
#: of the limit: that holder's release or hand-over wakes it at once (an operator who raises the limit
#: meanwhile is heard within this)
HELD_HERE_WAIT_S = 10.0

#: seconds a slot left by a task with no waiter here stays with this process for its next task
PARK_S = 2.0

#: seconds this process may keep a slot by handing it from task to task before it gives it back
FAIR_TURN_S = 60.0

#: seconds a waiter of this process lets pass after such a give-back before it asks (> the poll of a
#: waiter elsewhere, 1 s)
FAIR_PAUSE_S = 1.5


class Slot(NamedTuple):
    """A slot of a Prefect global concurrency limit, taken for this process."""

    limit_id: UUID
    lease_id: UUID
    size: int  # the limit's slots, as its grant said


#: what :meth:`SlotsHeldHere.wait` returns when a slot was given back through the server meanwhile
RELEASED = object()


class SlotsHeldHere:
    """Per limit: the slots tasks of this process hold, its waiters, and the slots handed over to them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._releases: dict[str, int] = {}
        self._waiters: dict[str, int] = {}
        self._handed: dict[str, list[Slot]] = {}
        self._parked: dict[str, list[Slot]] = {}
        self._turn_started: dict[str, float] = {}
        self._yielded: dict[str, float] = {}  # when this process last gave a slot back at the end of a turn

    def releases(self, name: str) -> int:
        """How many slots of ``name`` this process has given back so far (a waiter's mark)."""
        with self._changed:
            return self._releases.get(name, 0)

    def held(self, name: str) -> bool:
        with self._changed:
            return self._held.get(name, 0) > 0

    def full(self, name: str) -> bool:
        """Whether this process holds every slot of ``name`` (as far as its last grant said)."""
        with self._changed:
            return self._held.get(name, 0) >= self._sizes.get(name, 1 << 30)

    def pause_left(self, name: str) -> float:
        """Seconds a task of this process should still let pass before it asks for a slot of ``name``:
        this process gave one back at the end of its turn, and a run elsewhere may ask first."""
        with self._changed:
            return max(0.0, self._yielded.get(name, -FAIR_PAUSE_S) + FAIR_PAUSE_S - time.monotonic())

    def took(self, name: str, slot: Slot) -> None:
        """A slot granted by the server (a new turn)."""
        with self._changed:
            self._held[name] = self._held.get(name, 0) + 1
            self._sizes[name] = slot.size
            self._turn_started[name] = time.monotonic()

    def keep(self, name: str, slot: Slot) -> bool:
        """Keep ``slot``, which its task leaves, for another task of this process unless the turn is over:
        hand it to a waiter here, else park it for :data:`PARK_S`; whether it was kept."""
        with self._changed:
            if time.monotonic() - self._turn_started.get(name, 0.0) >= FAIR_TURN_S:
                self._yielded[name] = time.monotonic()
                return False
            handed = self._handed.setdefault(name, [])
            if self._waiters.get(name, 0) > len(handed):
                handed.append(slot)
                self._changed.notify_all()
                return True
            if PARK_S <= 0:
                return False
            self._parked.setdefault(name, []).append(slot)
        timer = threading.Timer(PARK_S, _with_callers_settings(self._unpark), (name, slot))
        timer.daemon = True
        timer.start()
        return True

    def take_parked(self, name: str) -> Slot | None:
        """A slot of ``name`` parked here, now this caller's; None if there is none."""
        with self._changed:
            parked = self._parked.get(name)
            return parked.pop(0) if parked else None

    def give_back_parked(self) -> None:
        """Give back every parked slot now (a run that ends: no task of it will come for them)."""
        with self._changed:
            parked = {name: slots[:] for name, slots in self._parked.items()}
            self._parked.clear()
        for name, slots in parked.items():
            self._give_back(name, slots)

    def _unpark(self, name: str, slot: Slot) -> None:
        with self._changed:
            parked = self._parked.get(name, [])
            if slot not in parked:
                return  # taken by a task meanwhile
            parked.remove(slot)
        self._give_back(name, [slot])

    def released(self, name: str) -> None:
        """A slot given back through the server."""
        with self._changed:
            self._held[name] -= 1
            self._releases[name] = self._releases.get(name, 0) + 1
            self._changed.notify_all()

    def wait(self, name: str, mark: int, seconds: float) -> Slot | object | None:
        """Wait at most ``seconds`` for a slot of ``name``: one handed over here (returned), one given back
        through the server since ``mark`` (:data:`RELEASED`), or neither (None). A stop asked meanwhile
        ends the wait within a second (``Cancelled``); a slot handed to it by then is given back."""
        orphans: list[Slot] = []
        try:
            return self._wait(name, mark, seconds, orphans)
        finally:
            if orphans:
                self._give_back(name, orphans)

    def _wait(self, name: str, mark: int, seconds: float, orphans: list[Slot]) -> Slot | object | None:
        deadline = time.monotonic() + seconds
        with self._changed:
            self._waiters[name] = self._waiters.get(name, 0) + 1
            try:
                while True:
                    if self._handed.get(name):
                        return self._handed[name].pop(0)
                    if self._releases.get(name, 0) != mark:
                        return RELEASED
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._changed.wait(min(1.0, left))
                    check_stop()
            finally:
                self._waiters[name] -= 1
                orphans.extend(self._orphans(name))

    def _orphans(self, name: str) -> list[Slot]:
        """The slots handed over beyond the waiters left (their waiter was stopped), taken off the list."""
        handed = self._handed.get(name, [])
        extra = handed[self._waiters.get(name, 0) :]
        del handed[self._waiters.get(name, 0) :]
        return extra

    def give_back(self, name: str, slot: Slot) -> None:
        """Give ``slot`` back through the server and drop its holder record (what the server raised is
        raised; the slot no longer counts as held here either way)."""
        from tasks import slot_holders

        try:
            slot_holders.release_lease(slot.lease_id)
            slot_holders.remove_record(slot.limit_id, slot.lease_id)
        finally:
            self.released(name)

    def _give_back(self, name: str, slots: list[Slot]) -> None:
        """:meth:`give_back` each of ``slots``, a failure logged (its lease then runs out, or the next taker
        frees the slot of a holder that is gone): a timer thread or a stopped waiter has no caller to tell."""
        from prefect.logging import get_logger

        for slot in slots:
            try:
                self.give_back(name, slot)
            except Exception as exc:  # noqa: BLE001 - see above
                get_logger(__name__).warning("could not give back the slot %s of %r: %s", slot.lease_id, name, exc)


def _with_callers_settings(function: Callable[..., None]) -> Callable[..., None]:
    """``function`` to be called in another thread under the Prefect settings of this one (its API URL), and
    none of its run or client contexts: the run may be over by then, its client closed."""
    from prefect.context import SettingsContext

    settings = SettingsContext.get()

    def call(*args: Any) -> None:
        if settings is None:
            function(*args)
            return
        with SettingsContext(profile=settings.profile, settings=settings.settings):
            function(*args)

    return call


#: the one registry of this process
HELD_HERE = SlotsHeldHere()
